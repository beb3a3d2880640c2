"""The training recipes: which network, how it learns, and which result is kept.

:func:`train` reads like the policy (fastai's ``fine_tune`` lives in its training layer
too):

* a pretrained network (``quick``): a cross-validated logistic-regression head on the
  frozen backbone's cached features (:func:`quick`); with ``model="choose"``
  (:data:`CHOOSE`), the backbone whose head has the lowest cross-validated log-loss on the
  project's own labels among :data:`BACKBONES` (:func:`choose_backbone`): no one backbone
  is best for photos, drawings and greyscale alike;
* ``advanced`` on a pretrained network: the top fine-tuned from that head on cached
  activations over the same folds, kept only when its cross-validated figures beat the
  head's (:func:`fine_tune`);
* ``advanced`` on a network without pretrained weights: trained from scratch with a
  seeded, stratified held-out split choosing the best epoch (:func:`from_scratch`).

A recipe is a function of a labelled set, the :class:`~.options.TrainOptions` and an
:class:`Inputs` that reads images and features from the caller's caches; it reports
through ``on_event`` and stops when ``should_stop()`` says so, like :func:`.loop.fit`.
It knows no project, no thread and no folder: ``project.runs.TrainingRun`` keeps those.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import models
from ..data.labelled import LabelledSet, cross_validation_folds, stratified_split
from ..errors import TrainingError
from ..evaluate import validation_metrics
from ..models.apply import extract_lower
from ..models.weights import weights_to_model
from ..vocabulary import figure
from .config import DeadlineError, FitResult, TrainConfig
from .events import Phase
from .head import fit_head, spread_unlabelled
from .loop import create_model, fit, selection_score
from .options import ADVANCED_DEFAULT_MINUTES, CHOOSE, TrainOptions
from .top import TOP_EPOCHS, TOP_LR, fit_top

__all__ = [
    "BACKBONES",
    "CHOOSE",
    "Inputs",
    "Trained",
    "choose_backbone",
    "default_model",
    "first_model",
    "fine_tune",
    "from_scratch",
    "improves",
    "quick",
    "spreads",
    "train",
    "train_config",
]

TRANSFER_MAX_IMAGES = 5000
"""Up to this many labelled images the default network is pretrained (transfer learning)."""
BACKBONES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
"""The pretrained backbones ``model="choose"`` tries."""
FINE_TUNE_DEFAULT_S = ADVANCED_DEFAULT_MINUTES * 60
"""Fine-tuning's time budget when the user gave none."""
MIN_FINE_TUNE_S = 20.0
"""Below this much time left, fine-tuning is not started (the quick head is kept)."""
SAVE_MARGIN_S = 3.0
"""Time kept back from the deadline for the caller to save the result."""

OnEvent = Callable[[dict], None]
ShouldStop = Callable[[], bool]
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Inputs:
    """Where a recipe reads the labelled images, from the caller's caches.

    Attributes:
        features: ``features(backbone, spec, size, on_progress)``: the frozen backbone's
            feature vectors of every labelled image at ``size`` pixels, ``[N, D]``
            (computed once and cached by the caller); ``on_progress(done, total)``.
        images: ``images(size, stream, on_progress)``: every labelled image as uint8
            ``[N, size, size, 3]``; with ``stream`` a row-indexed view read batch by batch.
        unlabelled: ``unlabelled(backbone, spec, size, on_progress)``: the same features
            of the untagged images the quick head may use (:func:`.head.spread_unlabelled`),
            ``[P, D]``; ``None`` when the caller has none.
    """

    features: Callable[[Any, models.ModelSpec, int, Progress], np.ndarray]
    images: Callable[[int, bool, Progress], Any]
    unlabelled: Callable[[Any, models.ModelSpec, int, Progress], np.ndarray] | None = None


