"""The routes' dependencies: the settings, the key as a ``Security`` dependency, the
model lookup for the short and the hosted routes, and the bounded body of an upload or
of a classify-by-URL request."""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request, Security
from fastapi.security import APIKeyHeader
from starlette.concurrency import run_in_threadpool

from .body import form_image, read_body
from .errors import RequestError
from .model import MicroBatcher, ModelInfo

__all__ = [
    "HOSTED_VERSIONS",
    "ServiceSettings",
    "hosted_model",
    "media_type",
    "require_key",
    "served_iteration",
    "uploaded_image",
    "url_image",
]

HOSTED_VERSIONS = ("v3.0", "v3.1")
"""The hosted prediction API versions whose routes the service answers."""
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
    max_batch_images: int = 64
    max_batch_bytes: int = 32_000_000


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
    info: ModelInfo | None = request.app.state.info
    if info is None:
        raise RequestError(
            404,
            "NotFoundIteration",
            "this server serves a workspace of projects: call "
            f"/customvision/v3.0/Prediction/{{projectId}}/classify/iterations/{name}/image",
        )
    if name != info.published_name:
        raise RequestError(
            404,
            "NotFoundIteration",
            f"iteration {name!r} is not published here; use {info.published_name!r}",
        )
    return info


async def hosted_model(
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
    if request.app.state.resolve is not None:
        return await resolved_model(request, project_id.lower(), name)
    if project_id.lower() != info.project_id:
        raise RequestError(
            404,
            "NotFoundProject",
            f"project {project_id!r} is not served here (this server answers to project id "
            f"{info.project_id}; `serve --project-id` sets it)",
        )
    return served_iteration(request, name)


def media_type(request: Request, accepted: Callable[[str], bool], hint: str) -> tuple[str, str]:
    """``(content type, media type)`` of a request, or a 415 saying what to send (``hint``)."""
    ctype = request.headers.get("content-type", "application/octet-stream")
    media = ctype.split(";", 1)[0].strip().lower()
    if not accepted(media):
        raise RequestError(
            415, "UnsupportedMediaType", f"content type {media!r} is not accepted; send {hint}"
        )
    return ctype, media


def _upload_media(media: str) -> bool:
    return media in ("multipart/form-data", "application/octet-stream") or media.startswith(
        "image/"
    )


async def resolved_model(request: Request, project_id: str, name: str) -> ModelInfo:
    """The model ``create_app(resolve=...)`` finds for the project and published name,
    with a micro-batcher of its own (made on first use; a model published anew under the
    same name gets a new one, the old one is closed when the app stops)."""
    app = request.app
    model = await run_in_threadpool(app.state.resolve, project_id, name)
    key = (project_id, name, id(model))
    info = app.state.resolved.get(key)
    if info is None:
        info = ModelInfo(model, name, None, project_id)
        info.batcher = MicroBatcher(model.predict_arrays, *app.state.batching)
        info.batcher.start()
        app.state.resolved[key] = info
    return info


async def uploaded_image(request: Request) -> bytes:
    """The image of an upload: the raw body or a form's ``imageData`` part, bounded."""
    settings: ServiceSettings = request.app.state.settings
    ctype, media = media_type(
        request, _upload_media, "application/octet-stream, image/* or multipart/form-data"
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
