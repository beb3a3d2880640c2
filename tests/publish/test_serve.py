"""The REST service on a real uvicorn server on 127.0.0.1, driven by httpx."""

from __future__ import annotations

import io
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from helpers import image_bytes, small_cnn_iteration, small_cnn_weights
from PIL import Image

from jupyter_imgclass import models
from jupyter_imgclass.errors import BundleError
from jupyter_imgclass.publish.bundle import export_bundle, load_model
from jupyter_imgclass.publish.serve import create_app, serve_in_background

TAGS = [{"id": "11", "name": "cat"}, {"id": "12", "name": "dog"}, {"id": "13", "name": "fox"}]
KEY = "s3cret-key"
NAME = "pets-v1"
MAX_BODY = 200_000
MAX_PIXELS = 1_000_000


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    spec = models.get("small_cnn")
    return export_bundle(
        tmp_path_factory.mktemp("bundle") / "pets",
        model_name="small_cnn",
        tags=TAGS,
        kind="multiclass",
        weights=small_cnn_weights(len(TAGS)),
        preprocessing=spec.to_json(),
        thresholds=0.5,
        metrics={},
        published_name=NAME,
        project_name="pets",
        iteration_number=1,
    )


@pytest.fixture(scope="module")
def model(bundle):
    return load_model(bundle)


@pytest.fixture(scope="module")
def logged():
    return {"calls": [], "event": threading.Event()}


@pytest.fixture(scope="module")
def server(model, logged):
    def log_callback(body: bytes, result: dict) -> None:
        logged["calls"].append((body, result))
        logged["event"].set()

    with serve_in_background(
        model,
        key=KEY,
        max_body_bytes=MAX_BODY,
        max_pixels=MAX_PIXELS,
        log_callback=log_callback,
    ) as handle:
        yield handle


@pytest.fixture()
def client(server):
    with httpx.Client(base_url=server.url, timeout=60, headers={"Prediction-Key": KEY}) as c:
        yield c


URL = f"/classify/iterations/{NAME}/image"


def assert_error(response: httpx.Response, status: int, word: str = "") -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"code", "message"}
    assert word.lower() in body["message"].lower()


def served_probabilities(body: dict) -> dict[str, float]:
    return {p["tagName"]: p["probability"] for p in body["predictions"]}


# ---------------------------------------------------------------------------- good requests


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_raw_bytes_answer_the_hosted_shape_and_match_predict(client, model, fmt):
    data = image_bytes(1, fmt=fmt)
    r = client.post(URL, content=data, headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"id", "project", "projectName", "iteration", "created", "predictions"}
    assert body["iteration"] == NAME and body["projectName"] == "pets"
    assert body["project"] == client.get("/health").json()["project_id"]
    assert body["created"].endswith("+00:00")
    preds = body["predictions"]
    hosted = {"probability", "tagId", "tagName", "tagType"}
    assert [set(p) for p in preds] == [hosted | {"threshold", "aboveThreshold"}] * 3
    assert {p["tagType"] for p in preds} == {"Regular"}
    probs = [p["probability"] for p in preds]
    assert probs == sorted(probs, reverse=True)
    assert {(p["tagId"], p["tagName"]) for p in preds} == {(t["id"], t["name"]) for t in TAGS}
    expected = {p.tag: p.probability for p in model.predict([data])[0]}
    got = served_probabilities(body)
    assert max(abs(got[t] - expected[t]) for t in expected) <= 1e-6


def test_image_content_type_and_multipart(client):
    data = image_bytes(2)
    a = client.post(URL, content=data, headers={"Content-Type": "image/png"})
    b = client.post(URL, files={"imageData": ("x.png", data, "image/png")})
    assert a.status_code == b.status_code == 200, (a.text, b.text)
    pa, pb = served_probabilities(a.json()), served_probabilities(b.json())
    assert max(abs(pa[t] - pb[t]) for t in pa) <= 1e-6
    assert a.json()["id"] != b.json()["id"]


def test_health_and_openapi(server):
    health = httpx.get(f"{server.url}/health", timeout=30)
    assert health.status_code == 200
    assert health.json()["status"] == "ok" and health.json()["iteration"] == NAME
    schema = httpx.get(f"{server.url}/openapi.json", timeout=30).json()
    assert "/classify/iterations/{name}/image" in schema["paths"]
    assert httpx.get(f"{server.url}/docs", timeout=30).status_code == 200


