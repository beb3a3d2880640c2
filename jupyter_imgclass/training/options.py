"""What a user may ask of a training: :class:`TrainOptions`, declared once.

``Project.train(**options)``, the CLI's ``train`` arguments (flags, types, help and
choices are generated from these fields) and Studio's Train tab all read this one
declaration, and every value is checked here, before any image is read.

Examples:
    >>> TrainOptions(budget="advanced", minutes=2).time_limit_s
    120.0
    >>> TrainOptions(epochs=0)
    Traceback (most recent call last):
    ...
    jupyter_imgclass.errors.TrainingError: epochs 0: must be a whole number of 1 or more
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .. import models
from ..data.images import RESIZE_MODES
from ..errors import TrainingError
from ..vocabulary import BUDGETS, check_budget
from .config import DEFAULT_EPOCHS, DEFAULT_TIME_LIMIT_S

__all__ = [
    "ADVANCED_DEFAULT_MINUTES",
    "MAX_INPUT_SIZE",
    "MIN_INPUT_SIZE",
    "RESIZE",
    "CHOOSE",
    "TrainOptions",
    "choices_of",
    "option",
    "option_fields",
]

MIN_INPUT_SIZE = 16
NAME_PATTERN = r"[A-Za-z0-9_.-]{1,64}"
"""What a published name may hold: it is a path segment of every prediction URL."""
CHOOSE = "choose"
"""The ``model`` that asks the recipe (:mod:`.recipes`) to try every backbone of
``recipes.BACKBONES`` and keep the lowest cross-validated log-loss. Not the default yet:
on 100 digits it took 31.7 s cold and 11.0 s with cached features against 10.9 s and
1.3 s for Lite0 alone (a busy 2-core machine), and the benchmarks have not yet shown that
the choice beats the fixed default on every set."""
MAX_INPUT_SIZE = 1024
ADVANCED_DEFAULT_MINUTES = 2.0
"""``advanced`` on a pretrained network without ``minutes``: fine-tuning gets this long."""
RESIZE = "squash"
"""How images become the network's square when ``resize`` is not given. Measured by
``benchmarks/resize_modes.py`` (frozen Lite0 and Lite2 features, L2 + logistic regression,
test accuracy at 5 / 10 / 20 images a tag, 2 seeds; ``results-resize-modes.txt``), keeping
the aspect ratio does not pay on average: against squash, ``pad`` is +0.2 points on the
real photos (-1.5 to +1.7) and -2.3 on the drawn set (coloured canvases, where the white
bands are a frame the images never had); ``crop`` is -1.2 and -0.0. So squash stays the
default, and ``pad`` / ``crop`` are there for sets where the shape matters (drawings on
white, posters, very wide photos)."""


def _yes_no(text: str) -> bool:
    """A command line's ``yes`` / ``no`` as a bool.

    Examples:
        >>> _yes_no("no")
        False
    """
    if text not in ("yes", "no"):
        raise ValueError(f"{text!r}: say yes or no")
    return text == "yes"


def option(
    default: Any,
    help: str,
    *,
    type: Callable[[str], Any],
    choices: Sequence[str] | Callable[[], Sequence[str]] | None = None,
) -> Any:
    """A :class:`TrainOptions` field with what a front end needs to offer it: its help
    text, the type a command line converts to and its choices (or a function listing them)."""
    return dataclasses.field(
        default=default, metadata={"help": help, "type": type, "choices": choices}
    )


@dataclass(frozen=True)
class TrainOptions:
    """The training options a user chooses; ``None`` lets the engine choose.

    Attributes:
        budget: ``"quick"``: a head on frozen pretrained features, trained in seconds;
            ``"advanced"``: fine-tune a pretrained network's top (kept only when it beats
            the quick head) or train a network from scratch, under a time budget.
        model: network name (``models.names()``), or ``"choose"``: try every pretrained
            backbone and keep the one of lowest cross-validated log-loss on the project's
            labels (``training.recipes.choose_backbone``); by default
            ``efficientnet_lite0`` up to 5,000 images, ``small_cnn`` beyond.
        epochs: passes over the data; chosen by budget when ``None``.
        minutes: time budget (``advanced``). Without it, fine-tuning a pretrained
            network's top gets :data:`ADVANCED_DEFAULT_MINUTES` (2); a network trained from
            scratch trains ``DEFAULT_EPOCHS`` (20) epochs, at most 10 minutes.
        seed: makes the split and the run reproducible.
        name: published name (``Iteration<n>`` when ``None``).
        input_size: another square input side (pixels) than the network's.
        resize: how an image becomes that square: ``"squash"`` (the default: stretched),
            ``"pad"`` (the longer side fits, white fills the rest, the aspect ratio is
            kept) or ``"crop"`` (the shorter side fits, the centre is kept); see
            :data:`RESIZE` for the measurements. It travels with the model: predictions,
            the bundle (and its ONNX description), the endpoint and the tester resize the
            same way.
        unlabelled: let up to 1,000 of the project's untagged images help the quick
            head: their tags are guessed by label spreading and they join its training
            rows when that lowers the cross-validated log-loss of the tagged images
            (``training.head.spread_unlabelled``; multiclass projects). The report says
            whether they were used and the figures that decided it.
        batch_size: images per training step (``advanced``).
        learning_rate: peak learning rate (``advanced``).
    """

    budget: str = option(
        "quick",
        "'quick': a head on frozen pretrained features (seconds); 'advanced': fine-tune "
        "or train the network under a time budget",
        type=str,
        choices=BUDGETS,
    )
    model: str | None = option(
        None,
        "network; 'choose': try efficientnet_lite0/1/2 and keep the lowest "
        "cross-validated log-loss; by default efficientnet_lite0 up to 5,000 images, "
        "small_cnn beyond",
        type=str,
        choices=lambda: [CHOOSE, *models.names()],
    )
    epochs: int | None = option(None, "passes over the data (chosen by budget)", type=int)
    minutes: float | None = option(
        None,
        "time budget in minutes (advanced; without it a pretrained network's top is "
        f"fine-tuned for {ADVANCED_DEFAULT_MINUTES:g} minutes, a network from scratch trains "
        f"{DEFAULT_EPOCHS} epochs or {DEFAULT_TIME_LIMIT_S / 60:g} minutes)",
        type=float,
    )
    seed: int = option(0, "makes the split and the run reproducible", type=int)
    name: str | None = option(None, "published name (Iteration<n> by default)", type=str)
    input_size: int | None = option(
        None, "another square input side in pixels than the network's", type=int
    )
    resize: str = option(
        RESIZE,
        "how an image becomes the square: 'squash' stretches it, 'pad' keeps the aspect "
        "ratio with white around it, 'crop' keeps the centre",
        type=str,
        choices=RESIZE_MODES,
    )
    unlabelled: bool = option(
        True,
        "quick: let the project's untagged images help when cross-validation says they do "
        "(their tags guessed by label spreading); yes or no",
        type=_yes_no,
    )
    batch_size: int | None = option(None, "images per training step (advanced)", type=int)
    learning_rate: float | None = option(None, "peak learning rate (advanced)", type=float)

    def __post_init__(self) -> None:
        check_budget(self.budget, error=TrainingError)
        if self.model is not None and self.model not in (CHOOSE, *models.names()):
            raise TrainingError(
                f"unknown model {self.model!r}; choose one of {', '.join(models.names())} "
                "or 'choose'"
            )
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if value is not None and (not _whole(value) or value < 1):
                raise TrainingError(f"{name} {value!r}: must be a whole number of 1 or more")
        if not _whole(self.seed) or self.seed < 0:
            raise TrainingError(f"seed {self.seed!r}: must be a whole number of 0 or more")
        for name in ("minutes", "learning_rate"):
            value = getattr(self, name)
            if value is not None and not (_number(value) and value > 0):
                raise TrainingError(f"{name} {value!r}: must be a positive number")
        size = self.input_size
        if size is not None and not (_whole(size) and MIN_INPUT_SIZE <= size <= MAX_INPUT_SIZE):
            raise TrainingError(
                f"input_size {size!r}: must be a whole number from {MIN_INPUT_SIZE} "
                f"to {MAX_INPUT_SIZE}"
            )
        if not isinstance(self.unlabelled, bool):
            raise TrainingError(f"unlabelled {self.unlabelled!r}: must be True or False")
        if self.resize not in RESIZE_MODES:
            raise TrainingError(f"resize {self.resize!r}: choose one of {', '.join(RESIZE_MODES)}")
        if self.name is not None and not (
            isinstance(self.name, str) and re.fullmatch(NAME_PATTERN, self.name)
        ):
            raise TrainingError(
                f"name {self.name!r}: use 1 to 64 letters, digits, '-', '_' or '.' (the "
                "published name is a part of the endpoint's URLs)"
            )

    @classmethod
    def from_keywords(cls, **options: Any) -> TrainOptions:
        """``TrainOptions(**options)``, refusing an unknown keyword by name.

        Raises:
            TrainingError: an unknown option (the known ones listed) or a bad value.
        """
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise TrainingError(
                f"unknown training option(s) {', '.join(unknown)}; choose from {', '.join(known)}"
            )
        return cls(**options)

    @property
    def time_limit_s(self) -> float | None:
        """The time budget in seconds (``None``: none given)."""
        return self.minutes * 60 if self.minutes else None


def option_fields() -> list[dataclasses.Field]:
    """The fields of :class:`TrainOptions` with their help, type and choices (front ends
    build their inputs from these)."""
    return list(dataclasses.fields(TrainOptions))


def choices_of(field: dataclasses.Field) -> list[str] | None:
    """A field's choices, listed now (the model names come from the registry)."""
    choices = field.metadata.get("choices")
    return list(choices() if callable(choices) else choices) if choices else None


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )
