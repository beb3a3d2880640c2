"""Derived data rebuilt on demand: thumbnails, resized arrays, backbone features.

Everything is keyed by the image's content hash (and size, and model for features), so a
moved or renamed source never invalidates it. Files are written atomically (temporary
file + ``os.replace``); a missing or damaged entry is rebuilt, never an error.
"""

from __future__ import annotations

import os
import threading
import uuid
from pathlib import Path

import numpy as np

from . import images as imgs


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".tmp-{uuid.uuid4().hex}"
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _npy_bytes(arr: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


class DerivativeCache:
    """Thumbnails, arrays and features of a project's images under ``root``."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._lock = threading.Lock()

    def _path(self, kind: str, key: str, sha: str, ext: str) -> Path:
        return self.root / kind / key / sha[:2] / f"{sha}{ext}"

    def thumbnail(self, sha: str, src_path: Path, size: int = 160) -> bytes:
        """JPEG thumbnail bytes (longer side ``size``)."""
        path = self._path("thumbs", str(size), sha, ".jpg")
        try:
            data = path.read_bytes()
            if data[:2] == b"\xff\xd8":
                return data
        except OSError:
            pass
        data = imgs.thumbnail_bytes(imgs.decode_image(src_path).image, size)
        _atomic_write(path, data)
        return data

    def array(self, sha: str, src_path: Path, size: int) -> np.ndarray:
        """uint8 ``[size, size, 3]`` pixels."""
        path = self._path("arrays", str(size), sha, ".npy")
        arr = self._load_npy(path)
        if arr is not None and arr.shape == (size, size, 3) and arr.dtype == np.uint8:
            return arr
        arr = imgs.load_rgb(src_path, size)
        _atomic_write(path, _npy_bytes(arr))
        return arr

    def arrays(self, items: list[tuple[str, Path]], size: int) -> np.ndarray:
        """Stacked arrays for ``(sha, path)`` pairs."""
        out = np.empty((len(items), size, size, 3), np.uint8)
        for k, (sha, path) in enumerate(items):
            out[k] = self.array(sha, path, size)
        return out

    def features_get(self, sha: str, model: str, size: int) -> np.ndarray | None:
        """Cached feature vector, or None."""
        arr = self._load_npy(self._path("features", f"{model}-{size}", sha, ".npy"))
        return None if arr is None or arr.ndim != 1 else arr

    def features_put(self, sha: str, model: str, size: int, vec: np.ndarray) -> None:
        """Stores a feature vector."""
        vec = np.asarray(vec, np.float32).reshape(-1)
        _atomic_write(self._path("features", f"{model}-{size}", sha, ".npy"), _npy_bytes(vec))

    @staticmethod
    def _load_npy(path: Path) -> np.ndarray | None:
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None