@dataclass
class Trained:
    """What a recipe leaves: the model, and the images its figures rest on.

    Attributes:
        result: the kept :class:`~.config.FitResult`; its ``val_probabilities`` are those
            of the rows ``scored``.
        scored: rows of the labelled set the probabilities belong to (out-of-fold or
            held-out).
        train: rows the final model trained on.
        evaluation: how the figures were made (``method``, ``folds``, ``images``, ``note``).
        warnings: what the recipe decided that the user should know.
        model: the network the result belongs to (the chosen backbone).
        input_size: its square input side.
        choice: how the backbone was chosen (:func:`choose_backbone`), or ``None``.
    """

    result: FitResult
    scored: np.ndarray
    train: np.ndarray
    evaluation: dict
    warnings: list[str] = field(default_factory=list)
    model: str = ""
    input_size: int = 0
    choice: dict | None = None


def default_model(n_images: int) -> str:
    """Transfer learning for small datasets, a from-scratch CNN for large ones."""
    return "efficientnet_lite0" if n_images <= TRANSFER_MAX_IMAGES else "small_cnn"


def first_model(options: TrainOptions, n_images: int) -> str:
    """The network a run starts with: the one named, the first of :data:`BACKBONES` when
    the recipe chooses (it may end with another), else :func:`default_model`."""
    if options.model == CHOOSE:
        return BACKBONES[0]
    return options.model or default_model(n_images)


def spreads(spec: models.ModelSpec, options: TrainOptions) -> bool:
    """Whether the recipe trains data-parallel over processes (:func:`.loop.fit`): a
    network without pretrained weights on the ``advanced`` budget."""
    return not spec.pretrained and options.budget == "advanced"


def train_config(
    options: TrainOptions, spec: models.ModelSpec, data: LabelledSet, input_size: int
) -> TrainConfig:
    """The engine's :class:`~.config.TrainConfig` for ``options`` on ``data``."""
    return TrainConfig(
        model=spec.name,
        budget=options.budget,
        kind=data.kind,
        num_classes=len(data.classes),
        input_size=input_size,
        seed=options.seed,
        epochs=options.epochs,
        time_limit_s=options.time_limit_s,
        batch_size=options.batch_size,
        learning_rate=options.learning_rate,
        unlabelled=options.unlabelled,
    )


def train(
    options: TrainOptions,
    data: LabelledSet,
    inputs: Inputs,
    *,
    on_event: OnEvent,
    should_stop: ShouldStop,
    started: float | None = None,
) -> Trained:
    """The budget's recipe for ``data`` (see the module's docstring).

    Args:
        options: what the user asked for; ``options.model`` ``None`` takes
            :func:`default_model`.
        data: the labelled images.
        inputs: reads their pixels and features.
        on_event: gets every progress event (``phase`` keys, as :func:`.loop.fit`'s).
        should_stop: polled; ``True`` ends the training with the best result so far.
        started: when the user's time budget started (``time.time()``; now when ``None``).

    Returns:
        The kept :class:`Trained`.
    """
    started = time.time() if started is None else started
    spec = models.get(first_model(options, len(data.image_ids)))
    input_size = int(options.input_size or spec.input_size)
    config = train_config(options, spec, data, input_size)
    if spreads(spec, options):
        trained = from_scratch(config, data, inputs, on_event=on_event, should_stop=should_stop)
        return dataclasses.replace(trained, model=spec.name, input_size=input_size)
    import jax

    warnings = []
    if jax.process_count() > 1:
        warnings.append(
            f"budget {options.budget!r} with {spec.name}: trained in process 0 alone; only a "
            "network trained from scratch (budget='advanced', e.g. model='small_cnn') "
            "spreads over processes"
        )
        _warn(on_event, warnings[-1])
    if options.model == CHOOSE:
        head = choose_backbone(options, data, inputs, on_event=on_event, should_stop=should_stop)
        config = train_config(options, models.get(head.model), data, head.input_size)
    else:
        head = quick(config, data, inputs, on_event=on_event, should_stop=should_stop)
    head.warnings[:0] = warnings
    if options.budget != "advanced" or should_stop():
        return head
    deadline = started + options.time_limit_s if options.time_limit_s else None
    return fine_tune(
        config, data, inputs, head, deadline=deadline, on_event=on_event, should_stop=should_stop
    )


