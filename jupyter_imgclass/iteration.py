"""Training runs and the iterations they leave behind.

A :class:`TrainingRun` trains in a background thread (the notebook cell returns at once,
``run.wait()`` blocks, ``run.stop()`` keeps the best weights so far). Each run becomes an
:class:`Iteration` saved under ``iterations/<n>/`` (``weights.safetensors`` +
``model.json``) and recorded in the database, so it survives a kernel restart.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ImgClassError, TrainingError

if TYPE_CHECKING:
    from .project import Project

log = logging.getLogger(__name__)

VAL_FRACTION = 0.2
MIN_PER_TAG = 2
WARN_PER_TAG = 5
TRANSFER_MAX_IMAGES = 5000
HEADLINE_METRICS = ("accuracy", "precision", "recall", "average_precision")


# ---------------------------------------------------------------------------- data
@dataclass
class LabelledSet:
    """The labelled images of a project as a classifier sees them."""

    image_ids: np.ndarray  # int64 [N]
    labels: np.ndarray  # int32 [N] (multiclass) or float32 [N, T] (multilabel)
    classes: list[str]  # output order of the classifier
    kind: str


def labelled_set(project: Project) -> LabelledSet:
    """Collects labelled images and their targets.

    Multiclass: each image with one tag is one example; the negative tag, when used, is a
    class of its own ("none of these"). Multilabel: one sigmoid output per regular tag; an
    image with the negative tag has all targets 0.
    """
    kind = project.kind
    negative = project.negative_tag
    regular = project.tag_names
    images = [im for im in project.images if im.tags]
    if kind == "multiclass":
        used_negative = negative is not None and any(negative in im.tags for im in images)
        classes = regular + ([negative] if used_negative else [])
        index = {c: k for k, c in enumerate(classes)}
        ids, labels = [], []
        for im in images:
            tag = im.tags[0]
            if tag in index:
                ids.append(im.id)
                labels.append(index[tag])
        return LabelledSet(np.array(ids, np.int64), np.array(labels, np.int32), classes, kind)
    index = {c: k for k, c in enumerate(regular)}
    ids, rows = [], []
    for im in images:
        row = np.zeros(len(regular), np.float32)
        for tag in im.tags:
            if tag in index:
                row[index[tag]] = 1.0
        ids.append(im.id)
        rows.append(row)
    labels = np.stack(rows) if rows else np.zeros((0, len(regular)), np.float32)
    return LabelledSet(np.array(ids, np.int64), labels, regular, kind)


def check_trainable(data: LabelledSet) -> list[str]:
    """Raises :class:`TrainingError` when training cannot work; returns warnings otherwise."""
    if len(data.classes) < 2:
        raise TrainingError(
            f"need at least 2 tags with images to train, found {len(data.classes)} "
            f"({', '.join(data.classes) or 'none'}); label more images"
        )
    counts = class_counts(data)
    too_few = [f"{c!r} ({n})" for c, n in counts.items() if n < MIN_PER_TAG]
    if too_few:
        raise TrainingError(
            f"every tag needs at least {MIN_PER_TAG} images to train and validate; too few: "
            + ", ".join(too_few)
        )
    return [
        f"tag {c!r} has only {n} images; {WARN_PER_TAG} or more give steadier results"
        for c, n in counts.items()
        if n < WARN_PER_TAG
    ]


def class_counts(data: LabelledSet) -> dict[str, int]:
    """Examples per class."""
    if data.kind == "multiclass":
        return {c: int((data.labels == k).sum()) for k, c in enumerate(data.classes)}
    return {c: int(data.labels[:, k].sum()) for k, c in enumerate(data.classes)}


def stratified_split(
    labels: np.ndarray, kind: str, *, val_fraction: float = VAL_FRACTION, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train/validation indices; every class with 2+ examples gets one in each side.

    Multilabel examples are stratified by their rarest positive tag ("none" when untagged).
    """
    rng = np.random.default_rng(seed)
    if kind == "multiclass":
        strata = labels.astype(np.int64)
    else:
        freq = labels.sum(axis=0)
        strata = np.array(
            [int(np.argmin(np.where(row > 0, freq, np.inf))) if row.any() else -1 for row in labels]
        )
    train_idx, val_idx = [], []
    for s in np.unique(strata):
        members = np.flatnonzero(strata == s)
        rng.shuffle(members)
        n_val = int(round(len(members) * val_fraction))
        if len(members) >= 2:
            n_val = min(max(n_val, 1), len(members) - 1)
        else:
            n_val = 0
        val_idx += members[:n_val].tolist()
        train_idx += members[n_val:].tolist()
    return np.array(sorted(train_idx), np.int64), np.array(sorted(val_idx), np.int64)


