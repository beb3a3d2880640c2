"""Training the whole network on images (``fit``): epochs, a time budget, the best checkpoint.

No Project here, only numpy arrays in and flat weights out. One jit-compiled train step
(:mod:`.step`) does augmentation, forward, loss, gradients and the AdamW update; this
loop only feeds batches (dispatch is asynchronous, so the next batch is gathered while
the current step runs).

:func:`fit` reads like the idea: :func:`create_train_state` settles the run,
:func:`train_epoch` feeds one epoch of batches to the step, :func:`eval_model` validates,
and callbacks (fastai's, reduced to what ``fit`` needs) do the rest between steps and
epochs: :class:`KeepBest` keeps the best checkpoint, :class:`ShouldStop`,
:class:`TimeLimit` and :class:`Deadline` end the run early (a :class:`Halt`), and
:class:`ProgressEvents` reports to ``on_event``.

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
import enum
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx

from .. import models
from ..errors import TrainingError
from ..evaluate import validation_metrics
from ..models.apply import apply_fn, probabilities, run_batched
from ..models.weights import model_to_weights
from ..platform import runtime
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
from .events import Emitter, Event, Phase
from .step import adamw, learning_rates, make_train_step, schedule

__all__ = [
    "Batches",
    "Callback",
    "Deadline",
    "Halt",
    "KeepBest",
    "ProgressEvents",
    "ShouldStop",
    "TimeLimit",
    "TrainState",
    "create_model",
    "create_train_state",
    "epoch_record",
    "eval_model",
    "fit",
    "selection_score",
    "train_epoch",
]

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


class Halt(enum.IntEnum):
    """Why :func:`fit`'s loop ends before its epochs do.

    An ``int`` so that the processes of a run can agree on process 0's (``runtime.agree``).
    """

    NONE = 0
    STOPPED = 1  # should_stop said so: FitResult.stopped
    DEADLINE = 2  # the time limit or the wall-clock deadline came


class Callback:
    """Hooks of :func:`fit`'s loop; each does nothing unless a subclass overrides it.

    In the order the loop calls them:

    * ``on_fit_begin(state)``: before the first epoch;
    * ``on_step_begin(state) -> Halt``: before every step; every callback is asked and the
      first that halts, in list order, decides;
    * ``on_compiled(state)``: the first (compiling) step is done, the training clock has
      not started;
    * ``on_train_begin(state)``: the training clock has started;
    * ``on_step_end(state, loss, started)``: after every step (``loss`` still on the
      device, ``started`` the ``time.perf_counter()`` before its dispatch);
    * ``on_epoch_end(state, record, probs)``: after each epoch's validation, with its
      history record and validation probabilities.
    """

    def on_fit_begin(self, state: TrainState) -> None:
        pass

    def on_step_begin(self, state: TrainState) -> Halt:
        return Halt.NONE

    def on_compiled(self, state: TrainState) -> None:
        pass

    def on_train_begin(self, state: TrainState) -> None:
        pass

    def on_step_end(self, state: TrainState, loss: Any, started: float) -> None:
        pass

    def on_epoch_end(self, state: TrainState, record: dict, probs: np.ndarray) -> None:
        pass


class KeepBest(Callback):
    """The best checkpoint so far, by :func:`selection_score` (the one keep-best helper).

    As a callback it considers each epoch's ``(params, rest)``; other loops call
    :meth:`consider` themselves. Ties keep the earlier checkpoint.

    Attributes:
        epoch: the kept epoch (1-based), 0 before any.
        state: whatever the loop keeps (weights, a state tuple).
        probabilities: validation probabilities of the kept state.

    Examples:
        >>> best = KeepBest("multiclass")
        >>> best.consider(1, {"val_accuracy": 0.8, "val_loss": 0.5}, "a", None)
        True
        >>> best.consider(2, {"val_accuracy": 0.8, "val_loss": 0.7}, "b", None)
        False
        >>> best.epoch, best.state
        (1, 'a')
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
        if self.score is not None and not score > self.score:  # a NaN never displaces
            return False
        self.score, self.epoch, self.state, self.probabilities = score, epoch, state, probs
        return True

    def on_epoch_end(self, state: TrainState, record: dict, probs: np.ndarray) -> None:
        self.consider(record["epoch"], record, (state.params, state.rest), probs)

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


class ShouldStop(Callback):
    """Halts (``STOPPED``) when ``should_stop()`` returns True; it is called once a step."""

    def __init__(self, should_stop: Callable[[], bool]):
        self.should_stop = should_stop

    def on_step_begin(self, state: TrainState) -> Halt:
        return Halt.STOPPED if self.should_stop() else Halt.NONE


