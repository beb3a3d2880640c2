"""The batch route: many images in one request, run on the model as one batch.

``POST .../classify/iterations/{name}/images`` (and ``/images/nostore``) under the short
and the hosted roots takes either

* a ``multipart/form-data`` form with one ``imageData`` part per image (``curl -F
  imageData=@a.jpg -F imageData=@b.jpg``; file parts of any name when none is called
  ``imageData``), or
* JSON ``{"images": ["<base64>", ...]}`` (a ``data:image/...;base64,`` prefix is allowed).

The request is bounded as a whole (``max_batch_images`` images, ``max_batch_bytes``
bytes: 400 ``BadRequestImageBatch`` / 413 ``BadRequestImageSizeBytes``); each image is
held to the single upload's rules (``check_image_bytes``, the pixel rule of
``image_to_array``). The answer holds one entry per image, in order: the hosted API's
``ImagePrediction`` for an image the model ran on, ``{"status", "code", "message"}`` for
one it could not read, so one broken image does not cost the others their answers.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import json

import numpy as np
from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from .body import check_image_bytes, form_images, image_to_array, read_body
from .deps import ServiceSettings, media_type
from .errors import RequestError
from .model import ModelInfo, call_logger, prediction

__all__ = ["DEFAULT_MAX_BATCH_BYTES", "DEFAULT_MAX_BATCH_IMAGES", "answer_batch", "batch_images"]

DEFAULT_MAX_BATCH_IMAGES = 64
"""Most images in one batch request (the model's largest batch, ``predict.PREDICT_BATCH``)."""
DEFAULT_MAX_BATCH_BYTES = 32_000_000
"""Largest body of a batch request (each image is still held to ``max_body_bytes``)."""


async def batch_images(request: Request) -> list[bytes | RequestError]:
    """The images of a batch request, in order (an entry that is no image is kept as its
    error), bounded in count and bytes."""
    settings: ServiceSettings = request.app.state.settings
    ctype, media = media_type(
        request,
        lambda media: media in ("multipart/form-data", "application/json"),
        'multipart/form-data (one imageData part per image) or JSON {"images": [...]} '
        "to the batch route",
    )
    body = await read_body(request, settings.max_batch_bytes, settings.drain_limit_bytes)
    images = form_images(ctype, body) if media == "multipart/form-data" else _json_images(body)
    if not images:
        raise RequestError(400, "BadRequestImageBatch", "the batch holds no image")
    if len(images) > settings.max_batch_images:
        raise RequestError(
            400,
            "BadRequestImageBatch",
            f"the batch holds {len(images)} images; at most {settings.max_batch_images} "
            "are taken in one request",
        )
    return images


def _json_images(body: bytes) -> list[bytes | RequestError]:
    try:
        given = json.loads(body)["images"]
    except (ValueError, TypeError, KeyError):
        given = None
    if not isinstance(given, list):
        raise RequestError(
            400, "BadRequestImageBatch", 'the body must be JSON {"images": ["<base64>", ...]}'
        )
    return [_base64_image(item) for item in given]


def _base64_image(item: object) -> bytes | RequestError:
    if isinstance(item, str) and item.startswith("data:") and "," in item:
        item = item.split(",", 1)[1]  # a data URL, as a browser's FileReader gives it
    try:
        if not isinstance(item, str):
            raise TypeError(type(item).__name__)
        return base64.b64decode(item, validate=True)
    except (binascii.Error, TypeError, ValueError) as exc:
        return RequestError(
            400, "BadRequestImageStream", f"not a base64 string ({type(exc).__name__}: {exc})"
        )


def _decode_all(
    images: list[bytes | RequestError], info: ModelInfo, settings: ServiceSettings
) -> list[np.ndarray | RequestError]:
    """Each image as the model's input array, or the error a single upload of it gets."""
    decoded: list[np.ndarray | RequestError] = []
    for number, data in enumerate(images, 1):
        try:
            if isinstance(data, RequestError):
                raise data
            if not data:
                raise RequestError(400, "BadRequestImageStream", "the image holds no bytes")
            check_image_bytes(len(data), settings.max_body_bytes, f"image of {len(data)} bytes")
            decoded.append(image_to_array(data, info.input_size, info.resize, settings.max_pixels))
        except RequestError as exc:
            exc.message = f"image {number}: {exc.message}"
            decoded.append(exc)
    return decoded


async def answer_batch(
    request: Request, info: ModelInfo, images: list[bytes | RequestError], store: bool
) -> JSONResponse:
    """Decodes every image, runs those that decoded as ONE batch on the model, answers
    each in order; logs the answered images after answering (not for ``/nostore``)."""
    settings: ServiceSettings = request.app.state.settings
    decoded = await run_in_threadpool(_decode_all, images, info, settings)
    arrays = [d for d in decoded if isinstance(d, np.ndarray)]
    probs = iter(await info.batcher.run(np.stack(arrays)) if arrays else [])
    results, kept = [], []
    for data, item in zip(images, decoded, strict=True):
        if isinstance(item, RequestError):
            results.append({"status": item.status, "code": item.code, "message": item.message})
            if request.app.state.metrics is not None:
                request.app.state.metrics.count_error(item.code)
            continue
        result = prediction(info, next(probs))
        results.append(result)
        kept.append((data, result))
    task = None
    if store and kept and settings.log_callback is not None:
        task = BackgroundTask(_log_all, settings.log_callback, kept)
    answer = {
        "project": info.project_id,
        "iteration": info.published_name,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds"),
        "images": len(results),
        "errors": len(results) - len(kept),
        "results": results,
    }
    return JSONResponse(answer, background=task)


def _log_all(callback, kept: list[tuple[bytes, dict]]) -> None:
    for data, result in kept:
        call_logger(callback, data, result)
