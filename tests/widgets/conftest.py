"""Small real projects for the widget tests (real files, real SQLite, a real training)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

import jupyter_imgclass as ic

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


def colour_images(colour, n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    base = np.array(colour, np.int16)
    return [
        np.clip(base + rng.integers(-25, 25, (20, 20, 3)), 0, 255).astype(np.uint8)
        for _ in range(n)
    ]


def png(colour, seed: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(colour_images(colour, 1, seed)[0]).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def untagged_project(tmp_path):
    """12 untagged images and the three colour tags, none used yet."""
    p = ic.Project.create(tmp_path / "untagged")
    for k, colour in enumerate(COLOURS.values()):
        p.add_images(colour_images(colour, 4, seed=k))
    for name in COLOURS:
        p.create_tag(name)
    yield p
    p.close()


@pytest.fixture(scope="session")
def trained_project(tmp_path_factory):
    """3 tags x 8 images and one small_cnn iteration (a couple of epochs on 16 px)."""
    root = tmp_path_factory.mktemp("trained") / "colours"
    p = ic.Project.create(root)
    for k, (tag, colour) in enumerate(COLOURS.items()):
        p.add_images(colour_images(colour, 8, seed=10 + k), tags=[tag])
    run = p.train(budget="advanced", model="small_cnn", epochs=2, input_size=16)
    run.wait(timeout=600)
    assert run.status == "done", run.error
    yield p
    p.close()


@pytest.fixture
def make_images():
    """``make_images(colour_name, n, seed)`` -> list of uint8 arrays."""
    return lambda name, n, seed=0: colour_images(COLOURS[name], n, seed)


@pytest.fixture
def make_png():
    """``make_png(colour_name, seed)`` -> PNG bytes."""
    return lambda name, seed=0: png(COLOURS[name], seed)
