"""The service against hostile and unlucky clients (issue 33, findings 2-5 and 10).

Every probe runs a real ``jupyter-imgclass serve`` process (or a real uvicorn thread) on
127.0.0.1 and real sockets; every loop is bounded in count and time.
"""

from __future__ import annotations

import http.client
import io
import json
import resource
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import requests
from helpers import CliServer, image_bytes, small_cnn_weights
from PIL import Image

from jupyter_imgclass import models
from jupyter_imgclass.errors import ImgClassError
from jupyter_imgclass.publish.bundle import export_bundle, load_model
from jupyter_imgclass.publish.serve import GuardLimits, create_app, serve_in_background

NAME = "pets-v1"
URL = f"/classify/iterations/{NAME}/image"
KEY = "k-" + "7" * 30
PICTURE = image_bytes(5, size=(40, 30))


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return export_bundle(
        tmp_path_factory.mktemp("hostile") / "pets",
        model_name="small_cnn",
        tags=["cat", "dog"],
        kind="multiclass",
        weights=small_cnn_weights(2),
        preprocessing=models.get("small_cnn").to_json(),
        published_name=NAME,
        project_name="pets",
    )


@pytest.fixture(scope="module")
def model(bundle):
    return load_model(bundle)


class Served(CliServer):
    """``jupyter-imgclass serve`` in a child process whose memory can be read."""

    def rss_kb(self, field: str = "VmRSS") -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise AssertionError(field)


@pytest.fixture
def serve(bundle, tmp_path):
    started = []

    def start(*args, **kwargs) -> Served:
        server = Served([bundle, *args], tmp_path / f"serve{len(started)}.log", **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def flat_png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (90, 120, 200)).save(buf, "PNG", optimize=False)
    return buf.getvalue()


# ------------------------------------------------------------------ memory (finding 2)


def test_sixteen_concurrent_49_mp_pngs_do_not_grow_the_server(serve, capsys):
    huge = flat_png(7000, 7000)
    assert len(huge) < 400_000  # a small file of 49 MP
    server = serve(env={"IMGCLASS_DECODE_MEMORY_MB": "512"})
    for _ in range(3):  # warm: compile and allocate what every request needs
        assert httpx.post(server.url + URL, content=PICTURE, timeout=60).status_code == 200
    before = server.rss_kb()

    def post(_):
        r = httpx.post(server.url + URL, content=huge, timeout=120)
        return r.status_code, r.json()["code"]

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(post, range(16)))
    grown_mb = (server.rss_kb("VmHWM") - before) / 1024
    assert answers == [(413, "BadRequestImageDimensions")] * 16
    with capsys.disabled():
        print(f"\n[serve] 16 concurrent 49 MP PNGs: 16 x 413, peak RSS growth {grown_mb:.0f} MB")
    assert grown_mb < 200


def test_concurrent_large_pngs_under_the_limit_share_one_decode_budget(serve, capsys):
    """20 MP PNGs are accepted, but 16 at once decode within the shared 400 MB budget."""
    big = flat_png(5000, 4000)
    server = serve(env={"IMGCLASS_DECODE_MEMORY_MB": "400"})
    assert httpx.post(server.url + URL, content=PICTURE, timeout=60).status_code == 200
    before = server.rss_kb()
    with ThreadPoolExecutor(16) as pool:
        answers = pool.map(
            lambda _: httpx.post(server.url + URL, content=big, timeout=300), range(16)
        )
        codes = [r.status_code for r in answers]
    grown_mb = (server.rss_kb("VmHWM") - before) / 1024
    assert codes == [200] * 16
    with capsys.disabled():
        print(f"\n[serve] 16 concurrent 20 MP PNGs: peak RSS growth {grown_mb:.0f} MB (budget 400)")
    assert grown_mb < 400 + 250  # the budget plus allocator slack, not 16 x 240 MB


def test_a_200_mp_phone_jpeg_is_accepted_and_cheap(serve):
    buf = io.BytesIO()
    Image.new("RGB", (16320, 12240), (10, 200, 30)).save(buf, "JPEG", quality=50)
    server = serve("--key", KEY)
    before = server.rss_kb()
    r = httpx.post(
        server.url + URL, content=buf.getvalue(), headers={"Prediction-Key": KEY}, timeout=120
    )
    assert r.status_code == 200, r.text
    assert (server.rss_kb("VmHWM") - before) / 1024 < 300


# ------------------------------------------------------------- slow clients (finding 3)