def test_log_callback_gets_image_and_answer_but_not_for_nostore(client, logged):
    data = image_bytes(3)
    r = client.post(URL + "/nostore", content=data, headers={"Content-Type": "image/png"})
    assert r.status_code == 200
    logged["event"].clear()
    before = len(logged["calls"])
    r = client.post(URL, content=data, headers={"Content-Type": "image/png"})
    assert logged["event"].wait(30)
    body, result = logged["calls"][-1]
    assert len(logged["calls"]) == before + 1
    assert body == data and result["id"] == r.json()["id"]


def test_concurrent_requests_are_batched(model):
    # A long window and a batch of 8: eight concurrent requests share one model call.
    with serve_in_background(model, batch_window_s=10.0, max_batch=8) as srv:
        images = [image_bytes(100 + i) for i in range(8)]

        def post(data: bytes) -> httpx.Response:
            return httpx.post(
                f"{srv.url}{URL}",
                content=data,
                headers={"Content-Type": "image/png"},
                timeout=60,
            )

        with ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(post, images))
        assert [r.status_code for r in responses] == [200] * 8
        expected = model.predict(images)
        for r, exp in zip(responses, expected, strict=True):
            got = served_probabilities(r.json())
            assert max(abs(got[p.tag] - p.probability) for p in exp) <= 1e-6
        health = httpx.get(f"{srv.url}/health", timeout=30).json()
        assert health["images"] == 8 and health["batches"] < 8
    assert not srv.running


# ---------------------------------------------------------------------------- bad requests


def test_key_missing_wrong_and_right(server):
    data = image_bytes(4)
    headers = {"Content-Type": "image/png"}
    assert_error(httpx.post(server.url + URL, content=data, headers=headers), 401, "missing")
    wrong = {**headers, "Prediction-Key": "nope"}
    assert_error(httpx.post(server.url + URL, content=data, headers=wrong), 403, "wrong")
    right = {**headers, "Prediction-Key": KEY}
    assert httpx.post(server.url + URL, content=data, headers=right).status_code == 200


def test_bad_requests_get_json_4xx(client):
    png = {"Content-Type": "image/png"}
    assert_error(client.post(URL, content=b"", headers=png), 400, "no image")
    assert_error(client.post(URL, content=b"hello", headers={"Content-Type": "text/plain"}), 415)
    assert_error(client.post(URL, content=b"not an image at all", headers=png), 400, "image")
    truncated = image_bytes(5)[:200]
    assert_error(client.post(URL, content=truncated, headers=png), 400)
    assert_error(
        client.post("/classify/iterations/other/image", content=image_bytes(5), headers=png),
        404,
        "other",
    )
    assert_error(client.get(URL), 405)
    assert_error(client.post("/nowhere", content=b"x"), 404)
    assert_error(client.post(URL, files={"notes": (None, "text only")}), 400, "imageData")
    bad_form = {"Content-Type": "multipart/form-data; boundary=zzz"}
    r = client.post(URL, content=b"--zzz\r\nbroken", headers=bad_form)
    assert 400 <= r.status_code < 500 and set(r.json()) == {"code", "message"}


def test_too_many_pixels(client):
    buf = io.BytesIO()
    Image.new("RGB", (1200, 1000), (200, 30, 30)).save(buf, "PNG")  # 1.2 M pixels
    big = buf.getvalue()
    assert len(big) < MAX_BODY
    assert_error(
        client.post(URL, content=big, headers={"Content-Type": "image/png"}), 413, "pixels"
    )


