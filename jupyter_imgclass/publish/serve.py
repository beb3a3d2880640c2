"""REST prediction service, compatible with the hosted custom-vision JSON shape.

``create_app(model)`` builds a FastAPI app (a factory: nothing happens at import, a
bundle path is loaded in the app's ``lifespan``). Routes:

* ``POST /classify/iterations/{name}/image`` -- the image as the raw body
  (``application/octet-stream`` or ``image/*``) or as the file field of a
  ``multipart/form-data`` form. Answers::

      {"id": "...", "project": "...", "iteration": "<name>", "created": "<UTC ISO>",
       "predictions": [{"probability": 0.97, "tagId": "3", "tagName": "apple"}, ...]}

  with every tag, highest probability first. ``.../image/nostore`` is the same without
  calling ``log_callback``.
* ``GET /health`` -- ``{"status": "ok", ...}``; ``/docs`` and ``/openapi.json``.

Every bad request gets a 4xx JSON body ``{"code": ..., "message": ...}``: 401/403 for a
missing/wrong ``Prediction-Key`` (when a key is set), 404 for an unknown iteration name,
413 for a body over ``max_body_bytes`` (checked while the body streams in) or an image
over ``max_pixels``, 400 for an empty body or an image that does not decode, 415 for a
content type that is not an image, bytes or a form.

Concurrent requests are micro-batched: a request waits at most ``batch_window_s``
(5 ms) for others, up to ``max_batch`` (32) run as one batch on the model in a single
worker thread, so the event loop never blocks on JAX.

Example::

    from jupyter_imgclass.publish.serve import serve_in_background

    with serve_in_background("out/fruit-model") as server:
        httpx.post(f"{server.url}/classify/iterations/fruit-v1/image",
                   content=open("apple.jpg", "rb").read(),
                   headers={"Content-Type": "application/octet-stream"}).json()
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import hmac
import io
import logging
import os
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException, MultiPartParser

from ..errors import BadImageError, ImgClassError

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_PIXELS",
    "Servable",
    "ServerHandle",
    "create_app",
    "serve_forever",
    "serve_in_background",
]

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 6_000_000
DEFAULT_MAX_PIXELS = 50_000_000
"""About an 8660 x 5770 photo; larger images are refused before they are decoded."""


@runtime_checkable
class Servable(Protocol):
    """What the service needs of a model: a loaded bundle and an Iteration are both one.

    Attributes:
        tags: tag names in output order.
        tag_ids: the matching ids the answers carry (``tagId``).
        kind: ``"multiclass"`` or ``"multilabel"``.
        input_size: the square side images are resized to.
        published_name: the iteration name the route answers to.
        project_name: the ``project`` field of answers.
    """

    tags: Any
    tag_ids: Any
    kind: str
    input_size: int
    published_name: str | None
    project_name: str | None

    def predict_arrays(self, images: np.ndarray) -> np.ndarray:
        """Probabilities ``[N, T]`` for a uint8 ``[N, S, S, 3]`` batch."""
        ...


class _RequestError(Exception):
    """A client error answered as ``{"code", "message"}`` with ``status``."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


# ---------------------------------------------------------------------------- images


def _image_to_array(body: bytes, input_size: int, max_pixels: int) -> np.ndarray:
    """Decodes request bytes to a uint8 ``[S, S, 3]`` array exactly as ``Predictor`` does.

    The pixel count is read from the header first so that a huge image is refused
    before any pixel is decoded.
    """
    from PIL import Image

    from ..data import images

    try:
        with Image.open(io.BytesIO(body)) as im:
            width, height = im.size
    except Image.DecompressionBombError as exc:
        raise _RequestError(413, "ImageTooLarge", f"image refused: {exc}") from None
    except Exception as exc:  # Pillow raises many types on garbage; all mean "not an image"
        reason = "unrecognised format" if type(exc).__name__ == "UnidentifiedImageError" else exc
        raise _RequestError(
            400, "BadRequestImageFormat", f"not a supported image ({type(exc).__name__}: {reason})"
        ) from None
    if width * height > max_pixels:
        raise _RequestError(
            413,
            "ImageTooLarge",
            f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}",
        )
    try:
        return images.load_rgb(body, input_size, name="request body")
    except BadImageError as exc:
        raise _RequestError(400, "BadRequestImageFormat", str(exc)) from None
    except Exception as exc:  # a decoder failing half-way through a corrupt file
        raise _RequestError(
            400,
            "BadRequestImageFormat",
            f"image could not be decoded ({type(exc).__name__}: {exc})",
        ) from None