def test_1100_slow_sockets_under_a_1024_file_limit_do_not_block_real_clients(serve, capsys):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1400:
        pytest.skip(f"this test process may open only {hard} files")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1400), hard))
    server = serve(nofile=1024)
    slow = []
    try:
        for _ in range(1100):  # bounded: 1,100 sockets, each a few bytes of a request head
            s = socket.socket()
            s.settimeout(5)
            try:
                s.connect(("127.0.0.1", server.port))
                s.sendall(b"POST " + URL.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            except OSError:
                pass  # the server closed an old one meanwhile: still counts as sent
            slow.append(s)
        answered = 0
        url, raw = server.url + URL, {"Content-Type": "application/octet-stream"}
        clients = {
            "httpx": lambda: httpx.post(url, content=PICTURE, headers=raw, timeout=8).status_code,
            "requests": lambda: requests.post(url, PICTURE, headers=raw, timeout=8).status_code,
            "urllib": lambda: urllib.request.urlopen(
                urllib.request.Request(url, data=PICTURE, headers=raw), timeout=8
            ).status,
            "curl": lambda: int(subprocess.run(
                ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "8",
                 "-H", "Content-Type: application/octet-stream", "--data-binary", "@-", url],
                input=PICTURE, capture_output=True, timeout=20,
            ).stdout or 0),
        }  # fmt: skip
        results = {}
        for name, call in clients.items():
            for _ in range(3):
                try:
                    status = call()
                except Exception as exc:  # a refused or reset request is what we count
                    status = type(exc).__name__
                results.setdefault(name, []).append(status)
                answered += status == 200
        with capsys.disabled():
            print(f"\n[serve] 1,100 slow sockets, ulimit -n 1024: {answered}/12 answered")
        assert answered == 12, results
        assert server.proc.poll() is None
    finally:
        for s in slow:
            s.close()


def test_header_and_body_timeouts_close_slow_clients(model):
    limits = GuardLimits(header_timeout_s=1.0, body_idle_s=1.0, body_total_s=3.0)
    with serve_in_background(model, limits=limits) as srv:
        head = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        head.sendall(b"POST " + URL.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        started = time.monotonic()
        assert head.recv(100) == b""  # closed by the server
        assert time.monotonic() - started < 5
        body = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        body.sendall(
            b"POST " + URL.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/octet-stream\r\nContent-Length: 5000\r\n\r\n" + b"x" * 10
        )
        started = time.monotonic()
        reply = b""
        while chunk := body.recv(4096):  # ends when the server closes
            reply += chunk
        assert time.monotonic() - started < 5
        assert b" 200 " not in reply
        ok = httpx.post(srv.url + URL, content=PICTURE, timeout=30)
        assert ok.status_code == 200
        head.close()
        body.close()


def test_keyless_request_is_answered_after_a_small_part_of_its_body(serve):
    server = serve("--key", KEY)
    s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    s.sendall(
        b"POST " + URL.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/octet-stream\r\nContent-Length: 5000000\r\n\r\n"
        + b"\0"
        * 100_000
    )
    s.settimeout(10)
    reply = b""
    while b"}" not in reply:  # the answer comes before the other 4.9 MB are sent
        chunk = s.recv(4096)
        assert chunk, reply
        reply += chunk
    assert reply.startswith(b"HTTP/1.1 401"), reply[:200]
    assert b'"code":"Unauthorized"' in reply
    s.close()


def test_every_client_gets_the_401_for_a_large_keyless_body(serve):
    server = serve("--key", KEY)
    body = b"\xff\xd8\xff" + b"\0" * 5_000_000
    url = server.url + URL
    r = requests.post(url, data=body, timeout=60)
    assert r.status_code == 401 and r.json()["code"] == "Unauthorized"
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=60)
    assert info.value.code == 401 and json.loads(info.value.read())["code"] == "Unauthorized"
    out = subprocess.run(
        ["curl", "-s", "--max-time", "30", "--data-binary", "@-", url],
        input=body, capture_output=True, timeout=60,
    )  # fmt: skip
    assert json.loads(out.stdout)["code"] == "Unauthorized"
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    conn.request("POST", URL, body=body, headers={"Prediction-Key": "wrong"})
    answer = conn.getresponse()
    assert answer.status == 403 and json.loads(answer.read())["code"] == "Forbidden"


# ------------------------------------------------------------------ browsers (finding 4)


