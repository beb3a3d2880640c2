"""The hosted Custom Vision prediction API, as existing apps call it: its own Python SDK
(``azure-cognitiveservices-vision-customvision``) against a real ``jupyter-imgclass serve``
process, every route's bad requests, over-limit bodies sent by curl, requests, urllib and
httpx, and classify-by-URL against a local ``http.server``."""

from __future__ import annotations

import http.server
import json
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request

import httpx
import numpy as np
import pytest
import requests
from helpers import image_bytes, small_cnn_weights
from test_serve import TAGS

from jupyter_imgclass import models
from jupyter_imgclass.publish.bundle import export_bundle, load_model
from jupyter_imgclass.publish.serve import serve_in_background

PROJECT_ID = "0f8fad5b-d9cb-469f-a165-70867728950e"
NAME = "pets-v2"
KEY = "hosted-key"
MAX_BODY = 200_000
BIG = b"\xff\xd8\xff" + b"\0" * (12 * 1024 * 1024)  # 12 MB: over every limit here
PICTURE = image_bytes(21, size=(48, 36))


class _Files(http.server.BaseHTTPRequestHandler):
    """A tiny web server: an image, text, and redirects in and out of the allowed path."""

    def do_GET(self):  # noqa: N802 (http.server's name)
        routes = {
            "/ok/pet.png": (200, "image/png", PICTURE),
            "/ok/notes.txt": (200, "text/plain", b"this is not an image\n" * 20),
            "/ok/missing.png": (404, "text/plain", b"no"),
            "/other/pet.png": (200, "image/png", PICTURE),
        }
        if self.path == "/ok/slow":  # answers after the fetch's time limit
            time.sleep(3)
        if self.path == "/ok/trickle":  # one byte every 0.25 s: no read ever times out
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", "1000")
            self.end_headers()
            for _ in range(40):  # bounded: 10 s at most
                self.wfile.write(b"\0")
                self.wfile.flush()
                time.sleep(0.25)
            return None
        if self.path == "/ok/hop":  # a redirect that stays inside the allowed prefix
            return self._redirect("/ok/pet.png")
        if self.path == "/ok/away":  # a redirect out of it
            return self._redirect("/other/pet.png")
        status, ctype, body = routes.get(self.path, (404, "text/plain", b"no"))
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, where: str) -> None:
        self.send_response(302)
        self.send_header("Location", f"http://127.0.0.1:{self.server.server_port}{where}")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def files():
    class Quiet(http.server.ThreadingHTTPServer):
        def handle_error(self, request, client_address):
            pass  # /ok/slow writes after the fetch gave up: a broken pipe is expected

    server = Quiet(("127.0.0.1", 0), _Files)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return export_bundle(
        tmp_path_factory.mktemp("hosted") / "pets",
        model_name="small_cnn",
        tags=[*TAGS[:2], {"id": "13", "name": "nothing", "type": "Negative"}],
        kind="multiclass",
        weights=small_cnn_weights(len(TAGS), seed=3),
        preprocessing=models.get("small_cnn").to_json(),
        thresholds={"cat": 0.4, "dog": 0.6, "nothing": 0.5},
        published_name=NAME,
        project_name="pets",
        project_id=PROJECT_ID,
    )


@pytest.fixture(scope="module")
def model(bundle):
    return load_model(bundle)


@pytest.fixture(scope="module")
def served(bundle, files, cli_server):
    """``jupyter-imgclass serve BUNDLE --key ... --allow-url FILES/ok/`` in its own process."""
    server = cli_server([bundle, "--key", KEY, "--allow-url", f"{files}/ok/"])
    route = f"/customvision/v3.0/Prediction/{PROJECT_ID}/classify/iterations/{NAME}/image"
    assert route in server.output  # it prints each route's full URL
    return server.url


def _sdk(url: str, key: str = KEY):
    from azure.cognitiveservices.vision.customvision.prediction import (
        CustomVisionPredictionClient,
    )
    from msrest.authentication import ApiKeyCredentials

    return CustomVisionPredictionClient(url, ApiKeyCredentials(in_headers={"Prediction-key": key}))