def choose_backbone(
    options: TrainOptions,
    data: LabelledSet,
    inputs: Inputs,
    *,
    on_event: OnEvent,
    should_stop: ShouldStop,
) -> Trained:
    """:func:`quick` on every backbone of :data:`BACKBONES`; keeps the one whose
    out-of-fold probabilities have the lowest log-loss (accuracy breaks a tie).

    Every labelled image is scored by heads that never saw its label in each candidate,
    and the choice reads only those out-of-fold figures, so choosing among three does not
    peek at a test set (it does make the kept figures slightly optimistic, as any model
    selection on cross-validation does).

    Returns:
        The chosen :class:`Trained`, with ``choice``: ``{"chosen", "by": "cv_log_loss",
        "candidates": {name: {"cv_log_loss", "cv_accuracy" or "cv_average_precision",
        "seconds"}}}``.
    """
    candidates, best = {}, None
    for name in BACKBONES:
        spec = models.get(name)
        size = int(options.input_size or spec.input_size)
        on_event({"phase": Phase.PREPARING, "message": f"trying {name} ({size} px)"})
        started = time.perf_counter()
        config = train_config(options, spec, data, size)
        trained = quick(config, data, inputs, on_event=on_event, should_stop=should_stop)
        # the head's record holds its out-of-fold figures already
        main, loss = _figures(trained.result, data.kind)
        metric = "cv_average_precision" if data.kind == "multilabel" else "cv_accuracy"
        candidates[name] = {
            "cv_log_loss": round(float(loss), 4),
            metric: round(float(main), 4),
            "seconds": round(time.perf_counter() - started, 2),
        }
        key = (loss, -main)
        if best is None or key < best[0]:
            best = (key, dataclasses.replace(trained, model=name, input_size=size))
    chosen = best[1]
    choice = {"chosen": chosen.model, "by": "cv_log_loss", "candidates": candidates}
    return dataclasses.replace(chosen, choice=choice)


def quick(
    config: TrainConfig,
    data: LabelledSet,
    inputs: Inputs,
    *,
    on_event: OnEvent,
    should_stop: ShouldStop,
) -> Trained:
    """A cross-validated logistic-regression head on the frozen backbone's features:
    every label in the final head, out-of-fold probabilities for the figures. With
    ``config.unlabelled`` and ``inputs.unlabelled``, the untagged images join the head when
    cross-validation says they help (:func:`.head.spread_unlabelled`); the evaluation
    says whether they did and why."""
    spec = models.get(config.model)
    on_event({"phase": Phase.PREPARING, "message": "loading the pretrained backbone"})
    backbone = create_model(config, pretrained=True)

    def progress(done: int, total: int) -> None:
        if should_stop():
            raise TrainingError("stopped while extracting features; nothing to keep yet")
        on_event({"phase": Phase.EXTRACTING_FEATURES, "done": done, "total": total})

    features = inputs.features(backbone, spec, config.input_size, progress)
    folds = cross_validation_folds(data.labels, data.kind, seed=config.seed)
    head = fit_head(
        dataclasses.replace(config, label_smoothing=0.0),
        backbone,
        {"features": features, "label": data.labels},
        folds=folds,
        on_event=on_event,
        should_stop=should_stop,
    )
    everything = np.arange(len(data.image_ids))
    evaluation = {"method": "cross-validation", "folds": len(folds), "images": len(everything)}
    if config.unlabelled and inputs.unlabelled is not None and data.kind == "multiclass":
        pool = inputs.unlabelled(backbone, spec, config.input_size, progress)
        if len(pool):
            head, used = spread_unlabelled(
                config,
                head,
                {"features": features, "label": data.labels},
                pool,
                folds=folds,
                on_event=on_event,
            )
            evaluation["unlabelled"] = used
    return Trained(
        head, everything, everything, evaluation, model=config.model, input_size=config.input_size
    )