# ---------------------------------------------------------------------------- batching


class _MicroBatcher:
    """Gathers concurrent single-image requests into batches for one worker thread."""

    def __init__(
        self, predict: Callable[[np.ndarray], np.ndarray], window_s: float, max_batch: int
    ):
        self._predict = predict
        self._window_s = window_s
        self._max_batch = max_batch
        self._queue: asyncio.Queue[tuple[np.ndarray, asyncio.Future]] = asyncio.Queue()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="imgclass-predict")
        self._task: asyncio.Task | None = None
        self.batches = 0
        self.images = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._executor.shutdown(wait=True)

    async def submit(self, image: np.ndarray) -> np.ndarray:
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((image, future))
        return await future

    def _run_batch(self, images: list[np.ndarray]) -> np.ndarray:
        # Predictor.predict_arrays pads to a few bucket sizes itself (few jit shapes).
        return np.asarray(self._predict(np.stack(images)))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self._window_s
            while len(batch) < self._max_batch:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break
            live = [(image, fut) for image, fut in batch if not fut.done()]
            if not live:
                continue
            try:
                probs = await loop.run_in_executor(
                    self._executor, self._run_batch, [image for image, _ in live]
                )
            except Exception as exc:  # reported to each waiting request, loop goes on
                for _, fut in live:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            self.batches += 1
            self.images += len(live)
            for (_, fut), row in zip(live, probs, strict=True):
                if not fut.done():
                    fut.set_result(row)


# ---------------------------------------------------------------------------- app


class _ModelInfo:
    """What the routes need to know about a model, read once."""

    def __init__(self, model: Any, published_name: str | None, project_name: str | None):
        self.model = model
        self.tags: list[str] = [str(t) for t in model.tags]
        self.tag_ids: list[str] = [
            str(t) for t in (getattr(model, "tag_ids", None) or range(len(self.tags)))
        ]
        self.kind = getattr(model, "kind", "multiclass")
        self.model_name = getattr(model, "model_name", None)
        self.input_size = int(model.input_size)
        self.published_name = published_name or getattr(model, "published_name", None) or "default"
        self.project_name = project_name or getattr(model, "project_name", None) or ""


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"code": code, "message": message}, status_code=status)


