"""Connection limits for uvicorn: slow and idle clients cannot hold the server.

uvicorn's h11 protocol has a keep-alive timeout but no limit on how long a client may
take to send its request line, headers or body, and it accepts connections until the
process runs out of file descriptors. :func:`guarded_protocol` makes a subclass that adds:

- a header timeout: a connection that has not sent a whole request head within
  ``header_timeout_s`` of connecting (or of its previous answer) is closed;
- a body timeout: a request whose body stops arriving for ``body_idle_s``, or is not
  whole within ``body_total_s``, is closed;
- a connection cap below the descriptor limit: at the cap a new connection evicts the
  connection that has waited longest for its request head; when every connection is
  busy with a request, the new one gets a 503 JSON answer and is closed;
- a lingering close: when an answer is sent before the request body was read (a 401 to a
  client without a key, a 413), the server stops sending, then reads and drops what the
  client still sends for at most ``linger_s`` (never keeping it), so that clients which
  write the whole body before reading still receive the answer instead of a reset.
"""

from __future__ import annotations

import asyncio
import resource
import time
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["GuardLimits", "guarded_protocol"]

_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
    b"connection: close\r\ncontent-length: %d\r\n\r\n%s"
)
_BUSY_BODY = b'{"code":"TooManyRequests","message":"the server has too many open connections"}'


class GuardLimits:
    """The limits a guarded server enforces (seconds and counts).

    Args:
        header_timeout_s: most time to send a whole request head.
        body_idle_s: most time between two pieces of a request body.
        body_total_s: most time for a whole request body.
        max_connections: open connections at most (default: the descriptor limit less a
            reserve for files, at most 1000).
        linger_s: how long an answered connection is read and drained before closing.
    """

    def __init__(
        self,
        header_timeout_s: float = 10.0,
        body_idle_s: float = 10.0,
        body_total_s: float = 120.0,
        max_connections: int | None = None,
        linger_s: float = 3.0,
    ):
        self.header_timeout_s = header_timeout_s
        self.body_idle_s = body_idle_s
        self.body_total_s = body_total_s
        self.max_connections = max_connections or default_max_connections()
        self.linger_s = linger_s


def default_max_connections(reserve: int = 128, most: int = 1000) -> int:
    """Open connections allowed: the soft descriptor limit less ``reserve``."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return most
    return max(16, min(most, int(soft) - reserve))


def guarded_protocol(limits: GuardLimits) -> type[H11Protocol]:
    """An ``H11Protocol`` subclass that enforces ``limits`` (pass it as uvicorn's ``http``)."""

    class GuardedH11Protocol(H11Protocol):
        _limits = limits

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            now = time.monotonic()
            self._phase_start = now
            self._last_data = now
            self._lingering: asyncio.TimerHandle | None = None
            super().connection_made(_LingeringTransport(transport, self))
            _Sweeper.ensure(self.loop, self.server_state, self._limits)
            if len(self.connections) > self._limits.max_connections:
                victim = _oldest_waiting(self.connections, exclude=self)
                if victim is not None:
                    victim.transport.real_close()
                else:
                    transport.write(_BUSY % (len(_BUSY_BODY), _BUSY_BODY))
                    self.transport.real_close()

        def data_received(self, data: bytes) -> None:
            self._last_data = time.monotonic()
            if self._lingering is not None:
                return  # answered already: drop what the client still sends
            before = self.conn.their_state
            super().data_received(data)
            if self.conn.their_state is not before:
                self._phase_start = self._last_data

        def on_response_complete(self) -> None:
            self._phase_start = time.monotonic()
            super().on_response_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._lingering is not None:
                self._lingering.cancel()
            super().connection_lost(exc)

        # The sweeper's view of a connection --------------------------------------
        def waiting_for_head(self) -> bool:
            return self.conn.their_state is h11.IDLE and self.conn.our_state is h11.IDLE

        def overdue(self, now: float) -> bool:
            if self._lingering is not None or self.transport.is_closing():
                return False
            state = self.conn.their_state
            if state is h11.IDLE and self.conn.our_state is h11.IDLE:
                return now - self._phase_start > self._limits.header_timeout_s
            if state is h11.SEND_BODY and not (self.cycle and self.cycle.response_started):
                return (
                    now - self._last_data > self._limits.body_idle_s
                    or now - self._phase_start > self._limits.body_total_s
                )
            return False

        def linger(self) -> None:
            """Stops sending; drops what arrives; closes after ``linger_s``."""
            transport = self.transport.inner
            self._lingering = self.loop.call_later(self._limits.linger_s, transport.close)
            if transport.can_write_eof():
                transport.write_eof()

    return GuardedH11Protocol


class _LingeringTransport:
    """The transport as the protocol sees it; ``close()`` lingers when the request body
    was not read whole (so the answer reaches clients that are still sending)."""

    def __init__(self, inner: Any, protocol: Any):
        self.inner = inner
        self._protocol = protocol

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def close(self) -> None:
        protocol = self._protocol
        unread = protocol.conn.their_state is h11.SEND_BODY
        if unread and protocol._lingering is None and not self.inner.is_closing():
            protocol.linger()
        elif protocol._lingering is None:
            self.inner.close()

    def real_close(self) -> None:
        self.inner.close()


def _oldest_waiting(connections, exclude) -> Any:
    waiting = [
        c
        for c in connections
        if c is not exclude and hasattr(c, "waiting_for_head") and c.waiting_for_head()
    ]
    return min(waiting, key=lambda c: c._phase_start, default=None)


class _Sweeper:
    """Once a second, closes the connections past their header or body time (one per
    server, kept on uvicorn's ``ServerState``)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, state: Any, limits: GuardLimits):
        self.loop = loop
        self.state = state
        self.limits = limits

    @classmethod
    def ensure(cls, loop, state: Any, limits: GuardLimits) -> None:
        if getattr(state, "imgclass_sweeper", None) is None:
            state.imgclass_sweeper = cls(loop, state, limits)
            loop.call_later(1.0, state.imgclass_sweeper.sweep)

    def sweep(self) -> None:
        now = time.monotonic()
        for conn in list(self.state.connections):
            if hasattr(conn, "overdue") and conn.overdue(now):
                conn.transport.real_close()
        if self.state.connections and not self.loop.is_closed():
            self.loop.call_later(1.0, self.sweep)
        else:
            self.state.imgclass_sweeper = None
