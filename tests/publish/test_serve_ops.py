"""What an operator sees of the service, on real servers on 127.0.0.1: ``/metrics``
scraped and parsed as Prometheus does, liveness and readiness (with the warm-up's 503
window), and the JSON access log that ``jupyter-imgclass serve`` prints."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest
from helpers import CliServer, image_bytes, small_cnn_bundle
from prometheus_client.parser import text_string_to_metric_families

from jupyter_imgclass.publish.bundle import load_model
from jupyter_imgclass.publish.serve import serve_in_background

NAME = "pets-v1"
KEY = "ops-key-" + "3" * 24
SINGLE = f"/classify/iterations/{NAME}/image"
BATCH = f"/classify/iterations/{NAME}/images"
OCTETS = {"Content-Type": "application/octet-stream"}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return small_cnn_bundle(
        tmp_path_factory.mktemp("ops") / "pets",
        ["cat", "dog"],
        published_name=NAME,
        project_name="pets",
    )


@pytest.fixture(scope="module")
def model(bundle):
    return load_model(bundle)


def scrape(url: str) -> dict[str, list]:
    """``/metrics`` without a key, parsed by prometheus_client: samples by family name."""
    r = httpx.get(url + "/metrics", timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return {f.name: f.samples for f in text_string_to_metric_families(r.text)}


def value(samples: list, **labels) -> float:
    """The sum of the samples whose labels include ``labels``."""
    return sum(s.value for s in samples if labels.items() <= s.labels.items())


# ---------------------------------------------------------------------------- metrics


def test_metrics_count_requests_latency_errors_images_and_name_the_model(model):
    with serve_in_background(model, key=KEY) as srv:
        with httpx.Client(base_url=srv.url, timeout=60, headers={"Prediction-Key": KEY}) as c:
            for seed in range(3):
                assert c.post(SINGLE, content=image_bytes(seed), headers=OCTETS).is_success
            assert c.post(SINGLE, content=b"garbage", headers=OCTETS).status_code == 400
            files = [("imageData", ("a.png", image_bytes(9), "image/png"))] * 2
            files.insert(1, ("imageData", ("b.png", b"not an image", "image/png")))
            assert c.post(BATCH, files=files).status_code == 200
        assert httpx.post(srv.url + SINGLE, content=b"x", timeout=30).status_code == 401
        families = scrape(srv.url)

    requests = families["imgclass_requests"]
    single_route = "/classify/iterations/{name}/image"
    assert value(requests, route=single_route, method="POST", status="200") == 3
    assert value(requests, route=single_route, status="400") == 1
    assert value(requests, route=single_route, status="401") == 1
    assert value(requests, route="/classify/iterations/{name}/images", status="200") == 1
    latency = families["imgclass_request_duration_seconds"]
    count = [s for s in latency if s.name.endswith("_count") and s.labels["route"] == single_route]
    assert count[0].value == 5
    infinite = value(latency, route=single_route, le="+Inf")
    assert infinite == 5 and value(latency, route=single_route, le="0.005") <= infinite
    errors = families["imgclass_errors"]
    # one 400 answer and one error entry of the batch; the keyless request
    assert value(errors, code="BadRequestImageFormat") == 2
    assert value(errors, code="Unauthorized") == 1
    assert value(families["imgclass_images_predicted"]) == 5  # 3 singles + 2 of the batch
    (info,) = families["imgclass_model_info"]
    assert info.labels["iteration"] == NAME and info.labels["project"] == "pets"
    assert info.labels["network"] == "small_cnn" and info.labels["kind"] == "multiclass"
    assert len(info.labels["project_id"]) == 36


def test_two_servers_in_one_process_keep_their_own_metrics(model):
    with serve_in_background(model) as a, serve_in_background(model) as b:
        for _ in range(2):
            assert httpx.post(a.url + SINGLE, content=image_bytes(1), timeout=60).is_success
        a_requests = scrape(a.url)["imgclass_requests"]
        b_requests = scrape(b.url)["imgclass_requests"]
    assert value(a_requests, method="POST", status="200") == 2
    assert value(b_requests, method="POST") == 0


def test_metrics_can_be_turned_off(model):
    with serve_in_background(model, metrics=False) as srv:
        r = httpx.get(srv.url + "/metrics", timeout=30)
    assert r.status_code == 404 and r.json()["code"] == "NotFound"


# ---------------------------------------------------------------------------- probes


class Gated:
    """The real model behind a gate the test opens: its warm-up waits until then."""

    def __init__(self, model):
        self.model = model
        self.gate = threading.Event()
        self.tags, self.input_size, self.kind = model.tags, model.input_size, model.kind
        self.published_name, self.project_name = model.published_name, model.project_name

    def predict_arrays(self, images):
        if not self.gate.wait(60):
            raise TimeoutError("the test never opened the gate")
        return self.model.predict_arrays(images)


def wait_ready(url: str, seconds: float = 60) -> httpx.Response:
    deadline = time.monotonic() + seconds
    while True:
        r = httpx.get(url + "/readyz", timeout=10)
        if r.status_code == 200 or time.monotonic() > deadline:
            return r
        time.sleep(0.1)  # polling a server's own probe, as an orchestrator does


def test_liveness_answers_at_once_and_readiness_waits_for_the_warm_up(model):
    gated = Gated(model)
    with serve_in_background(gated, warmup=True, max_batch=4, max_batch_images=8) as srv:
        live = httpx.get(srv.url + "/healthz", timeout=10)
        assert live.status_code == 200 and live.json() == {"status": "live"}
        waiting = httpx.get(srv.url + "/readyz", timeout=10)
        assert waiting.status_code == 503, waiting.text
        assert waiting.json() == {"status": "not ready", "reason": "warming up"}
        assert httpx.get(srv.url + "/health", timeout=10).json()["status"] == "ok"
        gated.gate.set()
        ready = wait_ready(srv.url)
        assert ready.status_code == 200 and ready.json() == {"status": "ready"}
        # the warm-up ran on the model, but is not counted as served images
        assert httpx.get(srv.url + "/health", timeout=10).json()["images"] == 0


def test_without_warm_up_the_server_is_ready_at_once(model):
    with serve_in_background(model) as srv:
        assert httpx.get(srv.url + "/readyz", timeout=10).status_code == 200
        assert httpx.get(srv.url + "/healthz", timeout=10).status_code == 200


class _Broken:
    tags, input_size, published_name, kind = ["a", "b"], 8, NAME, "multiclass"

    def predict_arrays(self, images):
        raise RuntimeError("weights unreadable")


def test_a_failed_warm_up_keeps_the_server_live_but_not_ready():
    with serve_in_background(_Broken(), warmup=True) as srv:
        r = wait_ready(srv.url, seconds=5)
        assert r.status_code == 503 and "warm-up failed" in r.json()["reason"]
        assert "weights" not in r.text  # the log has the details, not the answer
        assert httpx.get(srv.url + "/healthz", timeout=10).status_code == 200


# ---------------------------------------------------------------------------- access log


def test_serve_prints_one_json_access_line_per_request_without_the_key(bundle, tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    server = CliServer([bundle, "--key-file", key_file], tmp_path / "serve.log")
    try:
        assert wait_ready(server.url, seconds=120).status_code == 200  # warmed by default
        with httpx.Client(base_url=server.url, timeout=60) as c:
            ok = c.post(SINGLE, content=image_bytes(1), headers={**OCTETS, "Prediction-Key": KEY})
            assert ok.status_code == 200
            leaked = c.post(f"{SINGLE}?Prediction-Key={KEY}", content=b"x", headers=OCTETS)
            assert leaked.status_code == 401
            files = [("imageData", ("a.png", image_bytes(2), "image/png"))]
            assert c.post(BATCH, files=files, headers={"Prediction-Key": KEY}).is_success
            assert c.get("/metrics").status_code == 200  # open: no key needed
    finally:
        server.stop()
    output = server.output
    assert KEY not in output
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    posts = [line for line in lines if line["method"] == "POST"]
    assert [(p["path"], p["status"]) for p in posts] == [
        (SINGLE, 200),
        (SINGLE, 401),
        (BATCH, 200),
    ]
    for line in posts:
        assert {"time", "client", "method", "path", "status", "duration_ms", "bytes"} <= set(line)
        assert line["client"] == "127.0.0.1" and line["duration_ms"] > 0
        assert line["time"].endswith("+00:00")
    assert posts[1]["code"] == "Unauthorized" and "code" not in posts[0]
    assert any(line["path"] == "/readyz" for line in lines)
