"""Training on arrays: from-scratch / fine-tune (``fit``) and transfer learning (``fit_head``).

No Project here, only numpy arrays in and flat weights out. One jit-compiled train step
does augmentation, forward, loss, gradients and the AdamW update; the Python loop only
feeds batches (dispatch is asynchronous, so the next batch is gathered while the
current step runs) and polls ``should_stop`` between steps.

Examples:
    >>> import numpy as np
    >>> from jupyter_imgclass import train
    >>> rng = np.random.default_rng(0)
    >>> images = rng.integers(0, 255, (64, 28, 28, 3), dtype=np.uint8)
    >>> labels = (images.mean(axis=(1, 2, 3)) > 127).astype(np.int32)
    >>> config = train.TrainConfig(model="small_cnn", epochs=1, batch_size=32)
    >>> result = train.fit(config, {"image": images, "label": labels},
    ...                    {"image": images[:16], "label": labels[:16]})  # doctest: +SKIP
    >>> sorted(result.weights)[:2]  # doctest: +SKIP
    ['bn1.bias', 'bn1.mean']
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from . import models
from .errors import ImgClassError, TrainingError
from .jax_setup import enable_compilation_cache

__all__ = [
    "FitResult",
    "TrainConfig",
    "create_model",
    "extract_features",
    "fit",
    "fit_head",
    "model_to_weights",
    "weights_to_model",
]

AUGMENTATIONS = ("flip", "shift", "brightness")
DEFAULT_EPOCHS = 20
DEFAULT_TIME_LIMIT_S = 600.0
EVAL_BUCKETS = (8, 64, 256)


# ---------------------------------------------------------------------------- config
@dataclass
class TrainConfig:
    """What to train and how; ``None`` fields take defaults that suit the model.

    Attributes:
        model: registered network name (``models.names()``).
        budget: ``"advanced"`` (train or fine-tune the whole network on images) or
            ``"quick"`` (a head on frozen features; see :func:`fit_head`).
        kind: ``"multiclass"`` (softmax) or ``"multilabel"`` (one sigmoid per tag).
        num_classes: outputs; inferred from the labels when ``None``.
        input_size: square input side; the spec's when ``None``.
        epochs: passes over the training set. With ``time_limit_s`` too, whichever ends
            first; with neither, ``DEFAULT_EPOCHS`` capped by ``DEFAULT_TIME_LIMIT_S``.
        time_limit_s: training time budget in seconds (compilation excluded). The
            learning-rate schedule follows the larger of step and time progress.
        batch_size: 64 for networks trained from scratch, 32 for pretrained ones (on
            Fashion-MNIST with a 3-minute budget and lr 3e-3, batch 64 reached 92.4% of the
            first 2,000 test images against 91.3% with 128: more steps in the same time).
        learning_rate: peak AdamW rate; 3e-3 from scratch, 5e-4 fine-tuning.
        weight_decay: AdamW decoupled weight decay.
        warmup_fraction: share of the schedule spent warming up linearly (then cosine).
        seed: makes a run reproducible (initialisation, shuffling, augmentation, dropout).
        label_smoothing: multiclass softmax cross-entropy smoothing.
        class_weights: ``"balanced"`` (weight each class by ``n / (K * count)``), ``None``,
            or one weight per class (multiclass only).
        augment: ``True`` (all of ``AUGMENTATIONS``), ``False``, or a subset such as
            ``("shift", "brightness")`` (digits and text should not be flipped).
        dropout: rate before the head; the network's default when ``None``.
        pretrained: start from ImageNet weights when the network has them.
        freeze_batchnorm: keep batch-norm statistics fixed while fine-tuning.
        step_event_interval_s: at most one ``step`` event per this many seconds.
    """

    model: str = "small_cnn"
    budget: str = "advanced"
    kind: str = "multiclass"
    num_classes: int | None = None
    input_size: int | None = None
    epochs: int | None = None
    time_limit_s: float | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.05
    seed: int = 0
    label_smoothing: float = 0.1
    class_weights: str | Sequence[float] | None = "balanced"
    augment: bool | Sequence[str] = True
    dropout: float | None = None
    pretrained: bool = True
    freeze_batchnorm: bool = False
    step_event_interval_s: float = 0.5

    def augmentations(self) -> tuple[str, ...]:
        """The augmentations switched on, as a sorted tuple of names."""
        if self.augment is True:
            return AUGMENTATIONS
        if not self.augment:
            return ()
        unknown = set(self.augment) - set(AUGMENTATIONS)
        if unknown:
            raise TrainingError(
                f"augment {sorted(unknown)}: unknown; choose from {', '.join(AUGMENTATIONS)}"
            )
        return tuple(sorted(self.augment))


@dataclass
class FitResult:
    """What a training leaves behind.

    Attributes:
        weights: flat ``{name: array}`` of the best checkpoint (safetensors-ready).
        history: one dict per epoch (``loss``, ``accuracy``, ``val_loss``,
            ``val_accuracy`` or ``val_average_precision``, ``elapsed_s``).
        best_epoch: the epoch (1-based) whose weights were kept; 0 if none finished.
        val_probabilities: ``[N_val, T]`` probabilities of the kept weights.
        stopped: ``should_stop`` ended the run early.
        seconds: wall time of the run; ``compile_s`` of the first step.
        images_per_s: training throughput after compilation.
    """

    weights: dict[str, np.ndarray]
    history: list[dict]
    best_epoch: int
    val_probabilities: np.ndarray
    stopped: bool
    seconds: float = 0.0
    compile_s: float = 0.0
    images_per_s: float = 0.0
    extra: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------- weights
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
    spec: models.ModelSpec | str,
    num_classes: int,
    weights: Mapping[str, Any],
    *,
    input_size: int | None = None,
) -> nnx.Module:
    """Rebuilds a network from flat weights (no random initialisation is spent).

    Args:
        spec: the network's ``ModelSpec`` or registered name.
        num_classes: outputs of its head.
        weights: as returned by :func:`model_to_weights` / ``FitResult.weights``.
        input_size: for ``small_cnn``, read from the weights when ``None``.

    Raises:
        ImgClassError: a weight is missing, unexpected, or has the wrong shape.
    """
    spec = models.get(spec) if isinstance(spec, str) else spec
    if input_size is None and spec.name == "small_cnn":
        input_size = _small_cnn_input_size(weights)
    abstract = nnx.eval_shape(
        lambda: spec.create(num_classes, rngs=nnx.Rngs(0), pretrained=False, input_size=input_size)
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


def create_model(config: TrainConfig, *, pretrained: bool | None = None) -> nnx.Module:
    """A fresh network for ``config`` (seeded by ``config.seed``)."""
    spec = models.get(config.model)
    if config.num_classes is None:
        raise TrainingError("TrainConfig.num_classes is needed to create the network")
    kwargs: dict[str, Any] = {}
    if config.dropout is not None:
        kwargs["dropout"] = config.dropout
    if config.input_size not in (None, spec.input_size):
        kwargs["input_size"] = config.input_size
    use_pretrained = config.pretrained if pretrained is None else pretrained
    return spec.factory(
        config.num_classes,
        rngs=nnx.Rngs(config.seed),
        pretrained=bool(use_pretrained and spec.pretrained),
        **kwargs,
    )


# ---------------------------------------------------------------------------- device helpers
def _bucket(n: int, buckets: Sequence[int]) -> int:
    for b in buckets:
        if n <= b:
            return b
    return buckets[-1]


def _normalise(images: jax.Array, mean: tuple, std: tuple) -> jax.Array:
    x = images.astype(jnp.float32) / 255.0
    return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


@functools.lru_cache(maxsize=16)
def _apply_fn(graphdef: Any, mean: tuple, std: tuple, what: str) -> Callable:
    """Jitted ``f(state, uint8 batch) -> logits | features`` for an eval-mode graph."""

    def apply(state, images):
        model = nnx.merge(graphdef, state)
        x = _normalise(images, mean, std)
        return model.features(x) if what == "features" else model(x)

    return jax.jit(apply)


def _run_batched(fn, state, images: np.ndarray, batch: int, buckets, on_progress=None):
    """Applies ``fn`` in fixed-shape batches (the last padded), concatenated on the host.

    A remainder after full batches is padded to the full batch, whose program is already
    compiled; only a call smaller than one batch uses the smaller ``buckets``.
    """
    n = len(images)
    outs = []
    for start in range(0, n, batch):
        part = images[start : start + batch]
        size = batch if n > batch else _bucket(len(part), buckets)
        if len(part) < size:
            pad = np.zeros((size - len(part), *part.shape[1:]), part.dtype)
            part = np.concatenate([part, pad])
        outs.append(np.asarray(fn(state, part))[: min(batch, n - start)])
        if on_progress is not None:
            on_progress(min(start + batch, n), n)
    return np.concatenate(outs) if outs else np.zeros((0,), np.float32)


def extract_features(
    model: nnx.Module,
    spec: models.ModelSpec | str,
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
    spec = models.get(spec) if isinstance(spec, str) else spec
    images = np.asarray(images, np.uint8)
    graphdef, state = _eval_split(model)
    fn = _apply_fn(graphdef, tuple(spec.mean), tuple(spec.std), "features")
    buckets = tuple(b for b in (1, 8, batch_size) if b <= batch_size)
    out = _run_batched(fn, state, images, batch_size, buckets, on_progress)
    return out.reshape(len(images), -1).astype(np.float32)


def _eval_split(model: nnx.Module):
    """``(graphdef, state)`` of an eval-mode copy of ``model`` (the caller's mode is kept)."""
    graphdef, state = nnx.split(model)
    clone = nnx.merge(graphdef, state)
    clone.eval()
    return nnx.split(clone)


def _mesh_shardings():
    """``(data sharding, replicated sharding)`` over all devices, or ``(None, None)``."""
    devices = jax.devices()
    if len(devices) < 2:
        return None, None
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    mesh = Mesh(np.asarray(devices), ("batch",))
    return NamedSharding(mesh, PartitionSpec("batch")), NamedSharding(mesh, PartitionSpec())


# ---------------------------------------------------------------------------- losses / metrics
def _loss(logits, labels, sample_weight, kind: str, smoothing: float):
    """Weighted mean loss; ``sample_weight`` 0 marks padding."""
    if kind == "multilabel":
        per = optax.sigmoid_binary_cross_entropy(logits, labels).mean(axis=-1)
    else:
        k = logits.shape[-1]
        target = optax.smooth_labels(jax.nn.one_hot(labels, k), smoothing)
        per = optax.softmax_cross_entropy(logits, target)
    return jnp.sum(per * sample_weight) / jnp.maximum(jnp.sum(sample_weight), 1e-9)


def _probabilities(logits: np.ndarray, kind: str) -> np.ndarray:
    logits = np.asarray(logits, np.float64)
    if kind == "multilabel":
        return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return (z / z.sum(axis=-1, keepdims=True)).astype(np.float32)


def _val_metrics(probs: np.ndarray, labels: np.ndarray, kind: str) -> dict[str, float]:
    """``val_loss`` (unsmoothed) and ``val_accuracy`` / ``val_average_precision``."""
    eps = 1e-7
    p = np.clip(probs.astype(np.float64), eps, 1 - eps)
    if kind == "multilabel":
        from .evaluate import average_precision

        y = labels.astype(np.float64)
        loss = float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean()) if len(y) else 0.0
        aps = [average_precision(y[:, t], probs[:, t]) for t in range(y.shape[1]) if y[:, t].any()]
        acc = float(((probs >= 0.5) == (y >= 0.5)).mean()) if len(y) else 0.0
        return {
            "val_loss": loss,
            "val_average_precision": float(np.mean(aps)) if aps else 0.0,
            "val_accuracy": acc,
        }
    idx = labels.astype(np.int64)
    loss = float(-np.log(p[np.arange(len(idx)), idx]).mean()) if len(idx) else 0.0
    acc = float((probs.argmax(axis=-1) == idx).mean()) if len(idx) else 0.0
    return {"val_loss": loss, "val_accuracy": acc}


