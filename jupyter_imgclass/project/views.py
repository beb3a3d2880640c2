"""The door from the project layer to the views above it, without an upward import.

``project.labeller()``, ``iteration.report()``, ``run.monitor()`` and the like return
widgets, which live in :mod:`jupyter_imgclass.widgets`, a layer *above* this one. The
widgets package provides its classes here when it is imported (:func:`provide`), and the
package root, the top of the tree, tells this module how to load it on first use
(:func:`set_loader`), so no module of the project layer imports a widget.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import ImgClassError

__all__ = ["make", "provide", "set_loader"]

_factories: dict[str, Callable[..., Any]] = {}
_loader: Callable[[], Any] | None = None


def provide(name: str, factory: Callable[..., Any]) -> None:
    """Registers the view called ``name`` (the widgets package calls this)."""
    _factories[name] = factory


def set_loader(loader: Callable[[], Any]) -> None:
    """Sets how to load the views the first time one is asked for (the package root)."""
    global _loader
    _loader = loader


def make(name: str, *args: Any, **kwargs: Any) -> Any:
    """Builds the view ``name`` over ``args``.

    Raises:
        ImgClassError: when no view of that name is available.
    """
    if name not in _factories and _loader is not None:
        _loader()
    if name not in _factories:
        raise ImgClassError(
            f"no {name!r} view: import jupyter_imgclass.widgets (needs ipywidgets and anywidget)"
        )
    return _factories[name](*args, **kwargs)
