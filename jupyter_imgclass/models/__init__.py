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

from ..data.images import DEFAULT_RESIZE, check_resize
from ..errors import ImgClassError
from ..platform import runtime

__all__ = ["ModelSpec", "get", "names", "register"]


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
        factory: ``factory(num_classes, rngs=..., pretrained=...) -> nnx.Module``; call
            :meth:`create`, not the factory.
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
        self,
        num_classes: int,
        *,
        rngs: Any,
        pretrained: bool = True,
        input_size: int | None = None,
        head_input: str = "raw",
        **options: Any,
    ) -> Any:
        """Builds the network with a fresh ``num_classes``-way head.

        Every network of the engine is built here, so this prepares the process for JAX
        too, if :func:`get` has not (:func:`jupyter_imgclass.platform.runtime.prepare`).

        Args:
            num_classes: width of the head.
            rngs: the network's random streams.
            pretrained: load ImageNet weights when the network has them.
            input_size: another square input side than the spec's.
            head_input: ``"raw"`` (the head sees the pooled features) or ``"l2"`` (scaled
                to unit length first: the quick budget's logistic-regression head).
            **options: network options such as ``dropout``.

        Raises:
            ImgClassError: for an unknown ``head_input``.
        """
        from .layers import HEAD_INPUTS

        if head_input not in HEAD_INPUTS:
            raise ImgClassError(f"head_input {head_input!r}: choose one of {HEAD_INPUTS}")
        runtime.prepare()
        if input_size not in (None, self.input_size):
            options["input_size"] = input_size
        model = self.factory(
            num_classes, rngs=rngs, pretrained=pretrained and self.pretrained, **options
        )
        model.head_input = head_input
        return model

    def to_json(self, input_size: int | None = None, resize: str = DEFAULT_RESIZE) -> dict:
        """The preprocessing, as written into ``model.json`` of iterations and bundles:
        images made ``input_size`` (the network's own by default) pixels square as
        ``resize`` says (:data:`~jupyter_imgclass.data.images.RESIZE_MODES`)."""
        return {
            "name": self.name,
            "input_size": int(input_size or self.input_size),
            "resize": check_resize(resize),
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

    Every computation of the engine looks its network up here before JAX's first
    computation, so this is where the process is prepared for JAX (once:
    :func:`jupyter_imgclass.platform.runtime.prepare` asks for one CPU device per core,
    tunes malloc and turns on the compilation cache).

    Raises:
        ImgClassError: for an unknown name, listing the known ones.
    """
    runtime.prepare()
    if name not in _REGISTRY and name in _BUILTIN_MODULES:
        importlib.import_module(_BUILTIN_MODULES[name])
    if name not in _REGISTRY:
        raise ImgClassError(f"unknown model {name!r}; choose one of {', '.join(names())}")
    return _REGISTRY[name]
