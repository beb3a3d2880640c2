"""Derived data rebuilt on demand: thumbnails, resized arrays, backbone features.

Everything is keyed by the image's content hash (and size, and model for features), so a
moved or renamed source never invalidates it. Layout under ``root``::

    thumbs/<size>/<sha[:2]>/<sha>.jpg
    arrays/<size>/<sha[:2]>/<sha>.npy                     uint8 [size, size, 3], squashed
    arrays/<size>-<resize>/<sha[:2]>/<sha>.npy            the same, padded or cropped
    features/<model>-<size>[-<resize>]/<sha[:2]>/<sha>.npy  float32 [D]

(``resize`` is :data:`~jupyter_imgclass.data.images.RESIZE_MODES`'s ``pad`` or ``crop``;
squashed entries keep the names they had before the modes existed.)

Files are written atomically (a temporary file in the same folder, then ``os.replace``),
so a reader never sees half a file; a missing or damaged entry (deleted, truncated,
wrong shape) is rebuilt from the source image, never an error. Several threads (or
processes) may use one cache: the worst case is the same entry computed twice.

Examples:
    >>> import tempfile, numpy as np
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> root = Path(tempfile.mkdtemp())
    >>> Image.new("RGB", (40, 30), "red").save(root / "a.png")
    >>> cache = DerivativeCache(root / "cache")
    >>> cache.array("ab" * 32, root / "a.png", 16).shape
    (16, 16, 3)
"""

from __future__ import annotations

import io
import logging
import os
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from . import images as imgs
from .integrity import atomic_write

log = logging.getLogger(__name__)

_SAFE_KEY = re.compile(r"[^A-Za-z0-9._-]+")


def _cache_write(path: Path, data: bytes) -> None:
    """Writes a cache entry when it can: a cache is rebuilt from the images, so a full or
    read-only disk (a project opened read-only) only costs the time to rebuild it."""
    try:
        atomic_write(path, data)
    except OSError as exc:
        log.debug("cache entry %s not written: %s", path, exc)


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _load_npy(path: Path) -> np.ndarray | None:
    """The array in ``path``, or None when it is missing or damaged."""
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None


def _is_whole_jpeg(data: bytes) -> bool:
    return len(data) > 4 and data[:2] == b"\xff\xd8" and data.rstrip(b"\x00")[-2:] == b"\xff\xd9"