def test_body_too_large_with_length_and_streamed(client):
    big = b"\0" * (MAX_BODY + 1)
    assert_error(client.post(URL, content=big, headers={"Content-Type": "image/png"}), 413)

    def chunks():  # no Content-Length: checked while it streams in
        for _ in range(5):
            yield b"\1" * (MAX_BODY // 4)

    assert_error(client.post(URL, content=chunks(), headers={"Content-Type": "image/png"}), 413)
    form = {"imageData": ("big.png", big, "image/png")}
    assert_error(client.post(URL, files=form), 413)


def test_random_garbage_never_breaks_the_server(client):
    rng = np.random.default_rng(1234)
    valid = image_bytes(7, fmt="PNG")
    jpeg = image_bytes(7, fmt="JPEG")
    prefixes = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"GIF89a", b"BM", b"RIFF"]
    statuses = []
    for i in range(40):
        case = i % 4
        if case == 0:  # random bytes behind a real magic number
            prefix = prefixes[rng.integers(len(prefixes))]
            body = prefix + rng.bytes(int(rng.integers(1, 3000)))
        elif case == 1:  # a real image cut short
            body = valid[: int(rng.integers(1, len(valid) // 2))]
        elif case == 2:  # a real PNG with flipped bytes (CRC-checked: refused)
            arr = bytearray(valid)
            for pos in rng.integers(8, len(arr), size=5):
                arr[pos] ^= 0xFF
            body = bytes(arr)
        else:  # a JPEG with flipped bytes: may still decode
            arr = bytearray(jpeg)
            for pos in rng.integers(20, len(arr), size=3):
                arr[pos] ^= 0xFF
            body = bytes(arr)
        r = client.post(URL, content=body, headers={"Content-Type": "application/octet-stream"})
        statuses.append(r.status_code)
        assert r.status_code == 200 or 400 <= r.status_code < 500, (i, r.status_code, r.text)
        if r.status_code != 200:
            assert set(r.json()) == {"code", "message"}
        else:
            assert len(r.json()["predictions"]) == 3
        if case in (0, 1):
            assert 400 <= r.status_code < 500, (i, len(body))
    assert sum(400 <= s < 500 for s in statuses) >= 20
    ok = client.post(URL, content=valid, headers={"Content-Type": "image/png"})
    assert ok.status_code == 200


# ---------------------------------------------------------------------------- app and handle


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_create_app_loads_a_bundle_path_in_lifespan(bundle, model):
    app = create_app(bundle)  # nothing loaded yet
    data = image_bytes(8)
    with TestClient(app) as tc:
        r = tc.post(URL, content=data, headers={"Content-Type": "image/png"})
    assert r.status_code == 200
    expected = {p.tag: p.probability for p in model.predict([data])[0]}
    got = served_probabilities(r.json())
    assert max(abs(got[t] - expected[t]) for t in expected) <= 1e-6


def test_serve_in_background_refuses_a_broken_bundle(tmp_path):
    with pytest.raises(BundleError, match="model.json"):
        serve_in_background(tmp_path)


def test_handle_stop_closes_the_port(model):
    handle = serve_in_background(model)
    assert handle.url.startswith("http://127.0.0.1:") and handle.port > 0
    assert httpx.get(f"{handle.url}/health", timeout=30).status_code == 200
    handle.stop()
    assert not handle.running
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{handle.url}/health", timeout=5)


def test_export_and_serve_a_project_iteration(tmp_path):
    """``Iteration.export`` / ``Iteration.serve``: the tags' GUIDs, prediction log."""
    from jupyter_imgclass.project import Project

    with Project.create(tmp_path / "proj") as project:
        for tag in ("red", "green"):
            project.create_tag(tag)
        iteration = small_cnn_iteration(project)
        ids = project.tag_guids()  # the hosted GUIDs, stable across reopenings
        assert all(str(uuid.UUID(g)) == g for g in ids.values())

        bundle = load_model(iteration.export(tmp_path / "bundle"))
        assert bundle.published_name == "Iteration1"
        assert bundle.tag_ids == [ids["red"], ids["green"]]
        data = image_bytes(9)
        assert bundle.predict([data]) == [iteration.predict(data)]

        with iteration.serve() as srv:
            r = httpx.post(
                f"{srv.url}/classify/iterations/Iteration1/image",
                content=data,
                headers={"Content-Type": "image/png"},
                timeout=60,
            )
        assert r.status_code == 200
        assert {p["tagId"] for p in r.json()["predictions"]} == set(ids.values())
        (logged,) = project.store.prediction_log()  # written before the server stopped
        assert logged["iteration"] == "Iteration1"
        assert logged["predictions"] == r.json()["predictions"]
