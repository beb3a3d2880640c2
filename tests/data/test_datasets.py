"""Built-in sources: digits, Fashion-MNIST from Debian's files, folder trees."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import jupyter_imgclass as ic
from jupyter_imgclass import datasets


def write_idx(path: Path, array: np.ndarray, *, compress: bool = True) -> None:
    """Writes ``array`` (uint8) in the IDX format MNIST files use."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(
        ">" + "I" * array.ndim, *array.shape
    )
    data = header + np.ascontiguousarray(array, np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


@pytest.fixture
def tiny_fashion(tmp_path, monkeypatch) -> Path:
    """A Fashion-MNIST look-alike: 7 test images per tag, pixel value = 10 * tag + index."""
    root = tmp_path / "fm"
    root.mkdir()
    labels = np.repeat(np.arange(10, dtype=np.uint8), 7)
    images = np.zeros((70, 28, 28), np.uint8)
    for k, label in enumerate(labels):
        images[k] = 10 * label + k % 7
    write_idx(root / "t10k-images-idx3-ubyte.gz", images)
    write_idx(root / "t10k-labels-idx1-ubyte.gz", labels)
    monkeypatch.setenv("IMGCLASS_FASHION_MNIST_DIR", str(root))
    return root


def test_digits_are_real_rgb_images():
    ds = datasets.digits()
    assert len(ds) == 1797 and ds.images.shape == (1797, 32, 32, 3)
    assert ds.images.dtype == np.uint8 and ds.tags == [str(d) for d in range(10)]
    assert ds.labels.dtype.kind == "i" and set(ds.labels.tolist()) == set(range(10))
    assert ds.images.max() > 200 and ds.images.min() == 0  # real contrast, not 0..16
    assert np.array_equal(ds.images[..., 0], ds.images[..., 2])  # grey as RGB
    assert ds.paths is None and "digits" in repr(ds)
    sub = ds.subset(5, seed=1)
    assert np.bincount(sub.labels).tolist() == [5] * 10
    assert datasets.digits().subset(5, seed=1).labels.tolist() == sub.labels.tolist()
    assert datasets.digits().subset(5, seed=2).images.tobytes() != sub.images.tobytes()
    assert datasets.digits(size=16).images.shape[1:] == (16, 16, 3)


def test_fashion_mnist_subset_is_stratified():
    ds = datasets.fashion_mnist(n_per_class=3, split="test")
    assert ds.images.shape == (30, 28, 28, 3) and ds.images.dtype == np.uint8
    assert np.bincount(ds.labels).tolist() == [3] * 10
    assert ds.tags == [
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ]  # fmt: skip
    again = datasets.fashion_mnist(n_per_class=3, split="test", seed=0)
    assert np.array_equal(again.images, ds.images)  # seeded
    train = datasets.fashion_mnist(n_per_class=2)
    assert len(train) == 20 and train.name == "fashion_mnist-train"


def test_fashion_mnist_from_another_folder(tiny_fashion):
    full = datasets.fashion_mnist(split="test", rgb=False)
    assert full.images.shape == (70, 28, 28) and len(full) == 70
    ds = datasets.fashion_mnist(n_per_class=3, split="test", seed=4)
    assert np.bincount(ds.labels).tolist() == [3] * 10
    for image, label in zip(ds.images, ds.labels, strict=True):
        assert image[0, 0, 0] // 10 == label  # images stay paired with their labels
    assert len(datasets.fashion_mnist(n_per_class=50, split="test")) == 70  # all there are


def test_fashion_mnist_missing_files_say_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("IMGCLASS_FASHION_MNIST_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(ic.DatasetError, match="apt-get install dataset-fashion-mnist") as info:
        datasets.fashion_mnist()
    assert "IMGCLASS_FASHION_MNIST_DIR" in str(info.value)
    with pytest.raises(ic.DatasetError, match="split"):
        datasets.fashion_mnist(split="validation")


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda p: p.write_bytes(b"not gzip at all"), "damaged"),
        (lambda p: p.write_bytes(p.read_bytes()[:-40]), "damaged"),  # cut-off gzip
        (lambda p: p.write_bytes(gzip.compress(b"\x00\x00\x08\x03junk")), "damaged"),
        (lambda p: p.write_bytes(gzip.compress(b"\x00\x00\x0d\x03" + b"\x00" * 40)), "IDX"),
        (lambda p: p.write_bytes(gzip.compress(gzip.decompress(p.read_bytes())[:-5])), "header"),
        (lambda p: write_idx(p, np.zeros((69, 28, 28), np.uint8)), "70 labels"),
    ],
)
def test_fashion_mnist_damaged_files(tiny_fashion, damage, reason):
    damage(tiny_fashion / "t10k-images-idx3-ubyte.gz")
    with pytest.raises(ic.DatasetError, match=reason):
        datasets.fashion_mnist(split="test")