class TimeLimit(Callback):
    """Halts (``DEADLINE``) once ``seconds`` of training have passed (compilation excluded)."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def on_step_begin(self, state: TrainState) -> Halt:
        started = state.train_started
        if started is not None and time.perf_counter() - started >= self.seconds:
            return Halt.DEADLINE
        return Halt.NONE


class Deadline(Callback):
    """Halts (``DEADLINE``) before a step that could not end, with the last validation
    pass after it, by ``deadline`` (``time.time()``).

    The first step's compilation is bounded by :func:`run_step` (``DeadlineError``).
    """

    def __init__(self, deadline: float):
        self.deadline = deadline
        self.step_s = 0.0  # a recent step's wall time: none starts that cannot end

    def on_step_begin(self, state: TrainState) -> Halt:
        if time.time() + self.step_s + state.eval_s >= self.deadline:
            return Halt.DEADLINE
        return Halt.NONE

    def on_compiled(self, state: TrainState) -> None:
        # The first validation pass (and its compilation) must fit too: time it now
        # instead of finding out after an epoch.
        eval_model(state)

    def on_step_end(self, state: TrainState, loss: Any, started: float) -> None:
        if state.step > 1:  # the first step's time is its compilation's
            # JAX dispatches steps without waiting for them: wait for each one, so that
            # the clock read before the next is the work done, not queued.
            loss.block_until_ready()
            self.step_s = max(0.8 * self.step_s, time.perf_counter() - started)


class ProgressEvents(Callback):
    """The events :func:`fit` sends ``on_event``: ``{'phase': 'compiling', 'model'}``,
    ``{'phase': 'training', 'compile_s'}``, at most one ``{'event': 'step', 'step',
    'epoch', 'loss'}`` per ``interval_s``, and ``{'event': 'epoch', **record}``."""

    def __init__(self, on_event: Callable[[dict], None] | None, interval_s: float):
        self.emit = Emitter(on_event)
        self.interval_s = interval_s
        self.last_step_event = 0.0

    def on_fit_begin(self, state: TrainState) -> None:
        self.emit({"phase": Phase.COMPILING, "model": state.config.model})

    def on_train_begin(self, state: TrainState) -> None:
        self.emit({"phase": Phase.TRAINING, "compile_s": round(state.compile_s, 3)})

    def on_step_end(self, state: TrainState, loss: Any, started: float) -> None:
        now = time.perf_counter()
        if now - self.last_step_event >= self.interval_s:
            self.last_step_event = now
            self.emit(
                {"event": Event.STEP, "step": state.step, "epoch": state.epoch, "loss": float(loss)}
            )

    def on_epoch_end(self, state: TrainState, record: dict, probs: np.ndarray) -> None:
        self.emit({"event": Event.EPOCH, **record})


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


def _replicate(tree: Any, replicated: Any) -> Any:
    """``tree`` replicated over every device of every process (as it is on one device)."""
    if replicated is None:
        return tree
    if jax.process_count() == 1:
        return jax.device_put(tree, replicated)
    # Every process gives its (identical) copy.
    return jax.tree.map(lambda a: _global_copy(a, replicated), tree)


@dataclasses.dataclass
class Batches:
    """The training set as global batches of ``size`` rows, shuffled every epoch, each
    split over every device of every process (this process reads only its share).

    ``images`` may be any array-like indexed by rows (a ``CachedRows`` view reads only
    each batch from disk).
    """

    images: Any
    labels: np.ndarray
    sample_weight: np.ndarray
    size: int
    rng: np.random.Generator
    sharding: Any = None  # the data sharding; None on one device
    rank: int = 0
    processes: int = 1

    def __len__(self) -> int:
        """Steps per epoch."""
        return max(1, -(-len(self.images) // self.size))

    def order(self) -> np.ndarray:
        """This epoch's rows: full batches only (one compiled shape), the last topped up
        with random repeats."""
        n = len(self.images)
        order = self.rng.permutation(n)
        if n % self.size:
            extra = self.rng.choice(n, self.size - n % self.size, replace=False)
            order = np.concatenate([order, extra])
        return order

    def read(self, order: np.ndarray, b: int) -> tuple:
        """This process's rows of global batch ``b``: ``(images, labels, sample weights)``."""
        local = self.size // self.processes
        rows = order[b * self.size : (b + 1) * self.size][
            self.rank * local : (self.rank + 1) * local
        ]
        return self.images[rows], self.labels[rows], self.sample_weight[rows]

    def put(self, arrays: tuple) -> tuple:
        """Global arrays of every process's rows, split over the devices."""
        if self.sharding is None:
            return arrays
        return tuple(
            jax.make_array_from_process_local_data(self.sharding, a, (self.size, *a.shape[1:]))
            for a in arrays
        )


