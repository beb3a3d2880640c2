"""Running a network on arrays, with the one copy of each rule every caller shares.

* the input normalisation: ``x / 255``, then ``(x - mean) / std`` (:func:`normalise`);
* logits -> probabilities: softmax for multiclass, one sigmoid per tag for multilabel
  (:func:`probabilities`);
* fixed batch shapes: full batches, the remainder padded to the full batch (whose program
  is already compiled), and a call smaller than one batch padded to the smallest of
  :data:`BUCKETS` that holds it (:func:`bucket`, :func:`run_batched`), so that few
  programs compile.

Training (validation passes), feature extraction, ``Predictor``, the server and the ONNX
export all use these.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from . import ModelSpec, get

__all__ = [
    "BUCKETS",
    "apply_fn",
    "batch_sharding",
    "bucket",
    "eval_split",
    "extract_features",
    "extract_lower",
    "normalise",
    "probabilities",
    "run_batched",
]

BUCKETS = (1, 4, 16, 32, 64, 256)
"""Batch sizes a call smaller than one batch is padded to (those up to the batch size)."""


def normalise(
    images: Any,
    mean: Sequence[float],
    std: Sequence[float],
    transform: Callable[[jax.Array], jax.Array] | None = None,
) -> jax.Array:
    """uint8 (or 0..255 float) ``[N, H, W, 3]`` pixels -> the network's float32 input.

    Args:
        images: pixels in 0..255.
        mean: per-channel mean on ``x / 255``.
        std: per-channel standard deviation on ``x / 255``.
        transform: applied to ``x / 255`` (values in [0, 1]) before standardising, e.g.
            the training step's augmentation.

    Examples:
        >>> import numpy as np
        >>> np.asarray(normalise(np.full((1, 1, 1, 3), 255, np.uint8), (0.5,) * 3, (0.5,) * 3))
        array([[[[1., 1., 1.]]]], dtype=float32)
    """
    x = jnp.asarray(images).astype(jnp.float32) / 255.0
    if transform is not None:
        x = transform(x)
    return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def probabilities(logits: Any, kind: str) -> jax.Array:
    """Softmax rows (``multiclass``) or independent sigmoids (``multilabel``).

    Examples:
        >>> import numpy as np
        >>> np.asarray(probabilities(np.zeros((1, 2)), "multiclass")).tolist()
        [[0.5, 0.5]]
    """
    logits = jnp.asarray(logits, jnp.float32)
    if kind == "multilabel":
        return jax.nn.sigmoid(logits)
    return jax.nn.softmax(logits, axis=-1)


def bucket(n: int, batch: int) -> int:
    """The padded size of a call of ``n`` items with batches of ``batch``.

    Examples:
        >>> bucket(3, 64), bucket(20, 64), bucket(64, 64), bucket(100, 64)
        (4, 32, 64, 64)
    """
    if n >= batch:
        return batch
    return next((b for b in BUCKETS if n <= b < batch), batch)


@functools.lru_cache(maxsize=16)
def batch_sharding(size: int) -> Any:
    """A ``NamedSharding`` splitting a batch of ``size`` over every local device, or None
    (one device, or a size the devices do not divide).

    Examples:
        >>> import jax
        >>> batch_sharding(1) is None
        True
    """
    devices = jax.local_devices()
    if len(devices) < 2 or size % len(devices):
        return None
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    return NamedSharding(Mesh(np.asarray(devices), ("batch",)), PartitionSpec("batch"))


def run_batched(
    fn: Callable[[Any, np.ndarray], Any],
    state: Any,
    images: np.ndarray,
    batch: int,
    on_progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """``fn(state, part)`` over fixed-shape parts of ``images``, concatenated on the host;
    each part is split over the devices where they divide it (:func:`batch_sharding`).

    Args:
        fn: a jitted function of a state and a batch.
        state: its first argument.
        images: ``[N, ...]``.
        batch: the largest part.
        on_progress: ``on_progress(done, total)`` after each part.
    """
    n = len(images)
    size = bucket(n, batch)
    sharding = batch_sharding(size)
    outs = []
    for start in range(0, n, batch):
        part = images[start : start + batch]
        if len(part) < size:
            pad = np.zeros((size - len(part), *part.shape[1:]), part.dtype)
            part = np.concatenate([part, pad])
        if sharding is not None:
            part = jax.device_put(part, sharding)
        outs.append(np.asarray(fn(state, part))[: min(batch, n - start)])
        if on_progress is not None:
            on_progress(min(start + batch, n), n)
    return np.concatenate(outs) if outs else np.zeros((0,), np.float32)


def eval_split(model: nnx.Module) -> tuple[Any, Any]:
    """``(graphdef, state)`` of an eval-mode copy of ``model`` (the caller's mode is kept)."""
    graphdef, state = nnx.split(model)
    clone = nnx.merge(graphdef, state)
    clone.eval()
    return nnx.split(clone)


@functools.lru_cache(maxsize=32)
def apply_fn(
    graphdef: Any, mean: tuple, std: tuple, what: str, kind: str = "multiclass", split: int = 0
) -> Callable:
    """Jitted ``f(state, uint8 batch)`` -> ``"logits"``, ``"features"``, ``"probabilities"``
    or ``"lower"`` (the activation entering block ``split``, see
    ``EfficientNetLite.lower``).

    Args:
        graphdef: of an eval-mode network (see :func:`eval_split`).
        mean: the network's preprocessing mean (a tuple: the cache key).
        std: the same for its standard deviation.
        what: which output.
        kind: for ``"probabilities"``: softmax or sigmoids.
        split: for ``"lower"``.
    """

    def apply(state, images):
        model = nnx.merge(graphdef, state)
        x = normalise(images, mean, std)
        if what == "features":
            return model.features(x)
        if what == "lower":
            return model.lower(x, split)
        logits = model(x)
        return probabilities(logits, kind) if what == "probabilities" else logits

    return jax.jit(apply)


def extract_features(
    model: nnx.Module,
    spec: ModelSpec | str,
    images: np.ndarray,
    *,
    batch_size: int = 32,
    on_progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """``model.features`` of uint8 ``[N, S, S, 3]`` images, in eval mode, jit-compiled.

    Args:
        model: a network of ``spec`` (not modified; evaluated in eval mode).
        spec: its ``ModelSpec`` or name (for the preprocessing).
        images: uint8 pixels already at the network's input size.
        batch_size: images per call; the last batch is padded to a fixed shape.
        on_progress: ``on_progress(done, total)`` after each batch.

    Returns:
        float32 ``[N, feature_dim]``.
    """
    out = _evaluate(model, spec, images, "features", batch_size, on_progress)
    return out.reshape(len(images), -1).astype(np.float32)


def extract_lower(
    model: nnx.Module,
    spec: ModelSpec | str,
    images: np.ndarray,
    split: int,
    *,
    batch_size: int = 32,
    on_progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """``model.lower(x, split)`` of uint8 ``[N, S, S, 3]`` images (eval mode, jitted): the
    frozen part's activations, computed once so that the top can be fine-tuned on them.

    Returns:
        float32 ``[N, h, w, c]``.
    """
    return _evaluate(model, spec, images, "lower", batch_size, on_progress, split).astype(
        np.float32
    )


def _evaluate(model, spec, images, what: str, batch_size: int, on_progress, split: int = 0):
    """``apply_fn``'s ``what`` of uint8 images, in eval mode, in fixed-shape batches."""
    spec = get(spec) if isinstance(spec, str) else spec
    graphdef, state = eval_split(model)
    fn = apply_fn(graphdef, tuple(spec.mean), tuple(spec.std), what, split=split)
    return run_batched(fn, state, np.asarray(images, np.uint8), batch_size, on_progress)
