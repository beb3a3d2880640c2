"""The iterations a project's training runs leave behind.

Each run becomes an :class:`Iteration` saved under ``iterations/<n>/``
(``weights.safetensors``, ``iteration.json``, the validation labels and probabilities)
and recorded in the database, so it survives a kernel restart. An Iteration is a
:class:`~jupyter_imgclass.publish.serve.Servable`: the service serves it as it is.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..data.images import describe_resize
from ..errors import BundleError, ImgClassError
from ..vocabulary import DEFAULT_THRESHOLD, figure
from .moved import moved
from .record import IterationRecord

HEADLINE_METRICS = ("accuracy", "precision", "recall", "average_precision")
WEIGHTS_FILE = "weights.safetensors"
RECORD_FILE = "iteration.json"
CHECK_IMAGES = 200
"""Most of the project's images an exported format is checked on (``Iteration.export``)."""
"""The iteration's own record (config, history, metrics); a bundle's ``model.json`` differs."""


class Iteration:
    """A trained model of a project, saved under ``iterations/<n>/``.

    Attributes:
        number: 1, 2, ... in training order.
        name: the published name (``Iteration<n>`` by default).
        status: ``"done"``, ``"stopped"`` (kept best-so-far) or ``"failed"``.
        model: network name.
        classes: output order of the classifier (tag names).
        kind: ``"multiclass"`` or ``"multilabel"``.
        record: the :class:`~.record.IterationRecord` (how it was trained, on what).
        project: the :class:`~jupyter_imgclass.Project` it belongs to.
    """

    def __init__(self, project: Any, row: dict):
        self.project = project
        self.number = int(row["number"])
        self.name = row["name"]
        self.status = row["status"]
        self.model = row["model"]
        self.budget = row["budget"]
        self.record = IterationRecord.from_json(
            row.get("config") or {}, model=row["model"], budget=row["budget"], kind=project.kind
        )
        self._metrics = row.get("metrics")
        self._predictor = None
        self._val_probabilities: np.ndarray | None = None

    @property
    def folder(self) -> Path:
        """Where the weights and ``model.json`` live."""
        return self.project.root / "iterations" / str(self.number)

    @property
    def classes(self) -> list[str]:
        return list(self.record.classes)

    @property
    def kind(self) -> str:
        return self.record.kind

    @property
    def val_image_ids(self) -> list[int]:
        """Ids of the images the metrics were computed on, each scored by a model that did
        not train on it (every labelled image when cross-validated)."""
        return list(self.record.val_image_ids)

    @property
    def evaluation(self) -> dict:
        """How the metrics were obtained: ``{"method": "cross-validation", "folds", "images"}``
        or ``{"method": "holdout", "images"}``."""
        ev = self.record.evaluation
        return dict(ev) if ev else {"method": "holdout", "images": len(self.val_image_ids)}

    def evaluation_text(self) -> str:
        """What the metrics rest on, in words (the report's subtitle).

        Examples:
            ``"cross-validated over 30 images (5 folds)"``, ``"on 12 held-out images"``,
            ``"cross-validated over 30 images (5 folds); fine-tuning did not improve the
            cross-validated figures; kept the transfer-learned head"`` (what ``advanced``
            kept, and why).
        """
        ev = self.evaluation
        n = ev.get("images", len(self.val_image_ids))
        noun = "image" if n == 1 else "images"
        note = f"; {ev['note']}" if ev.get("note") else ""
        if ev.get("method") == "cross-validation":
            folds = ev.get("folds")
            how = "leave-one-out" if folds == n else f"{folds} folds"
            return f"cross-validated over {n} {noun} ({how}){note}"
        return f"on {n} held-out {noun}{note}"

    def unlabelled_text(self) -> str:
        """Whether the quick head used the project's untagged images, and the figures that
        decided it ("" when there were none to use).

        Examples:
            ``"158 untagged images used: tags guessed by label spreading lowered the
            cross-validated log-loss (0.312 -> 0.254)"``.
        """
        return str((self.evaluation.get("unlabelled") or {}).get("reason", ""))

    def input_text(self) -> str:
        """What the network sees, in words (:func:`.data.images.describe_resize`)."""
        return describe_resize(self.input_size, self.resize)

    def choice_text(self) -> str:
        """How the backbone was chosen, in words ("" when the user named the network).

        Examples:
            ``"efficientnet_lite2, the lowest cross-validated log-loss of efficientnet_lite0
            0.712, efficientnet_lite1 0.655, efficientnet_lite2 0.541"``.
        """
        choice = self.record.backbone_choice
        if not choice:
            return ""
        figures = ", ".join(
            f"{name} {figure(c['cv_log_loss'])}" for name, c in choice["candidates"].items()
        )
        return f"{choice['chosen']}, the lowest cross-validated log-loss of {figures}"

    @property
    def history(self) -> list[dict]:
        """Per-epoch metrics of the training."""
        return list(self.record.history)

    @property
    def threshold(self) -> float:
        """The default probability threshold (per-tag ones: :attr:`thresholds`)."""
        return float(self.record.threshold)

    @property
    def thresholds(self) -> dict[str, float]:
        """``{tag: threshold}``: saved with :meth:`set_thresholds`, else :attr:`threshold`
        for every tag. They travel into the bundle, the ONNX metadata and the endpoint."""
        saved = self.record.thresholds
        return {tag: float(saved.get(tag, self.threshold)) for tag in self.classes}

    def best_f1_thresholds(self) -> dict[str, float]:
        """Per tag, the threshold with the best F1 on the cross-validated predictions."""
        from ..evaluate import best_f1_thresholds

        truth, probs = self._val_truth_and_probs()
        return best_f1_thresholds(truth, probs, self.classes, self.kind, default=self.threshold)

    def set_thresholds(self, values: float | dict[str, float] | str) -> dict[str, float]:
        """Saves per-tag thresholds with the iteration (the store and ``iteration.json``).

        Args:
            values: one number for every tag, ``{tag: threshold}`` (tags left out keep
                theirs), or ``"best_f1"`` (:meth:`best_f1_thresholds`).

        Returns:
            The thresholds now saved, one per tag.

        Raises:
            ImgClassError: an unknown tag, or a value that is not a number in [0, 1].
        """
        if isinstance(values, str):
            if values != "best_f1":
                raise ImgClassError(
                    f"thresholds {values!r}: expected a number, {{tag: number}} or 'best_f1'"
                )
            values = self.best_f1_thresholds()
        if not isinstance(values, dict):
            values = dict.fromkeys(self.classes, values)
        merged = self.thresholds
        for tag, value in values.items():
            if tag not in merged:
                raise ImgClassError(f"threshold for {tag!r}: no such tag in {self.name}")
            try:
                number = float(value)
            except (TypeError, ValueError):
                number = float("nan")
            if not 0.0 <= number <= 1.0:  # NaN fails too
                raise ImgClassError(f"threshold for {tag!r}: {value!r} is not a number in [0, 1]")
            merged[tag] = number
        saved = self.project.store.update_iteration_config(self.number, {"thresholds": merged})
        self.record = IterationRecord.from_json(saved, model=self.model, kind=self.kind)
        record = self.folder / RECORD_FILE
        if record.is_file():
            write_json(record, {**json.loads(record.read_text()), "thresholds": merged})
        if self._predictor is not None:
            self._predictor.thresholds = dict(merged)
        return dict(merged)

    @property
    def metrics(self) -> dict:
        """Held-out metrics at the default threshold (see :meth:`evaluate`)."""
        return self._metrics or {}

    def _val_truth_and_probs(self) -> tuple[np.ndarray, np.ndarray]:
        if self._val_probabilities is None:
            self._val_probabilities = np.load(self.folder / "val_probabilities.npy")
        truth = np.load(self.folder / "val_labels.npy")
        return truth, self._val_probabilities

    def evaluate(
        self, threshold: float = DEFAULT_THRESHOLD, per_tag: dict[str, float] | None = None
    ) -> dict:
        """Metrics on the cross-validated predictions at another threshold (``per_tag``
        overrides it for the tags it names)."""
        from ..evaluate import compute_metrics

        if not 0.0 <= float(threshold) <= 1.0:
            raise ImgClassError(f"threshold {threshold!r}: must be between 0 and 1")
        truth, probs = self._val_truth_and_probs()
        try:
            return compute_metrics(
                truth, probs, self.classes, self.kind, threshold=float(threshold),
                per_tag_thresholds=per_tag,
            )  # fmt: skip
        except ValueError as exc:
            raise ImgClassError(f"thresholds: {exc}") from None

    def to_dataframe(self, threshold: float | None = None):
        """Per-tag and overall metrics as a pandas DataFrame."""
        from ..evaluate import metrics_dataframe

        metrics = self.metrics if threshold is None else self.evaluate(threshold)
        return metrics_dataframe(metrics)

    def top_losses(self, n: int = 10) -> list[dict]:
        """The held-out images the model got most wrong (likely mislabelled first).

        Returns:
            dicts with ``image_id``, ``loss``, ``true`` and ``predicted`` tag names.
        """
        from ..evaluate import top_losses

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

    def weights(self) -> dict[str, np.ndarray]:
        """The flat weights, read from ``weights.safetensors``."""
        from safetensors.numpy import load_file

        return load_file(str(self.folder / WEIGHTS_FILE))

    @property
    def predictor(self):
        """The loaded :class:`~jupyter_imgclass.predict.Predictor` (loaded once)."""
        if self._predictor is None:
            from ..predict import Predictor

            weights = self.weights()
            self._predictor = Predictor(
                self.model,
                self.classes,
                self.kind,
                weights,
                thresholds=self.thresholds,
                input_size=self.input_size,
                head_input=self.record.head_input,
                resize=self.resize,
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

    # -- the Servable protocol (what the REST service needs)
    @property
    def tags(self) -> list[str]:
        """Tag names in output order (the classes)."""
        return self.classes

    @property
    def tag_ids(self) -> list[str]:
        """The hosted GUIDs of :attr:`tags` (``Project.tag_guids``; a tag deleted since
        keeps its output index)."""
        ids = self.project.tag_guids()
        return [str(ids.get(name, i)) for i, name in enumerate(self.classes)]

    @property
    def input_size(self) -> int:
        """The square side images are resized to."""
        if self.record.input_size:
            return int(self.record.input_size)
        from .. import models

        return models.get(self.model).input_size

    @property
    def resize(self) -> str:
        """How images become the square: ``"pad"``, ``"crop"`` or ``"squash"``
        (:data:`~jupyter_imgclass.data.images.RESIZE_MODES`), as the model trained."""
        from ..data.images import check_resize

        return check_resize(self.record.resize, f"iteration {self.number}'s resize")

    @property
    def tag_types(self) -> list[str]:
        """``"Regular"`` or ``"Negative"`` per output (the hosted API's ``tagType``)."""
        negative = {t.name for t in self.project.tags if t.is_negative}
        return ["Negative" if name in negative else "Regular" for name in self.tags]

    @property
    def published_name(self) -> str:
        """The name the REST route answers to (``Iteration<n>`` by default)."""
        return self.name

    @property
    def project_name(self) -> str:
        return self.project.name

    @property
    def project_id(self) -> str:
        """The project's UUID (the hosted routes' ``projectId``)."""
        return self.project.id

    def predict_arrays(self, images: np.ndarray) -> np.ndarray:
        """Probabilities ``[N, T]`` for uint8 ``[N, H, W, 3]`` images (see ``Predictor``)."""
        return self.predictor.predict_arrays(images)

    # -- publishing
    def export(
        self,
        folder: str | Path,
        *,
        onnx: bool = False,
        formats: Sequence[str] = (),
        overwrite: bool = False,
        check_images: int = CHECK_IMAGES,
    ) -> Path:
        """Writes a portable bundle (safetensors + model.json [+ other formats]); see
        ``ic.load_model``.

        Tag ids are the project's tag ids; the published name is the iteration's name; the
        project's UUID goes into ``model.json``. A folder that holds a bundle already is
        refused unless ``overwrite=True``.

        Args:
            folder: a new or empty folder (or an earlier bundle, with ``overwrite``).
            onnx: also write the float ONNX model (the same as ``formats=["onnx"]``).
            formats: any of ``"onnx"``, ``"onnx-int8"`` (onnxruntime's static
                quantization, calibrated on the project's images) and ``"openvino"``
                (OpenVINO IR; needs ``pip install openvino``). Each is run on up to
                ``check_images`` of the project's images (a seeded choice, tagged ones
                first) beside the native model; the agreement table (top-1 agreement,
                largest probability difference, accuracy on the tagged ones, size, ms
                per image) goes into ``model.json`` and the bundle's README.
            overwrite: replace a bundle already in ``folder``.
            check_images: most images each format is checked on.

        Raises:
            BundleError: an unknown format, ``"openvino"`` without openvino, no saved
                weights, or a folder that is not empty.

        Examples:
            >>> it.export("out/fruit", formats=["onnx", "onnx-int8", "openvino"])  # doctest: +SKIP
        """
        from .. import models
        from ..publish.bundle import export_bundle
        from ..publish.formats import check_formats

        if not (self.folder / WEIGHTS_FILE).is_file():
            raise BundleError(
                f"{self.folder / WEIGHTS_FILE}: iteration {self.number} has no saved weights"
            )
        chosen = check_formats([*formats, *(["onnx"] if onnx else [])])
        preprocessing = models.get(self.model).to_json(self.input_size, self.resize)
        return export_bundle(
            folder,
            model_name=self.model,
            tags=[
                {"id": i, "name": n, "type": t}
                for i, n, t in zip(self.tag_ids, self.tags, self.tag_types, strict=True)
            ],
            kind=self.kind,
            weights=self.weights(),
            preprocessing=preprocessing,
            thresholds=self.thresholds,
            metrics=self.metrics,
            published_name=self.name,
            project_name=self.project.name,
            project_id=self.project.id,
            iteration_number=self.number,
            head_input=self.record.head_input,
            formats=chosen,
            check=self.check_set(check_images) if chosen else None,
            overwrite=overwrite,
        )

    def check_set(self, limit: int = CHECK_IMAGES, seed: int = 0):
        """The project's images an exported format is checked on, as a
        :class:`~jupyter_imgclass.publish.formats.CheckSet`, or None when none can be read.

        Up to ``limit`` images in a seeded order, tagged ones first (their tags give the
        accuracy column); the int8 calibration takes up to ``CALIBRATION_IMAGES`` of the
        others, or the checked ones themselves when fewer than 16 others remain (then the
        description says so). Images that no longer decode are left out.
        """
        from ..errors import BadImageError
        from ..publish.formats import CALIBRATION_IMAGES, CheckSet

        rng = np.random.default_rng(seed)
        records = list(self.project.images)
        order = [records[k] for k in rng.permutation(len(records))]
        order.sort(key=lambda r: not r.tags)  # stable: tagged first, each seeded
        arrays, labels = [], []
        index = {c: k for k, c in enumerate(self.classes)}
        for record in order:
            if len(arrays) >= limit + CALIBRATION_IMAGES:
                break
            try:
                arrays.append(self.project.array(record.id, self.input_size, self.resize))
            except (BadImageError, OSError):
                continue
            labels.append(self._label_of(record.tags, index))
        if not arrays:
            return None
        images = np.stack(arrays)
        n = min(limit, len(images))
        others = images[n:]
        tagged = sum(1 for row in labels[:n] if np.all(np.asarray(row) >= 0))
        text = f"seeded choice, {tagged} tagged, {n - tagged} untagged"
        if len(others) < 16:
            others = images[:n]
            text += "; int8 calibrated on the same images (too few others)"
        else:
            text += f"; int8 calibrated on {min(len(others), CALIBRATION_IMAGES)} others"
        return CheckSet(
            images=images[:n],
            labels=np.asarray(labels[:n]) if tagged else None,
            calibration=others[:CALIBRATION_IMAGES],
            thresholds=np.array([self.thresholds[c] for c in self.classes], np.float32),
            description=text,
        )

    def _label_of(self, tags: Sequence[str], index: dict[str, int]):
        """An image's target in the classifier's outputs: a class index (multiclass) or
        a 0/1 row (multilabel); -1 (a -1 row) when untagged or tagged outside them."""
        if self.kind == "multiclass":
            return index.get(tags[0], -1) if tags else -1
        if not tags:
            return np.full(len(index), -1.0, np.float32)
        row = np.zeros(len(index), np.float32)
        for tag in tags:
            if tag in index:
                row[index[tag]] = 1.0
        return row

    def serve(
        self,
        port: int = 0,
        *,
        host: str = "127.0.0.1",
        key: str | None = None,
        log_predictions: bool = True,
        keep_images: bool = True,
        keep_quota_bytes: int | None = None,
        keep_days: float | None = None,
        **app_options: Any,
    ):
        """Starts the REST prediction service in the background; returns a handle with ``.url``.

        Args:
            port: TCP port; 0 picks a free one.
            host: interface to bind; loopback by default.
            key: when set, requests need ``Prediction-Key: <key>``.
            log_predictions: append every answered prediction (image sha256 and
                probabilities) to the project's prediction log.
            keep_images: also keep each image served by a storing route under the
                project's ``served/`` folder (``Project.served_images``), at most
                ``keep_quota_bytes`` (1 GiB) for ``keep_days`` (30) days.
            **app_options: see :func:`jupyter_imgclass.publish.serve.create_app`.
        """
        from ..publish.serve import serve_in_background

        if log_predictions:
            app_options.setdefault(
                "log_callback",
                self.project.prediction_logger(
                    self.name,
                    keep_images=keep_images,
                    quota_bytes=keep_quota_bytes,
                    retention_days=keep_days,
                ),
            )
        return serve_in_background(self, host=host, port=port, key=key, **app_options)

    def headline_metrics(self) -> dict[str, float]:
        """The overall accuracy, precision, recall and average precision that exist."""
        overall = self.metrics.get("overall", {})
        return {
            k: float(overall[k])
            for k in HEADLINE_METRICS
            if isinstance(overall.get(k), float | int)
        }

    def __getattr__(self, name: str):
        # only for names not found: an old spelling gets the new one in the error
        raise moved(self, name)

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
    """Atomic JSON write (tmp + replace); numpy numbers and arrays become plain JSON."""
    from ..data.integrity import atomic_write

    atomic_write(path, json.dumps(data, indent=2, default=_json_default).encode("utf-8"))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