@dataclasses.dataclass
class TrainState:
    """One :func:`fit` run: its settled settings, the network's state and the clocks.

    :func:`create_train_state` makes it; the loop's steps update it in place.
    """

    config: TrainConfig  # num_classes and input_size settled
    batches: Batches
    x_val: Any
    y_val: np.ndarray
    epochs: int | None
    time_limit: float | None
    graphdef: Any  # the training network; params and rest are its state
    step_fn: Callable
    logits_fn: Callable  # validation, in float32
    sched: Any
    key: jax.Array
    params: Any
    rest: Any
    opt_state: Any
    devices: int
    processes: int
    precision: str  # what the step computes in, as FitResult.extra says it
    step: int = 0
    epoch: int = 0
    compile_s: float = 0.0
    train_started: float | None = None  # perf_counter() after the compiling step
    epoch_started: float = 0.0
    train_time: float = 0.0  # seconds of training after the first (compiling) step
    images_seen: int = 0
    eval_s: float = 0.0  # the last validation pass: left free before a deadline

    def progress(self) -> float:
        """How far the schedule has come: the larger of the step and the time fractions."""
        total = len(self.batches) * self.epochs if self.epochs else None
        progress = self.step / total if total else 0.0
        if self.time_limit is not None and self.train_started is not None:
            progress = max(progress, (time.perf_counter() - self.train_started) / self.time_limit)
        return progress


def create_train_state(
    config: TrainConfig,
    train: Mapping[str, Any],
    val: Mapping[str, Any],
    model: nnx.Module | None = None,
) -> TrainState:
    """Checks the sets, settles what ``config`` left open, and builds the network (a copy
    of ``model`` if given), the optimizer and the compiled step, replicated over the devices.

    Args: as :func:`fit`'s.

    Raises:
        TrainingError: bad arrays or settings.
    """
    x_train, y_train, x_val, y_val, num_classes = checked_sets(config, train, val, "image")
    spec = models.get(config.model)
    config = dataclasses.replace(config, num_classes=num_classes)
    if config.input_size is None:
        config = dataclasses.replace(config, input_size=x_train.shape[1])
    side = config.input_size
    if x_train.shape[1:] != (side, side, 3) or x_train.dtype != np.uint8:
        raise TrainingError(
            f"train set: images must be uint8 [N, {side}, {side}, 3], "
            f"got {x_train.dtype} {x_train.shape}"
        )
    from_scratch = not (config.pretrained and spec.pretrained)
    peak_lr = config.learning_rate or (3e-3 if from_scratch else 5e-4)
    epochs, time_limit = config.epochs, config.time_limit_s
    if epochs is None and time_limit is None:
        epochs, time_limit = DEFAULT_EPOCHS, DEFAULT_TIME_LIMIT_S
    data_sharding, replicated = _mesh_shardings()
    devices = len(jax.devices()) if data_sharding is not None else 1
    network, precision = _training_network(config, model)
    graphdef, params, rest = nnx.split(network, nnx.Param, ...)
    network.eval()
    network.set_attributes(dtype=None, raise_if_not_found=False)  # validation in float32
    eval_graphdef, _ = nnx.split(network)
    tx = adamw(peak_lr, config.weight_decay)
    augmentations = config.augmentations()
    params, rest, opt_state = _replicate((params, rest, tx.init(params)), replicated)
    return TrainState(
        config=config,
        batches=_batches(config, x_train, y_train, from_scratch, data_sharding, devices),
        x_val=x_val,
        y_val=y_val,
        epochs=epochs,
        time_limit=time_limit,
        graphdef=graphdef,
        step_fn=make_train_step(
            graphdef, tx, spec, config.kind, config.label_smoothing, augmentations
        ),
        logits_fn=apply_fn(eval_graphdef, tuple(spec.mean), tuple(spec.std), "logits"),
        sched=schedule(peak_lr, config.warmup_fraction),
        key=jax.random.key(config.seed),
        params=params,
        rest=rest,
        opt_state=opt_state,
        devices=devices,
        processes=jax.process_count(),
        precision=precision,
    )


