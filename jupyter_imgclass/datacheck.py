"""The data check's findings from arrays: likely label errors, near-duplicates, thin or
imbalanced tags, odd sizes and outliers. Pure functions (numpy, cleanlab, imagehash); the
project layer gathers the arrays (``Project.check``).

* label issues: cleanlab's confident learning (``cleanlab.filter.find_label_issues``) on
  out-of-fold predicted probabilities, most suspect first, each with the tag the model
  prefers;
* near-duplicates: pairs whose backbone features are nearly parallel (cosine) or whose
  perceptual hashes (``imagehash.phash``) nearly agree -- re-encoded or resized copies --
  or whose hash matches a centre crop's hash of the other -- slightly cropped copies;
* outliers: images far from their nearest neighbours in feature space.

Examples:
    >>> import numpy as np
    >>> near_duplicates(np.array([[1.0, 0.0], [0.999, 0.04], [0.0, 1.0]]))
    [(0, 1, 0.9992)]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .active import unit_rows
from .data.labelled import MAX_IMBALANCE, MIN_IMAGES_PER_TAG

__all__ = [
    "COSINE",
    "CROPS",
    "CROP_HAMMING",
    "HAMMING",
    "hash_distances",
    "label_issues",
    "near_duplicates",
    "odd_sizes",
    "outliers",
    "perceptual_hash",
    "tag_warnings",
]

COSINE = 0.97
"""Feature cosine similarity from which two images count as near-duplicates."""
HAMMING = 6
"""Perceptual-hash bits (of 64) up to which two images count as near-duplicates."""
CROPS = (0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.09, 0.10)
"""Centre crops (fraction dropped from every side) hashed to find cropped copies."""
CROP_HAMMING = 4
"""Bits up to which one image's hash and a crop hash of another count as a cropped copy."""
THIN = MIN_IMAGES_PER_TAG
IMBALANCE = MAX_IMBALANCE
"""The project's own rules (``data.labelled``): check() and Project.warnings() agree."""


def label_issues(labels: Any, probabilities: Any, kind: str = "multiclass") -> list[tuple]:
    """``(index, suggested_class, quality)`` of likely mislabelled examples, most suspect
    first (cleanlab, ranked by self-confidence; ``quality`` is the probability of the given
    label). Multilabel: ``suggested_class`` is None (cleanlab's multilabel filter).

    Args:
        labels: ``[N]`` class indices (or ``[N, T]`` 0/1 for multilabel).
        probabilities: ``[N, T]`` out-of-sample predicted probabilities.
        kind: ``"multiclass"`` or ``"multilabel"``.
    """
    from cleanlab.filter import find_label_issues

    p = np.asarray(probabilities, np.float64)
    y = np.asarray(labels)
    if len(y) == 0:
        return []
    if kind == "multilabel":
        from cleanlab.multilabel_classification.filter import find_label_issues as multi

        lists = [list(np.flatnonzero(row)) for row in y]
        found = multi(lists, p, return_indices_ranked_by="self_confidence", n_jobs=1)
        return [(int(i), None, float(np.min(np.where(y[i] > 0, p[i], 1 - p[i])))) for i in found]
    if len(np.unique(y)) < 2:
        return []
    rows = p / np.maximum(p.sum(axis=1, keepdims=True), 1e-12)
    found = find_label_issues(
        labels=y.astype(int),
        pred_probs=rows,
        return_indices_ranked_by="self_confidence",
        n_jobs=1,  # no fork: the kernel runs JAX threads
    )
    return [(int(i), int(np.argmax(rows[i])), float(rows[i, int(y[i])])) for i in found]


def perceptual_hash(image: Any, crops: Sequence[float] = ()) -> np.ndarray:
    """The 64-bit DCT perceptual hash (``imagehash.phash``) of an RGB array, packed in a
    ``uint64``; with ``crops``, an array of ``1 + len(crops)`` hashes: the whole image's,
    then the hash of each centre crop that drops that fraction of every side.

    A copy cropped by some 2-10% and resized back hashes like the original's crop of the
    same fraction (measured: within 4 bits for 40 of 40 random crops of photos, offsets
    included), while the whole-image hashes of the two are far apart.
    """
    import imagehash
    from PIL import Image

    im = Image.fromarray(np.asarray(image, np.uint8))
    w, h = im.size
    views = [im] + [
        im.crop((round(f * w), round(f * h), w - round(f * w), h - round(f * h))) for f in crops
    ]
    bits = [np.asarray(imagehash.phash(v).hash, np.uint8).ravel() for v in views]
    packed = np.array([int(np.packbits(b).view(">u8")[0]) for b in bits], np.uint64)
    return packed if crops else packed[0]


