"""Running the service: in a background thread (notebooks, tests) or in the foreground
(the CLI), on uvicorn with the connection guard, timeouts and a query-free access log
(JSON lines, uvicorn's text lines, or none)."""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ...errors import ImgClassError
from .app import HOSTED_ROOT, create_app
from .browsers import host_names
from .guard import GuardLimits, guarded_protocol
from .model import ModelInfo
from .observe import log_access_to

__all__ = [
    "KEY_ENV",
    "ServerHandle",
    "read_key",
    "route_urls",
    "serve_forever",
    "serve_in_background",
    "uvicorn_config",
]

KEY_ENV = "IMGCLASS_PREDICTION_KEY"
"""The environment variable a server reads its ``Prediction-Key`` from."""
KEEP_ALIVE_S = 5
ACCESS_LOGS = ("json", "text", "off")
"""The access log's forms: one JSON object a line, uvicorn's text lines, none."""


def read_key(
    key: str | None = None, key_file: str | os.PathLike | None = None, env: str = KEY_ENV
) -> str | None:
    """The key: given, else the first line of ``key_file``, else ``$IMGCLASS_PREDICTION_KEY``
    (or the variable ``env`` names).

    A key on the command line can be read by every user of the machine (``ps``); a file
    or the environment cannot.

    Raises:
        ImgClassError: when the key file cannot be read or is empty.
    """
    if key is not None:
        return key
    if key_file is not None:
        path = Path(key_file).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ImgClassError(f"key file {path}: cannot read it ({exc})") from None
        lines = text.strip().splitlines()
        if not lines or not lines[0].strip():
            raise ImgClassError(f"key file {path}: is empty; put the key on its first line")
        return lines[0].strip()
    return os.environ.get(env) or None


class _NoQuery(logging.Filter):
    """Drops query strings from uvicorn's access log lines (a key or token put in a URL
    must not land in a log)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], args[2].split("?", 1)[0], *args[3:])
        return True


def uvicorn_config(
    app: Any, *, limits: GuardLimits | None = None, access_log: str = "text", **options: Any
):
    """uvicorn's ``Config`` for the service: the connection guard (header and body
    timeouts, a connection cap, lingering close), a short keep-alive, and the access log
    (``"json"``: the app's JSON lines on stdout, which the app must have been built with
    ``access_log=True``; ``"text"``: uvicorn's, without query strings; ``"off"``)."""
    import uvicorn

    if access_log not in ACCESS_LOGS:
        raise ImgClassError(f"access log {access_log!r}: choose one of {', '.join(ACCESS_LOGS)}")
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, _NoQuery) for f in access.filters):
        access.addFilter(_NoQuery())
    if access_log == "json":
        log_access_to()
    options.setdefault("timeout_keep_alive", KEEP_ALIVE_S)
    return uvicorn.Config(
        app,
        http=guarded_protocol(limits or GuardLimits()),
        lifespan="on",
        access_log=access_log == "text",
        **options,
    )


class ServerHandle:
    """A uvicorn server running in a background thread.

    Attributes:
        url: ``http://host:port`` of the server.
        host, port: where it listens.
        app: the FastAPI app.
        routes: the full URL of each prediction route (:func:`route_urls`).
        key_required: whether requests need a ``Prediction-Key``.

    Use it as a context manager, or call :meth:`stop`.
    """

    def __init__(
        self,
        server: Any,
        thread: threading.Thread,
        host: str,
        port: int,
        app: Any,
        routes: dict[str, str] | None = None,
        key_required: bool = False,
    ):
        self._server = server
        self._thread = thread
        self.host = host
        self.port = port
        self.app = app
        self.url = base_url(host, port)
        self.routes = routes or {}
        self.key_required = key_required

    @property
    def running(self) -> bool:
        """Whether the server thread is still alive."""
        return self._thread.is_alive()

    def stop(self, timeout: float = 10.0) -> None:
        """Asks the server to finish its requests and exit, and waits for the thread."""
        self._server.should_exit = True
        self._thread.join(timeout)

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"ServerHandle({self.url!r}, running={self.running})"


