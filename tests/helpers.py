"""Small helpers several test folders share (``tests/`` is on ``sys.path``: the root
conftest lives there)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

from jupyter_imgclass import models


def png_bytes(
    color: tuple[int, int, int], size: tuple[int, int] = (24, 16), seed: int = 0
) -> bytes:
    """A small PNG with a solid colour plus seeded noise, so every call is a distinct file."""
    rng = np.random.default_rng(seed)
    arr = np.empty((size[1], size[0], 3), np.uint8)
    arr[:] = color
    arr = np.clip(arr.astype(int) + rng.integers(-20, 20, arr.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def small_cnn_weights(num_classes: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded random small_cnn weights, flat as training.fit returns them."""
    from flax import nnx

    from jupyter_imgclass.models.weights import model_to_weights

    spec = models.get("small_cnn")
    module = spec.create(num_classes, rngs=nnx.Rngs(seed), pretrained=False)
    return model_to_weights(module)


def small_cnn_bundle(folder: Path, tags, **metadata) -> Path:
    """A bundle of seeded random small_cnn weights for ``tags`` (names, or hosted-style
    ``{"id", "name"}`` dicts), multiclass; ``metadata`` goes to ``export_bundle``."""
    from jupyter_imgclass.publish.bundle import export_bundle

    return export_bundle(
        folder,
        model_name="small_cnn",
        tags=list(tags),
        kind="multiclass",
        weights=small_cnn_weights(len(tags)),
        preprocessing=models.get("small_cnn").to_json(),
        **metadata,
    )


def image_bytes(seed: int, size=(40, 30), fmt: str = "PNG") -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, fmt)
    return buf.getvalue()


def small_cnn_iteration(project, tags=("red", "green")):
    """An Iteration of ``project`` (whose tags exist) with random small_cnn weights, as
    training would leave it: no training needed to export or serve it."""
    from safetensors.numpy import save_file

    from jupyter_imgclass.project import Iteration

    row = {
        "number": 1,
        "name": "Iteration1",
        "status": "done",
        "model": "small_cnn",
        "budget": "quick",
        "config": {"classes": list(tags), "kind": "multiclass", "threshold": 0.5},
        "metrics": {},
    }
    iteration = Iteration(project, row)
    iteration.folder.mkdir(parents=True)
    save_file(small_cnn_weights(len(tags)), str(iteration.folder / "weights.safetensors"))
    return iteration


def run_cli(*args, timeout: float = 300):
    """``jupyter-imgclass *args`` in a child process: the ``CompletedProcess`` with text
    stdout and stderr."""
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "jupyter_imgclass.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def terminate(proc, timeout: float = 10) -> None:
    """Ends a child process: SIGTERM, then SIGKILL when it has not exited in ``timeout``."""
    import subprocess

    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class CliServer:
    """A ``jupyter-imgclass serve ...`` process on a free loopback port, its output in a
    file; ``url`` once ``/health`` answers. ``env`` adds variables; ``nofile`` sets the
    child's file limit (``ulimit -n``, set in the child: this process runs threads)."""

    START = (
        "import resource, runpy, sys\n"
        "n = int(sys.argv.pop(1))\n"
        "if n: resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))\n"
        "sys.argv = ['jupyter-imgclass', *sys.argv[1:]]\n"
        "runpy.run_module('jupyter_imgclass.cli', run_name='__main__')\n"
    )

    def __init__(self, args, log: Path, timeout_s: float = 120, *, env=None, nofile=0):
        import socket
        import subprocess
        import sys
        import time

        import httpx

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.log = log
        self.port = port
        with open(log, "w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", self.START, str(int(nofile)), "serve",
                 *map(str, args), "--port", str(port)],
                stdout=out, stderr=subprocess.STDOUT, text=True,
                env={**os.environ, **(env or {})},
            )  # fmt: skip
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"server did not start:\n{log.read_text()}")
            time.sleep(0.2)

    @property
    def output(self) -> str:
        return self.log.read_text()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
