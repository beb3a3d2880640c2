"""Project.check(): label issues (cleanlab), near-duplicates, thin and imbalanced tags."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

import jupyter_imgclass as ic
from jupyter_imgclass import datacheck

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


def _images(colour, n, seed, size=32):
    rng = np.random.default_rng(seed)
    base = np.array(colour, np.int16)
    return [
        np.clip(base + rng.integers(-40, 40, (size, size, 3)), 0, 255).astype(np.uint8)
        for _ in range(n)
    ]


def test_check_finds_planted_mislabels_copies_and_thin_tags(tmp_path):
    p = ic.Project.create(tmp_path / "p")
    added = {}
    for k, (tag, colour) in enumerate(COLOURS.items()):
        added[tag] = p.add_images(_images(colour, 10, seed=k), tags=[tag]).added
    wrong = added["red"][0]
    p.set_tags(wrong, "blue")  # a red image tagged blue
    original = p.array(added["green"][0], 32)
    buffer = io.BytesIO()
    Image.fromarray(original).save(buffer, format="JPEG", quality=85)
    jpeg = p.add_images([buffer.getvalue()], tags=["green"]).added[0]  # re-encoded copy
    bigger = np.asarray(Image.fromarray(original).resize((48, 48), Image.BICUBIC))
    resized = p.add_images([bigger], tags=["green"]).added[0]  # resized copy
    p.add_images(_images((128, 128, 128), 3, seed=9, size=200), tags=["grey"])  # thin, big
    p.train(budget="quick", seed=0).wait()

    report = p.check()
    assert report.iteration == 1
    first = report.label_issues[0]
    assert (first["image_id"], first["tag"], first["suggested"]) == (wrong, "blue", "red")
    pairs = {(d["a"], d["b"]): d for d in report.near_duplicates}
    for copy in (jpeg, resized):
        pair = pairs[tuple(sorted((added["green"][0], copy)))]
        assert pair["similarity"] > 0.9 and isinstance(pair["straddles_folds"], bool)
    assert report.thin_tags == ["grey"]
    assert "grey" in report.imbalance and "3" in report.imbalance
    assert sorted(report.odd_sizes) == sorted(im.id for im in p.images if im.width == 200)
    assert "likely label issue" in report.summary() and f"image {wrong}" in repr(report)

    p.set_tags(wrong, "red")  # the fix; it is no longer flagged
    assert wrong not in [i["image_id"] for i in p.check().label_issues]
    p.close()


def test_check_before_any_iteration_and_on_an_empty_project(tmp_path):
    p = ic.Project.create(tmp_path / "p")
    assert p.check().summary().startswith("0 likely label issue(s), 0 near-duplicate")
    p.add_images(_images(COLOURS["red"], 4, seed=1), tags=["red"])
    report = p.check()
    assert report.label_issues == [] and report.iteration is None
    assert report.thin_tags == ["red"]
    p.close()


def test_datacheck_functions_by_hand():
    x = np.array([[1.0, 0.0], [0.99, 0.05], [0.0, 1.0], [-1.0, 0.1]])
    assert datacheck.near_duplicates(x) == [(0, 1, 0.9987)]
    hashes = np.zeros(4, np.uint64)
    hashes[3] = 0b111  # 3 bits from the others
    assert (2, 3, 0.0995) in datacheck.near_duplicates(x, hashes, hamming=3)
    assert (2, 3, 0.0995) not in datacheck.near_duplicates(x, hashes, hamming=2)
    # a crop hash of image 3 matches image 1's whole hash: a cropped copy, found once
    # whichever of the two is compared first, and in blocks of one row as in one block
    full = 0xFFFFFFFFFFFFFFFF
    crops = np.array(  # whole hash, then two crop hashes; whole hashes >= 32 bits apart
        [
            [0, 0x1, 0x2],
            [full, 0x4, 0x8],
            [0xFFFFFFFF, 0x10, 0x20],
            [full ^ 0xFFFFFFFF, 0x40, full],
        ],
        np.uint64,
    )
    found = datacheck.near_duplicates(np.eye(4), crops, crop_hamming=0, block=1)
    assert found == [(1, 3, 0.0)] == datacheck.near_duplicates(np.eye(4), crops, crop_hamming=0)


def test_perceptual_hash_matches_a_cropped_copy_and_not_another_photo():
    from skimage import data

    photo = np.asarray(Image.fromarray(data.chelsea()).resize((128, 128)))
    other = np.asarray(Image.fromarray(data.coffee()).resize((128, 128)))
    w = photo.shape[1]
    cropped = np.asarray(
        Image.fromarray(photo).crop((8, 7, w - 7, w - 8)).resize((128, 128), Image.BICUBIC)
    )
    hashes = np.stack(
        [datacheck.perceptual_hash(im, datacheck.CROPS) for im in (photo, cropped, other)]
    )
    assert hashes.shape == (3, 1 + len(datacheck.CROPS)) and hashes.dtype == np.uint64
    whole = datacheck.hash_distances(hashes[:, 0])
    assert whole[0, 1] > datacheck.HAMMING  # the whole-image hashes alone miss the copy
    pairs = datacheck.near_duplicates(np.eye(3), hashes)
    assert [(a, b) for a, b, _ in pairs] == [(0, 1)]
    assert datacheck.tag_warnings({"a": 10, "b": 2, "c": 0}) == (
        ["b"],
        "'a' has 10 images, 'b' 2 (5.0:1)",
    )
    assert datacheck.tag_warnings({"a": 6, "b": 5}) == ([], None)
    assert datacheck.odd_sizes([(32, 32)] * 5 + [(300, 300), (4, 4)]) == [5, 6]
    labels = np.array([0] * 10 + [1] * 10)
    probs = np.tile([[0.95, 0.05]], (20, 1))
    probs[10:] = [0.05, 0.95]
    probs[3] = [0.02, 0.98]  # tagged 0, clearly a 1
    assert datacheck.label_issues(labels, probs)[0][:2] == (3, 1)
    assert datacheck.label_issues(np.zeros(4, int), np.tile([[0.9, 0.1]], (4, 1))) == []


def test_outliers_and_pairs_in_blocks_equal_the_whole_comparison():
    """Blocks of rows keep memory O(block x N) for large projects; the answers do not
    depend on the block size."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8))
    x = centres[rng.integers(0, 3, 300)] + 0.1 * rng.normal(size=(300, 8))
    x[17] = rng.normal(size=8)  # a direction of its own
    x[40] = x[3] + 1e-3  # a near copy
    assert datacheck.outliers(x, block=7) == datacheck.outliers(x) != []
    assert (3, 40) in [(a, b) for a, b, _ in datacheck.near_duplicates(x, block=7)]
    assert datacheck.near_duplicates(x, block=7) == datacheck.near_duplicates(x)