def _form(image: bytes) -> tuple[bytes, str]:
    boundary = "----webkitformboundary7MA4YWxkTrZu0gW"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="imageData"; '
            f'filename="x.png"\r\nContent-Type: image/png\r\n\r\n'
        ).encode()
        + image
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def test_cross_origin_post_to_a_keyless_project_server_is_refused_and_nothing_kept(tmp_path):
    from helpers import small_cnn_iteration

    import jupyter_imgclass as ic

    project = ic.Project.create(tmp_path / "proj")
    project.create_tag("red")
    project.create_tag("green")
    iteration = small_cnn_iteration(project)
    body, ctype = _form(PICTURE)
    with iteration.serve(port=0) as srv:
        evil = httpx.post(
            srv.routes["short"],
            content=body,
            headers={"Content-Type": ctype, "Origin": "http://evil.example"},
            timeout=30,
        )
        rebound = httpx.post(
            srv.routes["short"], content=body, headers={"Content-Type": ctype,
            "Host": "attacker.example:8000"}, timeout=30,
        )  # fmt: skip
        same = httpx.post(
            srv.routes["short"],
            content=body,
            headers={"Content-Type": ctype, "Origin": srv.url},
            timeout=30,
        )
    assert evil.status_code == 403 and "cross-origin" in evil.json()["message"]
    assert rebound.status_code == 403 and "Host" in rebound.json()["message"]
    assert same.status_code == 200
    time.sleep(0.5)  # the kept image of the allowed request is written after its answer
    assert len(project.served_images()) == 1  # only the same-origin one
    project.close()


def test_cors_allows_only_the_named_origin(serve):
    server = serve("--cors", "https://app.example.com")
    ok = httpx.post(
        server.url + URL, content=PICTURE, headers={"Origin": "https://app.example.com"}
    )
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == "https://app.example.com"
    pre = httpx.options(
        server.url + URL,
        headers={
            "Origin": "https://app.example.com",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "prediction-key,content-type",
        },
    )
    assert pre.status_code == 200
    other = httpx.post(server.url + URL, content=PICTURE, headers={"Origin": "https://x.example"})
    assert other.status_code == 403


# ------------------------------------------------------------------ the rest (finding 10)


def test_a_cors_origin_without_a_scheme_is_refused_at_start(model):
    with pytest.raises(ImgClassError, match="scheme://host"):
        create_app(model, cors_origins=["app.example.com"])
    with pytest.raises(ImgClassError, match="no path"):
        create_app(model, cors_origins=["https://app.example.com/page"])


def test_key_file_and_environment_keep_the_key_off_the_command_line(serve, tmp_path):
    key_file = tmp_path / "key.txt"
    key_file.write_text(KEY + "\n")
    server = serve("--key-file", key_file)
    assert KEY not in Path(f"/proc/{server.proc.pid}/cmdline").read_text()
    assert httpx.post(server.url + URL, content=PICTURE).status_code == 401
    ok = httpx.post(server.url + URL, content=PICTURE, headers={"Prediction-Key": KEY})
    assert ok.status_code == 200
    by_env = serve(env={"IMGCLASS_PREDICTION_KEY": KEY})
    assert httpx.post(by_env.url + URL, content=PICTURE).status_code == 401
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    done = subprocess.run(
        [sys.executable, "-m", "jupyter_imgclass.cli", "serve", "x", "--key-file", str(empty)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and "is empty" in done.stderr


def test_access_log_has_no_query_strings(serve):
    server = serve()
    httpx.post(server.url + URL + "?Prediction-Key=topsecret", content=PICTURE)
    time.sleep(0.5)
    log = server.log.read_text()
    assert URL in log and "topsecret" not in log


class _Broken:
    tags, input_size, published_name, kind = ["a", "b"], 8, NAME, "multiclass"

    def predict_arrays(self, images):
        raise RuntimeError("cannot open /srv/private/weights.bin")


def test_500_answers_do_not_echo_the_exception(caplog):
    with serve_in_background(_Broken()) as srv:
        r = httpx.post(srv.url + URL, content=PICTURE, timeout=30)
    assert r.status_code == 500 and r.json()["code"] == "InternalServerError"
    assert "private" not in r.text and "incident" in r.json()["message"]
    assert "/srv/private/weights.bin" in caplog.text


def test_a_5000_character_multipart_boundary_is_a_400(model):
    boundary = "b" * 5000
    body = f'--{boundary}\r\nContent-Disposition: form-data; name="imageData"\r\n\r\n'.encode()
    body += PICTURE + f"\r\n--{boundary}--\r\n".encode()
    with serve_in_background(model) as srv:
        r = httpx.post(
            srv.url + URL,
            content=body,
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
    assert r.status_code == 400 and "boundary" in r.json()["message"]


def test_create_app_in_test_client_still_answers_without_a_host_check(model):
    from fastapi.testclient import TestClient

    with TestClient(create_app(model)) as client:
        assert client.post(URL, content=PICTURE).status_code == 200
        predictions = client.post(URL, content=PICTURE).json()["predictions"]
        assert np.isclose(sum(p["probability"] for p in predictions), 1.0)
