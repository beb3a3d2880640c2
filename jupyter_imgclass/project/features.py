"""A project's images as the engine reads them: cached backbone features, and which
stored files can be read at all.

Features are computed once per image and cached by content hash + network + size
(``cache/``), for training (the quick head), suggestions, guesses and the data check alike.
The functions take the project as their first argument; this module imports no other
module of the project layer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..data.images import DEFAULT_RESIZE, unreadable_reason
from ..data.labelled import LabelledSet

__all__ = [
    "FEATURE_BACKBONE",
    "FEATURE_BATCH",
    "cached_features",
    "untagged_ids",
    "project_features",
    "unreadable_images",
    "usable_set",
]

FEATURE_BATCH = 32
"""Images per forward pass while extracting features."""

FEATURE_BACKBONE = "efficientnet_lite0"
"""Whose features ``suggest`` and ``check`` use when no pretrained iteration exists."""
FEATURE_RESIZE = DEFAULT_RESIZE
"""How :data:`FEATURE_BACKBONE` sees the images there (the data check's outlier and
near-duplicate figures were measured on squashed images)."""


def cached_features(
    project: Any,
    model,
    spec,
    image_ids,
    size: int,
    on_progress=None,
    *,
    resize: str = DEFAULT_RESIZE,
):
    """Backbone features ``[N, D]`` of ``image_ids`` at ``size`` pixels made square as
    ``resize`` says, computed once and cached; ``on_progress(done, total)`` while missing
    ones are extracted.

    Args:
        project: the :class:`~jupyter_imgclass.Project` holding the images.
        model: the backbone (a network built by ``spec``).
        spec: its :class:`~jupyter_imgclass.models.ModelSpec`.
        image_ids: which images, in the order of the rows returned.
        size: the square input side.
        on_progress: called with ``(done, total)`` images.
        resize: one of :data:`~jupyter_imgclass.data.images.RESIZE_MODES`.
    """
    from ..models.apply import extract_features

    records = project.images_by_id(image_ids)
    shas = [im.sha256 for im in records]
    cached, missing = project.cache.features_many(shas, spec.name, size, resize)
    total = len(records)
    if not missing:
        return np.asarray(cached, np.float32)
    if on_progress is not None:
        on_progress(total - len(missing), total)
    pairs = [(records[k].sha256, records[k].path) for k in missing]
    arrays = project.cache.arrays(pairs, size, resize=resize)

    def progress(done: int, _total: int) -> None:
        if on_progress is not None:
            on_progress(total - len(missing) + done, total)

    vecs = extract_features(model, spec, arrays, batch_size=FEATURE_BATCH, on_progress=progress)
    project.cache.features_put_many([shas[k] for k in missing], spec.name, size, vecs, resize)
    feats = np.zeros((total, vecs.shape[1]), np.float32) if cached is None else np.array(cached)
    feats[missing] = vecs
    return feats.astype(np.float32)


def project_features(project: Any, image_ids, iteration=None) -> np.ndarray:
    """Cached backbone features of ``image_ids``: the pretrained ``iteration``'s backbone
    at its input size, else :data:`FEATURE_BACKBONE`'s (extracting missing ones)."""
    from flax import nnx

    from .. import models

    spec = models.get(FEATURE_BACKBONE)
    size, resize = spec.input_size, FEATURE_RESIZE
    if iteration is not None and models.get(iteration.model).pretrained:
        spec, size, resize = models.get(iteration.model), iteration.input_size, iteration.resize
    backbone = spec.create(1, rngs=nnx.Rngs(0), pretrained=True)
    return cached_features(project, backbone, spec, list(image_ids), size, resize=resize)


def unreadable_images(images) -> dict[int, tuple[Path, str]]:
    """``{image_id: (file, reason)}`` of the image records whose stored file is missing or
    damaged (training and the data check skip them)."""
    found = {}
    for im in images:
        reason = unreadable_reason(im.path)
        if reason is not None:
            found[im.id] = (im.path, reason)
    return found


def untagged_ids(project: Any, *, seed: int = 0) -> list[int]:
    """Ids of the project's readable untagged images that the quick head may use
    (:func:`~jupyter_imgclass.training.head.pool_rows` picks them, before any feature is
    extracted)."""
    from ..training.head import pool_rows

    records = project.filter_images("untagged")
    bad = unreadable_images(records)
    ids = [im.id for im in records if im.id not in bad]
    return [ids[k] for k in pool_rows(len(ids), seed)]


def usable_set(project: Any, data: LabelledSet) -> tuple[LabelledSet, list[str]]:
    """``data`` without images whose stored file is missing or damaged, and one warning
    per skipped image naming its id and file (every process of a run drops the same)."""
    bad = unreadable_images(project.images_by_id(data.image_ids))
    warnings = [f"image {i} ({path}) skipped: {why}" for i, (path, why) in bad.items()]
    return (data.without(bad), warnings) if bad else (data, [])