class DerivativeCache:
    """Thumbnails, arrays and features of a project's images under ``root``.

    Args:
        root: the cache folder (created on first write).
        workers: threads used by :meth:`arrays` to build missing entries (decoding and
            resizing release the GIL); 1 builds them in the calling thread.
    """

    def __init__(self, root: str | os.PathLike, *, workers: int | None = None):
        self.root = Path(root)
        self.workers = workers if workers is not None else min(4, os.cpu_count() or 1)

    def __repr__(self) -> str:
        return f"DerivativeCache({str(self.root)!r})"

    def _path(self, kind: str, key: str, sha: str, ext: str) -> Path:
        if not sha or not re.fullmatch(r"[0-9A-Za-z]+", sha):
            raise ValueError(f"not a content hash: {sha!r}")
        return self.root / kind / key / sha[:2] / f"{sha}{ext}"

    # ------------------------------------------------------------------ thumbnails

    def thumbnail(self, sha: str, src_path: str | os.PathLike, size: int = 160) -> bytes:
        """JPEG thumbnail bytes, longer side at most ``size`` (aspect kept).

        Raises:
            BadImageError: when the entry is missing and the source does not decode.
        """
        path = self._path("thumbs", str(int(size)), sha, ".jpg")
        try:
            data = path.read_bytes()
            if _is_whole_jpeg(data):
                return data
        except OSError:
            pass
        decoded = imgs.decode_image(src_path, target_size=int(size))
        data = imgs.thumbnail_bytes(decoded.image, int(size))
        _cache_write(path, data)
        return data

    # ---------------------------------------------------------------------- arrays

    def array_path(self, sha: str, size: int, resize: str = imgs.DEFAULT_RESIZE) -> Path:
        """Where the ``size`` array of image ``sha`` lives (it may not exist yet)."""
        return self._path("arrays", _size_key(size, resize), sha, ".npy")

    def array(
        self,
        sha: str,
        src_path: str | os.PathLike,
        size: int,
        resize: str = imgs.DEFAULT_RESIZE,
    ) -> np.ndarray:
        """uint8 ``[size, size, 3]`` pixels, as :func:`images.load_rgb` makes them with
        ``resize`` (one of :data:`~jupyter_imgclass.data.images.RESIZE_MODES`).

        Raises:
            BadImageError: when the entry is missing and the source does not decode.
        """
        size = int(size)
        arr = self._cached_array(sha, size, resize)
        if arr is not None:
            return arr
        arr = imgs.load_rgb(src_path, size, resize=resize)
        _cache_write(self.array_path(sha, size, resize), _npy_bytes(arr))
        return arr

    def _cached_array(self, sha: str, size: int, resize: str) -> np.ndarray | None:
        """The cached ``size`` array of ``sha``, or None when missing or damaged."""
        arr = _load_npy(self.array_path(sha, size, resize))
        if arr is not None and arr.shape == (size, size, 3) and arr.dtype == np.uint8:
            return arr
        return None

    def arrays(
        self,
        items: Sequence[tuple[str, str | os.PathLike]],
        size: int,
        *,
        resize: str = imgs.DEFAULT_RESIZE,
        on_progress=None,
    ) -> np.ndarray:
        """Stacked uint8 ``[N, size, size, 3]`` arrays for ``(sha, path)`` pairs, in memory.

        Cached entries are read; missing ones are built in ``workers`` threads. For a set
        too large for memory, :meth:`rows` gives the same rows read on demand.

        Args:
            items: ``(sha256, source path)`` per image.
            size: side of the square arrays.
            resize: how each image becomes the square (``images.RESIZE_MODES``).
            on_progress: optional ``callback(done, total)``.
        """
        size = int(size)
        out = np.empty((len(items), size, size, 3), np.uint8)
        self._fill(items, size, resize, out, on_progress)
        return out

    def rows(
        self,
        items: Sequence[tuple[str, str | os.PathLike]],
        size: int,
        *,
        resize: str = imgs.DEFAULT_RESIZE,
        on_progress=None,
    ) -> CachedRows:
        """The images' uint8 arrays as a :class:`CachedRows` view ``[N, size, size, 3]``
        that reads only the rows it is indexed with: missing entries are built first (one
        image per worker in memory at a time), so memory does not grow with ``N``.

        Args: as :meth:`arrays`.
        """
        size = int(size)
        self._fill(items, size, resize, None, on_progress)
        return CachedRows(self, list(items), size, resize)

    def _fill(self, items, size: int, resize: str, out: np.ndarray | None, on_progress) -> None:
        """Builds missing array entries (``workers`` threads); copies every row into
        ``out`` when given."""
        total = len(items)
        missing: list[int] = []
        for k, (sha, _) in enumerate(items):
            if out is None:
                ok = _npy_header_ok(self.array_path(sha, size, resize), (size, size, 3))
            else:
                arr = self._cached_array(sha, size, resize)
                ok = arr is not None
                if ok:
                    out[k] = arr
            if not ok:
                missing.append(k)
        done = total - len(missing)
        if on_progress and missing:
            on_progress(done, total)

        def build(k: int) -> int:
            sha, src = items[k]
            arr = self.array(sha, src, size, resize)
            if out is not None:
                out[k] = arr
            return k

        if len(missing) > 1 and self.workers > 1:
            with ThreadPoolExecutor(self.workers, thread_name_prefix="imgclass-cache") as pool:
                for _ in pool.map(build, missing):
                    done += 1
                    if on_progress and (done % 50 == 0 or done == total):
                        on_progress(done, total)
        else:
            for k in missing:
                build(k)
                done += 1
                if on_progress and (done % 50 == 0 or done == total):
                    on_progress(done, total)

    # -------------------------------------------------------------------- features

    def _features_path(self, sha: str, model: str, size: int, resize: str) -> Path:
        key = f"{_SAFE_KEY.sub('_', str(model))}-{_size_key(size, resize)}"
        return self._path("features", key, sha, ".npy")

    def features_get(
        self, sha: str, model: str, size: int, resize: str = imgs.DEFAULT_RESIZE
    ) -> np.ndarray | None:
        """The cached float32 feature vector of image ``sha``, or None."""
        arr = _load_npy(self._features_path(sha, model, size, resize))
        if arr is None or arr.ndim != 1 or arr.dtype != np.float32:
            return None
        return arr

    def features_put(
        self, sha: str, model: str, size: int, vec: np.ndarray, resize: str = imgs.DEFAULT_RESIZE
    ) -> None:
        """Stores a feature vector (as float32)."""
        vec = np.ascontiguousarray(np.asarray(vec, np.float32).reshape(-1))
        _cache_write(self._features_path(sha, model, size, resize), _npy_bytes(vec))

    def features_many(
        self, shas: Sequence[str], model: str, size: int, resize: str = imgs.DEFAULT_RESIZE
    ) -> tuple[np.ndarray | None, list[int]]:
        """Cached features of many images at once.

        Returns:
            ``(features, missing)``: ``features`` is float32 ``[N, D]`` with zeros in the
            rows of images not cached (None when no image is cached), and ``missing`` the
            indices of those rows. Rows whose length differs from the first found vector
            count as missing.
        """
        found = [self.features_get(s, model, size, resize) for s in shas]
        dims = [f.shape[0] for f in found if f is not None]
        if not dims:
            return None, list(range(len(shas)))
        dim = dims[0]
        out = np.zeros((len(shas), dim), np.float32)
        missing = []
        for k, f in enumerate(found):
            if f is None or f.shape[0] != dim:
                missing.append(k)
            else:
                out[k] = f
        return out, missing

    def features_put_many(
        self,
        shas: Sequence[str],
        model: str,
        size: int,
        vecs: np.ndarray,
        resize: str = imgs.DEFAULT_RESIZE,
    ) -> None:
        """Stores one feature vector per image (rows of ``vecs``)."""
        vecs = np.asarray(vecs, np.float32)
        if len(vecs) != len(shas):
            raise ValueError(f"{len(shas)} hashes but {len(vecs)} feature rows")
        for sha, vec in zip(shas, vecs, strict=True):
            self.features_put(sha, model, size, vec, resize)


