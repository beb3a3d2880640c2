"""Built-in image sources that need no network.

- :func:`digits`: scikit-learn's 8x8 handwritten digits, upscaled to real RGB images.
- :func:`fashion_mnist`: Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package.
- :func:`from_folder`: any ``root/<tag>/*.jpg`` tree.

Each returns a :class:`Dataset` that can fill a project (:meth:`Dataset.to_project`) or
write a folder tree (:meth:`Dataset.write_folder`).

Examples:
    >>> ds = digits().subset(2, seed=0)
    >>> len(ds), ds.tags[:3]
    (20, ['0', '1', '2'])
"""

from __future__ import annotations

import gzip
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .errors import DatasetError

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_TAGS = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip


@dataclass
class Dataset:
    """Images with tag labels, in memory (``images``) or on disk (``paths``).

    Attributes:
        name: where it came from.
        tags: tag names; ``labels`` index into it.
        labels: int tag index per image.
        images: uint8 ``[N, H, W, 3]`` or None.
        paths: file paths or None.
    """

    name: str
    tags: list[str]
    labels: np.ndarray
    images: np.ndarray | None = None
    paths: list[Path] | None = field(default=None)

    def __len__(self) -> int:
        return int(len(self.labels))

    def __repr__(self) -> str:
        return f"Dataset({self.name!r}, {len(self)} images, {len(self.tags)} tags)"

    def subset(self, n_per_class: int, seed: int = 0) -> Dataset:
        """A stratified random subset with at most ``n_per_class`` images per tag."""
        rng = np.random.default_rng(seed)
        keep = []
        for k in range(len(self.tags)):
            members = np.flatnonzero(self.labels == k)
            keep += rng.permutation(members)[:n_per_class].tolist()
        keep = np.array(sorted(keep), np.int64)
        return Dataset(
            self.name,
            list(self.tags),
            self.labels[keep],
            None if self.images is None else self.images[keep],
            None if self.paths is None else [self.paths[i] for i in keep],
        )

    def items(self) -> list[Any]:
        """The images as arrays or paths, ready for ``Project.add_images``."""
        if self.images is not None:
            return list(self.images)
        return list(self.paths or [])

    def to_project(self, project: Any):
        """Adds every image to ``project`` with its tag; returns the import report."""
        return project.add_images(self.items(), tags=[[self.tags[i]] for i in self.labels])

    def write_folder(self, path: str | os.PathLike) -> Path:
        """Writes ``path/<tag>/<n>.png`` (tag names made safe for file systems)."""
        root = Path(path)
        for k, label in enumerate(self.labels):
            folder = root / safe_folder_name(self.tags[int(label)])
            folder.mkdir(parents=True, exist_ok=True)
            if self.images is not None:
                Image.fromarray(self.images[k]).save(folder / f"{k:05d}.png")
            else:
                src = Path(self.paths[k])
                (folder / f"{k:05d}{src.suffix.lower()}").write_bytes(src.read_bytes())
        return root


def safe_folder_name(tag: str) -> str:
    """A tag name usable as one folder name (``T-shirt/top`` -> ``T-shirt_top``)."""
    name = re.sub(r"[/\\:\x00-\x1f]", "_", tag).strip(" .")
    return name or "_"


def digits(size: int = 32) -> Dataset:
    """scikit-learn's 1,797 handwritten digits as ``size x size`` RGB images."""
    from sklearn.datasets import load_digits

    raw = load_digits()
    small = (raw.images / 16.0 * 255.0).astype(np.uint8)
    images = np.stack(
        [
            np.asarray(Image.fromarray(im).resize((size, size), Image.Resampling.BILINEAR))
            for im in small
        ]
    )
    images = np.repeat(images[..., None], 3, axis=3)
    return Dataset("digits", [str(d) for d in range(10)], raw.target.astype(np.int64), images)


def _read_idx(path: Path, expect_dims: int) -> np.ndarray:
    try:
        with gzip.open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        raise
    except (OSError, EOFError) as exc:
        raise DatasetError(f"{path}: damaged Fashion-MNIST file ({exc})") from None
    if len(data) < 4 + 4 * expect_dims:
        raise DatasetError(f"{path}: damaged Fashion-MNIST file (too short)")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08 or ndim != expect_dims:
        raise DatasetError(f"{path}: not an IDX uint8 file with {expect_dims} dimensions")
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    body = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DatasetError(f"{path}: damaged Fashion-MNIST file (size does not match header)")
    return body.reshape(dims)


def fashion_mnist(
    n_per_class: int | None = None, split: str = "train", seed: int = 0, *, rgb: bool = True
) -> Dataset:
    """Fashion-MNIST (28x28) from the Debian package files, no network.

    Args:
        n_per_class: stratified subsample size per tag (None: all).
        split: ``"train"`` (60,000) or ``"test"`` (10,000).
        seed: subsampling seed.
        rgb: repeat the grey channel to RGB (as user photos are).

    Raises:
        DatasetError: when the files are missing (with the command that installs them).
    """
    if split not in ("train", "test"):
        raise DatasetError(f"split {split!r}: choose 'train' or 'test'")
    root = Path(os.environ.get("IMGCLASS_FASHION_MNIST_DIR", FASHION_MNIST_DIR))
    prefix = "train" if split == "train" else "t10k"
    img_path = root / f"{prefix}-images-idx3-ubyte.gz"
    lbl_path = root / f"{prefix}-labels-idx1-ubyte.gz"
    try:
        images = _read_idx(img_path, 3)
        labels = _read_idx(lbl_path, 1).astype(np.int64)
    except FileNotFoundError:
        raise DatasetError(
            f"Fashion-MNIST not found in {root}; install it with "
            "`sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu) or set "
            "IMGCLASS_FASHION_MNIST_DIR to a folder holding the four .gz files"
        ) from None
    if len(images) != len(labels):
        raise DatasetError(f"{root}: image and label files disagree in length")
    if rgb:
        images = np.repeat(images[..., None], 3, axis=3)
    ds = Dataset(f"fashion_mnist-{split}", list(FASHION_MNIST_TAGS), labels, images)
    return ds if n_per_class is None else ds.subset(n_per_class, seed=seed)


def from_folder(path: str | os.PathLike) -> Dataset:
    """A ``root/<tag>/*`` tree as a dataset of paths (hidden files skipped)."""
    root = Path(path)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder")
    tags = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    paths, labels = [], []
    for k, tag in enumerate(tags):
        for f in sorted((root / tag).rglob("*")):
            if f.is_file() and not any(part.startswith(".") for part in f.relative_to(root).parts):
                paths.append(f)
                labels.append(k)
    return Dataset(f"folder:{root}", tags, np.array(labels, np.int64), None, paths)
