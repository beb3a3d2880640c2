"""Built-in sources: digits, Fashion-MNIST from Debian's files, folder trees."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

import jupyter_imgclass as ic
from jupyter_imgclass import datasets


def test_digits_are_real_rgb_images():
    ds = datasets.digits()
    assert len(ds) == 1797 and ds.images.shape == (1797, 32, 32, 3)
    assert ds.images.dtype == np.uint8 and ds.tags == [str(d) for d in range(10)]
    sub = ds.subset(5, seed=1)
    assert np.bincount(sub.labels).tolist() == [5] * 10
    assert datasets.digits().subset(5, seed=1).labels.tolist() == sub.labels.tolist()


def test_fashion_mnist_subset_is_stratified():
    ds = datasets.fashion_mnist(n_per_class=3, split="test")
    assert ds.images.shape == (30, 28, 28, 3)
    assert np.bincount(ds.labels).tolist() == [3] * 10
    assert ds.tags[0] == "T-shirt/top" and ds.tags[-1] == "Ankle boot"


def test_fashion_mnist_missing_or_damaged_files(tmp_path, monkeypatch):
    monkeypatch.setenv("IMGCLASS_FASHION_MNIST_DIR", str(tmp_path))
    with pytest.raises(ic.DatasetError, match="apt-get install dataset-fashion-mnist"):
        datasets.fashion_mnist()
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x03junk"))
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(ic.DatasetError, match="damaged|IDX"):
        datasets.fashion_mnist(split="test")
    with pytest.raises(ic.DatasetError, match="split"):
        datasets.fashion_mnist(split="validation")


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
    project.close()
