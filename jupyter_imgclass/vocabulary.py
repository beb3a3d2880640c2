"""The words every layer shares: kinds of project, training budgets, export formats.

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

import math
import re
from typing import Any

from .errors import ImgClassError, OptionError

KINDS = ("multiclass", "multilabel")
"""``multiclass``: one tag per image (softmax); ``multilabel``: any number (one sigmoid each)."""

BUDGETS = ("quick", "advanced")
"""``quick``: a head on frozen pretrained features; ``advanced``: train or fine-tune the network."""

EXPORT_FORMATS = ("folder", "csv", "coco")
"""How ``Project.export_dataset`` writes a dataset: a folder per tag, a CSV manifest, or
COCO-style JSON (see ``data.export``)."""

MODEL_FORMATS = ("onnx", "onnx-int8", "openvino")
"""What ``Iteration.export`` can write beside the weights: float32 ONNX, int8 ONNX
(onnxruntime's static quantization) and OpenVINO IR (see ``publish.formats``)."""

DEFAULT_THRESHOLD = 0.5
"""A tag's threshold until the user sets one (``Iteration.set_thresholds``)."""


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


def check_export_format(format: Any, *, error: type[ImgClassError] = OptionError) -> str:
    """Returns ``format`` when it is one of :data:`EXPORT_FORMATS` (see :func:`check_kind`)."""
    return _choose("format", format, EXPORT_FORMATS, error)


def figure(value: Any) -> str:
    """A measured number with the digits that matter: at least 3 decimals, and 3
    significant digits for small values (a loss of 0.0003 is not "0.000").

    Examples:
        >>> figure(0.83333), figure(2.302585), figure(0.000312), figure(0.0)
        ('0.833', '2.303', '0.000312', '0.000')
        >>> figure(float("nan")), figure(None)
        ('nan', '—')
    """
    if value is None:
        return "—"
    v = float(value)
    if not math.isfinite(v) or v == 0:
        return "nan" if math.isnan(v) else f"{v:.3f}"
    decimals = min(8, max(3, 2 - math.floor(math.log10(abs(v)))))
    return f"{v:.{decimals}f}"


PUBLISH_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,99}$")
"""A name an iteration is published under (the hosted API's rule: 1 to 100 letters,
digits, spaces, '.', '_' or '-', not starting with a space or a sign)."""


def check_publish_name(
    name: Any, what: str = "publish name", *, error: type[ImgClassError] = OptionError
) -> str:
    """``name`` when :data:`PUBLISH_NAME` allows it, else ``error`` naming ``what`` and
    the rule.

    Examples:
        >>> check_publish_name("classifyModel")
        'classifyModel'
    """
    if not isinstance(name, str) or not PUBLISH_NAME.match(name):
        raise error(f"{what} {name!r}: 1 to 100 letters, digits, spaces, '.', '_' or '-'")
    return name
