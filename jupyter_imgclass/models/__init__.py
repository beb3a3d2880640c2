"""Flax NNX networks registered by name, each with the preprocessing it was trained with.

Examples:
    >>> from jupyter_imgclass import models
    >>> spec = models.get("small_cnn")
    >>> spec.input_size
    28
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ImgClassError

__all__ = ["ModelSpec", "get", "names", "preprocess", "register"]


@dataclass(frozen=True)
class ModelSpec:
    """A network and the preprocessing that travels with its weights.

    Attributes:
        name: registry name, stored in iterations and bundles.
        input_size: square input side in pixels.
        mean: per-channel mean subtracted from ``x / 255``.
        std: per-channel standard deviation dividing ``x / 255 - mean``.
        pretrained: whether ImageNet weights exist for the backbone.
        feature_dim: width of ``model.features(x)``.
        factory: ``factory(num_classes, rngs=..., pretrained=...) -> nnx.Module``.
        grayscale: whether the network was designed for single-channel content (it still
            takes RGB input; informative only).
    """

    name: str
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    pretrained: bool
    feature_dim: int
    factory: Callable[..., Any] = field(repr=False, compare=False)
    description: str = ""

    def create(
        self, num_classes: int, *, rngs: Any, pretrained: bool = True, input_size: int | None = None
    ) -> Any:
        """Builds the network with a fresh ``num_classes``-way head."""
        kwargs = {} if input_size in (None, self.input_size) else {"input_size": input_size}
        return self.factory(
            num_classes, rngs=rngs, pretrained=pretrained and self.pretrained, **kwargs
        )

    def to_json(self) -> dict:
        """The preprocessing, as written into ``model.json`` of iterations and bundles."""
        return {
            "name": self.name,
            "input_size": self.input_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "channel_order": "RGB",
            "layout": "NHWC",
            "scale": "x / 255",
        }


_REGISTRY: dict[str, ModelSpec] = {}
# Modules imported lazily on first lookup so that importing the package loads no network.
_BUILTIN_MODULES = {
    "small_cnn": "jupyter_imgclass.models.small_cnn",
    "efficientnet_lite0": "jupyter_imgclass.models.efficientnet_lite",
    "efficientnet_lite1": "jupyter_imgclass.models.efficientnet_lite",
    "efficientnet_lite2": "jupyter_imgclass.models.efficientnet_lite",
}


def register(spec: ModelSpec) -> ModelSpec:
    """Adds ``spec`` to the registry (a module calls this once at import)."""
    _REGISTRY[spec.name] = spec
    return spec


def names() -> list[str]:
    """Names of every registered network."""
    return sorted(set(_REGISTRY) | set(_BUILTIN_MODULES))


def get(name: str) -> ModelSpec:
    """Returns the :class:`ModelSpec` registered as ``name``.

    Raises:
        ImgClassError: for an unknown name, listing the known ones.
    """
    if name not in _REGISTRY and name in _BUILTIN_MODULES:
        importlib.import_module(_BUILTIN_MODULES[name])
    if name not in _REGISTRY:
        raise ImgClassError(f"unknown model {name!r}; choose one of {', '.join(names())}")
    return _REGISTRY[name]


def preprocess(spec: ModelSpec, images: np.ndarray) -> np.ndarray:
    """Normalises a uint8 ``[N, H, W, 3]`` batch the way ``spec`` expects (float32)."""
    x = np.asarray(images, dtype=np.float32) / 255.0
    mean = np.asarray(spec.mean, dtype=np.float32)
    std = np.asarray(spec.std, dtype=np.float32)
    return (x - mean) / std
