"""The FastAPI app: the prediction routes as an ``APIRouter`` (their dependencies in
``deps``, the batch route's reading and answer in ``batch``), the probes and ``/metrics``
in ``health``, the model and the batcher on ``app.state`` (loaded in the lifespan, never
at import; warmed up in the background while ``/readyz`` answers 503)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from .batch import DEFAULT_MAX_BATCH_BYTES, DEFAULT_MAX_BATCH_IMAGES, answer_batch, batch_images
from .body import drain, image_to_array
from .browsers import BrowserGuard, check_origin
from .deps import (
    ServiceSettings,
    hosted_model,
    require_key,
    served_iteration,
    uploaded_image,
    url_image,
)
from .errors import RequestError, error_response
from .health import health_routes, metrics_routes
from .model import MicroBatcher, ModelInfo, call_logger, prediction
from .observe import RequestObserver, ServiceMetrics
from .urls import UrlFetcher, parse_prefix

__all__ = ["DEFAULT_MAX_BODY_BYTES", "DEFAULT_MAX_PIXELS", "HOSTED_ROOT", "create_app"]

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 6_000_000
DEFAULT_MAX_PIXELS = 24_000_000
"""Non-JPEG images over this are refused from their header (a JPEG decodes reduced)."""
HOSTED_ROOT = "/customvision/{version}/{prediction}/{project_id}/classify/iterations/{name}"
SHORT_ROOT = "/classify/iterations/{name}"
DEFAULT_DRAIN_BYTES = 64 << 20
"""A key holder's over-limit body is read (and dropped) up to this many bytes before the
413 is sent, so that clients which send the whole body before reading get it."""
KEYLESS_BODY_BYTES = 64 << 10
"""A request without a valid key is answered after reading at most this much of its body."""


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
    max_batch_images: int = DEFAULT_MAX_BATCH_IMAGES,
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
    metrics: bool = True,
    access_log: bool = False,
    resolve: Callable[[str, str], Any] | None = None,
    routers: Sequence[tuple[str, APIRouter]] = (),
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
        warmup: run the model once per batch size (powers of two up to ``max_batch``
            and ``max_batch_images``) in the background once the server accepts
            requests; ``/readyz`` answers 503 until it is done (``/healthz`` answers 200
            at once). Requests arriving earlier are answered after it. Without it,
            ``/readyz`` answers 200 as soon as the model is loaded.
        max_batch_images: most images in one request to the batch route (``.../images``).
        max_batch_bytes: largest body of a batch request; each of its images is held to
            ``max_body_bytes`` and ``max_pixels`` as a single upload is.
        metrics: answer ``GET /metrics`` (Prometheus text, no key needed; a registry of
            this app's own).
        access_log: write one JSON line per request to the ``jupyter_imgclass.access``
            logger (time, method, path without the query, status, duration, client; never
            a header, so never the key).
        resolve: serve many models instead of ``model`` (which is then None):
            ``resolve(project_id, published_name)`` returns the :class:`Servable` the
            hosted routes answer with, or raises ``RequestError`` (404); it runs in a
            worker thread at each request, and each model it returns gets a micro-batcher
            of its own. The short routes answer 404 then. A workspace of projects plugs in
            here (the project layer's ``training_api.workspace_options``).
        routers: more route sets, ``(prefix, APIRouter)``, under the same guards and
            error answers (the project layer's Training API).

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
        max_batch_images=max_batch_images,
        max_batch_bytes=max_batch_bytes,
    )
    observed = ServiceMetrics() if metrics else None

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loaded = model
        app.state.fetcher = UrlFetcher(settings.allowed_urls, max_body_bytes, url_timeout_s)
        if model is None:  # many models: resolved per request (deps.resolved_model)
            app.state.info = app.state.batcher = None
            app.state.readiness = "ready"
            try:
                yield
            finally:
                app.state.readiness = "shutting down"
                app.state.fetcher.close()
                for info in list(app.state.resolved.values()):
                    await info.batcher.close()
            return
        if isinstance(model, str | os.PathLike):
            from ..bundle import load_model

            loaded = await run_in_threadpool(load_model, Path(model))
        info = ModelInfo(loaded, published_name, project_name, project_id)
        batcher = MicroBatcher(info.model.predict_arrays, batch_window_s, max_batch)
        batcher.start()
        if observed is not None:
            observed.describe(info, batcher)
        info.batcher = batcher
        app.state.info, app.state.batcher = info, batcher
        app.state.readiness = "warming up" if warmup else "ready"
        sizes = warmup_sizes(max(max_batch, max_batch_images)) if warmup else []
        warming = asyncio.get_running_loop().create_task(warm_up(app, sizes))
        try:
            yield
        finally:
            app.state.readiness = "shutting down"
            warming.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await warming
            app.state.fetcher.close()
            await batcher.close()

    app = FastAPI(
        title="jupyter_imgclass prediction service",
        description="A drop-in for the hosted Custom Vision prediction API (v3.0, v3.1).",
        version=_package_version(),
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = observed
    app.state.resolve, app.state.resolved = resolve, {}
    app.state.batching = (batch_window_s, max_batch)
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
            allow_headers=["Prediction-Key", "Training-Key", "Content-Type"],
        )
    if observed is not None or access_log:
        app.add_middleware(RequestObserver, metrics=observed, access_log=access_log)
    app.include_router(prediction_routes)
    app.include_router(health_routes)
    if observed is not None:
        app.include_router(metrics_routes)
    for prefix, router in routers:
        app.include_router(router, prefix=prefix)
    return app


def warmup_sizes(largest: int) -> list[int]:
    """The batch sizes the warm-up runs: powers of two up to ``largest``, and it.

    Examples:
        >>> warmup_sizes(48)
        [1, 2, 4, 8, 16, 32, 48]
    """
    return sorted({min(2**i, largest) for i in range(largest.bit_length() + 1)})


async def warm_up(app: FastAPI, sizes: Sequence[int]) -> None:
    """Runs a blank batch of each size on the model's worker thread (so it compiles
    before traffic arrives), then marks the app ready; a failure leaves it not ready."""
    info: ModelInfo = app.state.info
    try:
        for n in sizes:
            blank = np.zeros((n, info.input_size, info.input_size, 3), np.uint8)
            await app.state.batcher.run(blank, count=False)
    except Exception as exc:  # the model cannot run: /readyz says so, the log has why
        incident = uuid.uuid4().hex[:12]
        log.error("warm-up failed (incident %s)", incident, exc_info=exc)
        app.state.readiness = f"warm-up failed (incident {incident}; the log has the details)"
        return
    app.state.readiness = "ready"


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


# ------------------------------------------------------------------------ routes


async def answer(request: Request, info: ModelInfo, body: bytes, store: bool) -> JSONResponse:
    """Decodes, predicts in the micro-batcher, answers; logs the image after answering."""
    settings: ServiceSettings = request.app.state.settings
    image = await run_in_threadpool(
        image_to_array, body, info.input_size, info.resize, settings.max_pixels
    )
    probs = await info.batcher.submit(image)
    result = prediction(info, probs)
    task = None
    if store and settings.log_callback is not None:
        task = BackgroundTask(call_logger, settings.log_callback, body, result)
    return JSONResponse(result, background=task)


RESPONSES: dict[int | str, dict[str, Any]] = {
    s: {"description": d}
    for s, d in {
        400: "empty body, bad form, undecodable image, a URL refused, or a batch that is "
        "empty or holds too many images",
        401: "missing Prediction-Key",
        403: "wrong Prediction-Key, or a cross-origin request",
        404: "unknown project id or iteration name",
        413: "body or image too large (or a batch over its total bytes)",
        415: "unsupported content type",
        429: "too many large images or URL fetches at once",
    }.items()
}


def _endpoint(find: Callable, read: Callable, store: bool, what: str, reply=None) -> Callable:
    """A route's function: the model from ``find``, the body from ``read``, answered by
    ``reply`` (:func:`answer` by default; :func:`batch.answer_batch` for the batch route)."""
    reply = reply or answer

    async def endpoint(
        request: Request,
        info: ModelInfo = Depends(find),  # noqa: B008 (FastAPI's idiom)
        body: Any = Depends(read),  # noqa: B008
    ) -> JSONResponse:
        return await reply(request, info, body, store)

    endpoint.__doc__ = f"Classifies {what}" + ("." if store else "; nothing sent is kept.")
    return endpoint


prediction_routes = APIRouter(dependencies=[Security(require_key)], responses=RESPONSES)
_UPLOAD = "one image sent as raw bytes or a multipart ``imageData`` part"
_BY_URL = 'the image at ``{"url": ...}`` (allowed prefixes only)'
_BATCH = (
    'several images, as multipart ``imageData`` parts or JSON ``{"images": ["<base64>", '
    "...]}``, run on the model as one batch; one answer per image, in order, a broken "
    "image answered by its own error entry"
)
for _root, _find, _reads in (
    (SHORT_ROOT, served_iteration, (("image", uploaded_image, _UPLOAD),)),
    (
        HOSTED_ROOT,
        hosted_model,
        (("image", uploaded_image, _UPLOAD), ("url", url_image, _BY_URL)),
    ),
):
    for _store in (True, False):
        _tail = "" if _store else "/nostore"
        for _suffix, _read, _what in _reads:
            _path = f"{_root}/{_suffix}{_tail}"
            prediction_routes.add_api_route(
                _path, _endpoint(_find, _read, _store, _what), methods=["POST"], name=_path
            )
        _path = f"{_root}/images{_tail}"
        _function = _endpoint(_find, batch_images, _store, _BATCH, answer_batch)
        prediction_routes.add_api_route(_path, _function, methods=["POST"], name=_path)


def _package_version() -> str:
    from ..._version import __version__

    return __version__
