"""Reads a PyTorch state-dict file into numpy arrays WITHOUT importing torch.

Both serialisations are read: the legacy one (a sequence of pickles followed by raw
storage bytes; the bundled EfficientNet-Lite0 weights use it) and the zip one (PyTorch
>= 1.6). The unpickler is restricted: it rebuilds tensors and ordered dicts and refuses
every other global *before* anything is called, so a crafted file cannot run code.

Legacy layout, as ``torch.save(..., _use_new_zipfile_serialization=False)`` writes it::

    pickle(magic number)  pickle(protocol 1001)  pickle(sys info)
    pickle(object; storages as persistent ids ('storage', type, key, location, numel, view))
    pickle([storage keys])  then per key: int64 element count + raw little-endian bytes

Examples:
    >>> from jupyter_imgclass.models.torch_weights import load_state_dict
    >>> sd = load_state_dict(path_to_pth)  # doctest: +SKIP
    >>> sd["_conv_stem.weight"].shape       # doctest: +SKIP
    (32, 3, 3, 3)
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ..errors import BundleError

__all__ = ["LEGACY_MAGIC", "load_state_dict"]

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "BFloat16Storage": None,  # no numpy dtype; refused with a clear message when used
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
    """Stands for ``torch.FloatStorage`` etc.; only ever used as a marker, never called."""

    def __init__(self, name: str):
        self.name = name
        dtype = _STORAGE_DTYPES[name]
        self.dtype = None if dtype is None else np.dtype(dtype).newbyteorder("<")

    def __repr__(self) -> str:
        return f"torch.{self.name}"


class _LazyTensor:
    """A tensor whose storage bytes are read after the pickle (legacy format)."""

    def __init__(self, storage_key: str, offset: int, size: tuple, stride: tuple):
        self.storage_key = storage_key
        self.offset = int(offset)
        self.size = tuple(int(s) for s in size)
        self.stride = tuple(int(s) for s in stride)
        if len(self.size) != len(self.stride) or any(n < 0 for n in self.size + self.stride):
            raise BundleError(f"bad tensor geometry size={self.size} stride={self.stride}")

    def materialise(self, flat: np.ndarray, name: str) -> np.ndarray:
        if any(n == 0 for n in self.size):
            return np.zeros(self.size, flat.dtype.newbyteorder("="))
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride, strict=True))
        if self.offset < 0 or last >= flat.size:
            raise BundleError(f"{name}: a tensor points past the end of its storage")
        view = np.lib.stride_tricks.as_strided(
            flat[self.offset :],
            shape=self.size,
            strides=tuple(s * flat.itemsize for s in self.stride),
            writeable=False,
        )
        return np.array(view, dtype=flat.dtype.newbyteorder("="), order="C")


def _rebuild_tensor_v2(storage, storage_offset, size, stride, *_args):
    if not isinstance(storage, str):
        raise BundleError(f"a tensor without a storage ({type(storage).__name__})")
    return _LazyTensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, *_args):
    return data


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only tensors, storages and ordered dicts; anything else is a BundleError."""

    def __init__(self, fh: BinaryIO, name: str):
        super().__init__(fh)
        self.name = name
        # key -> (dtype, element count or -1, (root key, element offset) for old views)
        self.storages: dict[str, tuple[np.dtype, int, tuple[str, int] | None]] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise BundleError(
            f"{self.name}: refused to load the global {module}.{name} (a weights file may "
            "only hold tensors and dicts; the file is malicious or not a state dict)"
        )

    def persistent_load(self, pid: Any) -> Any:
        if not isinstance(pid, tuple) or len(pid) < 3 or pid[0] != "storage":
            raise BundleError(f"{self.name}: unexpected persistent id {pid!r:.80}")
        storage_type, key = pid[1], str(pid[2])
        if not isinstance(storage_type, _StorageType):
            raise BundleError(f"{self.name}: unknown storage type {storage_type!r:.80}")
        if storage_type.dtype is None:
            raise BundleError(f"{self.name}: storage type {storage_type!r} is not supported")
        numel = int(pid[4]) if len(pid) > 4 and isinstance(pid[4], int) else -1
        view = pid[5] if len(pid) > 5 else None
        if view is not None:
            # Pre-1.0 files: ('view key', offset, size) into the root storage ``key``.
            view_key, offset, _size = view
            self.storages.setdefault(key, (storage_type.dtype, numel, None))
            self.storages[str(view_key)] = (storage_type.dtype, int(_size), (key, int(offset)))
            return str(view_key)
        self.storages.setdefault(key, (storage_type.dtype, numel, None))
        return key


