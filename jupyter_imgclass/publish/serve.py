"""REST prediction service: a drop-in for the hosted Custom Vision prediction API.

``create_app(model)`` builds a FastAPI app (a factory: nothing happens at import, a
bundle path is loaded in the app's lifespan). Routes, as the hosted service and its SDK
(``azure-cognitiveservices-vision-customvision``) call them, with ``{P}`` = ``Prediction``
or ``prediction`` and ``{v}`` = ``v3.0`` or ``v3.1``:

* ``POST /customvision/{v}/{P}/{projectId}/classify/iterations/{name}/image`` -- the image
  as the raw body (``application/octet-stream`` or ``image/*``) or as the ``imageData``
  part of a ``multipart/form-data`` form (with or without a filename). Answers::

      {"id": "...", "project": "<projectId>", "projectName": "...", "iteration": "<name>",
       "created": "<UTC ISO>", "predictions": [{"probability": 0.97, "tagId": "3",
       "tagName": "apple", "tagType": "Regular", "threshold": 0.5, "aboveThreshold": true},
       ...]}

  with every tag, highest probability first (``threshold`` / ``aboveThreshold`` only when
  the model has thresholds; hosted clients ignore them). ``.../image/nostore`` is the same
  without calling ``log_callback``.
* ``POST .../url`` and ``.../url/nostore`` -- body ``{"url": "https://..."}``: off unless
  ``allow_urls`` lists prefixes; every redirect is checked again; the same size and pixel
  limits as uploads.
* ``POST /classify/iterations/{name}/image[/nostore]`` -- the short routes (no project id).
* ``GET /health`` -- ``{"status": "ok", "project_id": ..., ...}``; ``/docs``, ``/openapi.json``.

Every bad request gets a 4xx JSON body ``{"code": ..., "message": ...}`` with the hosted
API's code names where one fits: 401/403 for a missing/wrong ``Prediction-Key`` (when a key
is set), 404 ``NotFoundProject`` / ``NotFoundIteration``, 413 ``BadRequestImageSizeBytes``
for a body over ``max_body_bytes`` (the body is read and dropped first, up to
``drain_limit_bytes``, so that clients which send before they read get the answer rather
than a reset) or ``BadRequestImageDimensions`` for an image over ``max_pixels``, 400
``BadRequestImageStream`` / ``BadRequestImageFormat`` / ``BadRequestImageUrl``, 415 for a
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
import json
import logging
import os
import socket
import threading
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
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

from ..errors import BadImageError, ImgClassError
from ..evaluate import passing

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_PIXELS",
    "Servable",
    "ServerHandle",
    "create_app",
    "route_urls",
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
        raise _RequestError(413, "BadRequestImageDimensions", f"image refused: {exc}") from None
    except Exception as exc:  # Pillow raises many types on garbage; all mean "not an image"
        reason = "unrecognised format" if type(exc).__name__ == "UnidentifiedImageError" else exc
        raise _RequestError(
            400, "BadRequestImageFormat", f"not a supported image ({type(exc).__name__}: {reason})"
        ) from None
    if width * height > max_pixels:
        raise _RequestError(
            413,
            "BadRequestImageDimensions",
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

    def __init__(
        self,
        model: Any,
        published_name: str | None,
        project_name: str | None,
        project_id: str | None,
    ):
        self.model = model
        self.tags: list[str] = [str(t) for t in model.tags]
        self.tag_ids: list[str] = [
            str(t) for t in (getattr(model, "tag_ids", None) or range(len(self.tags)))
        ]
        self.tag_types: list[str] = [
            str(t) for t in (getattr(model, "tag_types", None) or ["Regular"] * len(self.tags))
        ]
        self.kind = getattr(model, "kind", "multiclass")
        self.model_name = getattr(model, "model_name", None)
        self.input_size = int(model.input_size)
        self.published_name = published_name or getattr(model, "published_name", None) or "default"
        self.project_name = project_name or getattr(model, "project_name", None) or ""
        known = project_id or getattr(model, "project_id", None)
        if not known:  # a bundle from before project ids: stable across restarts
            known = str(uuid.uuid5(uuid.NAMESPACE_URL, f"jupyter-imgclass:{self.project_name}"))
        self.project_id = str(known).lower()
        self.thresholds = _thresholds(model, self.tags)


def _thresholds(model: Any, tags: list[str]) -> list[float] | None:
    """One threshold per tag from the model's ``thresholds`` (dict or number) or
    ``threshold``; None when it has neither."""
    given = getattr(model, "thresholds", None)
    if given is None:
        given = getattr(model, "threshold", None)
    if isinstance(given, int | float) and not isinstance(given, bool):
        return [float(given)] * len(tags)
    if isinstance(given, dict):
        default = float(given.get("*", 0.5))
        return [float(given.get(t, default)) for t in tags]
    return None


def _error(status: int, code: str, message: str, close: bool = False) -> JSONResponse:
    headers = {"Connection": "close"} if close else None
    return JSONResponse({"code": code, "message": message}, status_code=status, headers=headers)


HOSTED_VERSIONS = ("v3.0", "v3.1")
"""The hosted prediction API versions whose routes the service answers."""
HOSTED_ROOT = "/customvision/{version}/{prediction}/{project_id}/classify/iterations/{name}"
DEFAULT_DRAIN_BYTES = 64 << 20
"""An over-limit body is read (and dropped) up to this many bytes before the 413 is sent,
so that clients which send the whole body before reading (urllib, requests) get it."""
URL_BODY_BYTES = 64 << 10
"""The largest JSON body of a classify-by-URL request."""


def create_app(
    model: Any,
    *,
    key: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    log_callback: Callable[[bytes, dict], Any] | None = None,
    published_name: str | None = None,
    project_name: str | None = None,
    project_id: str | None = None,
    allow_urls: Sequence[str] = (),
    url_timeout_s: float = 10.0,
    drain_limit_bytes: int = DEFAULT_DRAIN_BYTES,
    batch_window_s: float = 0.005,
    max_batch: int = 32,
    warmup: bool = False,
) -> FastAPI:
    """Builds the FastAPI prediction app.

    Args:
        model: a :class:`Servable` (a loaded bundle, a project's Iteration), or the path
            of a bundle, loaded in the app's lifespan.
        key: when set, every prediction needs header ``Prediction-Key: <key>``.
        max_body_bytes: largest accepted request body (and image fetched by URL).
        max_pixels: largest accepted image (width x height), checked before decoding.
        log_callback: ``log_callback(image_bytes, response_json)`` called after each
            answered prediction (not for ``/nostore``), in a worker thread; its errors
            are logged and never reach the client. The improvement loop plugs in here.
        published_name: the iteration name the route answers to; defaults to the
            model's ``published_name``, else ``"default"``.
        project_name: the project's display name; defaults to the model's.
        project_id: the ``projectId`` the hosted routes answer to (and the ``project``
            field of answers); defaults to the model's ``project_id``.
        allow_urls: URL prefixes that classify-by-URL may fetch (scheme, host and port
            must match, the path must start with the prefix's); empty: the URL routes
            answer 400 and say how to enable them.
        url_timeout_s: the time limit of each fetch by URL.
        drain_limit_bytes: an over-limit body is read and dropped up to this size before
            the 413 answer, so that every client receives it.
        batch_window_s: how long a request waits for others to share its batch.
        max_batch: the largest batch run on the model.
        warmup: run the model once per batch size (powers of two up to ``max_batch``)
            before accepting requests, so no request waits for a compilation.

    Returns:
        A ``fastapi.FastAPI`` app; run it with uvicorn or :func:`serve_in_background`.
    """
    state: dict[str, Any] = {}
    allowed = [_url_prefix(p) for p in allow_urls]

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loaded = model
        if isinstance(model, str | os.PathLike):
            from .bundle import load_model

            loaded = await run_in_threadpool(load_model, Path(model))
        info = _ModelInfo(loaded, published_name, project_name, project_id)
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
        description="A drop-in for the hosted Custom Vision prediction API (v3.0, v3.1).",
        version=_package_version(),
        lifespan=lifespan,
    )

    @app.exception_handler(_RequestError)
    async def _request_error(request: Request, exc: _RequestError) -> JSONResponse:
        await drain(request)
        return _error(exc.status, exc.code, exc.message, close=exc.status == 413)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        await drain(request)
        code = "NotFound" if exc.status_code == 404 else "HttpError"
        return _error(exc.status_code, code, str(exc.detail))

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

    async def drain(request: Request, received: int = 0) -> None:
        """Reads and drops what is left of the body (up to ``drain_limit_bytes``), so
        that a client still sending it receives the error answer instead of a reset."""
        state = request.scope.setdefault("state", {})
        if state.get("imgclass_body_read"):
            return
        state["imgclass_body_read"] = True
        if request.headers.get("expect", "").lower() == "100-continue":
            return  # the client waits for "100 Continue" before it sends anything
        more = True
        while more and received <= drain_limit_bytes:
            message = await request.receive()
            if message["type"] != "http.request":
                return
            received += len(message.get("body", b""))
            more = message.get("more_body", False)

    async def read_body(request: Request, limit: int) -> bytes:
        """The whole body, or a 413 once it passes ``limit`` (the rest is drained first)."""
        too_large = _RequestError(
            413, "BadRequestImageSizeBytes", f"request body exceeds {limit} bytes"
        )
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            too_large.message = f"request body of {length} bytes exceeds {limit} bytes"
            raise too_large  # the error handler drains the body
        request.scope.setdefault("state", {})["imgclass_body_read"] = True
        parts, received = [], 0
        more = True
        while more:
            message = await request.receive()
            if message["type"] != "http.request":
                raise _RequestError(400, "BadRequestImageStream", "the client went away")
            chunk = message.get("body", b"")
            received += len(chunk)
            more = message.get("more_body", False)
            if received > limit:
                if more:
                    request.scope["state"]["imgclass_body_read"] = False
                    await drain(request, received)
                raise too_large
            parts.append(chunk)
        return b"".join(parts)

    async def read_image_bytes(request: Request) -> bytes:
        ctype = request.headers.get("content-type", "application/octet-stream")
        media = ctype.split(";", 1)[0].strip().lower()
        accepted = media in ("multipart/form-data", "application/octet-stream")
        if not (accepted or media.startswith("image/")):
            raise _RequestError(
                415,
                "UnsupportedMediaType",
                f"content type {media!r} is not accepted; send application/octet-stream, "
                "image/* or multipart/form-data",
            )
        body = await read_body(request, max_body_bytes)
        if media == "multipart/form-data":
            body = _form_image(ctype, body)
        if not body:
            raise _RequestError(400, "BadRequestImageStream", "the request holds no image bytes")
        return body

    async def read_url_image(request: Request) -> bytes:
        if not allowed:
            raise _RequestError(
                400,
                "BadRequestImageUrl",
                "classify by URL is off on this server; start it with --allow-url PREFIX "
                "(e.g. --allow-url https://images.example.com/) or create_app(allow_urls=[...])",
            )
        raw = await read_body(request, URL_BODY_BYTES)
        try:
            url = json.loads(raw)["url"] if raw else None
        except (ValueError, TypeError, KeyError):
            url = None
        if not isinstance(url, str) or not url:
            raise _RequestError(
                400, "BadRequestImageUrl", 'the body must be JSON {"url": "https://..."}'
            )
        return await run_in_threadpool(_fetch_image, url, allowed, max_body_bytes, url_timeout_s)

    def find(version: str, prediction: str, pid: str, name: str) -> _ModelInfo:
        info: _ModelInfo = state["info"]
        if version not in HOSTED_VERSIONS or prediction not in ("Prediction", "prediction"):
            raise _RequestError(
                404,
                "NotFound",
                f"no route /customvision/{version}/{prediction}/...; this server answers "
                f"{' and '.join(HOSTED_VERSIONS)} (Prediction or prediction)",
            )
        if pid.lower() != info.project_id:
            raise _RequestError(
                404,
                "NotFoundProject",
                f"project {pid!r} is not served here (this server answers to project id "
                f"{info.project_id}; `serve --project-id` sets it)",
            )
        return check_iteration(name)

    def check_iteration(name: str) -> _ModelInfo:
        info: _ModelInfo = state["info"]
        if name != info.published_name:
            raise _RequestError(
                404,
                "NotFoundIteration",
                f"iteration {name!r} is not published here; use {info.published_name!r}",
            )
        return info

    async def answer(info: _ModelInfo, body: bytes, store: bool) -> JSONResponse:
        image = await run_in_threadpool(_image_to_array, body, info.input_size, max_pixels)
        probs = await state["batcher"].submit(image)
        result = _prediction(info, probs)
        task = None
        if store and log_callback is not None:
            task = BackgroundTask(_call_logger, log_callback, body, result)
        return JSONResponse(result, background=task)

    responses = {
        s: {"description": d}
        for s, d in {
            400: "empty body, bad form, undecodable image, or a URL refused",
            401: "missing Prediction-Key",
            403: "wrong Prediction-Key",
            404: "unknown project id or iteration name",
            413: "body or image too large",
            415: "unsupported content type",
        }.items()
    }

    def add_route(path: str, store: bool, read: Callable, what: str) -> None:
        """One POST route; hosted paths carry version, casing and project id."""
        doc = f"Classifies {what}" + ("." if store else "; the image is not kept.")
        if path.startswith("/customvision/"):

            async def route(
                version: str, prediction: str, project_id: str, name: str, request: Request
            ) -> JSONResponse:
                check_key(request)
                info = find(version, prediction, project_id, name)
                return await answer(info, await read(request), store)

        else:

            async def route(name: str, request: Request) -> JSONResponse:
                check_key(request)
                return await answer(check_iteration(name), await read(request), store)

        route.__doc__ = doc
        app.post(path, responses=responses, name=path)(route)

    upload = "one image sent as raw bytes or a multipart ``imageData`` part"
    by_url = 'the image at ``{"url": ...}`` (allowed prefixes only)'
    for root in ("/classify/iterations/{name}", HOSTED_ROOT):
        add_route(root + "/image", True, read_image_bytes, upload)
        add_route(root + "/image/nostore", False, read_image_bytes, upload)
    add_route(HOSTED_ROOT + "/url", True, read_url_image, by_url)
    add_route(HOSTED_ROOT + "/url/nostore", False, read_url_image, by_url)

    @app.get("/health")
    async def health() -> dict:
        """Whether the service is up, and which model it serves."""
        info: _ModelInfo = state["info"]
        batcher: _MicroBatcher = state["batcher"]
        return {
            "status": "ok",
            "iteration": info.published_name,
            "project": info.project_name,
            "project_id": info.project_id,
            "network": info.model_name,
            "kind": info.kind,
            "tags": info.tags,
            "url_classification": bool(allowed),
            "batches": batcher.batches,
            "images": batcher.images,
        }

    return app


def _prediction(info: _ModelInfo, probs: np.ndarray) -> dict:
    """The hosted API's ``ImagePrediction``: every tag, highest probability first; the
    tag's threshold and whether it passes (``evaluate.passing``) ride along (hosted
    clients ignore them)."""
    order = np.argsort(-probs, kind="stable")
    passes = passing(probs, info.thresholds, info.kind) if info.thresholds is not None else None
    predictions = []
    for j in order:
        record = {
            "probability": float(probs[j]),
            "tagId": info.tag_ids[j],
            "tagName": info.tags[j],
            "tagType": info.tag_types[j],
        }
        if info.thresholds is not None:
            record["threshold"] = info.thresholds[j]
            record["aboveThreshold"] = bool(passes[j])
        predictions.append(record)
    return {
        "id": str(uuid.uuid4()),
        "project": info.project_id,
        "projectName": info.project_name,
        "iteration": info.published_name,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds"),
        "predictions": predictions,
    }


def _form_image(content_type: str, body: bytes) -> bytes:
    """The image part of a ``multipart/form-data`` body: the part named ``imageData``
    (the hosted SDK sends it without a filename), else the first file part."""
    from python_multipart.multipart import MultipartParser, parse_options_header

    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise _RequestError(400, "BadRequest", "bad multipart form: no boundary")
    parts: list[dict] = []
    header: dict[str, bytes] = {}
    current: dict[str, Any] = {}

    def on_part_begin() -> None:
        current.clear()
        current.update(headers={}, data=[])

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header["field"] = header.get("field", b"") + data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header["value"] = header.get("value", b"") + data[start:end]

    def on_header_end() -> None:
        current["headers"][header.pop("field", b"").lower()] = header.pop("value", b"")

    def on_part_data(data: bytes, start: int, end: int) -> None:
        current["data"].append(data[start:end])

    def on_part_end() -> None:
        _, disposition = parse_options_header(current["headers"].get(b"content-disposition", b""))
        parts.append(
            {
                "name": disposition.get(b"name", b"").decode("utf-8", "replace"),
                "file": b"filename" in disposition,
                "data": b"".join(current["data"]),
            }
        )

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    try:
        parser.write(body)
        parser.finalize()
    except Exception as exc:  # python-multipart raises its own error types on bad forms
        raise _RequestError(400, "BadRequest", f"bad multipart form: {exc}") from None
    chosen = next((p for p in parts if p["name"] == "imageData"), None)
    chosen = chosen or next((p for p in parts if p["file"]), None)
    if chosen is None:
        names = ", ".join(repr(p["name"]) for p in parts) or "none"
        raise _RequestError(
            400,
            "BadRequestImageStream",
            f"multipart form holds no image: send it as the imageData part (parts: {names})",
        )
    return chosen["data"]


# ---------------------------------------------------------------------------- by URL


def _url_prefix(prefix: str) -> tuple[str, str, str]:
    """``(scheme, host[:port], path)`` of an allowed prefix; refuses anything else."""
    parts = urllib.parse.urlsplit(prefix)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username:
        raise ImgClassError(f"allowed URL prefix {prefix!r}: expected http(s)://host[:port][/path]")
    return parts.scheme, parts.netloc.lower(), parts.path or "/"


def _url_allowed(url: str, allowed: Sequence[tuple[str, str, str]]) -> str | None:
    """None when ``url`` may be fetched, else the reason it may not."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return f"URL {url!r}: only http and https URLs are fetched"
    where = (parts.scheme, parts.netloc.lower(), parts.path or "/")
    for scheme, netloc, path in allowed:
        if where[0] == scheme and where[1] == netloc and where[2].startswith(path):
            return None
    return f"URL {url!r} is not under an allowed prefix (serve --allow-url PREFIX)"


def _fetch_image(url: str, allowed, max_bytes: int, timeout_s: float) -> bytes:
    """The bytes at ``url``, every redirect checked against ``allowed`` again."""
    import urllib.error
    import urllib.request

    reason = _url_allowed(url, allowed)
    if reason:
        raise _RequestError(400, "BadRequestImageUrl", reason)

    class Checked(urllib.request.HTTPRedirectHandler):
        max_redirections = 5

        def redirect_request(self, req, fp, code, msg, headers, newurl):
            why = _url_allowed(newurl, allowed)
            if why:
                raise _RequestError(400, "BadRequestImageUrl", f"redirected: {why}")
            return super().redirect_request(req, fp, code, msg, headers, newurl)

    # No proxies from the environment: the allow-list is about where the bytes come from.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), Checked)
    try:
        with opener.open(url, timeout=timeout_s) as response:
            length = response.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > max_bytes:
                raise _RequestError(
                    413,
                    "BadRequestImageSizeBytes",
                    f"URL {url!r}: {length} bytes exceeds {max_bytes} bytes",
                )
            data = response.read(max_bytes + 1)
    except _RequestError:
        raise
    except urllib.error.HTTPError as exc:
        raise _RequestError(
            400, "BadRequestImageUrl", f"URL {url!r}: the server answered HTTP {exc.code}"
        ) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise _RequestError(
            400, "BadRequestImageUrl", f"URL {url!r} could not be fetched: {reason}"
        ) from None
    if len(data) > max_bytes:
        raise _RequestError(
            413, "BadRequestImageSizeBytes", f"URL {url!r}: the image exceeds {max_bytes} bytes"
        )
    if not data:
        raise _RequestError(400, "BadRequestImageUrl", f"URL {url!r}: the answer is empty")
    return data


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
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{port}"
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
    shown = f"[{host}]" if ":" in host else host
    routes = route_urls(
        model, f"http://{shown}:{bound_port}", project_id=app_options.get("project_id")
    )
    return ServerHandle(server, thread, host, bound_port, app, routes, key is not None)


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
    shown = f"[{host}]" if ":" in host else host
    for what, url in route_urls(
        model, f"http://{shown}:{port}", project_id=app_options.get("project_id")
    ).items():
        print(f"{what:>14}: POST {url}", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="info")


def route_urls(model: Any, base_url: str, *, project_id: str | None = None) -> dict[str, str]:
    """The full URL of each prediction route for ``model`` served at ``base_url``.

    Examples:
        >>> class M:
        ...     tags, input_size, published_name, project_id = ["a"], 8, "v1", "ab-12"
        >>> route_urls(M(), "http://127.0.0.1:8000")["image"]
        'http://127.0.0.1:8000/customvision/v3.0/Prediction/ab-12/classify/iterations/v1/image'
    """
    info = _ModelInfo(model, None, None, project_id)
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
    }