def test_fashion_mnist_bad_labels(tiny_fashion):
    write_idx(tiny_fashion / "t10k-labels-idx1-ubyte.gz", np.full(70, 12, np.uint8))
    with pytest.raises(ic.DatasetError, match="label 12"):
        datasets.fashion_mnist(split="test")


def test_write_folder_round_trip_with_from_folder(tmp_path):
    ds = datasets.digits(size=12).subset(2, seed=3)
    ds.tags = ["T-shirt/top", "a:b", "..", "a_b", "A_B", "é 猫", "6", "7", "8", "9"]
    root = ds.write_folder(tmp_path / "tree")
    folders = sorted(p.name for p in root.iterdir())
    assert folders == sorted(["T-shirt_top", "a_b", "_", "a_b-2", "A_B-3", "é 猫"] + list("6789"))
    (root / "6" / "notes.txt").write_text("not an image")
    (root / "6" / ".hidden.png").write_bytes(b"")
    (root / ".git").mkdir()
    (root / ".git" / "x.png").write_bytes(b"")
    (root / "empty-tag").mkdir()
    back = datasets.from_folder(root)
    assert len(back) == 20 and back.images is None and len(back.paths) == 20
    assert "empty-tag" not in back.tags and len(back.tags) == 10
    folder_of = {
        old: Path(root / f) for old, f in zip(ds.tags, datasets._folder_names(ds.tags), strict=True)
    }
    for image, label in zip(ds.images, ds.labels, strict=True):  # pixels survive the trip
        folder = folder_of[ds.tags[label]].name
        matches = [
            p
            for p, lab in zip(back.paths, back.labels, strict=True)
            if back.tags[lab] == folder and np.array_equal(np.asarray(Image.open(p)), image)
        ]
        assert len(matches) == 1
    copy = back.subset(1).write_folder(tmp_path / "copy")  # path datasets copy bytes
    assert len(datasets.from_folder(copy)) == 10


def test_from_folder_errors(tmp_path):
    with pytest.raises(ic.DatasetError, match="not a folder"):
        datasets.from_folder(tmp_path / "missing")
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    with pytest.raises(ic.DatasetError, match="no images"):
        datasets.from_folder(tmp_path / "empty")


def test_safe_folder_names():
    assert datasets.safe_folder_name("T-shirt/top") == "T-shirt_top"
    assert datasets.safe_folder_name(' a<b>c"d|e?f*g\\h ') == "a_b_c_d_e_f_g_h"
    assert datasets.safe_folder_name("...") == "_" and datasets.safe_folder_name("") == "_"
    assert len(datasets.safe_folder_name("x" * 500)) == 120


def test_write_folder_round_trip_into_a_project(tmp_path):
    ds = datasets.fashion_mnist(n_per_class=2, split="test")
    root = ds.write_folder(tmp_path / "tree")
    assert (root / "T-shirt_top").is_dir()
    back = datasets.from_folder(root)
    assert len(back) == 20 and len(back.tags) == 10
    project = ic.Project.create(tmp_path / "p")
    report = back.to_project(project)
    assert len(report.added) == 20
    assert project.counts()["Ankle boot"] == 2
    report = ds.subset(1).to_project(project)  # arrays: same pixels, stored as PNG
    assert len(report.duplicates) == 10  # same pixels, same PNG encoding: same hash
    report = datasets.digits().subset(1).to_project(project)  # arrays with tags
    assert len(report.added) == 10 and project.counts()["3"] == 1
    project.close()