def _finish(obj: Any, storages: dict[str, np.ndarray], name: str) -> dict[str, np.ndarray]:
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise BundleError(f"{name}: not a state dict (got {type(obj).__name__})")
    out: dict[str, np.ndarray] = {}
    for key, value in obj.items():
        if isinstance(value, _LazyTensor):
            if value.storage_key not in storages:
                raise BundleError(f"{name}: tensor {key} has no storage data")
            out[str(key)] = value.materialise(storages[value.storage_key], name)
    return out


def _resolve_views(unpickler: _RestrictedUnpickler, storages: dict[str, np.ndarray]) -> None:
    for key, (_dtype, numel, view) in unpickler.storages.items():
        if view is not None and view[0] in storages:
            root, offset = view
            storages[key] = storages[root][offset : offset + numel]


def _load_legacy(fh: BinaryIO, size: int, name: str) -> dict[str, np.ndarray]:
    safe = _RestrictedUnpickler  # every pickle in the file goes through the restricted one
    magic = safe(fh, name).load()
    if magic != LEGACY_MAGIC:
        raise BundleError(f"{name}: not a PyTorch weights file (bad magic number)")
    protocol = safe(fh, name).load()
    if protocol != LEGACY_PROTOCOL:
        raise BundleError(f"{name}: unsupported PyTorch file protocol {protocol!r}")
    sys_info = safe(fh, name).load()
    if isinstance(sys_info, dict) and sys_info.get("little_endian") is False:
        raise BundleError(f"{name}: big-endian weights files are not supported")
    unpickler = safe(fh, name)
    obj = unpickler.load()
    keys = safe(fh, name).load()
    if not isinstance(keys, list):
        raise BundleError(f"{name}: damaged (no storage key list)")
    storages: dict[str, np.ndarray] = {}
    for key in map(str, keys):
        if key not in unpickler.storages:
            raise BundleError(f"{name}: damaged (storage {key} is not used by any tensor)")
        dtype = unpickler.storages[key][0]
        header = fh.read(8)
        if len(header) != 8:
            raise BundleError(f"{name}: truncated (storage {key} missing)")
        (numel,) = struct.unpack("<q", header)
        nbytes = numel * dtype.itemsize
        if numel < 0 or nbytes > size - fh.tell():
            raise BundleError(f"{name}: truncated (storage {key} needs {nbytes} more bytes)")
        storages[key] = np.frombuffer(fh.read(nbytes), dtype=dtype)
    _resolve_views(unpickler, storages)
    return _finish(obj, storages, name)


def _load_zip(path: Path, name: str) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(path) as zf:
        pkl = next((n for n in zf.namelist() if n.endswith("data.pkl")), None)
        if pkl is None:
            raise BundleError(f"{name}: a zip file without data.pkl is not PyTorch weights")
        prefix = pkl[: -len("data.pkl")]
        unpickler = _RestrictedUnpickler(io.BytesIO(zf.read(pkl)), name)
        obj = unpickler.load()
        storages = {}
        for key, (dtype, _numel, _view) in unpickler.storages.items():
            try:
                raw = zf.read(f"{prefix}data/{key}")
            except KeyError:
                raise BundleError(f"{name}: storage data/{key} is missing") from None
            storages[key] = np.frombuffer(raw, dtype=dtype, count=len(raw) // dtype.itemsize)
    return _finish(obj, storages, name)


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a PyTorch state dict as ``{name: numpy array}``, never executing code.

    Args:
        path: a ``.pth`` / ``.pt`` file written by ``torch.save(model.state_dict(), ...)``
            (legacy or zip serialisation; a ``{"state_dict": ...}`` checkpoint works too).

    Returns:
        The tensors by name, as C-contiguous native-endian numpy arrays (non-tensor
        entries are dropped).

    Raises:
        BundleError: for a missing, truncated, damaged or malicious file; a file that
            names any global other than tensor rebuilders, storages and ``OrderedDict``
            is refused before anything in it is called.

    Examples:
        >>> sd = load_state_dict("efficientnet-lite0.pth")  # doctest: +SKIP
        >>> sd["_fc.weight"].shape  # doctest: +SKIP
        (1000, 1280)
    """
    path = Path(path)
    name = str(path)
    if not path.is_file():
        raise BundleError(f"{name}: no such weights file")
    size = path.stat().st_size
    if size == 0:
        raise BundleError(f"{name}: empty weights file")
    try:
        if zipfile.is_zipfile(path):
            return _load_zip(path, name)
        with open(path, "rb") as fh:
            return _load_legacy(fh, size, name)
    except BundleError:
        raise
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        KeyError,
        IndexError,
        AttributeError,
        struct.error,
        zipfile.BadZipFile,
        MemoryError,
        OverflowError,
        RecursionError,
    ) as exc:
        raise BundleError(
            f"{name}: damaged or truncated weights file ({type(exc).__name__}: {exc})"
        ) from None
