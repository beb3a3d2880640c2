"""Training on arrays: no Project here, numpy arrays in and flat weights out.

* :mod:`.config` -- :class:`TrainConfig` (what to train, typed options) and
  :class:`FitResult` (what a training leaves);
* :mod:`.step` -- loss, AdamW with masked weight decay, optax's schedule, the jitted step;
* :mod:`.augment` -- on-device augmentation;
* :mod:`.loop` -- :func:`fit` (epochs, time budget, the best checkpoint kept);
* :mod:`.head` -- :func:`fit_head` (the quick budget's head on frozen features) and
  :func:`spread_unlabelled` (untagged images put to work when cross-validation agrees);
* :mod:`.top` -- :func:`fit_top` (the advanced budget: the top of a pretrained network
  fine-tuned on cached activations, cross-validated);
* :mod:`.events` -- :class:`Phase` and :class:`Event`, the training events' names;
* :mod:`.options` -- :class:`TrainOptions` (what a user may ask of a training, declared once);
* :mod:`.recipes` -- :func:`train` (quick head, fine-tuned top or from scratch, and which
  result is kept).

Names load on first use, so reading :class:`TrainOptions` does not import JAX.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "extract_features": "..models.apply",
    "model_to_weights": "..models.weights",
    "weights_to_model": "..models.weights",
    "AUGMENTATIONS": ".config",
    "DeadlineError": ".config",
    "FitResult": ".config",
    "TrainConfig": ".config",
    "fit_head": ".head",
    "spread_unlabelled": ".head",
    "KeepBest": ".loop",
    "create_model": ".loop",
    "fit": ".loop",
    "selection_score": ".loop",
    "TrainOptions": ".options",
    "Event": ".events",
    "Phase": ".events",
    "Inputs": ".recipes",
    "Trained": ".recipes",
    "train": ".recipes",
    "TOP_EPOCHS": ".top",
    "TOP_LR": ".top",
    "fit_top": ".top",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name], __name__), name)
