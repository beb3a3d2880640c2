"""Training the whole network on images (``fit``): epochs, a time budget, the best checkpoint.

No Project here, only numpy arrays in and flat weights out. One jit-compiled train step
(:mod:`.step`) does augmentation, forward, loss, gradients and the AdamW update; this
loop only feeds batches (dispatch is asynchronous, so the next batch is gathered while
the current step runs) and polls ``should_stop`` between steps.

Examples:
    >>> import numpy as np
    >>> from jupyter_imgclass import training
    >>> rng = np.random.default_rng(0)
    >>> images = rng.integers(0, 255, (64, 28, 28, 3), dtype=np.uint8)
    >>> labels = (images.mean(axis=(1, 2, 3)) > 127).astype(np.int32)
    >>> config = training.TrainConfig(model="small_cnn", epochs=1, batch_size=32)
    >>> result = training.fit(config, {"image": images, "label": labels},
    ...                       {"image": images[:16], "label": labels[:16]})  # doctest: +SKIP
    >>> sorted(result.weights)[:2]  # doctest: +SKIP
    ['bn1.bias', 'bn1.mean']
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
from flax import nnx

from .. import models
from ..errors import TrainingError
from ..evaluate import validation_metrics
from ..models import runtime
from ..models.apply import apply_fn, probabilities, run_batched
from ..models.weights import model_to_weights
from .config import (
    DEFAULT_EPOCHS,
    DEFAULT_TIME_LIMIT_S,
    DeadlineError,
    FitResult,
    TrainConfig,
    checked_sets,
    class_weights,
    compute_dtype,
    product_dtype,
)
from .step import adamw, learning_rates, make_train_step, schedule

__all__ = ["KeepBest", "create_model", "fit", "selection_score"]

EVAL_BATCH = 256


def create_model(config: TrainConfig, *, pretrained: bool | None = None) -> nnx.Module:
    """A fresh network for ``config`` (seeded by ``config.seed``)."""
    spec = models.get(config.model)
    if config.num_classes is None:
        raise TrainingError("TrainConfig.num_classes is needed to create the network")
    options: dict[str, Any] = {}
    if config.dropout is not None:
        options["dropout"] = config.dropout
    use_pretrained = config.pretrained if pretrained is None else pretrained
    return spec.create(
        config.num_classes,
        rngs=nnx.Rngs(config.seed),
        pretrained=bool(use_pretrained),
        input_size=config.input_size,
        **options,
    )


def selection_score(metrics: Mapping[str, float], kind: str) -> tuple[float, float]:
    """What a checkpoint is chosen by: accuracy (average precision for multilabel), then
    the lower validation loss."""
    main = metrics["val_average_precision"] if kind == "multilabel" else metrics["val_accuracy"]
    return (main, -metrics["val_loss"])


class KeepBest:
    """The best checkpoint so far, by :func:`selection_score` (the one keep-best helper).

    Attributes:
        epoch: the kept epoch (1-based), 0 before any.
        state: whatever the loop keeps (weights, a state tuple).
        probabilities: validation probabilities of the kept state.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self.score: tuple[float, float] | None = None
        self.epoch = 0
        self.state: Any = None
        self.probabilities: np.ndarray | None = None

    def consider(self, epoch: int, metrics: Mapping[str, float], state: Any, probs: Any) -> bool:
        """Keeps ``state`` when its metrics beat the kept ones; returns whether it did."""
        score = selection_score(metrics, self.kind)
        if self.score is not None and score <= self.score:
            return False
        self.score, self.epoch, self.state, self.probabilities = score, epoch, state, probs
        return True

    def result(
        self, weights: dict, history: list[dict], *, stopped: bool, started: float, **fields: Any
    ) -> FitResult:
        """The :class:`FitResult` of a loop that kept this checkpoint (``weights`` are its).

        Args:
            weights: the kept state's flat weights.
            history: one record per epoch.
            stopped: whether ``should_stop`` ended the loop.
            started: ``time.perf_counter()`` when the loop began.
            **fields: further ``FitResult`` fields (``compile_s``, ``extra``...).
        """
        return FitResult(
            weights=weights,
            history=history,
            best_epoch=self.epoch,
            val_probabilities=self.probabilities,
            stopped=stopped,
            seconds=round(time.perf_counter() - started, 3),
            **fields,
        )

    def keep_if_empty(self, state: Any, probs: Any) -> None:
        """Keeps ``state`` as epoch 0 when no epoch finished (stopped during the first)."""
        if self.state is None:
            self.epoch, self.state, self.probabilities = 0, state, probs


