"""Transfer learning: a dense head trained on frozen backbone features (``fit_head``).

The quick budget: features are computed once per image (and cached by the project), so
training is a few hundred full-batch AdamW steps on a ``[N, D]`` matrix, compiled once
per chunk of steps.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from ..errors import TrainingError
from ..evaluate import validation_metrics
from ..models.apply import probabilities
from ..models.weights import model_to_weights
from .config import FitResult, TrainConfig, checked_sets, class_weights
from .loop import Emitter, KeepBest
from .step import adamw, learning_rates, loss, schedule

__all__ = ["fit_head"]

HEAD_CHUNKS = 8
HEAD_STEPS_PER_CHUNK = 50
HEAD_PAD = 256
HEAD_WARMUP = 0.05


@functools.lru_cache(maxsize=8)
def _head_trainer(kind: str, smoothing: float, steps: int, weight_decay: float):
    """Jitted ``chunk(W, b, opt_state, X, Y, sw, lr0, lr1) -> (W, b, opt_state, loss)``."""
    tx = adamw(1e-2, weight_decay)

    def chunk(params, opt_state, x, y, sw, lrs):
        def body(carry, lr):
            p, s = carry

            def loss_fn(p):
                logits = x @ p["kernel"] + p["bias"]
                return loss(logits, y, sw, kind, smoothing)

            value, grads = jax.value_and_grad(loss_fn)(p)
            s.hyperparams["learning_rate"] = lr
            updates, s = tx.update(grads, s, p)
            return (optax.apply_updates(p, updates), s), value

        (params, opt_state), losses = jax.lax.scan(body, (params, opt_state), lrs)
        return params, opt_state, losses[-1]

    return tx, jax.jit(chunk)


def fit_head(
    config: TrainConfig,
    backbone: nnx.Module,
    train: Mapping[str, Any],
    val: Mapping[str, Any],
    *,
    on_event: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> FitResult:
    """Transfer learning: trains only a dense head on frozen backbone features.

    The features are standardised for training and the standardisation is folded back
    into the head, whose weights replace ``backbone.head`` in the returned flat weights,
    so one full-network ``Predictor`` runs everything. Takes well under a second for a
    few thousand feature vectors (one compiled program per chunk of full-batch steps).

    Args:
        config: ``kind``, ``seed``, ``label_smoothing``, ``class_weights``,
            ``learning_rate`` (default 1e-2), ``weight_decay`` are used.
        backbone: the network the features came from (not modified).
        train: ``{'features': float32 [N, D], 'label': ...}`` (see :func:`fit`).
        val: the same for validation; the best chunk of steps is kept.
        on_event: as for :func:`fit` (one ``epoch`` event per chunk).
        should_stop: polled between chunks.

    Returns:
        A :class:`FitResult` whose ``weights`` are the whole network's.
    """
    started = time.perf_counter()
    emit = Emitter(on_event)
    kind = config.kind
    x_train, y_train, x_val, y_val, num_classes = checked_sets(config, train, val, "features")
    x_train = x_train.astype(np.float32).reshape(len(x_train), -1)
    x_val = x_val.astype(np.float32).reshape(len(x_val), -1)
    dim = x_train.shape[1]
    mu = x_train.mean(axis=0)
    sd = x_train.std(axis=0) + 1e-3
    n_pad = -(-len(x_train) // HEAD_PAD) * HEAD_PAD  # a few compiled shapes, not one per N
    xs = np.zeros((n_pad, dim), np.float32)
    xs[: len(x_train)] = (x_train - mu) / sd
    cw = class_weights(config, y_train, num_classes)
    sw = np.zeros(n_pad, np.float32)
    if kind == "multilabel":
        ys = np.zeros((n_pad, num_classes), np.float32)
        ys[: len(y_train)] = y_train
        sw[: len(y_train)] = 1.0
    else:
        ys = np.zeros(n_pad, np.int32)
        ys[: len(y_train)] = y_train
        sw[: len(y_train)] = cw[y_train.astype(np.int64)]
    tx, chunk = _head_trainer(
        kind, float(config.label_smoothing), HEAD_STEPS_PER_CHUNK, float(config.weight_decay)
    )
    key = jax.random.key(config.seed)
    params = {
        "kernel": jax.random.normal(key, (dim, num_classes), jnp.float32) * 0.01,
        "bias": jnp.zeros((num_classes,), jnp.float32),
    }
    opt_state = tx.init(params)
    peak = config.learning_rate or 1e-2
    total = HEAD_CHUNKS * HEAD_STEPS_PER_CHUNK
    history: list[dict] = []
    best = KeepBest(kind)
    sched = schedule(peak, HEAD_WARMUP)
    stopped = False
    xv = (x_val - mu) / sd
    emit({"phase": "training", "what": "head"})
    for c in range(HEAD_CHUNKS):
        if should_stop is not None and should_stop():
            stopped = True
            break
        steps = c * HEAD_STEPS_PER_CHUNK + np.arange(HEAD_STEPS_PER_CHUNK)
        lrs = learning_rates(sched, steps / total)
        params, opt_state, loss_value = chunk(params, opt_state, xs, ys, sw, lrs)
        w, b = np.asarray(params["kernel"]), np.asarray(params["bias"])
        probs = np.asarray(probabilities(xv @ w + b, kind))
        metrics = validation_metrics(y_val, probs, kind)
        elapsed = time.perf_counter() - started
        train_logits = xs[: len(x_train)] @ w + b
        if kind == "multilabel":
            acc = float(((train_logits > 0) == (y_train > 0.5)).mean())
        else:
            acc = float((train_logits.argmax(-1) == y_train).mean())
        record = {
            "epoch": c + 1,
            "epochs": HEAD_CHUNKS,
            "loss": float(loss_value),
            "accuracy": acc,
            **metrics,
            "elapsed_s": round(elapsed, 3),
            "eta_s": round(elapsed / (c + 1) * (HEAD_CHUNKS - c - 1), 3),
        }
        history.append(record)
        best.consider(c + 1, metrics, (w, b), probs)
        emit({"event": "epoch", **record})
    if best.state is None:  # stopped before the first chunk
        w, b = np.asarray(params["kernel"]), np.asarray(params["bias"])
        best.keep_if_empty((w, b), np.asarray(probabilities(xv @ w + b, kind)))
    w, b = best.state
    # Fold the standardisation in: ((f - mu) / sd) @ w + b == f @ (w / sd) + (b - (mu / sd) @ w)
    kernel = (w / sd[:, None]).astype(np.float32)
    bias = (b - (mu / sd) @ w).astype(np.float32)
    weights = model_to_weights(backbone)
    if weights.get("head.kernel") is None or weights["head.kernel"].shape[0] != dim:
        raise TrainingError(f"{config.model}: the backbone's head does not take {dim}-d features")
    weights["head.kernel"], weights["head.bias"] = kernel, bias
    return best.result(
        weights, history, stopped=stopped, started=started, extra={"num_classes": num_classes}
    )
