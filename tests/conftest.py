"""Fixtures shared by the whole suite: generated image files, small projects."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import png_bytes

# Tests must never touch the user's caches: JAX's compilation cache goes to a temp folder.
os.environ.setdefault(
    "IMGCLASS_JAX_CACHE", str(Path(os.environ.get("TMPDIR", "/tmp")) / "imgclass-test-jax-cache")
)


@pytest.fixture
def make_png():
    return png_bytes


@pytest.fixture
def colour_folder(tmp_path: Path) -> Path:
    """``root/<tag>/*.png``: red, green and blue, 6 distinct images each."""
    root = tmp_path / "photos"
    colours = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}
    for k, (tag, colour) in enumerate(colours.items()):
        (root / tag).mkdir(parents=True)
        for i in range(6):
            (root / tag / f"{tag}_{i}.png").write_bytes(png_bytes(colour, seed=100 * k + i))
    return root


class CliServer:
    """A ``jupyter-imgclass serve ...`` process on a free loopback port, its output in a
    file; ``url`` once ``/health`` answers."""

    def __init__(self, args, log: Path, timeout_s: float = 120):
        import socket
        import subprocess
        import sys
        import time

        import httpx

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.log = log
        with open(log, "w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "jupyter_imgclass.cli", "serve", *map(str, args),
                 "--port", str(port)],
                stdout=out, stderr=subprocess.STDOUT, text=True,
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


@pytest.fixture(scope="module")
def cli_server(tmp_path_factory):
    """``cli_server(args)`` starts ``jupyter-imgclass serve *args``; each one stops when
    the test module ends."""
    started = []

    def start(args) -> CliServer:
        server = CliServer(args, tmp_path_factory.mktemp("serve") / "serve.log")
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