def _size_key(size: int, resize: str) -> str:
    """The cache folder part for ``size`` pixels made by ``resize`` (checked: it names a
    folder)."""
    imgs.check_resize(resize)
    return str(int(size)) if resize == imgs.DEFAULT_RESIZE else f"{int(size)}-{resize}"


def _npy_header_ok(path: Path, shape: tuple) -> bool:
    """Whether ``path`` holds a whole uint8 array of ``shape`` (header and length checked,
    the pixels not read)."""
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            fmt = np.lib.format
            read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            got, fortran, dtype = read(fh)
            offset = fh.tell()
            fh.seek(0, os.SEEK_END)
            length = fh.tell()
    except (OSError, ValueError, EOFError):
        return False
    need = int(np.prod(shape))
    return got == shape and dtype == np.uint8 and not fortran and length - offset == need


class CachedRows:
    """A read-only ``[N, size, size, 3]`` uint8 view of cached image arrays that reads the
    rows it is indexed with from disk (made by :meth:`DerivativeCache.rows`).

    Indexing takes what a numpy array takes along the first axis (an int, a slice, an
    integer or boolean array) and returns an ordinary array of those rows; ``len``,
    ``shape``, ``dtype`` and ``ndim`` are a numpy array's. An entry damaged after the view
    was made is rebuilt from its source image.

    Examples:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from PIL import Image
        >>> root = Path(tempfile.mkdtemp())
        >>> Image.new("RGB", (40, 30), "red").save(root / "a.png")
        >>> view = DerivativeCache(root / "cache").rows([("ab" * 32, root / "a.png")] * 3, 8)
        >>> view.shape, view[[0, 2]].shape, int(view[1][0, 0, 0])
        ((3, 8, 8, 3), (2, 8, 8, 3), 255)
    """

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(
        self, cache: DerivativeCache, items: list, size: int, resize: str = imgs.DEFAULT_RESIZE
    ):
        self._cache = cache
        self._items = items
        self.size = int(size)
        self.resize = resize
        self.shape = (len(items), self.size, self.size, 3)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"CachedRows(shape={self.shape})"

    def _row(self, k: int) -> np.ndarray:
        sha, src = self._items[k]
        return self._cache.array(sha, src, self.size, self.resize)  # or rebuilt when damaged

    def __getitem__(self, index) -> np.ndarray:
        if isinstance(index, (int, np.integer)):
            return self._row(range(len(self))[index])
        if isinstance(index, slice):
            rows = np.arange(len(self))[index]
        else:
            rows = np.arange(len(self))[np.asarray(index)]
            if rows.ndim != 1:
                raise IndexError("CachedRows takes an int, a slice or a 1-D index array")
        out = np.empty((len(rows), *self.shape[1:]), np.uint8)
        for j, k in enumerate(rows):
            out[j] = self._row(int(k))
        return out

    def select(self, rows) -> CachedRows:
        """A view of some rows (an integer or boolean index), nothing read."""
        picked = np.arange(len(self))[np.asarray(rows)]
        items = [self._items[int(k)] for k in picked]
        return CachedRows(self._cache, items, self.size, self.resize)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype)