def create_app(
    model: Any,
    *,
    key: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    log_callback: Callable[[bytes, dict], Any] | None = None,
    published_name: str | None = None,
    project_name: str | None = None,
    batch_window_s: float = 0.005,
    max_batch: int = 32,
    warmup: bool = False,
) -> FastAPI:
    """Builds the FastAPI prediction app.

    Args:
        model: a :class:`Servable` (a loaded bundle, a project's Iteration), or the path
            of a bundle, loaded in the app's lifespan.
        key: when set, every prediction needs header ``Prediction-Key: <key>``.
        max_body_bytes: largest accepted request body.
        max_pixels: largest accepted image (width x height), checked before decoding.
        log_callback: ``log_callback(image_bytes, response_json)`` called after each
            answered prediction (not for ``/nostore``), in a worker thread; its errors
            are logged and never reach the client. The improvement loop plugs in here.
        published_name: the iteration name the route answers to; defaults to the
            model's ``published_name``, else ``"default"``.
        project_name: the ``project`` field of answers; defaults to the model's.
        batch_window_s: how long a request waits for others to share its batch.
        max_batch: the largest batch run on the model.
        warmup: run the model once per batch size (powers of two up to ``max_batch``)
            before accepting requests, so no request waits for a compilation.

    Returns:
        A ``fastapi.FastAPI`` app; run it with uvicorn or :func:`serve_in_background`.
    """
    state: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loaded = model
        if isinstance(model, (str, os.PathLike)):
            from .bundle import load_model

            loaded = await run_in_threadpool(load_model, Path(model))
        info = _ModelInfo(loaded, published_name, project_name)
        if warmup:
            # Compile every batch size the micro-batcher can produce before the first request.
            sizes = sorted({min(2**i, max_batch) for i in range(max_batch.bit_length() + 1)})
            for n in sizes:
                blank = np.zeros((n, info.input_size, info.input_size, 3), np.uint8)
                await run_in_threadpool(info.model.predict_arrays, blank)
        batcher = _MicroBatcher(info.model.predict_arrays, batch_window_s, max_batch)
        batcher.start()
        state["info"], state["batcher"] = info, batcher
        try:
            yield
        finally:
            await batcher.close()

    app = FastAPI(
        title="jupyter_imgclass prediction service",
        description="Custom-vision compatible image classification.",
        version=_package_version(),
        lifespan=lifespan,
    )

    @app.exception_handler(_RequestError)
    async def _request_error(request: Request, exc: _RequestError) -> JSONResponse:
        return _error(exc.status, exc.code, exc.message)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, "HttpError", str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, "BadRequest", str(exc.errors()))

    @app.exception_handler(Exception)
    async def _server_error(request: Request, exc: Exception) -> JSONResponse:
        # A fault of the server, not of the request: still JSON, and the server goes on.
        log.exception("prediction failed")
        return _error(500, "InternalServerError", f"{type(exc).__name__}: {exc}")

    def check_key(request: Request) -> None:
        if key is None:
            return
        given = request.headers.get("prediction-key")
        if given is None:
            raise _RequestError(401, "Unauthorized", "missing Prediction-Key header")
        if not hmac.compare_digest(given.encode("utf-8"), key.encode("utf-8")):
            raise _RequestError(403, "Forbidden", "wrong Prediction-Key")

    async def bounded_stream(request: Request) -> AsyncIterator[bytes]:
        received = 0
        async for chunk in request.stream():
            received += len(chunk)
            if received > max_body_bytes:
                raise _RequestError(
                    413, "RequestTooLarge", f"request body exceeds {max_body_bytes} bytes"
                )
            yield chunk

    async def read_image_bytes(request: Request) -> bytes:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_body_bytes:
            raise _RequestError(
                413,
                "RequestTooLarge",
                f"request body of {length} bytes exceeds {max_body_bytes} bytes",
            )
        ctype = request.headers.get("content-type", "application/octet-stream")
        media = ctype.split(";", 1)[0].strip().lower()
        if media == "multipart/form-data":
            try:
                form = await MultiPartParser(
                    request.headers, bounded_stream(request), max_files=1, max_fields=16
                ).parse()
            except MultiPartException as exc:
                raise _RequestError(400, "BadRequest", f"bad multipart form: {exc}") from None
            try:
                upload = next((v for _, v in form.multi_items() if not isinstance(v, str)), None)
                if upload is None:
                    raise _RequestError(
                        400, "BadRequest", "multipart form holds no file field (e.g. imageData)"
                    )
                body = await upload.read()
            finally:
                await form.close()
        elif media == "application/octet-stream" or media.startswith("image/"):
            body = b"".join([chunk async for chunk in bounded_stream(request)])
        else:
            raise _RequestError(
                415,
                "UnsupportedMediaType",
                f"content type {media!r} is not accepted; send application/octet-stream, "
                "image/* or multipart/form-data",
            )
        if not body:
            raise _RequestError(400, "BadRequestImageEmpty", "the request holds no image bytes")
        return body

    async def classify(name: str, request: Request, store: bool) -> JSONResponse:
        info: _ModelInfo = state["info"]
        check_key(request)
        if name != info.published_name:
            raise _RequestError(
                404,
                "NotFound",
                f"iteration {name!r} is not published here; use {info.published_name!r}",
            )
        body = await read_image_bytes(request)
        image = await run_in_threadpool(_image_to_array, body, info.input_size, max_pixels)
        probs = await state["batcher"].submit(image)
        order = np.argsort(-probs, kind="stable")
        result = {
            "id": str(uuid.uuid4()),
            "project": info.project_name,
            "iteration": info.published_name,
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds"),
            "predictions": [
                {
                    "probability": float(probs[j]),
                    "tagId": info.tag_ids[j],
                    "tagName": info.tags[j],
                }
                for j in order
            ],
        }
        task = None
        if store and log_callback is not None:
            task = BackgroundTask(_call_logger, log_callback, body, result)
        return JSONResponse(result, background=task)

    responses = {
        s: {"description": d}
        for s, d in {
            400: "empty body, bad form or undecodable image",
            401: "missing Prediction-Key",
            403: "wrong Prediction-Key",
            404: "unknown iteration name",
            413: "body or image too large",
            415: "unsupported content type",
        }.items()
    }

    @app.post("/classify/iterations/{name}/image", responses=responses)
    async def classify_image(name: str, request: Request) -> JSONResponse:
        """Classifies one image sent as raw bytes or as a multipart file field."""
        return await classify(name, request, store=True)

    @app.post("/classify/iterations/{name}/image/nostore", responses=responses)
    async def classify_image_nostore(name: str, request: Request) -> JSONResponse:
        """Like ``/image`` but the image is not passed to the log callback."""
        return await classify(name, request, store=False)

    @app.get("/health")
    async def health() -> dict:
        """Whether the service is up, and which model it serves."""
        info: _ModelInfo = state["info"]
        batcher: _MicroBatcher = state["batcher"]
        return {
            "status": "ok",
            "iteration": info.published_name,
            "project": info.project_name,
            "network": info.model_name,
            "kind": info.kind,
            "tags": info.tags,
            "batches": batcher.batches,
            "images": batcher.images,
        }

    return app