class Emitter:
    """Calls ``on_event(event)`` when there is a listener."""

    def __init__(self, on_event: Callable[[dict], None] | None):
        self.on_event = on_event

    def __call__(self, event: dict) -> None:
        if self.on_event is not None:
            self.on_event(event)


def _first_step(step_fn: Callable, args: tuple, deadline: float) -> Any:
    """The first (compiling) step, given up when it cannot finish before ``deadline``.

    Compilation cannot be interrupted: it goes on in a background thread (and fills the
    persistent compilation cache for the next run) while the caller gets
    :class:`DeadlineError` on time.
    """
    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="imgclass-compile")
    future = pool.submit(lambda: jax.block_until_ready(step_fn(*args)))
    pool.shutdown(wait=False)
    try:
        return future.result(timeout=max(0.0, deadline - time.time()))
    except concurrent.futures.TimeoutError:
        raise DeadlineError(
            "the training step did not compile before the time budget ran out"
        ) from None


def _is_key(a: Any) -> bool:
    return jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key)


def _global_copy(a: Any, sharding: Any) -> jax.Array:
    """A global array of ``sharding`` from this process's copy of a replicated value
    (random keys travel as their key data)."""
    if _is_key(a):
        data = np.asarray(jax.random.key_data(a))
        data = jax.make_array_from_process_local_data(sharding, data)
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(a))
    return jax.make_array_from_process_local_data(sharding, np.asarray(a))


def _host_copy(a: Any) -> Any:
    """This process's copy of a replicated global array, off the global mesh."""
    if _is_key(a):
        data = np.asarray(jax.random.key_data(a.addressable_data(0)))
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(a))
    return np.asarray(a.addressable_data(0))


def _mesh_shardings():
    """``(data sharding, replicated sharding)`` over every device of every process (a
    one-axis ``Mesh``: data parallel), or ``(None, None)`` for a single device."""
    devices = jax.devices()
    if len(devices) < 2:
        return None, None
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    mesh = Mesh(np.asarray(devices), ("batch",))
    return NamedSharding(mesh, PartitionSpec("batch")), NamedSharding(mesh, PartitionSpec())


