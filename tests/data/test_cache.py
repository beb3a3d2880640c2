"""data/cache.py: derivatives keyed by content hash, rebuilt when missing or damaged."""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jupyter_imgclass.data import images as imgs
from jupyter_imgclass.data.cache import DerivativeCache
from jupyter_imgclass.errors import BadImageError


def make_image(path: Path, w: int, h: int, seed: int) -> tuple[str, Path]:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return imgs.sha256_bytes(path.read_bytes()), path


@pytest.fixture
def sources(tmp_path: Path) -> list[tuple[str, Path]]:
    (tmp_path / "src").mkdir()
    return [make_image(tmp_path / "src" / f"im{k}.png", 60 + 10 * k, 40, k) for k in range(6)]


def tmp_leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob(".tmp-*")]


def test_array_is_built_once_then_read_from_disk(tmp_path, sources):
    cache = DerivativeCache(tmp_path / "cache")
    sha, src = sources[0]
    arr = cache.array(sha, src, 32)
    assert arr.shape == (32, 32, 3) and arr.dtype == np.uint8
    assert np.array_equal(arr, imgs.load_rgb(src, 32))
    stored = tmp_path / "cache" / "arrays" / "32" / sha[:2] / f"{sha}.npy"
    assert stored.is_file() and cache.array_path(sha, 32) == stored
    src.unlink()  # the cached copy is used: the source is not needed any more
    assert np.array_equal(cache.array(sha, src, 32), arr)
    assert cache.array(sha, src, 32) is not None and not tmp_leftovers(tmp_path / "cache")


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: p.unlink(),
        lambda p: p.write_bytes(p.read_bytes()[:100]),  # truncated .npy
        lambda p: p.write_bytes(b""),
        lambda p: p.write_bytes(b"garbage" * 50),
        lambda p: np.save(p, np.zeros((8, 8, 3), np.uint8)),  # wrong shape
        lambda p: np.save(p, np.zeros((32, 32, 3), np.float32)),  # wrong dtype
    ],
)
def test_damaged_array_is_rebuilt_not_an_error(tmp_path, sources, damage):
    cache = DerivativeCache(tmp_path / "cache")
    sha, src = sources[1]
    first = cache.array(sha, src, 32)
    damage(cache.array_path(sha, 32))
    again = cache.array(sha, src, 32)
    assert np.array_equal(again, first)
    assert np.array_equal(np.load(cache.array_path(sha, 32)), first)  # repaired on disk


def test_arrays_stacks_cached_and_missing_entries(tmp_path, sources):
    cache = DerivativeCache(tmp_path / "cache")
    cache.array(*sources[2], 24)  # one already cached
    progress: list[tuple[int, int]] = []
    batch = cache.arrays(sources, 24, on_progress=lambda d, t: progress.append((d, t)))
    assert batch.shape == (6, 24, 24, 3) and batch.dtype == np.uint8
    for k, (_, src) in enumerate(sources):
        assert np.array_equal(batch[k], imgs.load_rgb(src, 24))
    assert progress[0] == (1, 6) and progress[-1] == (6, 6)
    serial = DerivativeCache(tmp_path / "cache2", workers=1).arrays(sources, 24)
    assert np.array_equal(serial, batch)
    assert cache.arrays([], 24).shape == (0, 24, 24, 3)
    for sha, _ in sources:  # one .npy per image per size
        assert cache.array_path(sha, 24).is_file()


def test_missing_source_without_cache_is_a_bad_image(tmp_path):
    cache = DerivativeCache(tmp_path / "cache")
    with pytest.raises(BadImageError, match="no such file"):
        cache.array("ab" * 32, tmp_path / "gone.png", 16)
    with pytest.raises(BadImageError, match="no such file"):
        cache.thumbnail("ab" * 32, tmp_path / "gone.png")
    with pytest.raises(ValueError, match="content hash"):
        cache.array("../../etc", tmp_path / "gone.png", 16)