def _call_logger(callback: Callable[[bytes, dict], Any], body: bytes, result: dict) -> None:
    try:
        callback(body, result)
    except Exception:  # the client already has its answer; the log must not break serving
        log.exception("prediction log callback failed")


def _package_version() -> str:
    from .._version import __version__

    return __version__


# ---------------------------------------------------------------------------- running


class ServerHandle:
    """A uvicorn server running in a background thread.

    Attributes:
        url: ``http://host:port`` of the server.
        host, port: where it listens.
        app: the FastAPI app.

    Use it as a context manager, or call :meth:`stop`.
    """

    def __init__(self, server: Any, thread: threading.Thread, host: str, port: int, app: Any):
        self._server = server
        self._thread = thread
        self.host = host
        self.port = port
        self.app = app
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{port}"

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
    **app_options: Any,
) -> ServerHandle:
    """Starts the prediction service in a thread and returns once it accepts requests.

    Args:
        model: a :class:`Servable`, or a bundle path (loaded
            here, so a bad bundle raises ``BundleError`` at once).
        host: interface to bind; loopback by default.
        port: TCP port; 0 picks a free one (see ``ServerHandle.port``).
        key: optional ``Prediction-Key``.
        **app_options: passed to :func:`create_app` (``max_body_bytes``, ``log_callback``...).

    Returns:
        A :class:`ServerHandle`; call ``.stop()`` or use ``with``.

    Raises:
        ImgClassError: the server could not start (port in use, model failed to load).
    """
    import uvicorn

    if isinstance(model, (str, os.PathLike)):
        from .bundle import load_model

        model = load_model(model)
    app = create_app(model, key=key, **app_options)
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

    config = uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=5
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
    return ServerHandle(server, thread, host, bound_port, app)


def serve_forever(
    model: Any,
    host: str = "127.0.0.1",
    port: int = 8000,
    key: str | None = None,
    **app_options: Any,
) -> None:
    """Serves a :class:`Servable` or a bundle folder until interrupted (Ctrl-C).

    What ``jupyter-imgclass serve PATH`` runs. A bundle path is loaded and verified
    before the port opens, so a bad bundle fails at once with ``BundleError``. Every
    batch size is compiled before the first request (``warmup``) unless told otherwise.
    """
    import uvicorn

    app_options.setdefault("warmup", True)
    if isinstance(model, (str, os.PathLike)):
        from .bundle import load_model

        model = load_model(model)
    app = create_app(model, key=key, **app_options)
    uvicorn.run(app, host=host, port=port, log_level="info")
