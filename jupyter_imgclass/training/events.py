"""The training events: what ``on_event`` receives, named once for the engine and the views.

An event is a JSON-ready dict with either a ``"phase"`` key (what the training is doing
now, with ``done``/``total`` when it counts, or a ``message``) or an ``"event"`` key (a
``step`` or an ``epoch`` with its figures). The names are :class:`Phase` and
:class:`Event` members, which are ``str``: they compare equal to the strings and are
written as them, so a saved or logged event reads the same.

Examples:
    >>> Phase.WARNING == "warning", {"phase": Phase.DONE}["phase"] in (Phase.DONE, "done")
    (True, True)
"""

from __future__ import annotations

import enum
from collections.abc import Callable

__all__ = ["ENDED", "Emitter", "Event", "Phase"]


class Phase(enum.StrEnum):
    """``event["phase"]``: what a training is doing."""

    PREPARING = "preparing"  # loading a network (``message``)
    LOADING_IMAGES = "loading images"  # ``done`` of ``total``
    EXTRACTING_FEATURES = "extracting features"  # ``done`` of ``total``
    EXTRACTING_ACTIVATIONS = "extracting activations"  # ``done`` of ``total``
    COMPILING = "compiling"  # the first step (``model``)
    TRAINING = "training"  # ``compile_s``; the quick head: ``what``, ``message``
    FINE_TUNING = "fine-tuning"  # folds ``done`` of ``total``
    WARNING = "warning"  # ``message``: the user should know it (kept in the iteration)
    DONE = "done"  # the run saved its iteration
    STOPPED = "stopped"  # stopped; the best so far was saved
    FAILED = "failed"  # ``error``


class Event(enum.StrEnum):
    """``event["event"]``: a measured moment of a training."""

    STEP = "step"  # ``step``, ``epoch``, ``loss``
    EPOCH = "epoch"  # ``epoch``, ``epochs``, ``loss``, ``val_loss``, ``val_accuracy``, ...


ENDED = (Phase.DONE, Phase.STOPPED, Phase.FAILED)
"""The phases a run ends with (its last event)."""


class Emitter:
    """Calls ``on_event(event)`` when there is a listener."""

    def __init__(self, on_event: Callable[[dict], None] | None):
        self.on_event = on_event

    def __call__(self, event: dict) -> None:
        if self.on_event is not None:
            self.on_event(event)