def _score(metrics: Mapping[str, float], kind: str) -> tuple[float, float]:
    main = metrics["val_average_precision"] if kind == "multilabel" else metrics["val_accuracy"]
    return (main, -metrics["val_loss"])


def _class_weights(config: TrainConfig, labels: np.ndarray, num_classes: int) -> np.ndarray:
    if config.kind == "multilabel" or config.class_weights is None:
        return np.ones(num_classes, np.float32)
    if isinstance(config.class_weights, str):
        if config.class_weights != "balanced":
            raise TrainingError(
                f"class_weights {config.class_weights!r}: use 'balanced', None or a list"
            )
        counts = np.bincount(labels.astype(np.int64), minlength=num_classes).astype(np.float64)
        w = np.where(counts > 0, len(labels) / (num_classes * np.maximum(counts, 1)), 0.0)
        return np.clip(w, 0.0, 10.0).astype(np.float32)
    w = np.asarray(config.class_weights, np.float32)
    if w.shape != (num_classes,):
        raise TrainingError(f"class_weights: need {num_classes} values, got {w.shape}")
    return w


def _check_set(name: str, data: Mapping[str, Any], key: str, kind: str) -> tuple:
    if key not in data or "label" not in data:
        raise TrainingError(f"{name} set: needs {key!r} and 'label' arrays")
    x, y = np.asarray(data[key]), np.asarray(data["label"])
    if len(x) != len(y):
        raise TrainingError(f"{name} set: {len(x)} {key}s but {len(y)} labels")
    if kind == "multilabel" and y.ndim != 2:
        raise TrainingError(f"{name} set: multilabel labels must be [N, T] 0/1, got {y.shape}")
    if kind == "multiclass" and y.ndim != 1:
        raise TrainingError(f"{name} set: multiclass labels must be [N] ints, got {y.shape}")
    if kind not in ("multiclass", "multilabel"):
        raise TrainingError(f"kind {kind!r}: choose 'multiclass' or 'multilabel'")
    return x, y


