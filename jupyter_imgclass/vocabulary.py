"""The words every layer shares: kinds of project and training budgets.

One copy of each list and of its check, so that the store, the engine, the CLI and the
widgets accept and refuse the same values with the same message.

Examples:
    >>> check_kind("multilabel")
    'multilabel'
    >>> check_budget("slow")
    Traceback (most recent call last):
    ...
    jupyter_imgclass.errors.OptionError: budget 'slow': choose 'quick' or 'advanced'
"""

from __future__ import annotations

from typing import Any

from .errors import ImgClassError, OptionError

KINDS = ("multiclass", "multilabel")
"""``multiclass``: one tag per image (softmax); ``multilabel``: any number (one sigmoid each)."""

BUDGETS = ("quick", "advanced")
"""``quick``: a head on frozen pretrained features; ``advanced``: train or fine-tune the network."""


def _choose(what: str, value: Any, choices: tuple[str, ...], error: type[ImgClassError]) -> str:
    if value not in choices:
        options = " or ".join(repr(c) for c in choices)
        raise error(f"{what} {value!r}: choose {options}")
    return value


def check_kind(kind: Any, *, error: type[ImgClassError] = OptionError) -> str:
    """Returns ``kind`` when it is one of :data:`KINDS`.

    Args:
        kind: the value to check.
        error: the :class:`ImgClassError` subclass to raise (a layer's own family member).

    Raises:
        OptionError: (or ``error``) naming the value and the choices.
    """
    return _choose("kind", kind, KINDS, error)


def check_budget(budget: Any, *, error: type[ImgClassError] = OptionError) -> str:
    """Returns ``budget`` when it is one of :data:`BUDGETS` (see :func:`check_kind`)."""
    return _choose("budget", budget, BUDGETS, error)