def serve_in_background(
    model: Any,
    host: str = "127.0.0.1",
    port: int = 0,
    key: str | None = None,
    *,
    host_names_extra: Sequence[str] = (),
    limits: GuardLimits | None = None,
    access_log: str = "off",
    **app_options: Any,
) -> ServerHandle:
    """Starts the prediction service in a thread and returns once it accepts requests.

    Args:
        model: a :class:`Servable`, or a bundle path (loaded
            here, so a bad bundle raises ``BundleError`` at once).
        host: interface to bind; loopback by default.
        port: TCP port; 0 picks a free one (see ``ServerHandle.port``).
        key: optional ``Prediction-Key``.
        host_names_extra: names besides the bind address the ``Host`` header may carry.
        limits: connection limits (:class:`GuardLimits`: header and body timeouts, the
            connection cap).
        access_log: ``"off"`` (the default in a notebook), ``"json"`` (one JSON line per
            request on stdout) or ``"text"`` (uvicorn's lines).
        **app_options: passed to :func:`create_app` (``max_body_bytes``, ``log_callback``...).

    Returns:
        A :class:`ServerHandle`; call ``.stop()`` or use ``with``.

    Raises:
        ImgClassError: the server could not start (port in use, model failed to load).
    """
    import uvicorn

    app_options.setdefault("access_log", access_log == "json")
    model, app = _prepared_app(model, host, key, host_names_extra, app_options)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ImgClassError(f"cannot listen on {host}:{port}: {exc}") from None
    bound_port = sock.getsockname()[1]
    ready = threading.Event()

    class _Server(uvicorn.Server):
        async def startup(self, sockets: list | None = None) -> None:
            try:
                await super().startup(sockets=sockets)
            finally:
                ready.set()

    config = uvicorn_config(
        app,
        limits=limits,
        log_level="info" if access_log == "text" else "warning",
        access_log=access_log,
        timeout_graceful_shutdown=5,
    )
    server = _Server(config)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as exc:  # reported to the caller below
            errors.append(exc)
        finally:
            ready.set()
            sock.close()

    thread = threading.Thread(target=run, name=f"imgclass-serve-{bound_port}", daemon=True)
    thread.start()
    ready.wait()
    if errors or not server.started:
        server.should_exit = True
        thread.join(10)
        reason = f": {errors[0]}" if errors else " (see the log)"
        raise ImgClassError(f"prediction server on {host}:{bound_port} failed to start{reason}")
    routes = {}
    if model is not None:  # None: create_app(resolve=...) serves many
        routes = _routes(model, host, bound_port, app_options)
    return ServerHandle(server, thread, host, bound_port, app, routes, key is not None)


def serve_forever(
    model: Any,
    host: str = "127.0.0.1",
    port: int = 8000,
    key: str | None = None,
    *,
    host_names_extra: Sequence[str] = (),
    limits: GuardLimits | None = None,
    log_level: str = "info",
    access_log: str = "json",
    **app_options: Any,
) -> None:
    """Serves a :class:`Servable` or a bundle folder until interrupted (Ctrl-C).

    What ``jupyter-imgclass serve PATH`` runs. A bundle path is loaded and verified
    before the port opens, so a bad bundle fails at once with ``BundleError``. Every
    batch size is compiled once the port is open (``warmup``, unless told otherwise):
    ``/healthz`` answers at once, ``/readyz`` 503 until it is done. ``access_log``:
    ``"json"`` (one line per request on stdout), ``"text"`` or ``"off"``.
    """
    import uvicorn

    app_options.setdefault("warmup", True)
    app_options.setdefault("access_log", access_log == "json")
    model, app = _prepared_app(model, host, key, host_names_extra, app_options)
    if model is not None:  # None: create_app(resolve=...) serves many
        for what, url in _routes(model, host, port, app_options).items():
            print(f"{what:>14}: POST {url}", flush=True)
    config = uvicorn_config(
        app, limits=limits, access_log=access_log, host=host, port=port, log_level=log_level
    )
    uvicorn.Server(config).run()


def base_url(host: str, port: int) -> str:
    """``http://host:port`` (an IPv6 host in brackets)."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _prepared_app(model: Any, host: str, key, host_names_extra, app_options: dict):
    """The model (a bundle path loaded now, so a bad bundle fails before the port opens)
    and its app, answering to the bind address and ``host_names_extra`` by default."""
    if isinstance(model, (str, os.PathLike)):
        from ..bundle import load_model

        model = load_model(model)
    app_options.setdefault("allowed_hosts", host_names(host, host_names_extra))
    return model, create_app(model, key=key, **app_options)


def _routes(model: Any, host: str, port: int, app_options: dict) -> dict[str, str]:
    """:func:`route_urls` of a model served with ``app_options`` (its project id and
    published name, when given)."""
    return route_urls(
        model,
        base_url(host, port),
        project_id=app_options.get("project_id"),
        published_name=app_options.get("published_name"),
    )


def route_urls(
    model: Any,
    base_url: str,
    *,
    project_id: str | None = None,
    published_name: str | None = None,
) -> dict[str, str]:
    """The full URL of each prediction route for ``model`` served at ``base_url``.

    Examples:
        >>> class M:
        ...     tags, input_size, published_name, project_id = ["a"], 8, "v1", "ab-12"
        >>> route_urls(M(), "http://127.0.0.1:8000")["image"]
        'http://127.0.0.1:8000/customvision/v3.0/Prediction/ab-12/classify/iterations/v1/image'
    """
    info = ModelInfo(model, published_name, None, project_id)
    hosted = HOSTED_ROOT.format(
        version="v3.0",
        prediction="Prediction",
        project_id=info.project_id,
        name=info.published_name,
    )
    base = base_url.rstrip("/")
    return {
        "image": f"{base}{hosted}/image",
        "image nostore": f"{base}{hosted}/image/nostore",
        "url": f"{base}{hosted}/url",
        "url nostore": f"{base}{hosted}/url/nostore",
        "short": f"{base}/classify/iterations/{info.published_name}/image",
        "batch": f"{base}{hosted}/images",
    }