def hash_distances(a: Any, b: Any = None) -> np.ndarray:
    """``[N, M]`` Hamming distances between packed hashes ``a`` ``[N]`` and ``b`` ``[M]``
    (``b = a`` when omitted)."""
    a = np.asarray(a, np.uint64)
    b = a if b is None else np.asarray(b, np.uint64)
    return np.bitwise_count(a[:, None] ^ b[None, :]).astype(np.int32)


def near_duplicates(
    features: Any,
    hashes: Any = None,
    *,
    cosine: float = COSINE,
    hamming: int = HAMMING,
    crop_hamming: int = CROP_HAMMING,
    block: int = 1024,
) -> list[tuple[int, int, float]]:
    """Pairs ``(a, b, similarity)`` with ``a < b`` that look like copies of each other, most
    similar first; ``similarity`` is the features' cosine similarity. Compares ``block`` rows
    at a time, so memory stays ``O(block x N)`` however large the project.

    Args:
        features: ``[N, D]`` backbone features.
        hashes: optional perceptual hashes (:func:`perceptual_hash`): ``[N]`` whole-image
            hashes, or ``[N, 1 + C]`` with centre-crop hashes after the whole-image one. A
            pair also counts when the whole-image hashes differ in at most ``hamming``
            bits, or one image's whole hash is within ``crop_hamming`` bits of a crop of the
            other (a cropped copy).
        cosine: feature similarity from which a pair counts.
        hamming: whole-image hash distance up to which a pair counts.
        crop_hamming: whole-to-crop hash distance up to which a pair counts.
        block: rows compared at a time.
    """
    x = unit_rows(features)
    n = len(x)
    if n < 2:
        return []
    h = None if hashes is None else np.asarray(hashes, np.uint64).reshape(n, -1)
    pairs = []
    for start in range(0, n, block):
        rows = slice(start, min(n, start + block))
        similarity = x[rows] @ x.T
        close = similarity >= cosine
        if h is not None:
            close |= hash_distances(h[rows, 0], h[:, 0]) <= hamming
            for c in range(1, h.shape[1]):
                close |= hash_distances(h[rows, 0], h[:, c]) <= crop_hamming
                close |= hash_distances(h[rows, c], h[:, 0]) <= crop_hamming
        # every test is symmetric (the crop test runs both ways), so each pair is taken
        # from its first image's row
        i, j = np.nonzero(close)
        keep = i + start < j
        for a, b in zip(i[keep], j[keep], strict=True):
            pairs.append((int(a + start), int(b), round(float(similarity[a, b]), 4)))
    return sorted(pairs, key=lambda t: (-t[2], t[0], t[1]))


def outliers(
    features: Any, k: int = 5, z: float = 3.0, *, block: int = 1024
) -> list[tuple[int, float]]:
    """``(index, score)`` of images far from their ``k`` nearest neighbours: the mean
    cosine distance to them, more than ``z`` robust standard deviations above the median
    (median absolute deviation), farthest first. Compares ``block`` rows at a time
    (memory ``O(block x N)``)."""
    x = unit_rows(features)
    n = len(x)
    if n <= k + 1:
        return []
    score = np.empty(n)
    for start in range(0, n, block):
        distance = 1.0 - x[start : start + block] @ x.T
        rows = np.arange(len(distance))
        distance[rows, rows + start] = np.inf  # not its own neighbour
        score[start : start + len(distance)] = np.sort(
            np.partition(distance, k - 1, axis=1)[:, :k], axis=1
        ).mean(axis=1)
    median = np.median(score)
    spread = 1.4826 * np.median(np.abs(score - median)) + 1e-12
    far = np.flatnonzero((score - median) / spread > z)
    return sorted(((int(i), round(float(score[i]), 4)) for i in far), key=lambda t: -t[1])


def tag_warnings(counts: dict[str, int], thin: int = THIN, imbalance: float = IMBALANCE):
    """``(thin_tags, imbalance_text or None)``: tags with fewer than ``thin`` images, and
    the ratio of the largest to the smallest tag when it is worse than ``imbalance``."""
    regular = {t: c for t, c in counts.items() if c > 0}
    thin_tags = sorted(t for t, c in regular.items() if c < thin)
    if len(regular) < 2:
        return thin_tags, None
    big, small = max(regular, key=regular.get), min(regular, key=regular.get)
    ratio = regular[big] / regular[small]
    text = (
        f"{big!r} has {regular[big]} images, {small!r} {regular[small]} ({ratio:.1f}:1)"
        if ratio > imbalance
        else None
    )
    return thin_tags, text


def odd_sizes(sizes: Sequence[tuple[int, int]], factor: float = 4.0) -> list[int]:
    """Indices of images whose pixel count is more than ``factor`` times away from the
    median image's (tiny thumbnails among photos, or huge scans)."""
    if not sizes:
        return []
    pixels = np.array([w * h for w, h in sizes], np.float64)
    median = np.median(pixels)
    return [int(i) for i in np.flatnonzero((pixels > factor * median) | (pixels * factor < median))]