def _training_network(config: TrainConfig, model: nnx.Module | None) -> tuple[nnx.Module, str]:
    """The network to train (fresh, or a copy of ``model``) set to its training precision,
    and that precision in words."""
    dtype = compute_dtype(config.precision, jax.default_backend())
    products = product_dtype(config.precision, jax.default_backend())
    if model is None:
        network = create_model(config)
    else:
        graphdef, state = nnx.split(model)
        network = nnx.merge(graphdef, state)  # a copy: the caller's network is not trained
    network.train()
    if not any(hasattr(m, "products") for _, m in nnx.iter_modules(network)):
        products = None  # no layer takes it (only small_cnn's convolutions do)
    network.set_attributes(dtype=dtype, products=products, raise_if_not_found=False)
    if config.freeze_batchnorm:
        # Fine-tuning on a few images: keep the pretrained batch statistics (tiny batches
        # would replace them with noise) while the weights still train.
        network.set_attributes(use_running_average=True, raise_if_not_found=False)
    if dtype is not None:
        return network, "bfloat16"
    return network, "float32, bfloat16 products" if products is not None else "float32"


def _batches(
    config: TrainConfig,
    images: Any,
    labels: np.ndarray,
    from_scratch: bool,
    sharding: Any,
    devices: int,
) -> Batches:
    """The training set's :class:`Batches`: the global batch a multiple of the devices,
    each row weighted by its class (multiclass)."""
    size = min(config.batch_size or (64 if from_scratch else 32), len(images))
    size = -(-size // devices) * devices
    cw = class_weights(config, labels, config.num_classes)
    labels = labels.astype(np.float32 if config.kind == "multilabel" else np.int32)
    if config.kind == "multilabel":
        sample_weight = np.ones(len(labels), np.float32)
    else:
        sample_weight = cw[labels].astype(np.float32)
    return Batches(
        images,
        labels,
        sample_weight,
        size,
        np.random.default_rng(config.seed),
        sharding,
        jax.process_index(),
        jax.process_count(),
    )


def eval_model(state: TrainState) -> tuple[np.ndarray, dict]:
    """Validation probabilities and metrics of the state's network (in float32); the
    pass's time goes to ``state.eval_s``."""
    started = time.perf_counter()
    params, rest = state.params, state.rest
    if state.processes > 1:  # replicated over processes: validate this process's copy locally
        params, rest = jax.tree.map(_host_copy, (params, rest))
    logits = run_batched(state.logits_fn, nnx.merge_state(params, rest), state.x_val, EVAL_BATCH)
    kind, shape = state.config.kind, (len(state.x_val), state.config.num_classes)
    probs = np.asarray(probabilities(logits.reshape(shape), kind))
    metrics = validation_metrics(state.y_val, probs, kind)
    state.eval_s = time.perf_counter() - started
    return probs, metrics


def run_step(state: TrainState, callbacks: Sequence[Callback], batch: tuple) -> tuple:
    """One train step on ``batch`` (images, labels, sample weights) at the schedule's rate.

    The step updates ``state`` in place (parameters, batch statistics, optimizer state,
    counters). The first step compiles; before a deadline in a one-process run it raises
    :class:`DeadlineError` when it cannot compile in time.

    Returns:
        The batch's ``(loss, accuracy)``, still on the device.
    """
    lr = learning_rates(state.sched, state.progress())
    key = jax.random.fold_in(state.key, state.step)
    started = time.perf_counter()
    args = (state.params, state.rest, state.opt_state, *batch, key, np.float32(lr))
    first, deadline = state.train_started is None, state.config.deadline
    if first and deadline is not None and state.processes == 1:
        out = _first_step(state.step_fn, args, deadline)
    else:
        out = state.step_fn(*args)
    state.params, state.rest, state.opt_state, loss, acc = out
    state.step += 1
    if first:
        loss.block_until_ready()
        state.compile_s = time.perf_counter() - started
        for callback in callbacks:
            callback.on_compiled(state)
        state.train_started = state.epoch_started = time.perf_counter()
        for callback in callbacks:
            callback.on_train_begin(state)
    else:
        state.images_seen += state.batches.size
    for callback in callbacks:
        callback.on_step_end(state, loss, started)
    return loss, acc


def _poll(state: TrainState, callbacks: Sequence[Callback]) -> Halt:
    """Whether to halt before the next step. Every callback is asked; the first that
    halts, in list order, decides (a stop outranks a deadline); with several processes
    process 0's answer holds for all, so that they stop at the same step."""
    halts = [callback.on_step_begin(state) for callback in callbacks]
    halt = next((h for h in halts if h), Halt.NONE)
    return Halt(runtime.agree(halt)) if state.processes > 1 else halt


def train_epoch(
    state: TrainState,
    callbacks: Sequence[Callback],
    prefetch: concurrent.futures.Executor,
) -> tuple[Halt, tuple[float, float] | None]:
    """One shuffled pass over the training set, the next batch read (on ``prefetch``)
    while a step runs; a callback's halt ends it early.

    Returns:
        The halt (``Halt.NONE`` after a whole epoch) and the epoch's mean training
        ``(loss, accuracy)``, or None when it halted before its first step.
    """
    state.epoch += 1
    batches = state.batches
    order = batches.order()
    losses, accs = [], []
    state.epoch_started = time.perf_counter()
    count = len(order) // batches.size
    halt = Halt.NONE
    pending = prefetch.submit(batches.read, order, 0)
    for b in range(count):
        halt = _poll(state, callbacks)
        if halt:
            pending.cancel()
            break
        batch = batches.put(pending.result())
        if b + 1 < count:
            pending = prefetch.submit(batches.read, order, b + 1)
        loss, acc = run_step(state, callbacks, batch)
        losses.append(loss)
        accs.append(acc)
    if not losses:
        state.epoch -= 1
        return halt, None
    losses[-1].block_until_ready()
    state.train_time += time.perf_counter() - state.epoch_started  # evaluation left out
    return halt, (
        float(np.mean([float(v) for v in losses])),
        float(np.mean([float(v) for v in accs])),
    )


def epoch_record(
    state: TrainState, train: tuple[float, float], metrics: Mapping[str, float], halt: Halt
) -> dict:
    """The history record of the epoch just validated (``partial`` when a halt cut it)."""
    elapsed = time.perf_counter() - state.train_started
    record = {
        "epoch": state.epoch,
        "epochs": state.epochs,
        "loss": train[0],
        "accuracy": train[1],
        **metrics,
        "elapsed_s": round(elapsed, 3),
    }
    eta = None
    if state.epochs is not None:
        eta = elapsed / state.epoch * (state.epochs - state.epoch)
    if state.time_limit is not None:
        eta = min(eta if eta is not None else math.inf, max(0.0, state.time_limit - elapsed))
    record["eta_s"] = round(eta, 3) if eta is not None else None
    if halt:
        record["partial"] = True
    return record


def _limits(state: TrainState, should_stop: Callable[[], bool] | None) -> list[Callback]:
    """The callbacks that can halt the loop, a stop first (it outranks a deadline)."""
    limits: list[Callback] = []
    if should_stop is not None:
        limits.append(ShouldStop(should_stop))
    if state.time_limit is not None:
        limits.append(TimeLimit(state.time_limit))
    if state.config.deadline is not None:
        limits.append(Deadline(state.config.deadline))
    return limits


def _fit_result(
    state: TrainState, best: KeepBest, history: list[dict], halt: Halt, started: float
) -> FitResult:
    """The kept checkpoint's :class:`FitResult` (the state as it is, as epoch 0, when no
    epoch finished)."""
    if best.state is None:  # halted before the first step finished
        best.keep_if_empty((state.params, state.rest), eval_model(state)[0])
    params, rest = best.state
    final = nnx.merge(state.graphdef, params, rest)
    return best.result(
        model_to_weights(final),
        history,
        stopped=halt is Halt.STOPPED,
        started=started,
        compile_s=round(state.compile_s, 3),
        images_per_s=round(state.images_seen / state.train_time, 1)
        if state.train_time > 0
        else 0.0,
        head_input=final.head_input,
        extra={
            "batch_size": state.batches.size,
            "devices": state.devices,
            "processes": state.processes,
            "precision": state.precision,
            "steps": state.step,
        },
    )


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
        DeadlineError: ``config.deadline`` came before the first step could compile.
    """
    started = time.perf_counter()
    state = create_train_state(config, train, val, model)
    best = KeepBest(state.config.kind)
    progress = ProgressEvents(on_event, config.step_event_interval_s)
    callbacks = [*_limits(state, should_stop), best, progress]
    history: list[dict] = []
    halt = Halt.NONE
    prefetch = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="imgclass-batches")
    try:
        for callback in callbacks:
            callback.on_fit_begin(state)
        while not halt and (state.epochs is None or state.epoch < state.epochs):
            halt, train_metrics = train_epoch(state, callbacks, prefetch)
            if train_metrics is None:  # halted before the epoch's first step
                break
            probs, metrics = eval_model(state)
            history.append(epoch_record(state, train_metrics, metrics, halt))
            for callback in callbacks:
                callback.on_epoch_end(state, history[-1], probs)
    finally:
        prefetch.shutdown(wait=False)
    if halt is Halt.DEADLINE and state.train_started is None:
        raise DeadlineError("the time budget ran out before the first training step")
    return _fit_result(state, best, history, halt, started)