def default_model(n_images: int) -> str:
    """Transfer learning for small datasets, a from-scratch CNN for large ones."""
    return "efficientnet_lite0" if n_images <= TRANSFER_MAX_IMAGES else "small_cnn"


# ---------------------------------------------------------------------------- run
class TrainingRun:
    """A training in a background thread.

    Attributes:
        number: the iteration number this run will create.
        status: ``"starting"``, ``"running"``, ``"done"``, ``"stopped"`` or ``"failed"``.
        events: every progress event so far (dicts with ``phase`` or ``event`` keys).
        error: the reason, when ``status == "failed"``.
        iteration: the saved :class:`Iteration` once finished.
    """

    def __init__(self, project: Project, number: int, options: dict):
        self.project = project
        self.number = number
        self.options = options
        self.status = "starting"
        self.events: list[dict] = []
        self.error: str | None = None
        self.iteration: Iteration | None = None
        self.warnings: list[str] = []
        self._stop = threading.Event()
        self._done = threading.Event()
        self._callbacks: list[Callable[[dict], None]] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._run, name=f"imgclass-train-{number}", daemon=True
        )

    def start(self) -> TrainingRun:
        self._thread.start()
        return self

    # -- public
    def on_event(self, callback: Callable[[dict], None]) -> None:
        """Calls ``callback(event)`` for every future progress event."""
        with self._lock:
            self._callbacks.append(callback)

    def stop(self) -> None:
        """Asks the run to stop; it keeps the best weights so far as an iteration."""
        self._stop.set()

    @property
    def running(self) -> bool:
        """True until the run has finished, stopped or failed."""
        return not self._done.is_set()

    def wait(self, timeout: float | None = None) -> Iteration | None:
        """Blocks until the run ends; returns its iteration.

        Raises:
            TrainingError: when the run failed (the message says why).
        """
        self._done.wait(timeout)
        if self.status == "failed":
            raise TrainingError(f"training run {self.number} failed: {self.error}")
        return self.iteration

    def monitor(self):
        """A live :class:`~jupyter_imgclass.widgets.TrainingMonitor` of this run."""
        from .widgets.monitor import TrainingMonitor

        return TrainingMonitor(self)

    def __repr__(self) -> str:
        return f"TrainingRun(iteration={self.number}, status={self.status!r})"

    # -- internals
    def _emit(self, event: dict) -> None:
        event = dict(event)
        event.setdefault("time", time.time())
        with self._lock:
            self.events.append(event)
            callbacks = list(self._callbacks)
        for cb in callbacks:
            try:
                cb(event)
            except Exception:
                log.exception("training event callback failed")
        self.project._emit("training_event", run=self, event=event)

    def _run(self) -> None:
        from . import training_pipeline

        self.status = "running"
        try:
            self.iteration = training_pipeline.run_training(self)
            self.status = "stopped" if self._stop.is_set() else "done"
        except Exception as exc:  # reported to the user via status/error and wait()
            self.status = "failed"
            self.error = (
                str(exc) if isinstance(exc, ImgClassError) else f"{type(exc).__name__}: {exc}"
            )
            log.debug("training failed:\n%s", traceback.format_exc())
            self._emit({"phase": "failed", "error": self.error})
        finally:
            try:
                if self in self.project._runs:
                    self.project._runs.remove(self)
                self._emit({"phase": self.status})
                if self.iteration is not None:
                    self.project._emit("iteration_ready", iteration=self.iteration)
            finally:
                self._done.set()


