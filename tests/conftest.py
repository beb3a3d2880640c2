"""Fixtures shared by the whole suite: generated image files, small projects."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import CliServer, png_bytes

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