def _expected(model, data: bytes) -> dict[str, float]:
    return {p.tag: p.probability for p in model.predict([data])[0]}


def _close(result, expected: dict[str, float]) -> None:
    got = {p.tag_name: p.probability for p in result.predictions}
    assert got.keys() == expected.keys()
    assert max(abs(got[t] - expected[t]) for t in got) <= 1e-6


# ---------------------------------------------------------------------------- the SDK


def test_sdk_classifies_bytes_files_and_urls(served, model, files, tmp_path):
    client = _sdk(served)
    expected = _expected(model, PICTURE)
    as_bytes = client.classify_image(PROJECT_ID, NAME, PICTURE)
    _close(as_bytes, expected)
    assert as_bytes.project == PROJECT_ID and as_bytes.iteration == NAME
    assert as_bytes.created is not None and as_bytes.id
    path = tmp_path / "pet.png"
    path.write_bytes(PICTURE)
    with open(path, "rb") as fh:
        _close(client.classify_image(PROJECT_ID, NAME, fh), expected)
    _close(client.classify_image_with_no_store(PROJECT_ID, NAME, PICTURE), expected)
    _close(client.classify_image_url(PROJECT_ID, NAME, url=f"{files}/ok/pet.png"), expected)
    _close(
        client.classify_image_url_with_no_store(PROJECT_ID, NAME, url=f"{files}/ok/hop"),
        expected,
    )
    types = {p.tag_name: p.tag_type for p in as_bytes.predictions}
    assert types == {"cat": "Regular", "dog": "Regular", "nothing": "Negative"}


def test_sdk_errors_carry_status_and_hosted_codes(served):
    from azure.cognitiveservices.vision.customvision.prediction.models import (
        CustomVisionErrorException,
    )

    cases = [
        (_sdk(served, "wrong"), PROJECT_ID, NAME, PICTURE, 403, "Forbidden"),
        (_sdk(served), "11111111-2222-4333-8444-555555555555", NAME, PICTURE, 404,
         "NotFoundProject"),
        (_sdk(served), PROJECT_ID, "Iteration9", PICTURE, 404, "NotFoundIteration"),
        (_sdk(served), PROJECT_ID, NAME, BIG, 413, "BadRequestImageSizeBytes"),
        (_sdk(served), PROJECT_ID, NAME, b"not an image", 400, "BadRequestImageFormat"),
    ]  # fmt: skip
    for client, pid, name, data, status, code in cases:
        with pytest.raises(CustomVisionErrorException) as caught:
            client.classify_image(pid, name, data)
        assert caught.value.response.status_code == status, (code, caught.value.response.text)
        assert caught.value.error.code == code and caught.value.error.message


# ---------------------------------------------------------------------------- routes


def _route(version="v3.0", prediction="Prediction", pid=PROJECT_ID, tail="image") -> str:
    return f"/customvision/{version}/{prediction}/{pid}/classify/iterations/{NAME}/{tail}"


