"""Training runs: from a project's labelled images to a saved iteration, in a background thread.

A :class:`TrainingRun` trains in its own thread (the notebook cell returns at once,
``run.wait()`` blocks, ``run.stop()`` keeps the best weights so far). Steps: collect
labels -> refuse or warn -> the budget's recipe (:func:`jupyter_imgclass.training.recipes.train`,
which reads images and features through this project's caches) -> an atomic save.

Saving is atomic: weights, validation predictions and the record
(:class:`~.record.IterationRecord`) are written into a temporary folder that is renamed
to ``iterations/<n>/``, then the store is updated in one transaction. While a run trains,
process 0 holds the project's OS lock (``iterations/.training.lock``); opening a project
marks an iteration left "training" with no live lock (its kernel died) as "failed"
(:func:`recover_interrupted`).

Several processes (``Project.train(coordinator=..., num_processes=..., process_id=...)``,
one call per process on one project folder that every process reads): a network trained
from scratch (``budget="advanced"``) trains data-parallel over every process's devices,
each process reading its share of every batch from the cache; process 0 alone writes the
iteration, and the others open it once it is saved. Other budgets train in process 0 while
the others wait for its iteration.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock, Timeout

from ..data.integrity import TMP_PREFIX, fsync_folder
from ..data.labelled import LabelledSet, check_trainable, class_counts, labelled_set
from ..errors import ImgClassError, TrainingError
from ..training.events import Phase
from ..training.options import TrainOptions
from .events import Events, Subscription
from .features import cached_features, untagged_ids, usable_set
from .iteration import RECORD_FILE, WEIGHTS_FILE, Iteration, write_json
from .moved import moved
from .record import IterationRecord

log = logging.getLogger(__name__)

RUN_EVENTS = ("event",)
FIT_FIELDS = ("batch_size", "devices", "processes", "precision", "steps")

TRAINING_LOCK = ".training.lock"


def training_lock(root: Path) -> FileLock:
    """The OS lock a live training of the project holds (process 0's, in a multi-process
    run); a killed process releases it. One file for the project, not one per run."""
    return FileLock(root / "iterations" / TRAINING_LOCK, timeout=0, thread_local=False)


def take_training_lock(root: Path) -> FileLock:
    """Takes :func:`training_lock`, or says that another training is running.

    Raises:
        TrainingError: a training of this project runs already (this kernel or another).
    """
    lock = training_lock(root)
    try:
        lock.acquire()
    except Timeout:
        raise TrainingError(
            f"{root}: another training of this project is running (in this kernel or another "
            "process); wait for it to finish, or stop it, then train again"
        ) from None
    return lock


# ---------------------------------------------------------------------------- run
class TrainingRun:
    """A training in a background thread.

    Attributes:
        number: the iteration number this run will create.
        options: the :class:`~jupyter_imgclass.training.options.TrainOptions`.
        status: ``"starting"``, ``"running"``, ``"done"``, ``"stopped"`` or ``"failed"``.
        events: every progress event so far (dicts with ``phase`` or ``event`` keys).
        error: the reason, when ``status == "failed"``.
        warnings: data warnings found before training and what the recipe decided
            (every ``"warning"`` event's message).
        iteration: the saved :class:`Iteration` once finished.
    """

    def __init__(
        self, project: Any, number: int, options: TrainOptions, lock: FileLock | None = None
    ):
        self.project = project
        self._training_lock = lock  # held until the run ends (None: not process 0)
        self.number = number
        self.options = options
        self.status = "starting"
        self.events: list[dict] = []
        self.error: str | None = None
        self.iteration: Iteration | None = None
        self.warnings: list[str] = []
        self._stop = threading.Event()
        self._done = threading.Event()
        self._hub = Events(RUN_EVENTS)
        self._lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._run, name=f"imgclass-train-{number}", daemon=True
        )

    def start(self) -> TrainingRun:
        """Starts the thread (``Project.train`` does this)."""
        self._thread.start()
        return self

    # -- public
    def on_event(self, callback: Callable[[dict], None]) -> Subscription:
        """Calls ``callback(event)`` for every future progress event.

        Returns:
            A :class:`~.events.Subscription`; ``.cancel()`` it to stop listening.
        """
        return self._hub.subscribe("event", lambda event: callback(event))

    def stop(self) -> None:
        """Asks the run to stop; it keeps the best weights so far as an iteration."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` was called."""
        return self._stop.is_set()

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

    def emit(self, event: dict) -> None:
        """Records a progress event and tells the listeners (called by the training code)."""
        event = dict(event)
        event.setdefault("time", time.time())
        with self._lock:
            self.events.append(event)
            if event.get("phase") == Phase.WARNING:
                self.warnings.append(str(event.get("message")))
        self._hub.emit("event", event=event)

    def __getattr__(self, name: str):
        # only for names not found: an old spelling gets the new one in the error
        raise moved(self, name)

    def __repr__(self) -> str:
        return f"TrainingRun(iteration={self.number}, status={self.status!r})"

    # -- the thread
    def _run(self) -> None:
        self.status = "running"
        try:
            self.iteration = run_training(self)
            self.status = "stopped" if self._stop.is_set() else "done"
        except Exception as exc:  # reported to the user via status/error and wait()
            self.status = "failed"
            self.error = (
                str(exc) if isinstance(exc, ImgClassError) else f"{type(exc).__name__}: {exc}"
            )
            log.debug("training failed:\n%s", traceback.format_exc())
            self.emit({"phase": Phase.FAILED, "error": self.error})
        finally:
            try:
                if self._training_lock is not None:
                    self._training_lock.release()  # before wait() returns: train again
                self.emit({"phase": self.status})
            finally:
                self._done.set()


# ---------------------------------------------------------------------------- the path
def _rank() -> int:
    """This process's index in a multi-process run (0 alone)."""
    from ..platform import runtime

    return runtime.process_rank()


def run_training(run: TrainingRun) -> Iteration:
    """Trains and saves one iteration; called in the run's thread."""
    from .. import models
    from ..training import recipes

    project = run.project
    started = time.time()
    if _rank() != 0:
        return _follow(run, started)
    data, skipped = usable_set(project, labelled_set(project.store))
    for warning in skipped + check_trainable(data):
        run.emit({"phase": Phase.WARNING, "message": warning})
    opts = _resolved(run.options, data)
    spec = models.get(opts.model)
    input_size = int(opts.input_size or spec.input_size)
    record = IterationRecord(
        model=opts.model,
        budget=opts.budget,
        kind=data.kind,
        classes=list(data.classes),
        input_size=input_size,
        resize=opts.resize,
        seed=opts.seed,
        epochs=opts.epochs,
        time_limit_s=opts.time_limit_s,
        class_counts=class_counts(data),
        preprocessing=spec.to_json(input_size, opts.resize),
    )
    name = opts.name or f"Iteration{run.number}"
    project.store.insert_iteration(
        number=run.number,
        name=name,
        status="training",
        model=opts.model,
        budget=opts.budget,
        config=record.to_json(),
    )
    try:
        trained = recipes.train(
            run.options,  # model "choose": the recipe chooses the backbone
            data,
            _inputs(run, data),
            on_event=run.emit,
            should_stop=lambda: run.stopping,
            started=started,
        )
        iteration = _save(run, data, name, record, trained, started)
    except BaseException as exc:
        project.store.finish_iteration(run.number, status="failed", metrics=None)
        _announce(run, f"failed: {type(exc).__name__}: {exc}")
        raise
    _announce(run, "saved")
    return iteration


def _resolved(options: TrainOptions, data: LabelledSet) -> TrainOptions:
    """``options`` with the network the recipe will train named (every process agrees)."""
    from ..training.recipes import first_model

    return dataclasses.replace(options, model=first_model(options, len(data.image_ids)))


def _inputs(run: TrainingRun, data: LabelledSet):
    """The recipe's :class:`~jupyter_imgclass.training.recipes.Inputs`: this project's
    feature and image caches over ``data``'s images."""
    from ..training.recipes import Inputs

    project = run.project
    records = project.images_by_id(data.image_ids)
    pairs = [(im.sha256, im.path) for im in records]

    resize = run.options.resize

    def features(backbone, spec, size: int, on_progress) -> np.ndarray:
        return cached_features(
            project, backbone, spec, data.image_ids, size, on_progress, resize=resize
        )

    def images(size: int, stream: bool, on_progress):
        load = project.cache.rows if stream else project.cache.arrays
        return load(pairs, size, resize=resize, on_progress=on_progress)

    def unlabelled(backbone, spec, size: int, on_progress) -> np.ndarray:
        ids = untagged_ids(project, seed=run.options.seed)
        if not ids:
            return np.zeros((0, 0), np.float32)
        return cached_features(project, backbone, spec, ids, size, on_progress, resize=resize)

    return Inputs(features=features, images=images, unlabelled=unlabelled)


def _follow(run: TrainingRun, started: float) -> Iteration:
    """A process other than 0 of a multi-process run: trains its share when the network
    trains data-parallel, then opens the iteration process 0 saved.

    Process 0 decides and announces the outcome (saved, or failed and why); the others
    wait for its word, bounded in time, so a failure on either side ends every process
    with the reason instead of leaving one waiting at a collective."""
    from .. import models
    from ..platform import runtime
    from ..training import recipes

    data, _ = usable_set(run.project, labelled_set(run.project.store))
    opts = _resolved(run.options, data)
    try:
        if recipes.spreads(models.get(opts.model), opts):
            recipes.train(
                opts,
                data,
                _inputs(run, data),
                on_event=run.emit,
                should_stop=lambda: run.stopping,
                started=started,
            )
    except Exception as exc:
        word = _outcome(run, timeout_s=FAILED_WORD_S)
        raise TrainingError(
            f"training run {run.number} failed in this process ({type(exc).__name__}: {exc}); "
            f"process 0 says: {word}"
        ) from exc
    word = _outcome(run, timeout_s=(opts.time_limit_s or 0) + runtime.BARRIER_TIMEOUT_S)
    if word != "saved":
        raise TrainingError(f"process 0 did not save iteration {run.number}: {word}")
    rows = [r for r in run.project.store.iterations() if r["number"] == run.number]
    if not rows or rows[0]["status"] not in ("done", "stopped"):
        raise TrainingError(f"process 0 did not save iteration {run.number}; its output says why")
    return Iteration(run.project, rows[0])


FAILED_WORD_S = 60.0
"""How long a process that failed waits for process 0's word before it gives up."""


def _announce(run: TrainingRun, word: str) -> None:
    """Process 0 tells the others how iteration ``run.number`` ended."""
    from ..platform import runtime

    try:
        runtime.publish(f"run/{run.number}/outcome", word[:2000])
    except Exception:  # the others then time out with their own message
        log.exception("could not tell the other processes how the run ended")


def _outcome(run: TrainingRun, timeout_s: float) -> str:
    """Process 0's word on iteration ``run.number`` ("saved", or "failed: why")."""
    from ..platform import runtime

    try:
        return runtime.read(f"run/{run.number}/outcome", timeout_s)
    except RuntimeError as exc:
        return str(exc)


def _save(
    run: TrainingRun,
    data: LabelledSet,
    name: str,
    record: IterationRecord,
    trained: Any,
    started: float,
) -> Iteration:
    """Writes the iteration folder atomically, then records it in one transaction."""
    from safetensors.numpy import save_file

    from .. import models
    from ..evaluate import compute_metrics

    project = run.project
    result = trained.result
    y_val = data.labels[trained.scored]
    metrics = compute_metrics(
        y_val, result.val_probabilities, data.classes, data.kind, record.threshold
    )
    fit = {k: result.extra[k] for k in FIT_FIELDS if k in result.extra}
    spec = models.get(trained.model)
    record = record.replace(
        model=trained.model,
        input_size=trained.input_size,
        preprocessing=spec.to_json(trained.input_size, record.resize),
        backbone_choice=trained.choice,
        train_image_ids=data.image_ids[trained.train].tolist(),
        val_image_ids=data.image_ids[trained.scored].tolist(),
        evaluation=trained.evaluation,
        head_input=result.head_input,
        history=result.history,
        best_epoch=result.best_epoch,
        warnings=list(run.warnings),
        train_seconds=round(time.time() - started, 3),
        status="stopped" if result.stopped or run.stopping else "done",
        head_c=result.extra.get("c"),
        # how the network trained: global batch, devices, processes, precision
        fit={**fit, "images_per_s": result.images_per_s} if fit else None,
    )
    config = record.to_json()
    iterations = project.root / "iterations"
    final = iterations / str(run.number)
    tmp = iterations / f"{TMP_PREFIX}{run.number}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        save_file(result.weights, str(tmp / WEIGHTS_FILE))
        np.save(tmp / "val_labels.npy", y_val)
        np.save(tmp / "val_probabilities.npy", np.asarray(result.val_probabilities, np.float32))
        write_json(
            tmp / RECORD_FILE, {"name": name, "number": run.number, **config, "metrics": metrics}
        )
        fsync_folder(tmp)
        if final.exists():  # left by an earlier, failed attempt at this number
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    project.store.complete_iteration(
        run.number, status=record.status, metrics=metrics, config=config
    )
    row = next(r for r in project.store.iterations() if r["number"] == run.number)
    return Iteration(project, row)


def recover_interrupted(project: Any) -> list[int]:
    """Settles iterations left "training" by a dead process; returns the failed numbers.

    A live training holds :func:`training_lock` for as long as its process lives, so
    when the lock can be taken no trainer is left. An iteration whose folder was renamed
    into place before its row was updated (killed in between) is complete: its row is
    completed from the folder's record instead of being marked failed. Temporary folders
    of interrupted saves and the per-run lock files of older versions are removed.
    """
    lock = training_lock(project.root)
    try:
        lock.acquire()
    except Timeout:  # a live run (this process or another) is still training
        return []
    failed = []
    try:
        iterations = project.root / "iterations"
        for row in project.store.iterations():
            if row["status"] != "training":
                continue
            record = _finished_record(iterations / str(row["number"]))
            if record is not None:
                metrics = record.pop("metrics", None)
                saved = IterationRecord.from_json(record, model=row["model"], kind=project.kind)
                project.store.complete_iteration(
                    row["number"], status=saved.status, metrics=metrics, config=saved.to_json()
                )
                continue
            project.store.finish_iteration(row["number"], status="failed", metrics=None)
            failed.append(int(row["number"]))
        for tmp in iterations.glob(f"{TMP_PREFIX}*"):
            shutil.rmtree(tmp, ignore_errors=True)
        for stale in iterations.glob(".*.lock"):
            if stale.name != TRAINING_LOCK:
                stale.unlink(missing_ok=True)
    finally:
        lock.release()
    return failed


def _finished_record(folder: Path) -> dict | None:
    """The record of a completely saved iteration folder, or None."""
    try:
        record = json.loads((folder / RECORD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not (folder / WEIGHTS_FILE).is_file():
        return None
    return record
