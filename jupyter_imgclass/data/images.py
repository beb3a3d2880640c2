"""Image decoding in one place: strict and total.

Whatever a user hands over (a path, bytes, a PIL image, a numpy array) either becomes an
RGB image with EXIF orientation applied, or a :class:`BadImageError` naming the input and
the reason. Odd modes are converted (CMYK, palette with transparency, LA/RGBA composited on
white, 16-bit and float scaled by their range, 1-bit); animated images give their first
frame; huge images are decoded reduced without materialising the full raster; truncated,
empty, non-image files and decompression bombs are refused.

Examples:
    >>> import numpy as np
    >>> d = decode_image(np.zeros((4, 6, 3), np.uint8))
    >>> (d.width, d.height, d.image.mode)
    (6, 4, 'RGB')
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import BadImageError

DEFAULT_MAX_PIXELS = 40_000_000  # what we keep; larger images are decoded reduced
BOMB_FACTOR = 16  # a header claiming more than this times the limit is refused outright
MAX_FILE_BYTES = 200_000_000
IMAGE_EXTENSIONS = {
    ".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp",
    ".ppm", ".pgm", ".pbm", ".ico",
}  # fmt: skip
_KEEP_FORMATS = {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif", "BMP": ".bmp", "WEBP": ".webp",
                 "TIFF": ".tif", "PPM": ".ppm", "ICO": ".ico", "MPO": ".jpg"}  # fmt: skip


@dataclass(frozen=True)
class DecodedImage:
    """A decoded image.

    Attributes:
        image: the RGB image, EXIF orientation applied, fully loaded.
        width: width in pixels after orientation (and reduction).
        height: height in pixels after orientation (and reduction).
        format: the file format Pillow saw (``"JPEG"``...) or None for arrays / PIL input.
        original_mode: the mode before conversion (``"CMYK"``, ``"I;16"``...).
        reduced: True when the image was too large and was decoded at a smaller size.
    """

    image: Image.Image
    width: int
    height: int
    format: str | None
    original_mode: str
    reduced: bool
    oriented: bool = False


def sniff_is_image_name(path: str | os.PathLike) -> bool:
    """True when the file name has a common image extension (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def _name_of(source: Any, name: str | None) -> str:
    if name is not None:
        return name
    if isinstance(source, str | os.PathLike):
        return str(source)
    return type(source).__name__


def _read_source(source: Any, name: str) -> bytes:
    path = Path(source)
    try:
        if path.is_dir():
            raise BadImageError(f"{name}: is a folder, not an image file")
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise BadImageError(
                f"{name}: file of {size:,} bytes is larger than the {MAX_FILE_BYTES:,} byte limit"
            )
        return path.read_bytes()
    except FileNotFoundError:
        raise BadImageError(f"{name}: no such file") from None
    except PermissionError:
        raise BadImageError(f"{name}: permission denied") from None
    except IsADirectoryError:
        raise BadImageError(f"{name}: is a folder, not an image file") from None
    except OSError as exc:
        raise BadImageError(f"{name}: cannot read ({exc.strerror or exc})") from None


def _to_rgb(im: Image.Image) -> Image.Image:
    """Converts any Pillow mode to RGB; transparency is composited on white."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode == "P":
        im = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
        mode = im.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        return Image.fromarray(_scale_to_uint8(arr)).convert("RGB")
    if mode == "1":
        return im.convert("L").convert("RGB")
    return im.convert("RGB")  # L, CMYK, YCbCr, LAB, HSV


def _scale_to_uint8(arr: np.ndarray) -> np.ndarray:
    """Scales a high-bit-depth or float array to uint8 by its real range (not clipping)."""
    finite = np.isfinite(arr)
    if not finite.any():
        return np.zeros(arr.shape, np.uint8)
    lo, hi = float(arr[finite].min()), float(arr[finite].max())
    if hi <= lo:
        level = 255 if hi > 0 else 0
        return np.full(arr.shape, level, np.uint8)
    arr = np.where(finite, arr, lo)
    return np.clip((arr - lo) / (hi - lo) * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _array_to_pil(arr: Any, name: str) -> Image.Image:
    a = np.asarray(arr)
    if a.size == 0 or a.ndim not in (2, 3):
        raise BadImageError(f"{name}: array of shape {a.shape} is not an image (need HxW or HxWxC)")
    if a.ndim == 3 and a.shape[2] not in (1, 3, 4):
        raise BadImageError(f"{name}: array with {a.shape[2]} channels (need 1, 3 or 4)")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    elif a.dtype == np.uint8:
        pass
    elif a.dtype == np.uint16:
        a = (a.astype(np.float64) / 65535.0 * 255.0 + 0.5).astype(np.uint8)
    elif np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise BadImageError(f"{name}: float array contains NaN or infinity")
        if a.min() < 0 or a.max() > 1:
            raise BadImageError(
                f"{name}: float array values in [{a.min():.3g}, {a.max():.3g}]; "
                "need [0, 1] (or pass uint8)"
            )
        a = (a * 255.0 + 0.5).astype(np.uint8)
    else:
        raise BadImageError(f"{name}: array of dtype {a.dtype} (need uint8, uint16, bool or float)")
    if a.ndim == 3 and a.shape[2] == 4:
        return Image.fromarray(np.ascontiguousarray(a), "RGBA")
    return Image.fromarray(np.ascontiguousarray(a))


def decode_image(
    source: Any, *, max_pixels: int = DEFAULT_MAX_PIXELS, name: str | None = None
) -> DecodedImage:
    """Decodes any supported input to RGB, strictly.

    Args:
        source: a path, bytes, a PIL image, or a numpy array (HxW, HxWx1/3/4; uint8,
            uint16, bool, or float in [0, 1]).
        max_pixels: larger images are decoded reduced to at most this many pixels; a
            header claiming more than 16 times this is refused as a decompression bomb.
        name: how to call the input in error messages (defaults to the path or type).

    Raises:
        BadImageError: ``"<name>: <reason>"`` for anything that is not a usable image.
    """
    name = _name_of(source, name)
    if isinstance(source, Image.Image):
        try:
            source.load()
            im = _first_frame(source)
            mode = im.mode
            oriented = ImageOps.exif_transpose(im)
            rgb = _to_rgb(oriented)
        except (OSError, ValueError) as exc:
            raise BadImageError(f"{name}: unusable PIL image ({exc})") from None
        rgb = _limit(rgb, max_pixels)
        reduced = rgb.size != oriented.size
        return DecodedImage(rgb, rgb.width, rgb.height, None, mode, reduced)
    if isinstance(source, np.ndarray):
        im = _array_to_pil(source, name)
        mode = im.mode
        rgb = _limit(_to_rgb(im), max_pixels)
        return DecodedImage(rgb, rgb.width, rgb.height, None, mode, rgb.size != im.size)
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
    elif isinstance(source, str | os.PathLike):
        data = _read_source(source, name)
    else:
        raise BadImageError(
            f"{name}: unsupported input of type {type(source).__name__} "
            "(give a path, bytes, a PIL image or a numpy array)"
        )
    return _decode_bytes(data, name, max_pixels)


def _first_frame(im: Image.Image) -> Image.Image:
    if getattr(im, "is_animated", False):
        im.seek(0)
        frame = im.copy()
        frame.info = dict(im.info)
        return frame
    return im


def _limit(im: Image.Image, max_pixels: int) -> Image.Image:
    if im.width * im.height <= max_pixels:
        return im
    scale = (max_pixels / (im.width * im.height)) ** 0.5
    size = (max(1, int(im.width * scale)), max(1, int(im.height * scale)))
    return im.resize(size, Image.Resampling.LANCZOS)


def _decode_bytes(data: bytes, name: str, max_pixels: int) -> DecodedImage:
    if not data:
        raise BadImageError(f"{name}: empty file (0 bytes)")
    bomb_limit = max_pixels * BOMB_FACTOR
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            fmt = im.format
            w, h = im.size
            if w * h > bomb_limit:
                raise BadImageError(
                    f"{name}: decompression bomb: {w}x{h} pixels exceeds the limit of "
                    f"{bomb_limit:,} pixels"
                )
            mode = im.mode
            reduced = False
            if w * h > max_pixels:
                reduced = True
                if fmt == "JPEG":
                    # Let the JPEG decoder produce a 1/2, 1/4 or 1/8 scale image directly.
                    scale = (max_pixels / (w * h)) ** 0.5
                    im.draft("RGB", (max(1, int(w * scale)), max(1, int(h * scale))))
            # Pillow's own bomb check uses a global limit; ours is explicit above.
            saved_limit = Image.MAX_IMAGE_PIXELS
            try:
                Image.MAX_IMAGE_PIXELS = None
                im = _first_frame(im)
                im.load()
            finally:
                Image.MAX_IMAGE_PIXELS = saved_limit
            oriented = ImageOps.exif_transpose(im)
            was_oriented = oriented.size != im.size or oriented is not im
            rgb = _to_rgb(oriented)
            limited = _limit(rgb, max_pixels)
            reduced = reduced or limited.size != rgb.size
    except BadImageError:
        raise
    except UnidentifiedImageError:
        raise BadImageError(f"{name}: not an image (unrecognised format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadImageError(f"{name}: decompression bomb ({exc})") from None
    except OSError as exc:
        text = str(exc)
        if "truncated" in text or "image file is truncated" in text or "broken data" in text:
            raise BadImageError(f"{name}: truncated image data ({text})") from None
        raise BadImageError(f"{name}: truncated or corrupt image data ({text})") from None
    except (ValueError, SyntaxError, EOFError, struct.error) as exc:
        raise BadImageError(f"{name}: corrupt image data ({type(exc).__name__}: {exc})") from None
    except MemoryError:
        raise BadImageError(f"{name}: too large to decode in memory") from None
    return DecodedImage(
        limited, limited.width, limited.height, fmt, mode, reduced, oriented=was_oriented
    )


def to_storable(
    source: Any, *, name: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[bytes, str, DecodedImage]:
    """The bytes to store for ``source``, their extension, and the decoded image.

    A file that decodes fine at full size is stored as its original bytes (so its sha256
    is the file's, and duplicates under other names are found). PIL images, arrays and
    reduced huge images are stored as PNG (JPEG for reduced photos).
    """
    name = _name_of(source, name)
    decoded = decode_image(source, max_pixels=max_pixels, name=name)
    if isinstance(source, bytes | bytearray | memoryview | str | os.PathLike):
        data = bytes(source) if not isinstance(source, str | os.PathLike) else None
        if data is None:
            data = _read_source(source, name)
        ext = _KEEP_FORMATS.get(decoded.format or "")
        if not decoded.reduced and ext is not None:
            return data, ext, decoded
        if decoded.reduced and decoded.format == "JPEG":
            return encode_jpeg(decoded.image), ".jpg", decoded
    return encode_png(decoded.image), ".png", decoded


def encode_png(image: Image.Image) -> bytes:
    """PNG bytes of an image."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def encode_jpeg(image: Image.Image, quality: int = 92) -> bytes:
    """JPEG bytes of an RGB image."""
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def thumbnail_bytes(image: Image.Image, size: int = 160) -> bytes:
    """JPEG bytes of a thumbnail whose longer side is ``size`` (aspect kept)."""
    thumb = image.convert("RGB").copy()
    thumb.thumbnail((size, size), Image.Resampling.LANCZOS)
    return encode_jpeg(thumb, quality=85)


def load_rgb(source: Any, size: int | None = None, *, name: str | None = None) -> np.ndarray:
    """uint8 ``HxWx3`` pixels, resized (squashed) to ``size x size`` when given."""
    image = decode_image(source, name=name).image
    if size is not None and image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
    return np.asarray(image, dtype=np.uint8)
