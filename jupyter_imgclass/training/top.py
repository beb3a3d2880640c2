"""The advanced budget on few images: fine-tune the top of a pretrained network on cached
activations of its frozen rest, the number of epochs chosen by cross-validation.

Fine-tuning a whole EfficientNet on a CPU costs minutes per epoch and, on 20 images a tag,
fits the training set before it generalises. The lever measured in PyTorch beforehand
(``DESIGN.md``): run the frozen lower network once per image (and once per mirrored
image, the augmentation), keep its activations, and train only the last stages, the
``conv_head`` and the head on them -- from the logistic-regression head, with Adam at a
small rate and every weight pulled towards where it started (L2-SP, Li et al. 2018), batch
norm frozen. An epoch then costs milliseconds per image, so the whole schedule runs once
per cross-validation fold: every image gets an out-of-fold probability after every epoch,
the epoch count is the one that scores best over all folds, and the final network is
refitted on every image for that many epochs.

:func:`fit_top` returns the fine-tuned network's :class:`FitResult`; whether it replaces
the head (it must beat the head's own cross-validated figures) is the caller's choice.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from ..errors import TrainingError
from ..evaluate import validation_metrics
from ..models.apply import batch_sharding, probabilities, run_batched
from ..models.layers import head_input
from ..models.weights import model_to_weights
from .config import DeadlineError, FitResult, TrainConfig, class_weights
from .events import Emitter, Event, Phase
from .loop import KeepBest

__all__ = ["TOP_BATCH", "TOP_EPOCHS", "TOP_LR", "TOP_PULL", "fit_top"]

TOP_EPOCHS = 10
"""Epochs tried in every fold (the best count over the folds is kept)."""
TOP_LR = 1e-4
"""Adam's rate (the PyTorch reference's)."""
TOP_PULL = 1e-2
"""L2-SP strength: ``TOP_PULL / 2 * sum((w - w_start) ** 2)`` joins the loss."""
TOP_BATCH = 16


def fit_top(
    config: TrainConfig,
    model: nnx.Module,
    data: Mapping[str, Any],
    *,
    split: int,
    folds: Sequence[np.ndarray],
    fold_heads: Sequence[tuple[np.ndarray, np.ndarray]],
    epochs: int = TOP_EPOCHS,
    learning_rate: float = TOP_LR,
    pull: float = TOP_PULL,
    batch_size: int = TOP_BATCH,
    on_event: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> FitResult:
    """Fine-tunes blocks ``[split:]``, ``conv_head`` and the head, cross-validated.

    Args:
        config: ``kind``, ``seed``, ``class_weights`` and ``deadline`` are used.
        model: the network whose ``head`` (and ``head_input``) is the logistic-regression
            head trained on every image; it is not modified.
        data: ``{'activation': float32 [N, h, w, c] entering block split, 'label': ...}``
            and optionally ``'mirrored'`` (the same of the mirrored images), drawn instead
            of ``'activation'`` for half the images of each epoch.
        split: the first trained block (``model.top_split()``).
        folds: held-out index sets covering every image.
        fold_heads: per fold, the head ``(kernel, bias)`` trained without it: that fold's
            start, so that nothing a fold is scored on has been seen.
        epochs: the longest schedule tried.
        learning_rate: Adam's rate.
        pull: L2-SP strength towards the starting weights.
        batch_size: images per step.
        on_event: gets ``{'phase': 'training', ...}`` and one ``{'event': 'epoch'}`` per
            epoch count with its cross-validated figures.
        should_stop: checked between epochs.

    Returns:
        The network refitted on every image for the best epoch count; ``val_probabilities``
        are that count's out-of-fold probabilities (every image, in ``data``'s order) and
        ``history`` one record per epoch count; ``head_input`` is the model's.

    Raises:
        DeadlineError: ``config.deadline`` came before the folds and the refit were done.
        TrainingError: bad arrays or folds, or a stop.
    """
    started = time.perf_counter()
    emit = Emitter(on_event)
    kind = config.kind
    acts = np.asarray(data["activation"], np.float32)
    mirrored = data.get("mirrored")
    y = np.asarray(data["label"])
    n = len(acts)
    if len(y) != n or (mirrored is not None and np.shape(mirrored) != acts.shape):
        raise TrainingError(f"fit_top: {n} activations, {len(y)} labels, mirrored mismatch")
    if len(folds) != len(fold_heads) or len(folds) < 2:
        raise TrainingError("fit_top: need 2 or more folds, each with its head")
    num_classes = int(np.asarray(fold_heads[0][1]).shape[-1])
    cw = class_weights(config, y, num_classes)
    weight = np.ones(n, np.float32) if kind == "multilabel" else cw[y.astype(np.int64)]

    net = _Top(model, split, kind, learning_rate, pull)
    rng = np.random.default_rng(config.seed)
    oof = np.zeros((epochs, n, num_classes), np.float32)
    emit({"phase": Phase.FINE_TUNING, "done": 0, "total": len(folds) + 1})
    for o, held in enumerate(folds):
        train_idx = np.setdiff1d(np.arange(n), held)
        params, start = net.start(fold_heads[o]), net.start(fold_heads[o])
        opt_state = net.opt.init(params)
        for e in range(epochs):
            _check_time(config, should_stop)
            params, opt_state, _ = net.epoch(
                params, opt_state, start, acts, mirrored, y, weight, train_idx, batch_size, rng
            )
            oof[e, held] = net.predict(params, acts[held])
        emit({"phase": Phase.FINE_TUNING, "done": o + 1, "total": len(folds) + 1})

    history, best = [], KeepBest(kind)
    for e in range(epochs):
        record = {"epoch": e + 1, "epochs": epochs, **validation_metrics(y, oof[e], kind)}
        history.append(record)
        best.consider(e + 1, record, e + 1, oof[e])  # the epoch count is what is kept
        emit({"event": Event.EPOCH, **record, "elapsed_s": round(time.perf_counter() - started, 3)})

    params, start = net.start(net.final_head), net.start(net.final_head)
    opt_state, losses = net.opt.init(params), []
    everything = np.arange(n)
    for _ in range(best.epoch):
        _check_time(config, should_stop)
        params, opt_state, loss = net.epoch(
            params, opt_state, start, acts, mirrored, y, weight, everything, batch_size, rng
        )
        losses.append(loss)
    emit({"phase": Phase.FINE_TUNING, "done": len(folds) + 1, "total": len(folds) + 1})
    for record, loss in zip(history, losses, strict=False):
        record["loss"] = loss  # the refit's training loss at that epoch
    return best.result(
        net.weights(params),
        history,
        stopped=False,
        started=started,
        head_input=model.head_input,
        extra={"split": split, "folds": len(folds), "epochs": epochs, "pull": pull},
    )


def _check_time(config: TrainConfig, should_stop: Callable[[], bool] | None) -> None:
    if should_stop is not None and should_stop():
        raise TrainingError("stopped while fine-tuning")
    if config.deadline is not None and time.time() > config.deadline:
        raise DeadlineError("the time budget ran out while fine-tuning")


class _Top:
    """The trainable top of one network as pure functions of its parameters (a pure dict):
    ``start`` (pretrained + a head), ``epoch`` (shuffled Adam steps), ``predict``."""

    def __init__(self, model: nnx.Module, split: int, kind: str, lr: float, pull: float):
        graphdef, state = nnx.split(model)
        clone = nnx.merge(graphdef, state)
        clone.eval()  # frozen batch-norm statistics, no dropout
        self.graphdef, params, self.rest = nnx.split(clone, nnx.Param, ...)
        self.template = params
        self.pretrained = nnx.to_pure_dict(params)
        self.final_head = (self.pretrained["head"]["kernel"], self.pretrained["head"]["bias"])
        self.model = clone
        self.opt = optax.adam(lr)

        def logits(pure, a):
            state = jax.tree.map(lambda x: x, self.template)
            nnx.replace_by_pure_dict(state, pure)
            m = nnx.merge(self.graphdef, state, self.rest)
            return m.head(head_input(m.upper(a, split), m.head_input))

        def loss(pure, start, a, y, w):
            z = logits(pure, a)
            if kind == "multilabel":
                per = optax.sigmoid_binary_cross_entropy(z, y.astype(jnp.float32)).mean(-1)
            else:
                per = optax.softmax_cross_entropy_with_integer_labels(z, y.astype(jnp.int32))
            drift = sum(
                jnp.sum(jnp.square(p - s))
                for p, s in zip(jax.tree.leaves(pure), jax.tree.leaves(start), strict=True)
            )
            return jnp.sum(per * w) / jnp.maximum(jnp.sum(w), 1e-6) + 0.5 * pull * drift

        def step(pure, opt_state, start, a, y, w):
            value, grads = jax.value_and_grad(loss)(pure, start, a, y, w)
            updates, opt_state = self.opt.update(grads, opt_state, pure)
            return optax.apply_updates(pure, updates), opt_state, value

        self._step = jax.jit(step, donate_argnums=(0, 1))
        self._predict = jax.jit(lambda pure, a: probabilities(logits(pure, a), kind))

    def start(self, head: tuple[np.ndarray, np.ndarray]) -> dict:
        pure = jax.tree.map(jnp.array, self.pretrained)  # copies: steps donate their input
        pure["head"]["kernel"] = jnp.array(head[0], jnp.float32, copy=True)
        pure["head"]["bias"] = jnp.array(head[1], jnp.float32, copy=True)
        return pure

    def epoch(self, pure, opt_state, start, acts, mirrored, y, weight, rows, batch, rng):
        """One shuffled pass over ``rows``; the last batch is padded with zero weights."""
        order = rng.permutation(rows)
        use_mirror = rng.random(len(order)) < 0.5 if mirrored is not None else None
        sharding = batch_sharding(batch)
        total = 0.0
        for b in range(0, len(order), batch):
            idx = order[b : b + batch]
            w = weight[idx]
            if len(idx) < batch:  # padded with real rows at zero weight
                pad = batch - len(idx)
                w = np.concatenate([w, np.zeros(pad, w.dtype)])
                idx = np.resize(idx, batch)
            a = acts[idx]
            if use_mirror is not None:
                flip = np.resize(use_mirror[b : b + batch], batch)
                a = np.where(flip[:, None, None, None], mirrored[idx], a)
            if sharding is not None:
                a = jax.device_put(a, sharding)
            pure, opt_state, value = self._step(pure, opt_state, start, a, y[idx], w)
            total += float(value) * min(batch, len(order) - b)
        return pure, opt_state, total / max(1, len(order))

    def predict(self, pure, acts: np.ndarray) -> np.ndarray:
        return run_batched(self._predict, pure, acts, 64)

    def weights(self, pure) -> dict[str, np.ndarray]:
        """Flat weights of the whole network (the frozen part and statistics included)."""
        state = jax.tree.map(lambda x: x, self.template)
        nnx.replace_by_pure_dict(state, pure)
        return model_to_weights(nnx.merge(self.graphdef, state, self.rest))
