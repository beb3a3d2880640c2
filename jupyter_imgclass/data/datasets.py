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
import importlib.util
import os
import re
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import DatasetError

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
        """A stratified random subset with at most ``n_per_class`` images per tag.

        Args:
            n_per_class: images kept per tag (all of a tag's images when it has fewer).
            seed: the same seed gives the same subset.

        Returns:
            A new :class:`Dataset` (original order kept); this one is unchanged.

        Examples:
            >>> import numpy as np
            >>> np.bincount(digits().subset(3, seed=1).labels).tolist()
            [3, 3, 3, 3, 3, 3, 3, 3, 3, 3]
        """
        if n_per_class < 0:
            raise DatasetError(f"subset(n_per_class={n_per_class}): must be 0 or more")
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
        """Adds every image to ``project`` with its tag; returns the import report.

        Calls ``project.add_images(items, tags=[[tag] for each image])``: bad images and
        duplicates are listed in the report, the rest are stored with their tag.

        Examples:
            >>> report = fashion_mnist(n_per_class=20).to_project(project)  # doctest: +SKIP
            >>> report.summary()  # doctest: +SKIP
            '200 added, 0 duplicate(s), 0 rejected'
        """
        return project.add_images(self.items(), tags=[[self.tags[i]] for i in self.labels])

    def write_folder(self, path: str | os.PathLike) -> Path:
        """Writes the images as a ``path/<tag>/<name>`` tree and returns ``path``.

        In-memory images become PNG files ``<n>.png`` (``n`` the image's index, five
        digits); path datasets copy their files byte for byte. Tag names are made safe as
        folder names (``T-shirt/top`` -> ``T-shirt_top``); two tags that would share a
        folder get ``-2``, ``-3``... suffixes. :func:`from_folder` reads the tree back.

        Examples:
            >>> import tempfile
            >>> root = digits().subset(1).write_folder(tempfile.mkdtemp())
            >>> sorted(p.name for p in root.iterdir())[:3]
            ['0', '1', '2']
        """
        from .images import encode_png

        root = Path(path)
        folders = _folder_names(self.tags)
        for folder in folders:
            (root / folder).mkdir(parents=True, exist_ok=True)
        for k, label in enumerate(self.labels):
            folder = root / folders[int(label)]
            if self.images is not None:
                data = encode_png(Image.fromarray(np.ascontiguousarray(self.images[k])))
                (folder / f"{k:05d}.png").write_bytes(data)
            else:
                src = Path(self.paths[k])
                try:
                    data = src.read_bytes()
                except OSError as exc:
                    raise DatasetError(f"{src}: cannot read ({exc.strerror or exc})") from None
                (folder / f"{k:05d}{src.suffix.lower()}").write_bytes(data)
        return root


def _folder_names(tags: list[str]) -> list[str]:
    """One distinct safe folder name per tag (case-insensitively distinct)."""
    used: set[str] = set()
    names = []
    for tag in tags:
        base = safe_folder_name(tag)
        name, n = base, 1
        while name.casefold() in used:
            n += 1
            name = f"{base}-{n}"
        used.add(name.casefold())
        names.append(name)
    return names


def safe_folder_name(tag: str) -> str:
    """A tag name usable as one folder name on any file system.

    Examples:
        >>> safe_folder_name("T-shirt/top"), safe_folder_name(".."), safe_folder_name("a:b?")
        ('T-shirt_top', '_', 'a_b_')
    """
    name = re.sub(r'[/\\:*?"<>|\x00-\x1f]', "_", tag).strip(" .")[:120]
    return name or "_"


