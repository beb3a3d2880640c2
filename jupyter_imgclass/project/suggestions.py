"""What to label next, and the model's guess for it: active learning over a project.

:func:`suggest` ranks the untagged images with :mod:`jupyter_imgclass.active`'s strategies
on cached backbone features (:mod:`.features`) and the latest iteration's probabilities;
:func:`guesses` gives the labeller the tag to pre-select. Probabilities come from the
iteration's :class:`~jupyter_imgclass.predict.Predictor`, on the cached features when the
iteration's backbone is the frozen pretrained one.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from ..active import STRATEGY_TABLE, check_strategy, choose
from ..errors import ImgClassError
from .features import project_features

__all__ = ["guesses", "predicted", "suggest"]


def suggest(project: Any, n: int, strategy: str, iteration=None, seed: int = 0) -> list:
    """The ``n`` untagged images of ``project`` to label next (``Project.suggest``)."""
    check_strategy(strategy)
    images = project.images
    untagged = [k for k, im in enumerate(images) if not im.tags]
    if not untagged or n <= 0:
        return []
    labelled = [k for k, im in enumerate(images) if im.tags]
    it = iteration or _latest(project)
    feats = project_features(project, [im.id for im in images], it)
    probs = None
    if it is not None and STRATEGY_TABLE[strategy].uses_model:
        probs = predicted(project, it, [images[k].id for k in untagged], feats[untagged])
    picked = choose(
        strategy,
        n,
        features=feats,
        labelled=labelled,
        candidates=untagged,
        probabilities=probs,
        kind=project.kind,
        seed=seed,
    )
    return [images[int(k)] for k in picked]


def guesses(project: Any, image_ids: Iterable[int], iteration=None) -> dict[int, str]:
    """The iteration's most likely tag for each image (``Project.guesses``)."""
    it = iteration or _latest(project)
    ids = [int(i) for i in image_ids]
    if it is None or not ids:
        return {}
    probs = predicted(project, it, ids)
    return {i: it.classes[int(np.argmax(row))] for i, row in zip(ids, probs, strict=True)}


def predicted(project: Any, it, image_ids: list[int], features=None) -> np.ndarray:
    """``it``'s probabilities ``[N, T]`` for project images. A quick-budget iteration's
    backbone is the frozen pretrained one, so its head runs on the cached features
    (given, or looked up); any other network (fine-tuned, from scratch) runs on the images."""
    from .. import models

    if it.budget == "quick" and models.get(it.model).pretrained:
        if features is None:
            features = project_features(project, image_ids, it)
        return it.predictor.predict_features(features)
    arrays = np.stack([project.array(i, it.input_size, it.resize) for i in image_ids])
    return it.predictor.predict_arrays(arrays)


def _latest(project: Any):
    try:
        return project.iteration()
    except ImgClassError:
        return None