def fit(
    config: TrainConfig,
    train: Mapping[str, Any],
    val: Mapping[str, Any],
    *,
    on_event: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    model: nnx.Module | None = None,
) -> FitResult:
    """Trains (or fine-tunes) the whole network on images; keeps the best epoch's weights.

    Devices and processes: each global batch (``batch_size``, rounded up to a multiple of
    the devices) is split over every device of every process (``jax.devices()``: a
    ``Mesh`` with ``NamedSharding``); parameters and optimizer state are replicated and
    XLA reduces the gradients. In a multi-process run (``runtime.start_processes``) every
    process calls ``fit`` with the same sets and config; each reads only its share of
    every batch, and stop and deadline decisions are process 0's. The learning rate is
    not rescaled with the device count: the global batch is what the rate is tuned for.

    Args:
        config: see :class:`TrainConfig`.
        train: ``{'image': uint8 [N, S, S, 3], 'label': int [N] or float 0/1 [N, T]}``;
            the images may be any array-like indexed by rows (a ``CachedRows`` view reads
            only each batch from disk, so memory does not grow with ``N``).
        val: the same for validation (the best epoch is chosen on it).
        on_event: gets ``{'phase': 'compiling'|'training'}``, throttled
            ``{'event': 'step', 'step', 'loss'}`` and ``{'event': 'epoch', 'epoch',
            'epochs', 'loss', 'accuracy', 'val_loss', 'val_accuracy', 'elapsed_s',
            'eta_s'}`` (multilabel adds ``val_average_precision``).
        should_stop: polled between steps; when it returns True, the run ends at once
            with the best weights so far and ``stopped=True``.
        model: start from this network instead of a fresh one (not modified).

    Returns:
        A :class:`FitResult`.

    Raises:
        TrainingError: bad arrays or settings.
    """
    started = time.perf_counter()
    emit = Emitter(on_event)
    kind = config.kind
    x_train, y_train, x_val, y_val, num_classes = checked_sets(config, train, val, "image")
    spec = models.get(config.model)
    config = dataclasses.replace(config, num_classes=num_classes)
    size = x_train.shape[1]
    if config.input_size is None:
        config = dataclasses.replace(config, input_size=size)
    if x_train.shape[1:] != (config.input_size, config.input_size, 3) or x_train.dtype != np.uint8:
        raise TrainingError(
            f"train set: images must be uint8 [N, {config.input_size}, {config.input_size}, 3], "
            f"got {x_train.dtype} {x_train.shape}"
        )
    from_scratch = not (config.pretrained and spec.pretrained)
    batch = config.batch_size or (64 if from_scratch else 32)
    peak_lr = config.learning_rate or (3e-3 if from_scratch else 5e-4)
    epochs, time_limit = config.epochs, config.time_limit_s
    if epochs is None and time_limit is None:
        epochs, time_limit = DEFAULT_EPOCHS, DEFAULT_TIME_LIMIT_S
    data_sharding, replicated = _mesh_shardings()
    ndev = len(jax.devices()) if data_sharding is not None else 1
    nproc, rank = jax.process_count(), jax.process_index()
    dtype = compute_dtype(config.precision, jax.default_backend())
    products = product_dtype(config.precision, jax.default_backend())
    batch = min(batch, len(x_train))
    batch = -(-batch // ndev) * ndev  # a multiple of the device count
    steps_per_epoch = max(1, -(-len(x_train) // batch))
    total_steps = steps_per_epoch * epochs if epochs else None

    if model is None:
        model = create_model(config)
    else:
        graphdef0, state0 = nnx.split(model)
        model = nnx.merge(graphdef0, state0)  # a copy: the caller's network is not trained
    model.train()
    if not any(hasattr(m, "products") for _, m in nnx.iter_modules(model)):
        products = None  # no layer takes it (only small_cnn's convolutions do)
    model.set_attributes(dtype=dtype, products=products, raise_if_not_found=False)
    if config.freeze_batchnorm:
        # Fine-tuning on a few images: keep the pretrained batch statistics (tiny batches
        # would replace them with noise) while the weights still train.
        model.set_attributes(use_running_average=True, raise_if_not_found=False)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    model.eval()
    model.set_attributes(dtype=None, raise_if_not_found=False)  # validation in float32
    eval_graphdef, _ = nnx.split(model)
    tx = adamw(peak_lr, config.weight_decay)
    sched = schedule(peak_lr, config.warmup_fraction)
    opt_state = tx.init(params)
    step_fn = make_train_step(
        graphdef, tx, spec, kind, config.label_smoothing, config.augmentations()
    )
    logits_fn = apply_fn(eval_graphdef, tuple(spec.mean), tuple(spec.std), "logits")
    if replicated is not None and nproc == 1:
        params, rest, opt_state = jax.device_put((params, rest, opt_state), replicated)
    elif replicated is not None:  # every process gives its (identical) copy
        params, rest, opt_state = jax.tree.map(
            lambda a: _global_copy(a, replicated), (params, rest, opt_state)
        )
    cw = class_weights(config, y_train, num_classes)
    y_train = y_train.astype(np.float32 if kind == "multilabel" else np.int32)
    sample_w_all = (
        np.ones(len(y_train), np.float32)
        if kind == "multilabel"
        else cw[y_train].astype(np.float32)
    )
    rng = np.random.default_rng(config.seed)
    base_key = jax.random.key(config.seed)

    def evaluate(p, r) -> tuple[np.ndarray, dict]:
        if nproc > 1:  # replicated over processes: validate this process's copy locally
            p, r = jax.tree.map(_host_copy, (p, r))
        state = nnx.merge_state(p, r)  # the eval graph takes one state
        logits = run_batched(logits_fn, state, x_val, EVAL_BATCH)
        probs = np.asarray(probabilities(logits.reshape(len(x_val), num_classes), kind))
        return probs, validation_metrics(y_val, probs, kind)

    history: list[dict] = []
    best = KeepBest(kind)
    stopped = False
    step = 0
    compile_s = 0.0
    train_time = 0.0  # seconds of training after the first (compiling) step
    images_seen = 0
    last_step_event = 0.0
    train_started = None
    eval_s = 0.0  # the last validation pass: left free before a deadline
    step_s = 0.0  # a recent step's wall time: before a deadline, none starts that cannot end
    epoch = 0
    deadline_hit = False

    local = batch // nproc  # this process's rows of each global batch

    def gather(order: np.ndarray, b: int) -> tuple:
        idx = order[b * batch : (b + 1) * batch][rank * local : (rank + 1) * local]
        return x_train[idx], y_train[idx], sample_w_all[idx]

    def put(arrays: tuple) -> tuple:
        if data_sharding is None:
            return arrays
        return tuple(
            jax.make_array_from_process_local_data(data_sharding, a, (batch, *a.shape[1:]))
            for a in arrays
        )

    prefetch = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="imgclass-batches")
    emit({"phase": "compiling", "model": config.model})
    while epochs is None or epoch < epochs:
        epoch += 1
        order = rng.permutation(len(x_train))
        if len(order) % batch:
            # Full batches only (one compiled shape): top up the last one with random repeats.
            extra = rng.choice(len(x_train), batch - len(order) % batch, replace=False)
            order = np.concatenate([order, extra])
        losses, accs = [], []
        loop_started = time.perf_counter()
        batches = len(order) // batch
        pending = prefetch.submit(gather, order, 0)  # the next batch is read during a step
        for b in range(batches):
            halt = 0
            if should_stop is not None and should_stop():
                halt = 1
            elif time_limit is not None and train_started is not None:
                if time.perf_counter() - train_started >= time_limit:
                    halt = 2
            if config.deadline is not None and (time.time() + step_s + eval_s >= config.deadline):
                halt = halt or 2
            if nproc > 1:
                halt = runtime.agree(halt)  # every process stops at the same step
            if halt:
                stopped, deadline_hit = halt == 1, halt == 2
                pending.cancel()
                break
            images, labels, sw = put(pending.result())
            if b + 1 < batches:
                pending = prefetch.submit(gather, order, b + 1)
            progress = step / total_steps if total_steps else 0.0
            if time_limit is not None and train_started is not None:
                progress = max(progress, (time.perf_counter() - train_started) / time_limit)
            lr = learning_rates(sched, progress)
            key = jax.random.fold_in(base_key, step)
            t0 = time.perf_counter()
            args = (params, rest, opt_state, images, labels, sw, key, np.float32(lr))
            if train_started is None and config.deadline is not None and nproc == 1:
                params, rest, opt_state, loss, acc = _first_step(step_fn, args, config.deadline)
            else:
                params, rest, opt_state, loss, acc = step_fn(*args)
            step += 1
            losses.append(loss)
            accs.append(acc)
            if train_started is None:
                loss.block_until_ready()
                compile_s = time.perf_counter() - t0
                if config.deadline is not None:
                    # Before a deadline the first validation pass (and its compilation)
                    # must fit too: time it now instead of finding out after an epoch.
                    eval_started = time.perf_counter()
                    evaluate(params, rest)
                    eval_s = time.perf_counter() - eval_started
                train_started = loop_started = time.perf_counter()
                emit({"phase": "training", "compile_s": round(compile_s, 3)})
            else:
                images_seen += batch
                if config.deadline is not None:
                    # JAX dispatches steps without waiting for them: wait for each one, so
                    # that the clock read before the next is the work done, not queued.
                    loss.block_until_ready()
                    step_s = max(0.8 * step_s, time.perf_counter() - t0)
            now = time.perf_counter()
            if now - last_step_event >= config.step_event_interval_s:
                last_step_event = now
                emit({"event": "step", "step": step, "epoch": epoch, "loss": float(loss)})
        if not losses:
            epoch -= 1
            break
        losses[-1].block_until_ready()
        train_time += time.perf_counter() - loop_started  # throughput leaves evaluation out
        epoch_loss = float(np.mean([float(v) for v in losses]))
        epoch_acc = float(np.mean([float(v) for v in accs]))
        eval_started = time.perf_counter()
        probs, metrics = evaluate(params, rest)
        eval_s = time.perf_counter() - eval_started
        elapsed = time.perf_counter() - train_started
        record = {
            "epoch": epoch,
            "epochs": epochs,
            "loss": epoch_loss,
            "accuracy": epoch_acc,
            **metrics,
            "elapsed_s": round(elapsed, 3),
        }
        best.consider(epoch, metrics, (params, rest), probs)
        eta = None
        if epochs is not None:
            eta = elapsed / epoch * (epochs - epoch)
        if time_limit is not None:
            eta = min(eta if eta is not None else math.inf, max(0.0, time_limit - elapsed))
        record["eta_s"] = round(eta, 3) if eta is not None else None
        if stopped or deadline_hit:
            record["partial"] = True
        history.append(record)
        emit({"event": "epoch", **record})
        if stopped or deadline_hit:
            break

    prefetch.shutdown(wait=False)
    if deadline_hit and train_started is None:
        raise DeadlineError("the time budget ran out before the first training step")
    if best.state is None:  # stopped before the first step finished
        best.keep_if_empty((params, rest), evaluate(params, rest)[0])
    p, r = best.state
    final = nnx.merge(graphdef, p, r)
    return best.result(
        model_to_weights(final),
        history,
        stopped=stopped,
        started=started,
        compile_s=round(compile_s, 3),
        images_per_s=round(images_seen / train_time, 1) if train_time > 0 else 0.0,
        head_input=final.head_input,
        extra={
            "batch_size": batch,
            "devices": ndev,
            "processes": nproc,
            "precision": "bfloat16"
            if dtype is not None
            else "float32, bfloat16 products"
            if products is not None
            else "float32",
            "steps": step,
        },
    )
