"""Classify by URL: the allow-list, URL normalisation, and bounded fetching.

A URL is compared with the allowed prefixes only in its normal form (lower-case scheme
and host, IDNA host, default port dropped); a URL that would change under normalisation
of its path (dot segments, percent-encoded ``.``, ``/`` or ``\\``, a backslash), that
carries user info, control characters or spaces is refused outright rather than
"cleaned", so ``/img/../secret/x.png`` can never pass a ``/img/`` prefix.

Fetches run in their own small thread pool (they cannot starve the decoding of uploads),
each under one total deadline (connect, redirects and every read together), and no more
than the pool's size plus a short queue may wait at once.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
import urllib.parse
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from ...errors import ImgClassError
from .errors import RequestError

__all__ = ["UrlFetcher", "normalise_url", "parse_prefix", "url_refusal"]

_DEFAULT_PORTS = {"http": 80, "https": 443}
_BAD_PATH = re.compile(r"%2e|%2f|%5c|\\", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x20\x7f]")
Normal = tuple[str, str, str]


def normalise_url(url: str) -> Normal:
    """``(scheme, host[:port], path)`` of an http(s) URL in normal form.

    Raises:
        ValueError: naming what is wrong (the caller words the refusal).

    Examples:
        >>> normalise_url("HTTP://Images.Example.com:80/a/b.png?x=1")
        ('http', 'images.example.com', '/a/b.png')
        >>> normalise_url("http://h/img/../secret.png")
        Traceback (most recent call last):
        ...
        ValueError: its path has a '.' or '..' segment
    """
    if not isinstance(url, str) or _CONTROL.search(url):
        raise ValueError("it holds spaces or control characters")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"it is malformed ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ValueError("only http and https URLs are fetched")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise ValueError("it carries user information")
    if not parts.hostname:
        raise ValueError("it has no host")
    try:
        host = parts.hostname.encode("idna").decode("ascii").lower()
    except UnicodeError as exc:
        raise ValueError(f"its host is not a valid name ({exc})") from None
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port in (None, _DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    path = parts.path or "/"
    if _BAD_PATH.search(path):
        raise ValueError("its path has a percent-encoded '.', '/' or '\\' or a backslash")
    if any(seg in (".", "..") for seg in path.split("/")):
        raise ValueError("its path has a '.' or '..' segment")
    return scheme, netloc, path


def parse_prefix(prefix: str) -> Normal:
    """An allowed prefix in normal form; refuses anything but ``http(s)://host[:port][/path]``."""
    try:
        return normalise_url(prefix)
    except ValueError as exc:
        raise ImgClassError(
            f"allowed URL prefix {prefix!r}: {exc}; expected http(s)://host[:port][/path]"
        ) from None


def url_refusal(url: str, allowed: Sequence[Normal]) -> str | None:
    """None when ``url`` may be fetched, else the reason it may not."""
    shown = repr(url[:200])
    try:
        scheme, netloc, path = normalise_url(url)
    except ValueError as exc:
        return f"URL {shown} is refused: {exc}"
    for a_scheme, a_netloc, a_path in allowed:
        if scheme == a_scheme and netloc == a_netloc and path.startswith(a_path):
            return None
    return f"URL {shown} is not under an allowed prefix (serve --allow-url PREFIX)"


class UrlFetcher:
    """Fetches images by URL for the service, bounded in threads, queue and time.

    Args:
        allowed: the allowed prefixes, in normal form.
        max_bytes: the largest image fetched.
        deadline_s: one total limit per fetch (connect, redirects and body).
        workers: threads that fetch at once; beyond them at most ``workers`` more wait.
    """

    def __init__(
        self, allowed: Sequence[Normal], max_bytes: int, deadline_s: float, workers: int = 4
    ):
        self.allowed = list(allowed)
        self.max_bytes = max_bytes
        self.deadline_s = deadline_s
        self.workers = workers
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="imgclass-url")
        self._waiting = 0
        self._lock = threading.Lock()

    def close(self) -> None:
        """Stops the pool (fetches in flight end at their deadline)."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def fetch(self, url: str) -> bytes:
        """The bytes at ``url``, or a :class:`RequestError` saying why not."""
        reason = url_refusal(url, self.allowed)
        if reason:
            raise RequestError(400, "BadRequestImageUrl", reason)
        with self._lock:
            if self._waiting >= 2 * self.workers:
                raise RequestError(
                    429, "TooManyRequests", "too many URL fetches in progress; try again"
                )
            self._waiting += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._pool, self._fetch, url)
        finally:
            with self._lock:
                self._waiting -= 1

    def _fetch(self, url: str) -> bytes:
        import http.client
        import urllib.error
        import urllib.request

        deadline = time.monotonic() + self.deadline_s
        allowed = self.allowed

        def remaining() -> float:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RequestError(
                    400,
                    "BadRequestImageUrl",
                    f"URL {url[:200]!r}: no complete answer within {self.deadline_s:g} s",
                )
            return left

        class Checked(urllib.request.HTTPRedirectHandler):
            max_redirections = 5

            def redirect_request(self, req, fp, code, msg, headers, newurl):
                why = url_refusal(newurl, allowed)
                if why:
                    raise RequestError(400, "BadRequestImageUrl", f"redirected: {why}")
                remaining()
                return super().redirect_request(req, fp, code, msg, headers, newurl)

        # No proxies from the environment: the allow-list is about where the bytes come from.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), Checked)
        try:
            with opener.open(url, timeout=min(remaining(), 10.0)) as response:
                length = response.headers.get("Content-Length")
                if length and length.isdigit() and int(length) > self.max_bytes:
                    raise RequestError(
                        413,
                        "BadRequestImageSizeBytes",
                        f"URL {url[:200]!r}: {length} bytes exceeds {self.max_bytes} bytes",
                    )
                data = bytearray()
                sock = _socket_of(response)
                while len(data) <= self.max_bytes:
                    if sock is not None:
                        sock.settimeout(min(remaining(), 10.0))
                    chunk = response.read1(64 << 10) if hasattr(response, "read1") else b""
                    if not chunk:
                        break
                    data += chunk
                    remaining()
        except RequestError:
            raise
        except urllib.error.HTTPError as exc:
            raise RequestError(
                400, "BadRequestImageUrl", f"URL {url[:200]!r}: the server answered HTTP {exc.code}"
            ) from None
        except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
            if time.monotonic() >= deadline:
                remaining()
            reason = getattr(exc, "reason", exc)
            raise RequestError(
                400, "BadRequestImageUrl", f"URL {url[:200]!r} could not be fetched: {reason}"
            ) from None
        if len(data) > self.max_bytes:
            raise RequestError(
                413,
                "BadRequestImageSizeBytes",
                f"URL {url[:200]!r}: the image exceeds {self.max_bytes} bytes",
            )
        if not data:
            raise RequestError(400, "BadRequestImageUrl", f"URL {url[:200]!r}: the answer is empty")
        return bytes(data)


def _socket_of(response):
    """The socket under a urllib response (to tighten its timeout as the deadline nears)."""
    fp = getattr(response, "fp", None)
    raw = getattr(fp, "raw", None)
    return getattr(raw, "_sock", None)
