"""Helpers shared by the widgets: static files, error text, static (text) fallbacks."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

STATIC = Path(__file__).parent / "static"


def describe_error(exc: BaseException) -> str:
    """A one-line reason for the user (the exception family already names the input)."""
    text = str(exc) or type(exc).__name__
    return (
        text
        if type(exc).__module__.startswith("jupyter_imgclass")
        else f"{type(exc).__name__}: {text}"
    )


class StaticReprMixin:
    """Adds a useful text/HTML fallback next to the widget view.

    Front ends with a widget manager show the live view; static renderers (nbconvert,
    GitHub) show ``text/html`` or ``text/plain`` from :meth:`_static_text`.
    """

    def _static_text(self) -> str:  # pragma: no cover - overridden
        return type(self).__name__

    def _repr_mimebundle_(self, **kwargs: Any):
        data = super()._repr_mimebundle_(**kwargs)  # type: ignore[misc]
        if data is None:
            return None
        metadata = None
        if isinstance(data, tuple):  # anywidget answers (data, metadata)
            data, metadata = data
        data = dict(data)
        text = self._static_text()
        data["text/plain"] = text
        data["text/html"] = f"<pre class='imgclass-static'>{html.escape(text)}</pre>"
        return data if metadata is None else (data, metadata)

    def __repr__(self) -> str:
        return self._static_text()