def fine_tune(
    config: TrainConfig,
    data: LabelledSet,
    inputs: Inputs,
    head: Trained,
    *,
    deadline: float | None,
    on_event: OnEvent,
    should_stop: ShouldStop,
) -> Trained:
    """The network's top fine-tuned from ``head`` on cached activations of its frozen rest
    (:func:`.top.fit_top`) over the same folds; kept only when its cross-validated figures
    beat the head's on the same images (:func:`improves`), else ``head`` with the reason."""
    spec = models.get(config.model)
    if deadline is None:
        deadline = time.time() + FINE_TUNE_DEFAULT_S
    if deadline - time.time() < MIN_FINE_TUNE_S:
        return _keep(on_event, head, "no time left to fine-tune; kept the transfer-learned head")
    model = weights_to_model(
        spec,
        len(data.classes),
        head.result.weights,
        input_size=config.input_size,
        head_input=head.result.head_input,
    )
    if not hasattr(model, "top_split"):
        return _keep(on_event, head, f"{spec.name} has no top to fine-tune; kept the head")
    folds = cross_validation_folds(data.labels, data.kind, seed=config.seed)
    try:
        split = model.top_split()
        acts = _activations(config, data, inputs, model, split, deadline, on_event, should_stop)
        top = fit_top(
            dataclasses.replace(config, deadline=deadline - SAVE_MARGIN_S),
            model,
            {**acts, "label": data.labels},
            split=split,
            folds=folds,
            fold_heads=head.result.extra["fold_heads"],
            epochs=config.epochs or TOP_EPOCHS,
            learning_rate=config.learning_rate or TOP_LR,
            on_event=on_event,
            should_stop=should_stop,
        )
    except DeadlineError as exc:
        return _keep(on_event, head, f"{exc}; kept the transfer-learned head")
    except TrainingError:
        if not should_stop():
            raise
        return _keep(on_event, head, "stopped while fine-tuning; kept the transfer-learned head")
    quick_result = _as_result(head.result, head.scored, data)
    if not improves(top, quick_result, data.kind):
        (new_main, new_loss), (old_main, old_loss) = (
            _figures(r, data.kind) for r in (top, quick_result)
        )
        message = (
            "fine-tuning did not improve the cross-validated figures (it needs a higher "
            f"{'average precision' if data.kind == 'multilabel' else 'accuracy'} and a loss "
            f"no worse: {figure(old_main)} -> {figure(new_main)}, log-loss {figure(old_loss)} "
            f"-> {figure(new_loss)}); kept the transfer-learned head"
        )
        return _keep(on_event, head, message, history=top.history)
    note = f"fine-tuned the top ({top.best_epoch} epochs, chosen by cross-validation)"
    evaluation = {**head.evaluation, "note": note}
    return dataclasses.replace(head, result=top, evaluation=evaluation)


def _activations(config, data, inputs, model, split, deadline, on_event, should_stop) -> dict:
    """The frozen lower network's activations of every image (and of its mirror image when
    flips augment), the fine-tuning's inputs."""
    arrays = _images(inputs, data, config.input_size, on_event)
    views = {"activation": arrays}
    if "flip" in config.augmentations():
        views["mirrored"] = arrays[:, :, ::-1]
    total = len(arrays) * len(views)
    acts = {}
    for k, (name, images) in enumerate(views.items()):

        def progress(done: int, _total: int, k=k) -> None:
            if should_stop() or time.time() > deadline - SAVE_MARGIN_S:
                raise DeadlineError("no time left while extracting activations")
            on_event({"phase": Phase.EXTRACTING_ACTIVATIONS, "done": k * len(arrays) + done,
                      "total": total})  # fmt: skip

        acts[name] = extract_lower(model, models.get(config.model), images, split,
                                   on_progress=progress)  # fmt: skip
    return acts


