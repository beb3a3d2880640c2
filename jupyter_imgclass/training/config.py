"""What to train and how (:class:`TrainConfig`), what a training leaves (:class:`FitResult`),
and the checks both training loops run on their inputs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import TrainingError
from ..vocabulary import check_kind

__all__ = [
    "AUGMENTATIONS",
    "DeadlineError",
    "FitResult",
    "TrainConfig",
    "checked_sets",
    "class_weights",
]


class DeadlineError(TrainingError):
    """A training could not start (compile its step) before its ``deadline``."""


AUGMENTATIONS = ("flip", "shift", "brightness")
DEFAULT_EPOCHS = 20
DEFAULT_TIME_LIMIT_S = 600.0


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
        unlabelled: the quick head may use untagged images
            (:func:`~jupyter_imgclass.training.head.spread_unlabelled`).
        deadline: wall-clock time (``time.time()``) by which the run returns, compilation
            and the last validation pass included; a first step that cannot compile in
            time raises :class:`DeadlineError`.
        precision: the training step's compute type: ``"float32"``, ``"bfloat16"``
            (convolutions and dense layers in bfloat16, float32 master weights, optimizer
            state, batch-norm statistics and loss), or ``"auto"``: bfloat16 on a GPU or
            TPU; on a CPU float32, with the products of small_cnn's convolutions in
            bfloat16 (float32 accumulation) where the CPU multiplies bfloat16 in hardware
            (AMX or AVX512-BF16): 2.2x faster there (``benchmarks/ab_small_cnn.py``), while
            whole-network bfloat16 measured slower on CPU (XLA:CPU upcasts bfloat16
            convolutions; ``benchmarks/scaling.py --precision``). Validation runs in
            float32.
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
    unlabelled: bool = True
    deadline: float | None = None
    precision: str = "auto"

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise TrainingError(
                f"precision {self.precision!r}: choose from {', '.join(PRECISIONS)}"
            )
        for name in ("batch_size", "epochs"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise TrainingError(f"{name} {value!r}: must be a whole number of 1 or more")

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


PRECISIONS = ("auto", "float32", "bfloat16")


def compute_dtype(precision: str, backend: str) -> Any:
    """The step's compute dtype for ``precision`` on ``backend`` (None: float32 as is)."""
    import jax.numpy as jnp

    if precision == "bfloat16" or (precision == "auto" and backend in ("gpu", "cuda", "tpu")):
        return jnp.bfloat16
    return None


def product_dtype(precision: str, backend: str) -> Any:
    """The operand dtype of the training convolutions' matrix products (None: the compute
    dtype): bfloat16 for ``"auto"`` on a CPU that multiplies bfloat16 in hardware.

    On the CPU backend it also readies the C++ kernels the training layers call (built
    once per machine, loaded once per process): ``fit`` asks for the dtype before its
    first step, so the build is not timed as that step's compilation. Elsewhere nothing
    is built.
    """
    import jax.numpy as jnp

    from ..platform import cpu_kernels

    if backend != "cpu":
        return None
    cpu_kernels.available()  # the warm-up: the first call builds or loads them
    if precision == "auto" and cpu_kernels.bf16_products():
        return jnp.bfloat16
    return None


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
        head_input: what the network's head sees (``"raw"``, or ``"l2"`` after the
            logistic-regression head); the weights only make sense with it.
    """

    weights: dict[str, np.ndarray]
    history: list[dict]
    best_epoch: int
    val_probabilities: np.ndarray
    stopped: bool
    seconds: float = 0.0
    compile_s: float = 0.0
    images_per_s: float = 0.0
    head_input: str = "raw"
    extra: dict = field(default_factory=dict)


def class_weights(config: TrainConfig, labels: np.ndarray, num_classes: int) -> np.ndarray:
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
    check_kind(kind, error=TrainingError)
    if key not in data or "label" not in data:
        raise TrainingError(f"{name} set: needs {key!r} and 'label' arrays")
    x, y = data[key], np.asarray(data["label"])
    if not (hasattr(x, "shape") and hasattr(x, "dtype") and hasattr(x, "__getitem__")):
        x = np.asarray(x)  # a row-indexed view (CachedRows) stays as it is: not read whole
    if len(x) != len(y):
        raise TrainingError(f"{name} set: {len(x)} {key}s but {len(y)} labels")
    if kind == "multilabel" and y.ndim != 2:
        raise TrainingError(f"{name} set: multilabel labels must be [N, T] 0/1, got {y.shape}")
    if kind == "multiclass" and y.ndim != 1:
        raise TrainingError(f"{name} set: multiclass labels must be [N] ints, got {y.shape}")
    return x, y


def checked_sets(config: TrainConfig, train: Mapping[str, Any], val: Mapping[str, Any], key: str):
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
