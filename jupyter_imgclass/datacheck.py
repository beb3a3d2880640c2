"""The data check's findings from arrays: likely label errors, near-duplicates, thin or
imbalanced tags, odd sizes and outliers. Pure functions (numpy, cleanlab, imagehash); the
project layer gathers the arrays (``Project.check``).

* label issues: cleanlab's confident learning (``cleanlab.filter.find_label_issues``) on
  out-of-fold predicted probabilities, most suspect first, each with the tag the model
  prefers;
* near-duplicates: pairs whose backbone features are nearly parallel (cosine) or whose
  perceptual hashes (``imagehash.phash``) nearly agree -- re-encoded, resized or slightly
  cropped copies;
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

__all__ = [
    "COSINE",
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
THIN = 5
IMBALANCE = 3.0


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


def perceptual_hash(image: Any) -> np.ndarray:
    """The 64-bit DCT perceptual hash (``imagehash.phash``) of an RGB array, as 64 bools."""
    import imagehash
    from PIL import Image

    return np.asarray(imagehash.phash(Image.fromarray(np.asarray(image, np.uint8))).hash).ravel()


def hash_distances(hashes: Any) -> np.ndarray:
    """``[N, N]`` Hamming distances between rows of ``[N, 64]`` boolean hashes."""
    h = np.asarray(hashes, np.int32)
    return (h[:, None, :] != h[None, :, :]).sum(axis=2)


def near_duplicates(
    features: Any,
    hashes: Any = None,
    *,
    cosine: float = COSINE,
    hamming: int = HAMMING,
) -> list[tuple[int, int, float]]:
    """Pairs ``(a, b, similarity)`` with ``a < b`` that look like copies of each other, most
    similar first; ``similarity`` is the features' cosine similarity.

    Args:
        features: ``[N, D]`` backbone features.
        hashes: optional ``[N, 64]`` perceptual hashes (:func:`perceptual_hash`); a pair
            also counts when its hashes differ in at most ``hamming`` bits.
        cosine: feature similarity from which a pair counts.
        hamming: hash distance up to which a pair counts.
    """
    x = unit_rows(features)
    if len(x) < 2:
        return []
    similarity = x @ x.T
    close = similarity >= cosine
    if hashes is not None:
        close |= hash_distances(hashes) <= hamming
    a, b = np.nonzero(np.triu(close, k=1))
    pairs = [(int(i), int(j), round(float(similarity[i, j]), 4)) for i, j in zip(a, b, strict=True)]
    return sorted(pairs, key=lambda t: -t[2])


def outliers(features: Any, k: int = 5, z: float = 3.0) -> list[tuple[int, float]]:
    """``(index, score)`` of images far from their ``k`` nearest neighbours: the mean
    cosine distance to them, more than ``z`` robust standard deviations above the median
    (median absolute deviation), farthest first."""
    x = unit_rows(features)
    n = len(x)
    if n <= k + 1:
        return []
    distance = 1.0 - x @ x.T
    np.fill_diagonal(distance, np.inf)
    score = np.sort(distance, axis=1)[:, :k].mean(axis=1)
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