def test_thumbnail_cached_and_rebuilt(tmp_path, sources):
    cache = DerivativeCache(tmp_path / "cache")
    sha, src = sources[3]  # 90x40
    data = cache.thumbnail(sha, src, 45)
    thumb = Image.open(io.BytesIO(data))
    assert thumb.format == "JPEG" and thumb.size == (45, 20)
    stored = tmp_path / "cache" / "thumbs" / "45" / sha[:2] / f"{sha}.jpg"
    assert stored.read_bytes() == data
    stored.write_bytes(data[: len(data) // 2])  # a cut-off thumbnail is not served
    assert cache.thumbnail(sha, src, 45) == data
    stored.unlink()
    assert cache.thumbnail(sha, src, 45) == data
    assert Image.open(io.BytesIO(cache.thumbnail(sha, src))).size == (90, 40)  # never enlarged


def test_features_put_get_many_and_damage(tmp_path):
    cache = DerivativeCache(tmp_path / "cache")
    shas = [f"{k:02x}" * 32 for k in range(4)]
    model = "efficientnet_lite0/v1"  # odd characters stay inside the cache folder
    assert cache.features_get(shas[0], model, 224) is None
    assert cache.features_many(shas, model, 224) == (None, [0, 1, 2, 3])
    cache.features_put(shas[0], model, 224, np.arange(5, dtype=np.float64))
    got = cache.features_get(shas[0], model, 224)
    assert got.dtype == np.float32 and got.tolist() == [0, 1, 2, 3, 4]
    assert cache.features_get(shas[0], model, 160) is None  # keyed by size too
    assert cache.features_get(shas[0], "small_cnn", 224) is None  # and by model
    cache.features_put_many(shas[2:], model, 224, np.ones((2, 5)))
    feats, missing = cache.features_many(shas, model, 224)
    assert feats.shape == (4, 5) and missing == [1]
    assert feats[3].tolist() == [1.0] * 5 and feats[1].tolist() == [0.0] * 5
    files = list((tmp_path / "cache" / "features").rglob("*.npy"))
    assert len(files) == 3 and all(f.resolve().is_relative_to(tmp_path / "cache") for f in files)
    files[0].write_bytes(files[0].read_bytes()[:60])  # truncated: treated as missing
    assert sum(cache.features_get(s, model, 224) is None for s in shas) == 2
    with pytest.raises(ValueError, match="2 hashes but 3"):
        cache.features_put_many(shas[:2], model, 224, np.ones((3, 5)))


def test_a_failed_write_leaves_the_old_entry_whole(tmp_path, monkeypatch):
    cache = DerivativeCache(tmp_path / "cache")
    sha = "cd" * 32
    cache.features_put(sha, "m", 8, np.ones(3))

    def refuse(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    cache.features_put(sha, "m", 8, np.zeros(3))  # a cache write is best effort: no raise
    monkeypatch.undo()
    assert cache.features_get(sha, "m", 8).tolist() == [1, 1, 1]
    assert not list((tmp_path / "cache").rglob(".tmp-*"))
    assert not tmp_leftovers(tmp_path / "cache")


def test_concurrent_readers_and_writers_never_see_half_a_file(tmp_path, sources):
    cache = DerivativeCache(tmp_path / "cache")
    sha, src = sources[4]
    expected = imgs.load_rgb(src, 48)
    errors: list[BaseException] = []
    seen: list[bool] = []

    def rebuild() -> None:
        try:
            for _ in range(15):
                cache.array_path(sha, 48).unlink(missing_ok=True)
                seen.append(np.array_equal(cache.array(sha, src, 48), expected))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    def read_features(k: int) -> None:
        try:
            for i in range(30):
                cache.features_put(sha, "m", 48, np.full(64, k * 1000 + i, np.float32))
                vec = cache.features_get(sha, "m", 48)
                seen.append(vec is not None and vec.shape == (64,) and len(set(vec)) == 1)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=rebuild) for _ in range(3)]
    threads += [threading.Thread(target=read_features, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(seen) == 3 * 15 + 3 * 30 and all(seen)
    assert not tmp_leftovers(tmp_path / "cache")


def test_rows_view_indexes_like_the_stacked_arrays(tmp_path, sources):
    """``cache.rows`` answers every index a numpy array takes along the first axis with the
    same rows as ``cache.arrays``, reading only those rows."""
    cache = DerivativeCache(tmp_path / "cache")
    whole = cache.arrays(sources, 16)
    view = DerivativeCache(tmp_path / "cache").rows(sources, 16)
    assert view.shape == whole.shape and view.dtype == whole.dtype and len(view) == 6
    mask = np.array([True, False, True, False, False, True])
    for index in (0, -1, 3, slice(None), slice(1, 5, 2), slice(-2, None), [4, 0, 4],
                  np.array([5, 1]), mask, np.array([], int)):  # fmt: skip
        np.testing.assert_array_equal(view[index], whole[index])
    sub = view.select(np.array([5, 2, 0]))
    np.testing.assert_array_equal(sub[1:], whole[[2, 0]])
    np.testing.assert_array_equal(np.asarray(view), whole)
    with pytest.raises(IndexError):
        view[6]
    with pytest.raises(IndexError):
        view[np.zeros((2, 2), int)]


@pytest.mark.parametrize("damage", ["truncate", "delete", "garbage"])
def test_rows_view_rebuilds_entries_damaged_before_or_after_it_was_made(tmp_path, sources, damage):
    cache = DerivativeCache(tmp_path / "cache")
    expected = cache.arrays(sources, 16)
    path = cache.array_path(sources[2][0], 16)

    def spoil() -> None:
        if damage == "delete":
            path.unlink()
        elif damage == "truncate":
            path.write_bytes(path.read_bytes()[:-10])
        else:
            path.write_bytes(b"not an array")

    spoil()
    view = cache.rows(sources, 16)  # the header check finds it and rebuilds it
    assert path.exists() and path.stat().st_size > 16 * 16 * 3
    spoil()
    np.testing.assert_array_equal(view[[1, 2, 3]], expected[[1, 2, 3]])  # rebuilt on read


def test_each_resize_mode_has_its_own_entries_and_squash_keeps_the_old_ones(tmp_path, sources):
    """A cache written before the modes existed (arrays/<size>/...) still serves squash;
    pad and crop never read it."""
    cache = DerivativeCache(tmp_path / "cache")
    sha, src = sources[3]  # 90x40: the modes differ
    squash = cache.array(sha, src, 16)
    assert (tmp_path / "cache" / "arrays" / "16" / sha[:2] / f"{sha}.npy").is_file()
    padded = cache.array(sha, src, 16, "pad")
    assert cache.array_path(sha, 16, "pad").parent.parent.name == "16-pad"
    assert not np.array_equal(squash, padded)
    np.testing.assert_array_equal(padded, imgs.load_rgb(src, 16, resize="pad"))
    np.testing.assert_array_equal(
        cache.arrays([(sha, src)], 16, resize="crop")[0], imgs.load_rgb(src, 16, resize="crop")
    )
    view = cache.rows([(sha, src)], 16, resize="pad")
    np.testing.assert_array_equal(view[0], padded)
    np.testing.assert_array_equal(view.select([0])[0], padded)
    cache.features_put(sha, "net", 16, np.ones(3), "pad")
    assert cache.features_get(sha, "net", 16) is None  # squash features not there
    assert cache.features_get(sha, "net", 16, "pad").tolist() == [1, 1, 1]
    with pytest.raises(ValueError, match="not one of"):
        cache.array(sha, src, 16, "../x")
