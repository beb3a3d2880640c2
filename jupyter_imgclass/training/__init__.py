"""Training on arrays: no Project here, numpy arrays in and flat weights out.

* :mod:`.config` -- :class:`TrainConfig` (what to train, typed options) and
  :class:`FitResult` (what a training leaves);
* :mod:`.step` -- loss, AdamW with masked weight decay, optax's schedule, the jitted step;
* :mod:`.augment` -- on-device augmentation;
* :mod:`.loop` -- :func:`fit` (epochs, time budget, the best checkpoint kept);
* :mod:`.head` -- :func:`fit_head` (the quick budget's head on frozen features);
* :mod:`.top` -- :func:`fit_top` (the advanced budget: the top of a pretrained network
  fine-tuned on cached activations, cross-validated).
"""

from ..models.apply import extract_features
from ..models.weights import model_to_weights, weights_to_model
from .config import AUGMENTATIONS, DeadlineError, FitResult, TrainConfig
from .head import fit_head
from .loop import KeepBest, create_model, fit, selection_score
from .top import TOP_EPOCHS, TOP_LR, fit_top

__all__ = [
    "AUGMENTATIONS",
    "DeadlineError",
    "FitResult",
    "KeepBest",
    "TOP_EPOCHS",
    "TOP_LR",
    "TrainConfig",
    "create_model",
    "extract_features",
    "fit",
    "fit_head",
    "fit_top",
    "model_to_weights",
    "selection_score",
    "weights_to_model",
]
