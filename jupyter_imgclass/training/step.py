"""The pieces of one optimisation step: loss, optimiser, learning-rate schedule, train step.

The train step is one ``jax.jit``-compiled function (augmentation, forward, loss,
gradients, the AdamW update); the Python loop in :mod:`.loop` only feeds it batches.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from ..models.apply import normalise
from .augment import augment

__all__ = [
    "SCHEDULE_STEPS",
    "adamw",
    "decay_mask",
    "learning_rates",
    "loss",
    "make_train_step",
    "schedule",
]

SCHEDULE_STEPS = 10_000
"""Resolution of the schedule: progress in [0, 1] is read at this many points."""


def loss(logits, labels, sample_weight, kind: str, smoothing: float):
    """Weighted mean cross-entropy; ``sample_weight`` 0 marks padding.

    Multiclass: softmax cross-entropy against label-smoothed one-hot targets;
    multilabel: the mean over tags of sigmoid binary cross-entropy.
    """
    if kind == "multilabel":
        per = optax.sigmoid_binary_cross_entropy(logits, labels).mean(axis=-1)
    else:
        k = logits.shape[-1]
        target = optax.smooth_labels(jax.nn.one_hot(labels, k), smoothing)
        per = optax.softmax_cross_entropy(logits, target)
    return jnp.sum(per * sample_weight) / jnp.maximum(jnp.sum(sample_weight), 1e-9)


def schedule(peak: float, warmup_fraction: float) -> optax.Schedule:
    """optax's linear warm-up then cosine decay to 1% of ``peak``, over :data:`SCHEDULE_STEPS`.

    The loops read it at ``progress * SCHEDULE_STEPS`` (progress is the larger of the step
    and the time fractions, so a time budget ends the schedule on time).
    """
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=peak,
        warmup_steps=int(round(warmup_fraction * SCHEDULE_STEPS)),
        decay_steps=SCHEDULE_STEPS,
        end_value=0.01 * peak,
    )


def learning_rates(sched: optax.Schedule, progress: Any) -> np.ndarray:
    """The schedule at ``progress`` (a number or an array of them, clipped to [0, 1])."""
    points = np.round(np.clip(np.asarray(progress, np.float64), 0.0, 1.0) * SCHEDULE_STEPS)
    return np.asarray(sched(points.astype(np.int32)), np.float32)


def decay_mask(params: Any) -> Any:
    """True for weights that take weight decay: kernels, not biases or batch-norm scales.

    Every parameter with fewer than two dimensions (biases, batch-norm scale and bias) is
    left out, as is usual for AdamW.
    """
    return jax.tree.map(lambda p: jnp.ndim(p) > 1, params)


def adamw(learning_rate: float, weight_decay: float) -> optax.GradientTransformation:
    """AdamW with the learning rate as an injected hyper-parameter and masked weight decay.

    ``mask`` is static: ``inject_hyperparams`` would otherwise call the mask function as
    if it were a schedule and decay nothing at all.
    """
    return optax.inject_hyperparams(optax.adamw, static_args=("mask",))(
        learning_rate=learning_rate, weight_decay=weight_decay, mask=decay_mask
    )


def make_train_step(
    graphdef: Any,
    tx: optax.GradientTransformation,
    spec: Any,
    kind: str,
    smoothing: float,
    augmentations: tuple[str, ...],
) -> Callable:
    """Jitted ``step(params, rest, opt_state, images, labels, sample_weight, key, lr)``.

    Returns the new ``(params, rest, opt_state)`` (``rest`` holds the batch statistics)
    with the batch's loss and accuracy. Functional: nothing is changed in place.
    """

    def step(params, rest, opt_state, images, labels, sample_weight, key, lr):
        transform = (lambda x: augment(x, key, augmentations)) if augmentations else None
        x = normalise(images, spec.mean, spec.std, transform)

        def loss_fn(p):
            # copy=True: fresh Variables at this trace level (BatchNorm writes its statistics).
            model = nnx.merge(graphdef, p, rest, copy=True)
            logits = model(x).astype(jnp.float32)  # the loss in float32 at any precision
            _, _, new_rest = nnx.split(model, nnx.Param, ...)
            return loss(logits, labels, sample_weight, kind, smoothing), (logits, new_rest)

        (value, (logits, new_rest)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        opt_state.hyperparams["learning_rate"] = lr
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        if kind == "multilabel":
            correct = jnp.mean((logits > 0) == (labels > 0.5))
        else:
            correct = jnp.mean(jnp.argmax(logits, -1) == labels)
        return params, new_rest, opt_state, value, correct

    return jax.jit(step)