def _checked_sets(config: TrainConfig, train: Mapping[str, Any], val: Mapping[str, Any], key: str):
    """Checked ``(x_train, y_train, x_val, y_val, num_classes)``; ``key`` is ``image`` or
    ``features``."""
    x_train, y_train = _check_set("train", train, key, config.kind)
    x_val, y_val = _check_set("validation", val, key, config.kind)
    if len(x_train) == 0:
        noun = "images" if key == "image" else "feature vectors"
        raise TrainingError(f"train set: no {noun}")
    return x_train, y_train, x_val, y_val, _num_classes(config, y_train, y_val)


def _num_classes(config: TrainConfig, y_train: np.ndarray, y_val: np.ndarray) -> int:
    if config.num_classes is not None:
        return int(config.num_classes)
    if config.kind == "multilabel":
        return int(y_train.shape[1])
    return int(max(y_train.max(initial=0), y_val.max(initial=0))) + 1


# ---------------------------------------------------------------------------- augmentation
def _augment(x: jax.Array, key: jax.Array, names: tuple[str, ...]) -> jax.Array:
    """Random flips / shifts / brightness on ``[N, H, W, C]`` floats in [0, 1]."""
    n, h, w, _ = x.shape
    k_flip, k_shift, k_bright = jax.random.split(key, 3)
    if "flip" in names:
        flip = jax.random.bernoulli(k_flip, 0.5, (n, 1, 1, 1))
        x = jnp.where(flip, x[:, :, ::-1, :], x)
    if "shift" in names:
        pad = max(1, round(h / 10))
        xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")
        offsets = jax.random.randint(k_shift, (n, 2), 0, 2 * pad + 1)

        def crop(img, off):
            return jax.lax.dynamic_slice(img, (off[0], off[1], 0), (h, w, img.shape[-1]))

        x = jax.vmap(crop)(xp, offsets)
    if "brightness" in names:
        kb, kc = jax.random.split(k_bright)
        scale = jax.random.uniform(kb, (n, 1, 1, 1), minval=0.8, maxval=1.2)
        shift = jax.random.uniform(kc, (n, 1, 1, 1), minval=-0.08, maxval=0.08)
        x = jnp.clip(x * scale + shift, 0.0, 1.0)
    return x


