"""The one event mechanism of the project layer: named events, listeners, unsubscribe.

A :class:`Project` and a :class:`~.runs.TrainingRun` each own an :class:`Events`; widgets
subscribe and keep the returned :class:`Subscription`, and cancel it when they close, so
a closed view stops listening. A failing listener is logged and never breaks the data
path or the other listeners.

Examples:
    >>> events = Events(("ping",))
    >>> seen = []
    >>> sub = events.subscribe("ping", lambda **kw: seen.append(kw))
    >>> events.emit("ping", n=1)
    >>> sub.cancel()
    >>> events.emit("ping", n=2)
    >>> seen
    [{'n': 1}]
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from ..errors import ImgClassError

__all__ = ["Events", "Subscription"]

log = logging.getLogger(__name__)


class Subscription:
    """A listener's registration; :meth:`cancel` (or calling it) stops the calls."""

    def __init__(self, events: Events, event: str, callback: Callable[..., Any]):
        self._events = events
        self.event = event
        self.callback = callback

    @property
    def active(self) -> bool:
        """Whether the listener is still called."""
        return self._events._has(self)

    def cancel(self) -> None:
        """Stops calling the listener (idempotent)."""
        self._events._remove(self)

    __call__ = cancel

    def __repr__(self) -> str:
        return f"Subscription({self.event!r}, active={self.active})"


class Events:
    """Named events with listeners, safe to emit from any thread.

    Args:
        names: the events that exist; subscribing to another name is an error.
    """

    def __init__(self, names: Iterable[str]):
        self.names = tuple(names)
        self._subs: list[Subscription] = []
        self._lock = threading.Lock()

    def subscribe(self, event: str, callback: Callable[..., Any]) -> Subscription:
        """Calls ``callback(**payload)`` on every future ``event``; returns the handle.

        Raises:
            ImgClassError: for an unknown event name.
        """
        if event not in self.names:
            raise ImgClassError(f"unknown event {event!r}; choose one of {', '.join(self.names)}")
        sub = Subscription(self, event, callback)
        with self._lock:
            self._subs.append(sub)
        return sub

    def unsubscribe(self, event: str, callback: Callable[..., Any]) -> None:
        """Stops every subscription of ``callback`` to ``event``."""
        with self._lock:
            self._subs = [
                s for s in self._subs if not (s.event == event and s.callback == callback)
            ]

    def emit(self, event: str, /, **payload: Any) -> None:
        """Calls the listeners of ``event`` in subscription order."""
        with self._lock:
            callbacks = [s.callback for s in self._subs if s.event == event]
        for callback in callbacks:
            try:
                callback(**payload)
            except Exception:  # a broken view must never break the data path
                log.exception("listener for %s failed", event)

    def listeners(self, event: str) -> int:
        """How many listeners ``event`` has (for tests and diagnostics)."""
        with self._lock:
            return sum(1 for s in self._subs if s.event == event)

    def _has(self, sub: Subscription) -> bool:
        with self._lock:
            return any(s is sub for s in self._subs)

    def _remove(self, sub: Subscription) -> None:
        with self._lock:
            self._subs = [s for s in self._subs if s is not sub]
