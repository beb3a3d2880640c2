"""What a web page may do to a service on this machine: nothing, unless allowed.

A page on another origin can POST a ``multipart/form-data`` form to any address without
a CORS preflight, and DNS rebinding lets a page talk to ``127.0.0.1`` under its own name.
:class:`BrowserGuard` refuses, before the body is read (so nothing is kept):

- a request whose ``Origin`` is neither an allowed origin (``serve --cors``) nor the
  service's own origin (403);
- a request whose ``Host`` is not a name the service answers to (the bind address,
  ``localhost``, ``--host-name``), when the server knows them (403).
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Sequence

__all__ = ["BrowserGuard", "check_origin", "host_names"]

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def host_names(bind_host: str, extra: Sequence[str] = ()) -> list[str] | None:
    """The ``Host`` names a server bound to ``bind_host`` answers to (None: any, for a
    wildcard bind without ``extra`` names)."""
    names = [h.strip().lower().strip("[]") for h in extra if h.strip()]
    if bind_host in ("0.0.0.0", "::", ""):
        return (names + list(_LOOPBACK)) if names else None
    names.append(bind_host.lower().strip("[]"))
    if bind_host in _LOOPBACK or bind_host.startswith("127."):
        names += list(_LOOPBACK)
    return sorted(set(names))


def check_origin(origin: str) -> str:
    """An allowed CORS origin as browsers send it (``scheme://host[:port]``), or ``*``.

    Raises:
        ImgClassError: naming the value and the form expected.

    Examples:
        >>> check_origin("https://App.example.com/")
        'https://app.example.com'
    """
    from ...errors import ImgClassError

    text = str(origin).strip().rstrip("/")
    if text == "*":
        return text
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path:
        raise ImgClassError(
            f"CORS origin {origin!r}: expected scheme://host[:port] as a browser sends it, "
            "e.g. https://app.example.com (no path)"
        )
    return text.lower()


def _host_of(value: str) -> str:
    """The name part of a ``Host`` header (no port; IPv6 without brackets)."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class BrowserGuard:
    """Pure ASGI middleware refusing foreign ``Origin`` and unknown ``Host`` headers."""

    def __init__(self, app, origins: Sequence[str] = (), hosts: Sequence[str] | None = None):
        self.app = app
        self.origins = {check_origin(o) for o in origins}
        self.hosts = None if hosts is None else {h.lower() for h in hosts}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {}
        for name, value in scope.get("headers", []):
            headers.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
        host = headers.get("host", "")
        if self.hosts is not None and _host_of(host) not in self.hosts:
            return await _refuse(
                send,
                f"Host {host[:100]!r} is not a name this service answers to "
                "(serve --host-name NAME adds one)",
            )
        origin = headers.get("origin")
        if origin is not None and not self._origin_allowed(origin, host, scope):
            return await _refuse(
                send,
                f"cross-origin request from {origin[:100]!r} refused; "
                "serve --cors ORIGIN allows a web page's origin",
            )
        return await self.app(scope, receive, send)

    def _origin_allowed(self, origin: str, host: str, scope) -> bool:
        if "*" in self.origins or origin.rstrip("/").lower() in self.origins:
            return True
        parts = urllib.parse.urlsplit(origin)
        scheme = scope.get("scheme", "http")
        return parts.scheme == scheme and parts.netloc.lower() == host.strip().lower() != ""


async def _refuse(send, message: str) -> None:
    body = json.dumps({"code": "Forbidden", "message": message}, separators=(",", ":"))
    body = body.encode("utf-8")
    await send(
        {
            "type": "http.response.start",
            "status": 403,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