# ---------------------------------------------------------------------------- the train step
def _make_train_step(graphdef, tx, spec, kind: str, smoothing: float, augment: tuple[str, ...]):
    mean = jnp.asarray(spec.mean, jnp.float32)
    std = jnp.asarray(spec.std, jnp.float32)

    def step(params, rest, opt_state, images, labels, sample_weight, key, lr):
        x = images.astype(jnp.float32) / 255.0
        if augment:
            x = _augment(x, key, augment)
        x = (x - mean) / std

        def loss_fn(p):
            # copy=True: fresh Variables at this trace level (BatchNorm writes its statistics).
            model = nnx.merge(graphdef, p, rest, copy=True)
            logits = model(x)
            _, _, new_rest = nnx.split(model, nnx.Param, ...)
            return _loss(logits, labels, sample_weight, kind, smoothing), (logits, new_rest)

        (loss, (logits, new_rest)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        opt_state.hyperparams["learning_rate"] = lr
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        if kind == "multilabel":
            correct = jnp.mean((logits > 0) == (labels > 0.5))
        else:
            correct = jnp.mean(jnp.argmax(logits, -1) == labels)
        return params, new_rest, opt_state, loss, correct

    return jax.jit(step)


def _lr_at(progress: float, peak: float, warmup: float) -> float:
    """Linear warm-up then cosine decay to 1% of ``peak``; ``progress`` in [0, 1]."""
    progress = min(max(progress, 0.0), 1.0)
    if warmup > 0 and progress < warmup:
        return peak * (progress / warmup)
    t = (progress - warmup) / max(1e-9, 1.0 - warmup)
    return peak * (0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * t)))


