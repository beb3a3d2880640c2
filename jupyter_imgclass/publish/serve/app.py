"""The FastAPI app: the prediction routes as an ``APIRouter``, the key as a ``Security``
dependency, the bounded body and the model lookup as dependencies, the model and the
batcher on ``app.state`` (loaded in the lifespan, never at import)."""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import os
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from .body import drain, form_image, image_to_array, read_body
from .browsers import BrowserGuard, check_origin
from .errors import RequestError, error_response
from .model import MicroBatcher, ModelInfo, call_logger, prediction
from .urls import UrlFetcher, parse_prefix

__all__ = ["DEFAULT_MAX_BODY_BYTES", "DEFAULT_MAX_PIXELS", "HOSTED_ROOT", "create_app"]

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 6_000_000
DEFAULT_MAX_PIXELS = 24_000_000
"""Non-JPEG images over this are refused from their header (a JPEG decodes reduced)."""
HOSTED_VERSIONS = ("v3.0", "v3.1")
"""The hosted prediction API versions whose routes the service answers."""
HOSTED_ROOT = "/customvision/{version}/{prediction}/{project_id}/classify/iterations/{name}"
SHORT_ROOT = "/classify/iterations/{name}"
DEFAULT_DRAIN_BYTES = 64 << 20
"""A key holder's over-limit body is read (and dropped) up to this many bytes before the
413 is sent, so that clients which send the whole body before reading get it."""
KEYLESS_BODY_BYTES = 64 << 10
"""A request without a valid key is answered after reading at most this much of its body."""
URL_BODY_BYTES = 64 << 10
"""The largest JSON body of a classify-by-URL request."""


