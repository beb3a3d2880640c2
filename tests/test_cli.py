"""The shell path of publishing: `jupyter-imgclass export` and `serve`, as processes."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
from PIL import Image

import jupyter_imgclass as ic

COLOURS = {"red": (220, 30, 30), "blue": (30, 40, 220)}


def _png(colour, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    arr = np.clip(np.array(colour) + rng.integers(-30, 30, (28, 28, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def trained_project(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli") / "proj"
    p = ic.Project.create(root)
    for k, (tag, colour) in enumerate(COLOURS.items()):
        p.add_images([_png(colour, 10 * k + i) for i in range(8)], tags=[tag])
    p.train(budget="advanced", model="small_cnn", epochs=2, show=False).wait(timeout=300)
    p.close()
    return root


def _cli(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "jupyter_imgclass.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_export_writes_a_bundle_that_predicts_like_the_iteration(trained_project, tmp_path):
    out = _cli("export", trained_project, "--out", tmp_path / "bundle", "--onnx")
    assert out.returncode == 0, out.stderr
    bundle = tmp_path / "bundle"
    names = {p.name for p in bundle.iterdir()}
    assert {"weights.safetensors", "model.json", "README.md"} <= names
    assert any(n.endswith(".onnx") for n in names)
    meta = json.loads((bundle / "model.json").read_text())
    assert meta["published_name"] == "Iteration1"
    model = ic.load_model(bundle)
    p = ic.Project.open(trained_project)
    image = _png(COLOURS["red"], 999)
    a = np.array([x.probability for x in p.iteration().predict(image)])
    b = np.array([x.probability for x in model.predict(image)])
    assert np.abs(a - b).max() <= 1e-6
    p.close()
    bad = _cli("export", trained_project, "--out", tmp_path / "b2", "--iteration", "7")
    assert bad.returncode == 2 and "iteration 7" in bad.stderr


def test_cli_serve_answers_and_refuses_bad_requests(trained_project):
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter_imgclass.cli", "serve", str(trained_project),
         "--port", str(port), "--key", "s3cret"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.2)
        route = url + "/classify/iterations/Iteration1/image"
        ok = httpx.post(
            route,
            content=_png(COLOURS["blue"], 5),
            headers={"Prediction-Key": "s3cret", "Content-Type": "application/octet-stream"},
        )
        assert ok.status_code == 200
        body = ok.json()
        assert body["iteration"] == "Iteration1" and body["predictions"][0]["tagName"] == "blue"
        assert httpx.post(route, content=b"x").status_code == 401
        garbage = httpx.post(
            route,
            content=b"\x89PNG garbage",
            headers={"Prediction-Key": "s3cret", "Content-Type": "application/octet-stream"},
        )
        assert garbage.status_code == 400 and "message" in garbage.json()
        assert httpx.get(url + "/health").status_code == 200  # still serving
    finally:
        proc.terminate()
        proc.wait(timeout=30)