class _Emitter:
    def __init__(self, on_event):
        self.on_event = on_event

    def __call__(self, event: dict) -> None:
        if self.on_event is not None:
            self.on_event(event)


# ---------------------------------------------------------------------------- fit
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

    Args:
        config: see :class:`TrainConfig`.
        train: ``{'image': uint8 [N, S, S, 3], 'label': int [N] or float 0/1 [N, T]}``.
            A ``{'features': ...}`` set is handed to :func:`fit_head` (needs ``model``).
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
    if "features" in train:
        if model is None:
            raise TrainingError("training on features needs the backbone: fit(..., model=...)")
        return fit_head(config, model, train, val, on_event=on_event, should_stop=should_stop)
    started = time.perf_counter()
    enable_compilation_cache()
    emit = _Emitter(on_event)
    kind = config.kind
    x_train, y_train, x_val, y_val, num_classes = _checked_sets(config, train, val, "image")
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
    if config.freeze_batchnorm:
        # Fine-tuning on a few images: keep the pretrained batch statistics (tiny batches
        # would replace them with noise) while the weights still train.
        model.set_attributes(use_running_average=True, raise_if_not_found=False)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    model.eval()
    eval_graphdef, _ = nnx.split(model)
    tx = optax.inject_hyperparams(optax.adamw)(
        learning_rate=peak_lr, weight_decay=config.weight_decay
    )
    opt_state = tx.init(params)
    step_fn = _make_train_step(
        graphdef, tx, spec, kind, config.label_smoothing, config.augmentations()
    )
    logits_fn = _apply_fn(eval_graphdef, tuple(spec.mean), tuple(spec.std), "logits")
    if replicated is not None:
        params, rest, opt_state = jax.device_put((params, rest, opt_state), replicated)
    cw = _class_weights(config, y_train, num_classes)
    y_train = y_train.astype(np.float32 if kind == "multilabel" else np.int32)
    sample_w_all = (
        np.ones(len(y_train), np.float32)
        if kind == "multilabel"
        else cw[y_train].astype(np.float32)
    )
    rng = np.random.default_rng(config.seed)
    base_key = jax.random.key(config.seed)

    def evaluate(p, r) -> tuple[np.ndarray, dict]:
        state = nnx.merge_state(p, r)  # the eval graph takes one state
        logits = _run_batched(logits_fn, state, x_val, 256, EVAL_BUCKETS)
        probs = _probabilities(logits.reshape(len(x_val), num_classes), kind)
        return probs, _val_metrics(probs, y_val, kind)

    history: list[dict] = []
    best: dict[str, Any] = {"score": None, "epoch": 0, "state": None, "probs": None}
    stopped = False
    step = 0
    compile_s = 0.0
    train_time = 0.0  # seconds of training after the first (compiling) step
    images_seen = 0
    last_step_event = 0.0
    train_started = None
    epoch = 0
    deadline_hit = False

    def consider(epoch_no: int, metrics: dict, probs: np.ndarray) -> None:
        score = _score(metrics, kind)
        if best["score"] is None or score > best["score"]:
            best.update(score=score, epoch=epoch_no, state=(params, rest), probs=probs)

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
        for b in range(len(order) // batch):
            if should_stop is not None and should_stop():
                stopped = True
                break
            if time_limit is not None and train_started is not None:
                if time.perf_counter() - train_started >= time_limit:
                    deadline_hit = True
                    break
            idx = order[b * batch : (b + 1) * batch]
            images, labels, sw = x_train[idx], y_train[idx], sample_w_all[idx]
            if data_sharding is not None:
                images, labels, sw = jax.device_put((images, labels, sw), data_sharding)
            progress = step / total_steps if total_steps else 0.0
            if time_limit is not None and train_started is not None:
                progress = max(progress, (time.perf_counter() - train_started) / time_limit)
            lr = _lr_at(progress, peak_lr, config.warmup_fraction)
            key = jax.random.fold_in(base_key, step)
            t0 = time.perf_counter()
            params, rest, opt_state, loss, acc = step_fn(
                params, rest, opt_state, images, labels, sw, key, np.float32(lr)
            )
            step += 1
            losses.append(loss)
            accs.append(acc)
            if train_started is None:
                loss.block_until_ready()
                compile_s = time.perf_counter() - t0
                train_started = loop_started = time.perf_counter()
                emit({"phase": "training", "compile_s": round(compile_s, 3)})
            else:
                images_seen += batch
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
        probs, metrics = evaluate(params, rest)
        elapsed = time.perf_counter() - train_started
        record = {
            "epoch": epoch,
            "epochs": epochs,
            "loss": epoch_loss,
            "accuracy": epoch_acc,
            **metrics,
            "elapsed_s": round(elapsed, 3),
        }
        consider(epoch, metrics, probs)
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

    if best["state"] is None:  # stopped before the first step finished
        probs, _ = evaluate(params, rest)
        best.update(epoch=0, state=(params, rest), probs=probs)
    p, r = best["state"]
    final = nnx.merge(graphdef, p, r)
    weights = model_to_weights(final)
    seconds = time.perf_counter() - started
    return FitResult(
        weights=weights,
        history=history,
        best_epoch=best["epoch"],
        val_probabilities=best["probs"],
        stopped=stopped,
        seconds=round(seconds, 3),
        compile_s=round(compile_s, 3),
        images_per_s=round(images_seen / train_time, 1) if train_time > 0 else 0.0,
        extra={"batch_size": batch, "devices": ndev, "steps": step},
    )


# ---------------------------------------------------------------------------- transfer learning
HEAD_CHUNKS = 8
HEAD_STEPS_PER_CHUNK = 50
HEAD_PAD = 256


@functools.lru_cache(maxsize=8)
def _head_trainer(kind: str, smoothing: float, steps: int, weight_decay: float):
    """Jitted ``chunk(W, b, opt_state, X, Y, sw, lr0, lr1) -> (W, b, opt_state, loss)``."""
    tx = optax.inject_hyperparams(optax.adamw)(learning_rate=1e-2, weight_decay=weight_decay)

    def chunk(params, opt_state, x, y, sw, lrs):
        def body(carry, lr):
            p, s = carry

            def loss_fn(p):
                logits = x @ p["kernel"] + p["bias"]
                return _loss(logits, y, sw, kind, smoothing)

            loss, grads = jax.value_and_grad(loss_fn)(p)
            s.hyperparams["learning_rate"] = lr
            updates, s = tx.update(grads, s, p)
            return (optax.apply_updates(p, updates), s), loss

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
    enable_compilation_cache()
    emit = _Emitter(on_event)
    kind = config.kind
    x_train, y_train, x_val, y_val, num_classes = _checked_sets(config, train, val, "features")
    x_train = x_train.astype(np.float32).reshape(len(x_train), -1)
    x_val = x_val.astype(np.float32).reshape(len(x_val), -1)
    dim = x_train.shape[1]
    mu = x_train.mean(axis=0)
    sd = x_train.std(axis=0) + 1e-3
    n_pad = -(-len(x_train) // HEAD_PAD) * HEAD_PAD  # a few compiled shapes, not one per N
    xs = np.zeros((n_pad, dim), np.float32)
    xs[: len(x_train)] = (x_train - mu) / sd
    cw = _class_weights(config, y_train, num_classes)
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
    best: dict[str, Any] = {"score": None, "epoch": 0, "params": params, "probs": None}
    stopped = False
    xv = (x_val - mu) / sd
    emit({"phase": "training", "what": "head"})
    for c in range(HEAD_CHUNKS):
        if should_stop is not None and should_stop():
            stopped = True
            break
        lrs = np.array(
            [
                _lr_at((c * HEAD_STEPS_PER_CHUNK + s) / total, peak, 0.05)
                for s in range(HEAD_STEPS_PER_CHUNK)
            ],
            np.float32,
        )
        params, opt_state, loss = chunk(params, opt_state, xs, ys, sw, lrs)
        w, b = np.asarray(params["kernel"]), np.asarray(params["bias"])
        probs = _probabilities(xv @ w + b, kind)
        metrics = _val_metrics(probs, y_val, kind)
        elapsed = time.perf_counter() - started
        train_logits = xs[: len(x_train)] @ w + b
        if kind == "multilabel":
            acc = float(((train_logits > 0) == (y_train > 0.5)).mean())
        else:
            acc = float((train_logits.argmax(-1) == y_train).mean())
        record = {
            "epoch": c + 1,
            "epochs": HEAD_CHUNKS,
            "loss": float(loss),
            "accuracy": acc,
            **metrics,
            "elapsed_s": round(elapsed, 3),
            "eta_s": round(elapsed / (c + 1) * (HEAD_CHUNKS - c - 1), 3),
        }
        history.append(record)
        score = _score(metrics, kind)
        if best["score"] is None or score > best["score"]:
            best.update(score=score, epoch=c + 1, params=(w, b), probs=probs)
        emit({"event": "epoch", **record})
    if best["probs"] is None:
        w, b = np.asarray(params["kernel"]), np.asarray(params["bias"])
        best.update(params=(w, b), probs=_probabilities(xv @ w + b, kind))
    w, b = best["params"]
    # Fold the standardisation in: ((f - mu) / sd) @ w + b == f @ (w / sd) + (b - (mu / sd) @ w)
    kernel = (w / sd[:, None]).astype(np.float32)
    bias = (b - (mu / sd) @ w).astype(np.float32)
    weights = model_to_weights(backbone)
    if weights.get("head.kernel") is None or weights["head.kernel"].shape[0] != dim:
        raise TrainingError(f"{config.model}: the backbone's head does not take {dim}-d features")
    weights["head.kernel"], weights["head.bias"] = kernel, bias
    return FitResult(
        weights=weights,
        history=history,
        best_epoch=best["epoch"],
        val_probabilities=best["probs"],
        stopped=stopped,
        seconds=round(time.perf_counter() - started, 3),
        extra={"num_classes": num_classes},
    )