def _digits_raw() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as ``(float [1797, 8, 8] in 0..16, int64 labels)``.

    Read straight from the CSV scikit-learn ships (``load_digits`` reads the same file)
    so that ``import sklearn.datasets`` (seconds, it pulls in SciPy) is only paid when
    the file is not where it has always been.
    """
    spec = importlib.util.find_spec("sklearn")
    if spec is not None and spec.origin:
        csv_path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
        try:
            table = np.loadtxt(csv_path, delimiter=",", ndmin=2)
            if table.shape == (1797, 65):
                return table[:, :64].reshape(-1, 8, 8), table[:, 64].astype(np.int64)
        except (OSError, ValueError):
            pass
    from sklearn.datasets import load_digits

    raw = load_digits()
    return raw.images.astype(np.float64), raw.target.astype(np.int64)


def digits(size: int = 32) -> Dataset:
    """scikit-learn's 1,797 handwritten digits (8x8, 17 grey levels) as real RGB images.

    The images are upscaled to ``size x size`` with Pillow's bilinear weights (applied to
    all images at once as two small matrix products) and stretched to 0..255.

    Args:
        size: side of the square images (8 or more).

    Examples:
        >>> ds = digits()
        >>> ds.images.shape, ds.images.dtype, len(ds.tags)
        ((1797, 32, 32, 3), dtype('uint8'), 10)
    """
    if size < 8:
        raise DatasetError(f"digits(size={size}): size must be at least 8")
    pixels, target = _digits_raw()
    # Pillow's bilinear weights for 8 -> size, from the impulse responses of a float image.
    eye = Image.fromarray(np.eye(8, dtype=np.float32), "F")
    weights = np.asarray(eye.resize((size, 8), Image.Resampling.BILINEAR), np.float64).T
    grey = np.einsum("yi,nij,xj->nyx", weights, pixels / 16.0 * 255.0, weights)
    grey = np.clip(grey + 0.5, 0, 255).astype(np.uint8)
    images = np.repeat(grey[..., None], 3, axis=3)
    return Dataset("digits", [str(d) for d in range(10)], target, images)


def _read_idx(path: Path, expect_dims: int) -> np.ndarray:
    """Parses a gzip-compressed IDX file of unsigned bytes (the MNIST format)."""
    try:
        with gzip.open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        raise
    except PermissionError:
        raise DatasetError(f"{path}: permission denied") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetError(f"{path}: damaged Fashion-MNIST file ({exc})") from None
    if len(data) < 4 + 4 * expect_dims:
        raise DatasetError(f"{path}: damaged Fashion-MNIST file (too short)")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08 or ndim != expect_dims:
        raise DatasetError(
            f"{path}: damaged Fashion-MNIST file (not an IDX uint8 file with "
            f"{expect_dims} dimensions)"
        )
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    body = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims, dtype=np.int64)):
        raise DatasetError(
            f"{path}: damaged Fashion-MNIST file ({body.size:,} bytes of data, the header "
            f"says {dims})"
        )
    return body.reshape(dims)


def fashion_mnist(
    n_per_class: int | None = None, split: str = "train", seed: int = 0, *, rgb: bool = True
) -> Dataset:
    """Fashion-MNIST (28x28 clothing images, 10 tags) from local files, no network.

    The files are Debian's ``dataset-fashion-mnist`` package
    (``/usr/share/datasets/fashion-mnist``), or any folder named by the
    ``IMGCLASS_FASHION_MNIST_DIR`` environment variable holding
    ``{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz``.

    Args:
        n_per_class: stratified random subsample size per tag (None: all).
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000).
        seed: subsampling seed.
        rgb: repeat the grey channel to RGB (as user photos are); False gives ``[N, 28, 28]``.

    Raises:
        DatasetError: when the files are missing (naming the command that installs them)
            or damaged.

    Examples:
        >>> ds = fashion_mnist(n_per_class=2, split="test")  # doctest: +SKIP
        >>> ds.images.shape, ds.tags[0]  # doctest: +SKIP
        ((20, 28, 28, 3), 'T-shirt/top')
    """
    if split not in ("train", "test"):
        raise DatasetError(f"split {split!r}: choose 'train' or 'test'")
    root = Path(os.environ.get("IMGCLASS_FASHION_MNIST_DIR") or FASHION_MNIST_DIR)
    prefix = "train" if split == "train" else "t10k"
    img_path = root / f"{prefix}-images-idx3-ubyte.gz"
    lbl_path = root / f"{prefix}-labels-idx1-ubyte.gz"
    try:
        images = _read_idx(img_path, 3)
        labels = _read_idx(lbl_path, 1).astype(np.int64)
    except FileNotFoundError as exc:
        raise DatasetError(
            f"Fashion-MNIST not found: {exc.filename} is missing. Install it with "
            "`sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu) or set "
            "IMGCLASS_FASHION_MNIST_DIR to a folder holding the four .gz files"
        ) from None
    if len(images) != len(labels):
        raise DatasetError(
            f"{root}: damaged Fashion-MNIST files ({len(images)} images but {len(labels)} labels)"
        )
    if labels.size and labels.max() >= len(FASHION_MNIST_TAGS):
        raise DatasetError(f"{lbl_path}: damaged Fashion-MNIST file (label {labels.max()})")
    ds = Dataset(f"fashion_mnist-{split}", list(FASHION_MNIST_TAGS), labels, images)
    if n_per_class is not None:
        ds = ds.subset(n_per_class, seed=seed)
    if rgb:
        ds.images = np.repeat(ds.images[..., None], 3, axis=3)
    return ds


def from_folder(path: str | os.PathLike) -> Dataset:
    """A ``root/<tag>/*`` tree as a dataset of paths.

    Every image file (by extension, see :func:`data.images.sniff_is_image_name`) under a
    top-level sub-folder gets that folder's name as its tag, nested folders included;
    hidden files and folders are skipped. The images are not decoded here: a project
    import checks them and reports bad ones.

    Raises:
        DatasetError: when ``path`` is not a folder or has no tag sub-folder with images.
    """
    from .images import sniff_is_image_name

    root = Path(path)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder")
    tags = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    paths, labels, kept_tags = [], [], []
    for tag in tags:
        found = [
            f
            for f in sorted((root / tag).rglob("*"))
            if f.is_file()
            and sniff_is_image_name(f)
            and not any(part.startswith(".") for part in f.relative_to(root).parts)
        ]
        if not found:
            continue
        paths += found
        labels += [len(kept_tags)] * len(found)
        kept_tags.append(tag)
    if not paths:
        raise DatasetError(f"{root}: no images in tag sub-folders (expected root/<tag>/*.jpg)")
    return Dataset(f"folder:{root}", kept_tags, np.array(labels, np.int64), None, paths)