@dataclass(frozen=True)
class ServiceSettings:
    """What ``create_app`` was told, on ``app.state.settings`` for the dependencies."""

    key: str | None
    max_body_bytes: int
    max_pixels: int
    drain_limit_bytes: int
    keyless_body_bytes: int
    log_callback: Callable[[bytes, dict], Any] | None
    allowed_urls: list = field(default_factory=list)
    url_timeout_s: float = 10.0


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
    keyless_body_bytes: int = KEYLESS_BODY_BYTES,
    cors_origins: Sequence[str] = (),
    allowed_hosts: Sequence[str] | None = None,
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
        max_pixels: non-JPEG images over this many pixels are refused before decoding
            (``data.images.decode_plan``: the one rule the importer follows too).
        log_callback: ``log_callback(image_bytes, response_json)`` called after each
            answered prediction (not for ``/nostore``), in a worker thread; its errors
            are logged and never reach the client. The improvement loop plugs in here.
        published_name: the iteration name the route answers to; defaults to the
            model's ``published_name``, else ``"default"``.
        project_name: the project's display name; defaults to the model's.
        project_id: the ``projectId`` the hosted routes answer to (and the ``project``
            field of answers); defaults to the model's ``project_id``.
        allow_urls: URL prefixes that classify-by-URL may fetch (scheme, host and port
            must match, the normalised path must start with the prefix's); empty: the
            URL routes answer 400 and say how to enable them.
        url_timeout_s: one total time limit per fetch by URL.
        drain_limit_bytes: a key holder's over-limit body is read and dropped up to this
            size before the 413 answer, so that every client receives it.
        keyless_body_bytes: a request without a valid key is answered after reading at
            most this much of its body.
        cors_origins: browser origins allowed to call the service (CORS answers for
            them); requests from any other ``Origin`` are refused with 403.
        allowed_hosts: the names the ``Host`` header may carry (None: any; the servers
            pass the bind address and ``--host-name``).
        batch_window_s: how long a request waits for others to share its batch.
        max_batch: the largest batch run on the model.
        warmup: run the model once per batch size (powers of two up to ``max_batch``)
            before accepting requests, so no request waits for a compilation.

    Returns:
        A ``fastapi.FastAPI`` app; run it with uvicorn or :func:`serve_in_background`.
    """
    cors_origins = [check_origin(o) for o in cors_origins]  # refused before any start
    settings = ServiceSettings(
        key=key,
        max_body_bytes=max_body_bytes,
        max_pixels=max_pixels,
        drain_limit_bytes=drain_limit_bytes,
        keyless_body_bytes=keyless_body_bytes,
        log_callback=log_callback,
        allowed_urls=[parse_prefix(p) for p in allow_urls],
        url_timeout_s=url_timeout_s,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loaded = model
        if isinstance(model, str | os.PathLike):
            from ..bundle import load_model

            loaded = await run_in_threadpool(load_model, Path(model))
        info = ModelInfo(loaded, published_name, project_name, project_id)
        if warmup:
            # Compile every batch size the micro-batcher can produce before the first request.
            sizes = sorted({min(2**i, max_batch) for i in range(max_batch.bit_length() + 1)})
            for n in sizes:
                blank = np.zeros((n, info.input_size, info.input_size, 3), np.uint8)
                await run_in_threadpool(info.model.predict_arrays, blank)
        batcher = MicroBatcher(info.model.predict_arrays, batch_window_s, max_batch)
        batcher.start()
        fetcher = UrlFetcher(settings.allowed_urls, max_body_bytes, url_timeout_s)
        app.state.info, app.state.batcher, app.state.fetcher = info, batcher, fetcher
        try:
            yield
        finally:
            fetcher.close()
            await batcher.close()

    app = FastAPI(
        title="jupyter_imgclass prediction service",
        description="A drop-in for the hosted Custom Vision prediction API (v3.0, v3.1).",
        version=_package_version(),
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.add_exception_handler(RequestError, _request_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _server_error)
    app.add_middleware(
        BrowserGuard,
        origins=list(cors_origins),
        hosts=None if allowed_hosts is None else list(allowed_hosts),
    )
    if cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors_origins),
            allow_methods=["POST", "GET"],
            allow_headers=["Prediction-Key", "Content-Type"],
        )
    app.include_router(prediction_routes)
    app.include_router(health_routes)
    return app


# ------------------------------------------------------------------------ error answers


async def _request_error(request: Request, exc: RequestError) -> JSONResponse:
    settings: ServiceSettings = request.app.state.settings
    keyless = exc.status in (401, 403)
    await drain(request, settings.keyless_body_bytes if keyless else settings.drain_limit_bytes)
    return error_response(exc.status, exc.code, exc.message, close=exc.status in (401, 403, 413))


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    await drain(request, request.app.state.settings.keyless_body_bytes)
    code = "NotFound" if exc.status_code == 404 else "HttpError"
    return error_response(exc.status_code, code, str(exc.detail))


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    return error_response(422, "BadRequest", str(exc.errors()))


async def _server_error(request: Request, exc: Exception) -> JSONResponse:
    # A fault of the server, not of the request: JSON without the exception's text (it
    # can name files and settings); the log keeps it under the same id.
    incident = uuid.uuid4().hex[:12]
    log.error("prediction failed (incident %s)", incident, exc_info=exc)
    return error_response(
        500,
        "InternalServerError",
        f"the server failed to answer (incident {incident}; its log has the details)",
    )


# ------------------------------------------------------------------------ dependencies

prediction_key = APIKeyHeader(
    name="Prediction-Key", auto_error=False, description="the key set with serve --key-file"
)


async def require_key(request: Request, given: str | None = Security(prediction_key)) -> None:
    """Checks ``Prediction-Key`` in constant time when the service has a key."""
    key = request.app.state.settings.key
    if key is None:
        return
    if given is None:
        raise RequestError(401, "Unauthorized", "missing Prediction-Key header")
    if not hmac.compare_digest(given.encode("utf-8"), key.encode("utf-8")):
        raise RequestError(403, "Forbidden", "wrong Prediction-Key")


def served_iteration(request: Request, name: str) -> ModelInfo:
    """The model, when ``name`` is its published iteration name."""
    info: ModelInfo = request.app.state.info
    if name != info.published_name:
        raise RequestError(
            404,
            "NotFoundIteration",
            f"iteration {name!r} is not published here; use {info.published_name!r}",
        )
    return info


def hosted_model(
    request: Request, version: str, prediction: str, project_id: str, name: str
) -> ModelInfo:
    """The model for a hosted route: its version, casing and project id checked."""
    info: ModelInfo = request.app.state.info
    if version not in HOSTED_VERSIONS or prediction not in ("Prediction", "prediction"):
        raise RequestError(
            404,
            "NotFound",
            f"no route /customvision/{version}/{prediction}/...; this server answers "
            f"{' and '.join(HOSTED_VERSIONS)} (Prediction or prediction)",
        )
    if project_id.lower() != info.project_id:
        raise RequestError(
            404,
            "NotFoundProject",
            f"project {project_id!r} is not served here (this server answers to project id "
            f"{info.project_id}; `serve --project-id` sets it)",
        )
    return served_iteration(request, name)


async def uploaded_image(request: Request) -> bytes:
    """The image of an upload: the raw body or a form's ``imageData`` part, bounded."""
    settings: ServiceSettings = request.app.state.settings
    ctype = request.headers.get("content-type", "application/octet-stream")
    media = ctype.split(";", 1)[0].strip().lower()
    accepted = media in ("multipart/form-data", "application/octet-stream")
    if not (accepted or media.startswith("image/")):
        raise RequestError(
            415,
            "UnsupportedMediaType",
            f"content type {media!r} is not accepted; send application/octet-stream, "
            "image/* or multipart/form-data",
        )
    body = await read_body(request, settings.max_body_bytes, settings.drain_limit_bytes)
    if media == "multipart/form-data":
        body = form_image(ctype, body)
    if not body:
        raise RequestError(400, "BadRequestImageStream", "the request holds no image bytes")
    return body


async def url_image(request: Request) -> bytes:
    """The image at the body's ``{"url": ...}``, fetched when an allowed prefix covers it."""
    settings: ServiceSettings = request.app.state.settings
    if not settings.allowed_urls:
        raise RequestError(
            400,
            "BadRequestImageUrl",
            "classify by URL is off on this server; start it with --allow-url PREFIX "
            "(e.g. --allow-url https://images.example.com/) or create_app(allow_urls=[...])",
        )
    raw = await read_body(request, URL_BODY_BYTES, settings.drain_limit_bytes)
    try:
        url = json.loads(raw)["url"] if raw else None
    except (ValueError, TypeError, KeyError):
        url = None
    if not isinstance(url, str) or not url:
        raise RequestError(
            400, "BadRequestImageUrl", 'the body must be JSON {"url": "https://..."}'
        )
    return await request.app.state.fetcher.fetch(url)


# ------------------------------------------------------------------------ routes


async def answer(request: Request, info: ModelInfo, body: bytes, store: bool) -> JSONResponse:
    """Decodes, predicts in the micro-batcher, answers; logs the image after answering."""
    settings: ServiceSettings = request.app.state.settings
    image = await run_in_threadpool(
        image_to_array, body, info.input_size, info.resize, settings.max_pixels
    )
    probs = await request.app.state.batcher.submit(image)
    result = prediction(info, probs)
    task = None
    if store and settings.log_callback is not None:
        task = BackgroundTask(call_logger, settings.log_callback, body, result)
    return JSONResponse(result, background=task)


RESPONSES: dict[int | str, dict[str, Any]] = {
    s: {"description": d}
    for s, d in {
        400: "empty body, bad form, undecodable image, or a URL refused",
        401: "missing Prediction-Key",
        403: "wrong Prediction-Key, or a cross-origin request",
        404: "unknown project id or iteration name",
        413: "body or image too large",
        415: "unsupported content type",
        429: "too many large images or URL fetches at once",
    }.items()
}


def _endpoint(find: Callable, read: Callable, store: bool, what: str) -> Callable:
    async def endpoint(
        request: Request,
        info: ModelInfo = Depends(find),  # noqa: B008 (FastAPI's idiom)
        body: bytes = Depends(read),  # noqa: B008
    ) -> JSONResponse:
        return await answer(request, info, body, store)

    endpoint.__doc__ = f"Classifies {what}" + ("." if store else "; the image is not kept.")
    return endpoint


prediction_routes = APIRouter(dependencies=[Security(require_key)], responses=RESPONSES)
_UPLOAD = "one image sent as raw bytes or a multipart ``imageData`` part"
_BY_URL = 'the image at ``{"url": ...}`` (allowed prefixes only)'
for _root, _find, _reads in (
    (SHORT_ROOT, served_iteration, (("image", uploaded_image, _UPLOAD),)),
    (
        HOSTED_ROOT,
        hosted_model,
        (("image", uploaded_image, _UPLOAD), ("url", url_image, _BY_URL)),
    ),
):
    for _suffix, _read, _what in _reads:
        for _store in (True, False):
            _path = f"{_root}/{_suffix}" + ("" if _store else "/nostore")
            prediction_routes.add_api_route(
                _path, _endpoint(_find, _read, _store, _what), methods=["POST"], name=_path
            )

health_routes = APIRouter()


@health_routes.get("/health")
async def health(request: Request) -> dict:
    """Whether the service is up, and which model it serves."""
    info: ModelInfo = request.app.state.info
    batcher: MicroBatcher = request.app.state.batcher
    return {
        "status": "ok",
        "iteration": info.published_name,
        "project": info.project_name,
        "project_id": info.project_id,
        "network": info.model_name,
        "kind": info.kind,
        "tags": info.tags,
        "url_classification": bool(request.app.state.settings.allowed_urls),
        "batches": batcher.batches,
        "images": batcher.images,
    }


def _package_version() -> str:
    from ..._version import __version__

    return __version__
