"""A network <-> its flat weights (``{'conv1.kernel': array, 'bn1.mean': array, ...}``).

The flat dict is what ``weights.safetensors`` holds in iterations and bundles: parameters
and batch statistics, keyed by their '.'-joined paths in the NNX module tree.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ..errors import ImgClassError
from . import ModelSpec, get

__all__ = ["model_to_weights", "weights_to_model"]


def _key(path: Sequence[Any]) -> str:
    return ".".join(str(p) for p in path)


def model_to_weights(model: nnx.Module) -> dict[str, np.ndarray]:
    """Flat ``{'conv1.kernel': array, 'bn1.mean': array, ...}`` of parameters and statistics.

    Examples:
        >>> from flax import nnx
        >>> from jupyter_imgclass import models
        >>> m = models.get("small_cnn").create(3, rngs=nnx.Rngs(0))
        >>> model_to_weights(m)["head.kernel"].shape
        (128, 3)
    """
    state = nnx.state(model, (nnx.Param, nnx.BatchStat))
    return {_key(path): np.asarray(var.get_value()) for path, var in nnx.to_flat_state(state)}


def _small_cnn_input_size(weights: Mapping[str, Any]) -> int | None:
    kernel = weights.get("dense1.kernel")
    if kernel is None:
        return None
    side = math.isqrt(int(np.shape(kernel)[0]) // 64)
    return side * 4


def weights_to_model(
    spec: ModelSpec | str,
    num_classes: int,
    weights: Mapping[str, Any],
    *,
    input_size: int | None = None,
    head_input: str = "raw",
) -> nnx.Module:
    """Rebuilds a network from flat weights (no random initialisation is spent).

    Args:
        spec: the network's ``ModelSpec`` or registered name.
        num_classes: outputs of its head.
        weights: as returned by :func:`model_to_weights` / ``FitResult.weights``.
        input_size: for ``small_cnn``, read from the weights when ``None``.
        head_input: what the head sees (``"raw"`` or ``"l2"``; see ``ModelSpec.create``).

    Returns:
        The network in eval mode.

    Raises:
        ImgClassError: a weight is missing, unexpected, or has the wrong shape.
    """
    spec = get(spec) if isinstance(spec, str) else spec
    if input_size is None and spec.name == "small_cnn":
        input_size = _small_cnn_input_size(weights)
    abstract = nnx.eval_shape(
        lambda: spec.create(
            num_classes,
            rngs=nnx.Rngs(0),
            pretrained=False,
            input_size=input_size,
            head_input=head_input,
        )
    )
    graphdef, state = nnx.split(abstract)
    flat = []
    used = set()
    for path, var in nnx.to_flat_state(state):
        name = _key(path)
        shape = var.get_value().shape
        if isinstance(var, nnx.Param | nnx.BatchStat):
            if name not in weights:
                raise ImgClassError(f"weights for {spec.name}: {name!r} is missing")
            value = np.asarray(weights[name])
            if value.shape != tuple(shape):
                raise ImgClassError(
                    f"weights for {spec.name}: {name!r} has shape {value.shape}, "
                    f"the network needs {tuple(shape)} ({num_classes} classes)"
                )
            used.add(name)
            flat.append((path, var.replace(jnp.asarray(value, dtype=var.get_value().dtype))))
        elif isinstance(var, nnx.RngKey):
            flat.append((path, var.replace(jax.random.key(0))))
        elif isinstance(var, nnx.RngCount):
            flat.append((path, var.replace(jnp.zeros(shape, jnp.uint32))))
        else:
            raise ImgClassError(f"{spec.name}: cannot restore {name!r} ({type(var).__name__})")
    extra = sorted(set(weights) - used)
    if extra:
        raise ImgClassError(f"weights for {spec.name}: unexpected {', '.join(extra[:5])}")
    model = nnx.merge(graphdef, nnx.from_flat_state(flat))
    model.eval()
    return model
