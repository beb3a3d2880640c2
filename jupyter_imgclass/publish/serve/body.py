"""Reading a request: the bounded body, the multipart form, the image decode."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import Request

from ...errors import BadImageError
from .errors import RequestError

__all__ = [
    "check_image_bytes",
    "drain",
    "form_image",
    "form_images",
    "form_parts",
    "image_to_array",
    "read_body",
]

MAX_BOUNDARY = 70
"""RFC 2046's longest multipart boundary."""


async def drain(request: Request, limit: int, received: int = 0) -> None:
    """Reads and drops what is left of the body, up to ``limit`` bytes, so that a client
    still sending it receives the error answer instead of a reset (the connection guard
    drops the rest after the answer)."""
    state = request.scope.setdefault("state", {})
    if state.get("imgclass_body_read"):
        return
    state["imgclass_body_read"] = True
    if request.headers.get("expect", "").lower() == "100-continue":
        return  # the client waits for "100 Continue" before it sends anything
    more = True
    while more and received <= limit:
        message = await request.receive()
        if message["type"] != "http.request":
            return
        received += len(message.get("body", b""))
        more = message.get("more_body", False)


def check_image_bytes(size: int | None, limit: int, what: str = "request body") -> None:
    """The size rule: over ``limit`` bytes is a 413 ``BadRequestImageSizeBytes`` (a whole
    body as it arrives, one image of a batch after it).

    Raises:
        RequestError: when ``size`` (None: not known yet) exceeds ``limit``.
    """
    if size is not None and size > limit:
        raise RequestError(413, "BadRequestImageSizeBytes", f"{what} exceeds {limit} bytes")


async def read_body(request: Request, limit: int, drain_limit: int) -> bytes:
    """The whole body, or a 413 once it passes ``limit`` (the rest drained first)."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit():
        # the error handler drains the body
        check_image_bytes(int(length), limit, f"request body of {length} bytes")
    request.scope.setdefault("state", {})["imgclass_body_read"] = True
    parts, received = [], 0
    more = True
    while more:
        message = await request.receive()
        if message["type"] != "http.request":
            raise RequestError(400, "BadRequestImageStream", "the client went away")
        chunk = message.get("body", b"")
        received += len(chunk)
        more = message.get("more_body", False)
        if received > limit:
            if more:
                request.scope["state"]["imgclass_body_read"] = False
                await drain(request, drain_limit, received)
            check_image_bytes(received, limit)
        parts.append(chunk)
    return b"".join(parts)


def image_to_array(body: bytes, input_size: int, resize: str, max_pixels: int) -> np.ndarray:
    """Decodes request bytes to a uint8 ``[S, S, 3]`` array exactly as ``Predictor`` does
    (made square as the model's ``resize`` says).

    ``data.images`` holds the one pixel rule (a JPEG decodes reduced; other formats over
    ``max_pixels`` are refused from their header, before any pixel is decoded) and the
    process's shared decode memory, so N concurrent requests stay within it.
    """
    from ...data import images

    try:
        return images.load_rgb(
            body, input_size, name="request body", max_pixels=max_pixels, resize=resize
        )
    except BadImageError as exc:
        text = str(exc)
        if "too large" in text or "decompression bomb" in text or "decode budget" in text:
            raise RequestError(413, "BadRequestImageDimensions", text) from None
        if "no decode memory free" in text:
            raise RequestError(429, "TooManyRequests", text) from None
        raise RequestError(400, "BadRequestImageFormat", text) from None
    except Exception as exc:  # a decoder failing half-way through a corrupt file
        raise RequestError(
            400,
            "BadRequestImageFormat",
            f"image could not be decoded ({type(exc).__name__}: {exc})",
        ) from None


def form_image(content_type: str, body: bytes) -> bytes:
    """The image part of a ``multipart/form-data`` body: the part named ``imageData``
    (the hosted SDK sends it without a filename), else the first file part."""
    images = form_images(content_type, body)
    if not images:
        names = ", ".join(repr(p["name"]) for p in form_parts(content_type, body)) or "none"
        raise RequestError(
            400,
            "BadRequestImageStream",
            f"multipart form holds no image: send it as the imageData part (parts: {names})",
        )
    return images[0]


def form_images(content_type: str, body: bytes) -> list[bytes]:
    """The image parts of a ``multipart/form-data`` body, in order: those named
    ``imageData`` (the hosted SDK's name), else the file parts; possibly none.

    Raises:
        RequestError: 400 for a bad form.
    """
    parts = form_parts(content_type, body)
    chosen = [p for p in parts if p["name"] == "imageData"] or [p for p in parts if p["file"]]
    return [p["data"] for p in chosen]


def form_parts(content_type: str, body: bytes) -> list[dict]:
    """Every part of a ``multipart/form-data`` body as ``{"name", "file", "data"}``.

    Raises:
        RequestError: 400 for a missing or over-long boundary or a malformed form.
    """
    from python_multipart.multipart import MultipartParser, parse_options_header

    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise RequestError(400, "BadRequest", "bad multipart form: no boundary")
    if len(boundary) > MAX_BOUNDARY:
        raise RequestError(
            400,
            "BadRequest",
            f"bad multipart form: a boundary of {len(boundary)} characters "
            f"(RFC 2046 allows at most {MAX_BOUNDARY})",
        )
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

    try:
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
        parser.write(body)
        parser.finalize()
    except Exception as exc:  # python-multipart raises its own error types on bad forms
        raise RequestError(400, "BadRequest", f"bad multipart form: {exc}") from None
    return parts