# ---------------------------------------------------------------------------- iteration
class Iteration:
    """A trained model of a project, saved under ``iterations/<n>/``.

    Attributes:
        number: 1, 2, ... in training order.
        name: the published name (``Iteration<n>`` by default).
        status: ``"done"``, ``"stopped"`` (kept best-so-far) or ``"failed"``.
        model: network name.
        classes: output order of the classifier (tag names).
        kind: ``"multiclass"`` or ``"multilabel"``.
    """

    def __init__(self, project: Project, row: dict):
        self.project = project
        self.number = int(row["number"])
        self.name = row["name"]
        self.status = row["status"]
        self.model = row["model"]
        self.budget = row["budget"]
        self.config = row.get("config") or {}
        self._metrics = row.get("metrics")
        self._predictor = None
        self._val_probabilities: np.ndarray | None = None

    @property
    def folder(self) -> Path:
        """Where the weights and ``model.json`` live."""
        return self.project.root / "iterations" / str(self.number)

    @property
    def classes(self) -> list[str]:
        return list(self.config.get("classes", []))

    @property
    def kind(self) -> str:
        return self.config.get("kind", self.project.kind)

    @property
    def val_image_ids(self) -> list[int]:
        """Ids of the held-out images the metrics were computed on."""
        return list(self.config.get("val_image_ids", []))

    @property
    def history(self) -> list[dict]:
        """Per-epoch metrics of the training."""
        return list(self.config.get("history", []))

    @property
    def threshold(self) -> float:
        return float(self.config.get("threshold", 0.5))

    @property
    def metrics(self) -> dict:
        """Held-out metrics at the default threshold (see :meth:`evaluate`)."""
        return self._metrics or {}

    def _val_truth_and_probs(self) -> tuple[np.ndarray, np.ndarray]:
        if self._val_probabilities is None:
            self._val_probabilities = np.load(self.folder / "val_probabilities.npy")
        truth = np.load(self.folder / "val_labels.npy")
        return truth, self._val_probabilities

    def evaluate(self, threshold: float = 0.5) -> dict:
        """Metrics on the held-out images at another probability threshold."""
        from .evaluate import compute_metrics

        if not 0.0 <= float(threshold) <= 1.0:
            raise ImgClassError(f"threshold {threshold!r}: must be between 0 and 1")
        truth, probs = self._val_truth_and_probs()
        return compute_metrics(truth, probs, self.classes, self.kind, threshold=float(threshold))

    def to_dataframe(self, threshold: float | None = None):
        """Per-tag and overall metrics as a pandas DataFrame."""
        from .evaluate import metrics_dataframe

        metrics = self.metrics if threshold is None else self.evaluate(threshold)
        return metrics_dataframe(metrics)

    def top_losses(self, n: int = 10) -> list[dict]:
        """The held-out images the model got most wrong (likely mislabelled first).

        Returns:
            dicts with ``image_id``, ``loss``, ``true`` and ``predicted`` tag names.
        """
        from .evaluate import top_losses

        truth, probs = self._val_truth_and_probs()
        ids = self.val_image_ids
        out = []
        for index, loss, true, predicted in top_losses(truth, probs, self.kind, n):
            out.append(
                {
                    "image_id": ids[index],
                    "loss": float(loss),
                    "true": _names(true, self.classes),
                    "predicted": _names(predicted, self.classes),
                }
            )
        return out

    @property
    def predictor(self):
        """The loaded :class:`~jupyter_imgclass.predict.Predictor` (loaded once)."""
        if self._predictor is None:
            from safetensors.numpy import load_file

            from .predict import Predictor

            weights = load_file(str(self.folder / "weights.safetensors"))
            self._predictor = Predictor(
                self.model,
                self.classes,
                self.kind,
                weights,
                thresholds=None,
                input_size=self.config.get("input_size"),
            )
        return self._predictor

    def predict(self, items: Any, *, top: int | None = None):
        """Predicts tags for one image (path, bytes, PIL, array) or a list of them.

        Returns:
            For one image, a list of ``Prediction(tag, probability)`` sorted by probability;
            for a list, one such list per image.
        """
        single = not isinstance(items, list | tuple)
        results = self.predictor.predict([items] if single else list(items))
        if top is not None:
            results = [r[:top] for r in results]
        return results[0] if single else results

    def export(self, folder: str | Path, *, onnx: bool = False) -> Path:
        """Writes a portable bundle (safetensors + model.json [+ ONNX]); see ``ic.load_model``."""
        from .export import export_iteration

        return export_iteration(self, folder, onnx=onnx)

    def serve(self, port: int = 0, *, host: str = "127.0.0.1", key: str | None = None, **kwargs):
        """Starts the REST prediction service in the background; returns a handle with ``.url``."""
        from .serve import serve_iteration

        return serve_iteration(self, host=host, port=port, key=key, **kwargs)

    def report(self):
        """The evaluation widget: per-tag table, threshold slider, confusion matrix."""
        from .widgets.evaluation import EvaluationWidget

        return EvaluationWidget(self)

    def tester(self):
        """The tester widget for this iteration."""
        from .widgets.tester import TesterWidget

        return TesterWidget(self.project, iteration=self)

    def headline_metrics(self) -> dict[str, float]:
        """The overall accuracy, precision, recall and average precision that exist."""
        overall = self.metrics.get("overall", {})
        return {
            k: float(overall[k])
            for k in HEADLINE_METRICS
            if isinstance(overall.get(k), float | int)
        }

    def __repr__(self) -> str:
        figures = ", ".join(f"{k}={v:.3f}" for k, v in self.headline_metrics().items())
        return (
            f"Iteration({self.number}, {self.name!r}, model={self.model!r}, "
            f"status={self.status!r}{', ' + figures if figures else ''})"
        )


def _names(value: Any, classes: Sequence[str]) -> Any:
    if isinstance(value, int | np.integer):
        return classes[int(value)]
    if isinstance(value, list | tuple | np.ndarray):
        return [classes[int(i)] for i in value]
    return value


def write_json(path: Path, data: dict) -> None:
    """Atomic JSON write (tmp + replace)."""
    from .data.cache import atomic_write

    atomic_write(path, json.dumps(data, indent=2, default=_json_default).encode("utf-8"))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