@pytest.mark.parametrize("version", ["v3.0", "v3.1"])
@pytest.mark.parametrize("prediction", ["Prediction", "prediction"])
def test_every_version_and_case_answers(served, model, version, prediction):
    r = httpx.post(
        served + _route(version, prediction, PROJECT_ID.upper()),
        content=PICTURE,
        headers={"Prediction-Key": KEY, "Content-Type": "application/octet-stream"},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["project"] == PROJECT_ID and body["iteration"] == NAME
    got = {p["tagName"]: p for p in body["predictions"]}
    expected = _expected(model, PICTURE)
    assert max(abs(got[t]["probability"] - expected[t]) for t in expected) <= 1e-6
    assert {t: p["threshold"] for t, p in got.items()} == {"cat": 0.4, "dog": 0.6, "nothing": 0.5}
    top = body["predictions"][0]  # multiclass: only the most probable tag can pass
    assert top["aboveThreshold"] == (top["probability"] >= top["threshold"])
    assert not any(p["aboveThreshold"] for p in body["predictions"][1:])


def test_unknown_versions_and_health(served):
    headers = {"Prediction-Key": KEY, "Content-Type": "application/octet-stream"}
    for path in (_route("v2.0"), _route(prediction="PREDICTION")):
        r = httpx.post(served + path, content=PICTURE, headers=headers, timeout=30)
        assert r.status_code == 404 and r.json()["code"] == "NotFound", r.text
    health = httpx.get(served + "/health", timeout=30).json()
    assert health["project_id"] == PROJECT_ID and health["url_classification"] is True


ROUTES = [
    f"/classify/iterations/{NAME}/image",
    f"/classify/iterations/{NAME}/image/nostore",
    _route(tail="image"),
    _route("v3.1", "prediction", tail="image/nostore"),
]


@pytest.mark.parametrize("path", ROUTES)
def test_every_image_route_refuses_bad_requests(served, path):
    key = {"Prediction-Key": KEY}
    png = {**key, "Content-Type": "image/png"}
    cases = [
        (b"", png, 400, "BadRequestImageStream"),
        (b"hello", {**key, "Content-Type": "text/plain"}, 415, "UnsupportedMediaType"),
        (b"not an image at all", png, 400, "BadRequestImageFormat"),
        (PICTURE[:100], png, 400, "BadRequestImageFormat"),
        (b"\0" * (MAX_BODY * 40), png, 413, "BadRequestImageSizeBytes"),
        (PICTURE, {"Content-Type": "image/png"}, 401, "Unauthorized"),
    ]
    for body, headers, status, code in cases:
        r = httpx.post(served + path, content=body, headers=headers, timeout=60)
        assert r.status_code == status, (code, r.text)
        assert r.json()["code"] == code and r.json()["message"]
    form = httpx.post(served + path, files={"notes": (None, "text only")}, headers=key)
    assert form.status_code == 400 and "imageData" in form.json()["message"]
    nameless = httpx.post(served + path, files={"imageData": (None, PICTURE)}, headers=key)
    assert nameless.status_code == 200, nameless.text


# ---------------------------------------------------------------------------- 413 to all


def test_over_limit_bodies_reach_every_client_as_413_json(served):
    url = served + _route()
    headers = {"Prediction-Key": KEY, "Content-Type": "application/octet-stream"}
    answers = {}
    r = requests.post(url, data=BIG, headers=headers, timeout=60)
    answers["requests"] = (r.status_code, r.json()["code"])
    req = urllib.request.Request(url, data=BIG, headers=headers, method="POST")
    try:
        urllib.request.urlopen(req, timeout=60)
    except urllib.error.HTTPError as exc:
        answers["urllib"] = (exc.code, json.loads(exc.read())["code"])
    r = httpx.post(url, content=BIG, headers=headers, timeout=60)
    answers["httpx"] = (r.status_code, r.json()["code"])

    def chunks():  # no Content-Length: found out while it streams in
        for _ in range(12):
            yield b"\0" * (1024 * 1024)

    r = requests.post(url, data=chunks(), headers=headers, timeout=60)
    answers["requests, chunked"] = (r.status_code, r.json()["code"])
    curl = shutil.which("curl")
    assert curl, "curl is part of the test system (make system-test-deps)"
    for expect in ("", "Expect:"):  # with and without "Expect: 100-continue"
        out = subprocess.run(
            [curl, "-sS", "-X", "POST", "-H", f"Prediction-Key: {KEY}",
             "-H", "Content-Type: application/octet-stream", "-H", expect,
             "--data-binary", "@-", "-w", "\n%{http_code}", url],
            input=BIG, capture_output=True, timeout=60,
        )  # fmt: skip
        text, status = out.stdout.decode().rsplit("\n", 1)
        name = f"curl {expect or 'Expect: 100-continue'}"
        answers[name] = (int(status), json.loads(text)["code"])
    assert answers == {k: (413, "BadRequestImageSizeBytes") for k in answers}, answers
    assert len(answers) == 6


# ---------------------------------------------------------------------------- by URL


def test_classify_by_url_refuses_what_is_not_allowed(served, files, model):
    url = served + _route(tail="url")
    headers = {"Prediction-Key": KEY}

    def post(body) -> httpx.Response:
        return httpx.post(url, json=body, headers=headers, timeout=60)

    ok = post({"url": f"{files}/ok/pet.png"})
    assert ok.status_code == 200, ok.text
    refused = {
        "other path": ({"url": f"{files}/other/pet.png"}, 400, "BadRequestImageUrl", "allowed"),
        "redirect out": ({"url": f"{files}/ok/away"}, 400, "BadRequestImageUrl", "redirected"),
        "text": ({"url": f"{files}/ok/notes.txt"}, 400, "BadRequestImageFormat", "image"),
        "404 there": ({"url": f"{files}/ok/missing.png"}, 400, "BadRequestImageUrl", "404"),
        "file scheme": ({"url": "file:///etc/passwd"}, 400, "BadRequestImageUrl", "http"),
        "look-alike host": (
            {"url": files.replace("127.0.0.1", "127.0.0.1.example.com") + "/ok/pet.png"},
            400, "BadRequestImageUrl", "allowed",
        ),
        "userinfo": (
            {"url": files.replace("http://", "http://127.0.0.1@") + "/ok/pet.png"},
            400, "BadRequestImageUrl", "user information",
        ),
        "dot segments": ({"url": f"{files}/ok/../other/pet.png"}, 400, "BadRequestImageUrl", ".."),
        "encoded dots": (
            {"url": f"{files}/ok/%2e%2e/other/pet.png"}, 400, "BadRequestImageUrl", "encoded",
        ),
        "encoded slash": (
            {"url": f"{files}/ok/..%2fother/pet.png"}, 400, "BadRequestImageUrl", "encoded",
        ),
        "upper-case encoding": (
            {"url": f"{files}/ok/%2E%2E/other/pet.png"}, 400, "BadRequestImageUrl", "encoded",
        ),
        "backslash": ({"url": f"{files}/ok\\..\\other/pet.png"}, 400, "BadRequestImageUrl", "\\"),
        "CR LF": (
            {"url": f"{files}/ok/pet.png\r\nX-Evil: 1"}, 400, "BadRequestImageUrl", "control",
        ),
        "bad port": (
            {"url": "http://127.0.0.1:99999/ok/pet.png"}, 400, "BadRequestImageUrl", "malformed",
        ),
        "not a string": ({"url": ["http://x/"]}, 400, "BadRequestImageUrl", "json"),
        "no url": ({"link": "x"}, 400, "BadRequestImageUrl", "url"),
    }  # fmt: skip
    for case, (body, status, code, word) in refused.items():
        r = post(body)
        assert (r.status_code, r.json()["code"]) == (status, code), (case, r.text)
        assert word in r.json()["message"].lower(), (case, r.json())
    bad_json = httpx.post(url, content=b"{not json", headers=headers, timeout=30)
    assert bad_json.status_code == 400 and bad_json.json()["code"] == "BadRequestImageUrl"


def test_classify_by_url_is_off_by_default(model, files):
    with serve_in_background(model) as srv:
        path = srv.url + _route(tail="url")
        r = httpx.post(path, json={"url": f"{files}/ok/pet.png"}, timeout=30)
        assert r.status_code == 400 and "--allow-url" in r.json()["message"]
        assert httpx.get(srv.url + "/health", timeout=30).json()["url_classification"] is False
        assert srv.routes["url"] == srv.url + _route(tail="url")


def test_classify_by_url_keeps_to_its_time_size_and_pixel_limits(model, files):
    url = _route(tail="url")
    with serve_in_background(
        model, allow_urls=[f"{files}/ok/"], url_timeout_s=1.0, max_body_bytes=len(PICTURE) - 1
    ) as small:
        slow = httpx.post(small.url + url, json={"url": f"{files}/ok/slow"}, timeout=30)
        assert slow.status_code == 400, slow.text
        assert "no complete answer within 1 s" in slow.json()["message"], slow.text
        big = httpx.post(small.url + url, json={"url": f"{files}/ok/pet.png"}, timeout=30)
        assert big.status_code == 413 and big.json()["code"] == "BadRequestImageSizeBytes"
    with serve_in_background(model, allow_urls=[f"{files}/ok/"], max_pixels=100) as tiny:
        r = httpx.post(tiny.url + url, json={"url": f"{files}/ok/pet.png"}, timeout=30)
        assert r.status_code == 413 and r.json()["code"] == "BadRequestImageDimensions"


def test_slow_url_origins_cannot_starve_uploads(model, files):
    """45 fetches of a trickling origin (the probe that stalled every upload for 56 s):
    each ends at its one total deadline, they wait in their own small pool (or get a
    429), and an upload sent meanwhile is answered at once."""
    from concurrent.futures import ThreadPoolExecutor

    url = _route(tail="url")
    with serve_in_background(model, allow_urls=[f"{files}/ok/"], url_timeout_s=2.0) as srv:

        def trickle(_):
            r = httpx.post(srv.url + url, json={"url": f"{files}/ok/trickle"}, timeout=60)
            return r.status_code, r.json()["message"]

        with ThreadPoolExecutor(45) as pool:
            slow = [pool.submit(trickle, k) for k in range(45)]
            time.sleep(0.5)
            started = time.monotonic()
            upload = httpx.post(srv.url + _route(), content=PICTURE, timeout=60)
            upload_s = time.monotonic() - started
            results = [f.result() for f in slow]
    assert upload.status_code == 200, upload.text
    assert upload_s < 5, f"an upload waited {upload_s:.1f} s behind URL fetches"
    statuses = {status for status, _ in results}
    assert statuses <= {400, 429}, results
    deadline_hits = [m for status, m in results if status == 400]
    assert deadline_hits and all("no complete answer within 2 s" in m for m in deadline_hits)


def test_project_id_override_and_bundles_without_one(model, bundle, tmp_path):
    other = "22222222-3333-4444-8555-666666666666"
    with serve_in_background(model, project_id=other) as srv:
        hit = httpx.post(srv.url + _route(pid=other), content=PICTURE, timeout=30)
        miss = httpx.post(srv.url + _route(), content=PICTURE, timeout=30)
        assert hit.status_code == 200 and miss.status_code == 404
        assert miss.json()["code"] == "NotFoundProject" and other in miss.json()["message"]
    meta = json.loads((bundle / "model.json").read_text())
    old = tmp_path / "old"
    shutil.copytree(bundle, old)
    meta.pop("project_id")
    (old / "model.json").write_text(json.dumps(meta))
    first = load_model(old)
    with serve_in_background(first) as a, serve_in_background(load_model(old)) as b:
        ids = [httpx.get(s.url + "/health", timeout=30).json()["project_id"] for s in (a, b)]
    assert ids[0] == ids[1] and len(ids[0]) == 36  # derived, stable across restarts


def test_projects_get_a_stable_id_and_older_ones_one_when_opened(tmp_path):
    import uuid

    from jupyter_imgclass.project import Project

    with Project.create(tmp_path / "p") as p:
        first = p.id
    assert uuid.UUID(first)
    with Project.open(tmp_path / "p") as p:
        assert p.id == first
        with p.store.transaction() as cur:  # as a project from before ids
            cur.execute("DELETE FROM meta WHERE key = 'project_id'")
    with Project.open(tmp_path / "p") as p:
        renewed = p.id
        assert uuid.UUID(renewed) and renewed != first
    with Project.open(tmp_path / "p") as p:
        assert p.id == renewed


def test_sdk_urls_match_the_printed_routes(model):
    with serve_in_background(model, key=KEY) as srv:
        assert srv.key_required
        client = _sdk(srv.url)
        result = client.classify_image(PROJECT_ID, NAME, PICTURE)
        assert np.isclose(sum(p.probability for p in result.predictions), 1.0, atol=1e-5)
        assert srv.routes["image"].endswith(_route())
