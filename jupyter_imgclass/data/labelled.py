"""The labelled images of a project as a classifier sees them, and the rules on their size.

One copy of each data rule: what makes a set trainable (:func:`check_trainable`), the
warnings about thin or lopsided tags (:func:`data_warnings`, shown by
``Project.warnings()``, the training run and the reports), and the seeded, stratified
split (:func:`stratified_split`).

Examples:
    >>> data_warnings({"cat": 40, "dog": 3})
    ["tag 'dog' has 3 images; at least 5 are needed (50 or more recommended)", \
"tags are imbalanced: 'cat' has 40 images, 'dog' has 3 (13.3:1); aim for 2:1 or better"]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..errors import TrainingError
from .store import ImageStore

__all__ = [
    "LabelledSet",
    "check_trainable",
    "class_counts",
    "data_warnings",
    "labelled_set",
    "cross_validation_folds",
    "stratified_split",
]

MIN_PER_TAG = 2
"""Fewer images than this in a tag and training is refused (one to train, one to check)."""
MIN_IMAGES_PER_TAG = 5
"""Below this many images a tag gets a warning (the hosted services' hard minimum)."""
MAX_IMBALANCE = 2.0
"""Largest tag / smallest tag above this ratio gets a warning (guidance: keep it 1:2 or better)."""
VAL_FRACTION = 0.2
MAX_FOLDS = 5
LEAVE_ONE_OUT_BELOW = 12
"""Sets with fewer labelled images than this are cross-validated leave-one-out."""


@dataclass
class LabelledSet:
    """The labelled images of a project as a classifier sees them.

    Attributes:
        image_ids: int64 ``[N]`` store ids.
        labels: int32 ``[N]`` class indices (multiclass) or float32 0/1 ``[N, T]``
            (multilabel).
        classes: the classifier's outputs, in order (tag names).
        kind: ``"multiclass"`` or ``"multilabel"``.
    """

    image_ids: np.ndarray
    labels: np.ndarray
    classes: list[str]
    kind: str

    def without(self, image_ids) -> LabelledSet:
        """The same set without ``image_ids`` (classes unchanged)."""
        keep = ~np.isin(self.image_ids, np.asarray(list(image_ids), np.int64))
        return LabelledSet(self.image_ids[keep], self.labels[keep], self.classes, self.kind)


def labelled_set(store: ImageStore) -> LabelledSet:
    """Collects labelled images and their targets from a project's store.

    Multiclass: each image with one tag is one example; the negative tag, when used, is a
    class of its own ("none of these"). Multilabel: one sigmoid output per regular tag; an
    image with the negative tag has all targets 0.
    """
    kind = store.meta("kind") or "multiclass"
    negative = store.negative_tag_name()
    regular = [t.name for t in store.tags() if not t.is_negative]
    images = [im for im in store.images() if im.tags]
    if kind == "multiclass":
        used_negative = negative is not None and any(negative in im.tags for im in images)
        classes = regular + ([negative] if used_negative else [])
        index = {c: k for k, c in enumerate(classes)}
        ids, labels = [], []
        for im in images:
            tag = im.tags[0]
            if tag in index:
                ids.append(im.id)
                labels.append(index[tag])
        return LabelledSet(np.array(ids, np.int64), np.array(labels, np.int32), classes, kind)
    index = {c: k for k, c in enumerate(regular)}
    ids, rows = [], []
    for im in images:
        row = np.zeros(len(regular), np.float32)
        for tag in im.tags:
            if tag in index:
                row[index[tag]] = 1.0
        ids.append(im.id)
        rows.append(row)
    labels = np.stack(rows) if rows else np.zeros((0, len(regular)), np.float32)
    return LabelledSet(np.array(ids, np.int64), labels, regular, kind)


def class_counts(data: LabelledSet) -> dict[str, int]:
    """Examples per class."""
    if data.kind == "multiclass":
        return {c: int((data.labels == k).sum()) for k, c in enumerate(data.classes)}
    return {c: int(data.labels[:, k].sum()) for k, c in enumerate(data.classes)}


def data_warnings(counts: Mapping[str, int]) -> list[str]:
    """Warnings about tags with too few images or a lopsided dataset.

    Follows the hosted services' guidance: at least 5 images per tag (50 or more is
    better), and the smallest tag at least half the size of the largest (1:2).

    Args:
        counts: ``{tag: number of labelled images}``.

    Returns:
        Human-readable warnings, empty when the dataset looks balanced.
    """
    warnings = []
    for tag, count in counts.items():
        if count < MIN_IMAGES_PER_TAG:
            noun = "image" if count == 1 else "images"
            warnings.append(
                f"tag {tag!r} has {count} {noun}; at least {MIN_IMAGES_PER_TAG} are needed "
                "(50 or more recommended)"
            )
    present = {tag: int(c) for tag, c in counts.items() if c > 0}
    if len(present) >= 2:
        largest = max(present, key=lambda k: present[k])
        smallest = min(present, key=lambda k: present[k])
        ratio = present[largest] / present[smallest]
        if ratio > MAX_IMBALANCE:
            warnings.append(
                f"tags are imbalanced: {largest!r} has {present[largest]} images, "
                f"{smallest!r} has {present[smallest]} ({ratio:.1f}:1); "
                f"aim for {MAX_IMBALANCE:.0f}:1 or better"
            )
    return warnings


def check_trainable(data: LabelledSet) -> list[str]:
    """Raises :class:`TrainingError` when training cannot work; returns warnings otherwise."""
    if len(data.classes) < 2:
        raise TrainingError(
            f"need at least 2 tags with images to train, found {len(data.classes)} "
            f"({', '.join(data.classes) or 'none'}); label more images"
        )
    counts = class_counts(data)
    too_few = [f"{c!r} ({n})" for c, n in counts.items() if n < MIN_PER_TAG]
    if too_few:
        raise TrainingError(
            f"every tag needs at least {MIN_PER_TAG} images to train and validate; too few: "
            + ", ".join(too_few)
        )
    return data_warnings(counts)


def stratified_split(
    labels: np.ndarray, kind: str, *, val_fraction: float = VAL_FRACTION, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train/validation indices; every class with 2+ examples gets one in each side.

    Multilabel examples are stratified by their rarest positive tag ("none" when untagged).
    """
    rng = np.random.default_rng(seed)
    strata = _strata(labels, kind)
    train_idx, val_idx = [], []
    for s in np.unique(strata):
        members = np.flatnonzero(strata == s)
        rng.shuffle(members)
        n_val = int(round(len(members) * val_fraction))
        if len(members) >= 2:
            n_val = min(max(n_val, 1), len(members) - 1)
        else:
            n_val = 0
        val_idx += members[:n_val].tolist()
        train_idx += members[n_val:].tolist()
    return np.array(sorted(train_idx), np.int64), np.array(sorted(val_idx), np.int64)


def _strata(labels: np.ndarray, kind: str) -> np.ndarray:
    """One stratum per example: its class, or (multilabel) its rarest positive tag."""
    if kind == "multiclass":
        return np.asarray(labels).astype(np.int64)
    y = np.asarray(labels)
    freq = y.sum(axis=0)
    return np.array(
        [int(np.argmin(np.where(row > 0, freq, np.inf))) if row.any() else -1 for row in y]
    )


def stratified_folds(labels: np.ndarray, kind: str, k: int, seed: int = 0) -> list[np.ndarray]:
    """``k`` disjoint held-out index sets covering every example, each class dealt out
    evenly (multilabel: by its rarest positive tag), seeded."""
    rng = np.random.default_rng(seed)
    strata = _strata(labels, kind)
    folds: list[list[int]] = [[] for _ in range(k)]
    offset = 0
    for s in np.unique(strata):
        members = np.flatnonzero(strata == s)
        rng.shuffle(members)
        for j, index in enumerate(members):
            folds[(offset + j) % k].append(int(index))
        offset += len(members)
    return [np.array(sorted(f), np.int64) for f in folds if f]


def cross_validation_folds(
    labels: np.ndarray, kind: str, *, seed: int = 0, max_folds: int = MAX_FOLDS
) -> list[np.ndarray]:
    """The held-out sets of a project's cross-validation (the metrics' one rule).

    ``max_folds`` (5) stratified folds; fewer when a tag has fewer images (never under 2);
    leave-one-out for sets of fewer than :data:`LEAVE_ONE_OUT_BELOW` images.

    Examples:
        >>> [len(f) for f in cross_validation_folds(np.repeat([0, 1], 10), "multiclass")]
        [4, 4, 4, 4, 4]
        >>> len(cross_validation_folds(np.array([0, 0, 1, 1, 1]), "multiclass"))
        5
    """
    n = len(labels)
    if n < LEAVE_ONE_OUT_BELOW:
        return [np.array([i], np.int64) for i in range(n)]
    smallest = int(np.unique(_strata(labels, kind), return_counts=True)[1].min())
    return stratified_folds(labels, kind, max(2, min(max_folds, smallest)), seed)
