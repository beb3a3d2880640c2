"""What a training leaves on disk about an iteration: :class:`IterationRecord`.

One type for ``iterations/<n>/iteration.json`` and the ``config_json`` column of the
store, with every default in one place, so that a record written by an older version
reads the same everywhere and a key this version does not know is kept, not lost.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..data.images import DEFAULT_RESIZE
from ..vocabulary import DEFAULT_THRESHOLD

__all__ = ["IterationRecord"]


@dataclass(frozen=True)
class IterationRecord:
    """An iteration's record.

    Attributes:
        model: the network's registry name.
        budget: ``"quick"`` or ``"advanced"``.
        kind: ``"multiclass"`` or ``"multilabel"``.
        classes: the classifier's outputs, in order (tag names).
        input_size: the square input side the network was trained at.
        resize: how images became that square (``"squash"`` for records from before the
            choice existed).
        seed: the run's seed (splits and folds are made again from it).
        epochs: what the user asked for (``None``: chosen by budget).
        time_limit_s: the user's time budget in seconds.
        class_counts: labelled images per tag when the run started.
        threshold: the default probability threshold of every tag.
        thresholds: per-tag thresholds the user set (``Iteration.set_thresholds``).
        preprocessing: the network's preprocessing at ``input_size`` (mean, std, size,
            resize).
        train_image_ids: images the final model trained on.
        val_image_ids: images the figures rest on (out-of-fold or held out).
        evaluation: how the figures were made (``method``, ``folds``, ``images``, ``note``).
        head_input: what the head sees (``"raw"`` or ``"l2"``); the weights need it.
        history: one dict per epoch.
        best_epoch: the epoch whose weights were kept.
        warnings: data warnings and what the recipe decided.
        train_seconds: wall time of the run.
        status: ``"training"``, ``"done"``, ``"stopped"`` or ``"failed"``.
        head_c: the logistic-regression head's chosen penalty (quick budget).
        fit: how a network trained (global batch, devices, processes, precision, speed).
        backbone_choice: how the quick budget chose the backbone (each candidate's
            cross-validated log-loss and accuracy, seconds, the one chosen), or ``None``.
        extra: keys this version does not know, written back unchanged.
    """

    model: str
    budget: str
    kind: str
    classes: list[str]
    input_size: int
    resize: str = DEFAULT_RESIZE
    seed: int = 0
    epochs: int | None = None
    time_limit_s: float | None = None
    class_counts: dict[str, int] = field(default_factory=dict)
    threshold: float = DEFAULT_THRESHOLD
    thresholds: dict[str, float] = field(default_factory=dict)
    preprocessing: dict = field(default_factory=dict)
    train_image_ids: list[int] = field(default_factory=list)
    val_image_ids: list[int] = field(default_factory=list)
    evaluation: dict = field(default_factory=dict)
    head_input: str = "raw"
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    warnings: list[str] = field(default_factory=list)
    train_seconds: float = 0.0
    status: str = "training"
    head_c: float | None = None
    fit: dict | None = None
    backbone_choice: dict | None = None
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict, **fallback: Any) -> IterationRecord:
        """The record of a JSON object; ``fallback`` fills required fields an old record
        lacks (e.g. ``kind`` from the project, ``model`` from the store's row).

        Examples:
            >>> r = IterationRecord.from_json({"model": "small_cnn", "classes": ["a", "b"],
            ...     "input_size": 28, "budget": "quick", "future_key": 1}, kind="multiclass")
            >>> r.head_input, r.threshold, r.extra
            ('raw', 0.5, {'future_key': 1})
        """
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in data.items() if k in names and v is not None}
        extra = {k: v for k, v in data.items() if k not in names and k not in ("name", "number")}
        for k, v in fallback.items():
            known.setdefault(k, v)
        known.setdefault("classes", [])
        known.setdefault("input_size", 0)
        return cls(**known, extra=extra)

    def to_json(self) -> dict:
        """The record as written to ``iteration.json`` and the store (``extra``'s keys
        at the top level, as they were read)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        extra = out.pop("extra")
        for key in ("head_c", "fit", "backbone_choice"):
            if out[key] is None:
                del out[key]
        return {**extra, **out}

    def replace(self, **changes: Any) -> IterationRecord:
        """A copy with ``changes``."""
        return dataclasses.replace(self, **changes)