def from_scratch(
    config: TrainConfig,
    data: LabelledSet,
    inputs: Inputs,
    *,
    on_event: OnEvent,
    should_stop: ShouldStop,
) -> Trained:
    """A network without pretrained weights: a seeded, stratified held-out split picks
    the best epoch; images stream from the cache (memory does not grow with the project).
    Every process of a multi-process run calls this with the same data."""
    train_idx, val_idx = stratified_split(data.labels, data.kind, seed=config.seed)
    if len(val_idx) == 0:
        raise TrainingError("too few images to hold any out for validation; add more")
    arrays = _images(inputs, data, config.input_size, on_event, stream=True)
    result = fit(
        config,
        {"image": _select(arrays, train_idx), "label": data.labels[train_idx]},
        {"image": _select(arrays, val_idx), "label": data.labels[val_idx]},
        on_event=on_event,
        should_stop=should_stop,
    )
    evaluation = {"method": "holdout", "images": len(val_idx)}
    return Trained(result, val_idx, train_idx, evaluation, model=config.model,
                   input_size=config.input_size)  # fmt: skip


def improves(new: FitResult, old: FitResult, kind: str) -> bool:
    """Whether ``new`` beats ``old`` on the validation set: a higher main metric (accuracy,
    or average precision for multilabel) and a validation loss that is no worse.

    Asking for both guards the few-image case: with 40 held-out images one lucky image
    tipped the choice to fine-tuned weights that then scored 0.72-0.76 on test against
    the head's 0.80 (Fashion-MNIST, 20 images per tag).
    """

    (new_main, new_loss), (old_main, old_loss) = _figures(new, kind), _figures(old, kind)
    return new_main > old_main and new_loss <= old_loss


def _figures(result: FitResult, kind: str) -> tuple[float, float]:
    """``(main metric, validation loss)`` of ``result``'s kept epoch."""
    best = [h for h in result.history if h.get("epoch") == result.best_epoch]
    record = best[-1] if best else (result.history[-1] if result.history else None)
    if not record:
        return -np.inf, np.inf
    main, neg_loss = selection_score(record, kind)
    return main, -neg_loss


def _images(inputs: Inputs, data: LabelledSet, size: int, on_event: OnEvent, stream=False):
    on_event({"phase": Phase.LOADING_IMAGES, "done": 0, "total": len(data.image_ids)})

    def progress(done: int, total: int) -> None:
        on_event({"phase": Phase.LOADING_IMAGES, "done": done, "total": total})

    return inputs.images(size, stream, progress)


def _select(arrays, rows: np.ndarray):
    """``arrays[rows]``; a ``CachedRows`` view stays a view (nothing read yet)."""
    return arrays.select(rows) if hasattr(arrays, "select") else arrays[rows]


def _warn(on_event: OnEvent, message: str) -> None:
    on_event({"phase": Phase.WARNING, "message": message})


def _keep(on_event: OnEvent, head: Trained, message: str, history=()) -> Trained:
    """``head`` kept, with the reason as a warning and as the evaluation's note (the
    report says it), and the other try's epochs appended."""
    _warn(on_event, message)
    result = dataclasses.replace(head.result, history=head.result.history + list(history))
    evaluation = {**head.evaluation, "note": message}
    return dataclasses.replace(
        head, result=result, evaluation=evaluation, warnings=[*head.warnings, message]
    )


def _as_result(head: FitResult, rows: np.ndarray, data: LabelledSet) -> FitResult:
    """The head's out-of-fold figures on ``rows`` as a one-epoch result (to compare with)."""
    record = {
        "epoch": 1,
        **validation_metrics(data.labels[rows], head.val_probabilities[rows], data.kind),
    }
    return dataclasses.replace(head, history=[record], best_epoch=1)
