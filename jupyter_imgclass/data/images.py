"""Image decoding in one place: strict and total.

Whatever a user hands over (a path, bytes, a PIL image, a numpy array) either becomes an
RGB image with EXIF orientation applied, or a :class:`BadImageError` naming the input and
the reason. Odd modes are converted (CMYK, palette with transparency, LA/RGBA composited on
white, 16-bit and float scaled by their actual range, 1-bit); animated images give their
first frame; huge images are decoded reduced (JPEG through the decoder's own 1/2, 1/4, 1/8
scaling, so the full raster never exists); truncated, empty, non-image files and
decompression bombs are refused.

Nothing here touches Pillow's global state (``Image.MAX_IMAGE_PIXELS``,
``ImageFile.LOAD_TRUNCATED_IMAGES``, warning filters), so decoding is safe from several
threads at once (the REST service decodes in a thread pool).

Examples:
    >>> import numpy as np
    >>> d = decode_image(np.zeros((4, 6, 3), np.uint8))
    >>> (d.width, d.height, d.image.mode)
    (6, 4, 'RGB')
    >>> decode_image(b"", name="x.jpg")
    Traceback (most recent call last):
    ...
    jupyter_imgclass.errors.BadImageError: x.jpg: empty file (0 bytes)
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import stat
import struct
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from ..errors import BadImageError

DEFAULT_MAX_PIXELS = 40_000_000
"""Largest image kept (width x height); larger ones are decoded reduced to fit."""
BOMB_FACTOR = 16
"""A header claiming more than this times ``max_pixels`` is refused as a decompression bomb."""
MAX_FILE_BYTES = 200_000_000
"""Files larger than this are refused before they are read."""
HEADER_BYTES = 1 << 20
"""What :func:`unreadable_reason` reads of a file: every common format's header fits."""
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp",
     ".ppm", ".pgm", ".pbm", ".ico"}
)  # fmt: skip
# Formats whose original bytes are stored as they are, with the extension to store them under.
_KEEP_FORMATS = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "GIF": ".gif", "BMP": ".bmp",
                 "WEBP": ".webp", "TIFF": ".tif", "PPM": ".ppm", "ICO": ".ico"}  # fmt: skip
# Pillow plugins never used on user data: EPS runs Ghostscript on the file.
_REFUSED_FORMATS = {"EPS"}
_HIGH_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


@dataclass(frozen=True)
class DecodedImage:
    """A decoded image.

    Attributes:
        image: the RGB image, EXIF orientation applied, fully loaded.
        width: width in pixels after orientation (and reduction).
        height: height in pixels after orientation (and reduction).
        format: the file format Pillow saw (``"JPEG"``...); for a PIL image its own
            ``format`` (None when made in memory); None for arrays.
        original_mode: the mode before conversion (``"CMYK"``, ``"I;16"``...).
        reduced: True when the image was decoded at a smaller size than stored in the file
            (too large for ``max_pixels``, or a ``target_size`` hint allowed it).
        oriented: True when an EXIF orientation was applied.
    """

    image: Image.Image
    width: int
    height: int
    format: str | None
    original_mode: str
    reduced: bool
    oriented: bool = False


def sniff_is_image_name(path: str | os.PathLike) -> bool:
    """True when the file name has a common image extension (case-insensitive).

    Examples:
        >>> sniff_is_image_name("IMG_0001.JPG"), sniff_is_image_name("notes.txt")
        (True, False)
    """
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


def read_regular_file(source: str | os.PathLike, name: str, prefix: int | None = None) -> bytes:
    """The bytes of a regular file, at most ``MAX_FILE_BYTES`` (only its first ``prefix``
    bytes when given).

    The file is opened without blocking and checked on the open descriptor, so a FIFO
    never hangs the import and a link to ``/dev/zero`` is not read until memory runs out.

    Raises:
        BadImageError: ``f"{name}: <reason>"`` for a missing, unreadable, too large or
            not regular file.
    """
    path = Path(source)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        raise BadImageError(f"{name}: no such file") from None
    except PermissionError:
        raise BadImageError(f"{name}: permission denied") from None
    except IsADirectoryError:
        raise BadImageError(f"{name}: is a folder, not an image file") from None
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a socket, or a device with nothing behind it
            raise BadImageError(f"{name}: not a regular file (a socket or device)") from None
        raise BadImageError(f"{name}: cannot read ({exc.strerror or exc})") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise BadImageError(f"{name}: is a folder, not an image file")
        if not stat.S_ISREG(info.st_mode):
            raise BadImageError(f"{name}: not a regular file ({_file_kind(info.st_mode)})")
        if info.st_size > MAX_FILE_BYTES:
            raise BadImageError(
                f"{name}: file of {info.st_size:,} bytes is larger than the "
                f"{MAX_FILE_BYTES:,} byte limit"
            )
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as fh:
            if prefix is not None:
                return fh.read(prefix)
            data = fh.read(MAX_FILE_BYTES + 1)  # bounded even if the file grows meanwhile
        if len(data) > MAX_FILE_BYTES:
            raise BadImageError(f"{name}: file grew past the {MAX_FILE_BYTES:,} byte limit")
        return data
    except OSError as exc:
        raise BadImageError(f"{name}: cannot read ({exc.strerror or exc})") from None
    finally:
        os.close(fd)


def _file_kind(mode: int) -> str:
    for test, kind in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return kind
    return "a special file"


# ------------------------------------------------------------------------------ modes


def _to_rgb(im: Image.Image) -> Image.Image:
    """Converts any Pillow mode to RGB; transparency is composited on white."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode == "P":
        has_alpha = (
            "transparency" in im.info or im.palette is not None and im.palette.mode == "RGBA"
        )
        im = im.convert("RGBA") if has_alpha else im.convert("RGB")
        mode = im.mode
    elif mode in ("L", "RGB") and "transparency" in im.info:
        im = im.convert("RGBA")
        mode = im.mode
    if mode in _ALPHA_MODES:
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode in _HIGH_BIT_MODES:
        arr = np.asarray(im)
        return Image.fromarray(_scale_to_uint8(arr)).convert("RGB")
    if mode == "1":
        return im.convert("L").convert("RGB")
    return im.convert("RGB")  # L, CMYK, YCbCr, LAB, HSV, RGBX


def _scale_to_uint8(arr: np.ndarray) -> np.ndarray:
    """Scales high-bit-depth or float values to uint8 by their actual range (no clipping).

    A constant image maps to black (0) when its value is <= 0, else to white.
    """
    arr = np.asarray(arr, dtype=np.float64)
    finite = np.isfinite(arr)
    if not finite.any():
        return np.zeros(arr.shape, np.uint8)
    lo, hi = float(arr[finite].min()), float(arr[finite].max())
    if hi <= lo:
        return np.full(arr.shape, 255 if hi > 0 else 0, np.uint8)
    arr = np.where(finite, arr, lo)
    return np.clip((arr - lo) * (255.0 / (hi - lo)) + 0.5, 0, 255).astype(np.uint8)


def _array_to_pil(arr: Any, name: str) -> Image.Image:
    a = np.asarray(arr)
    if a.dtype == object or a.size == 0 or a.ndim not in (2, 3):
        raise BadImageError(
            f"{name}: array of shape {a.shape} and dtype {a.dtype} is not an image "
            "(need HxW or HxWxC with C = 1, 3 or 4)"
        )
    if a.ndim == 3 and a.shape[2] not in (1, 3, 4):
        raise BadImageError(
            f"{name}: array of shape {a.shape} has {a.shape[2]} channels (need 1, 3 or 4; "
            "channels last)"
        )
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    elif a.dtype == np.uint8:
        pass
    elif a.dtype == np.uint16:
        a = _scale_to_uint8(a)  # by the actual range, as 16-bit image files are
    elif np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise BadImageError(f"{name}: float array contains NaN or infinity")
        lo, hi = float(a.min()), float(a.max())
        if lo < 0 or hi > 1:
            raise BadImageError(
                f"{name}: float array values in [{lo:.3g}, {hi:.3g}]; need [0, 1] "
                "(or pass uint8 in [0, 255])"
            )
        a = (a.astype(np.float64) * 255.0 + 0.5).astype(np.uint8)
    else:
        raise BadImageError(
            f"{name}: array of dtype {a.dtype} is not supported (need uint8, uint16, bool or "
            "float in [0, 1]; e.g. convert with .astype(np.uint8))"
        )
    a = np.ascontiguousarray(a)
    if a.ndim == 3 and a.shape[2] == 4:
        return Image.fromarray(a, "RGBA")
    return Image.fromarray(a)


# ---------------------------------------------------------------------------- opening


def _open_unchecked(data: bytes) -> ImageFile.ImageFile:
    """Identifies ``data`` like ``Image.open`` but without Pillow's global pixel check.

    ``Image.open`` compares the header's size with the process-wide
    ``Image.MAX_IMAGE_PIXELS`` (a warning, or an error at twice it); silencing the warning
    would need ``warnings.catch_warnings``, which is not thread-safe. We apply our own,
    per-call limit right after identification instead, with the real dimensions in the
    message.
    """
    if not (hasattr(Image, "OPEN") and hasattr(Image, "ID")):  # pragma: no cover
        return Image.open(io.BytesIO(data))  # a Pillow without the plugin registry
    Image.preinit()  # the common formats first, in the order Image.open tries them
    Image.init()
    fp = io.BytesIO(data)
    prefix = data[:16]
    for fmt in list(Image.ID):
        if fmt in _REFUSED_FORMATS or fmt not in Image.OPEN:
            continue
        factory, accept = Image.OPEN[fmt]
        try:
            if accept is not None:
                verdict = accept(prefix)
                if isinstance(verdict, str) or not verdict:
                    continue
            fp.seek(0)
            return factory(fp, "")
        except (SyntaxError, IndexError, TypeError, struct.error):
            continue
    raise UnidentifiedImageError("cannot identify image file")


def _not_an_image_reason(data: bytes) -> str:
    head = data[:512].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")) or b"<html" in head:
        return "not an image (unrecognised format: looks like an HTML page)"
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in data[:4096].lower()):
        return "not an image (unrecognised format: SVG vector graphics are not supported)"
    if data[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftyphevc"):
        return "not an image (unrecognised format: HEIC/HEIF is not supported; convert to JPEG)"
    if data.startswith(b"PK\x03\x04"):
        return "not an image (unrecognised format: a ZIP archive)"
    if data.startswith(b"%PDF"):
        return "not an image (unrecognised format: a PDF document)"
    if data.startswith((b"%!PS", b"\xc5\xd0\xd3\xc6")):
        return "not an image (unrecognised format: PostScript/EPS is not supported)"
    sample = data[:1024]
    if sample and all(b in b"\t\n\r\f" or 32 <= b < 127 or b >= 128 for b in sample):
        try:
            sample.decode("utf-8")
            return "not an image (unrecognised format: looks like text)"
        except UnicodeDecodeError:
            pass
    return "not an image (unrecognised format)"


def _first_frame(im: Image.Image) -> Image.Image:
    if getattr(im, "is_animated", False) and im.tell() != 0:
        im.seek(0)
    return im


def _exif_transpose(im: Image.Image) -> tuple[Image.Image, bool]:
    """Applies the EXIF orientation; a damaged EXIF block leaves the image as it is."""
    try:
        orientation = im.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - any EXIF parse failure: the pixels are still fine
        return im, False
    if orientation in (None, 1) or orientation not in range(2, 9):
        return im, False
    try:
        return ImageOps.exif_transpose(im), True
    except Exception:  # noqa: BLE001 - same reason
        return im, False


def _fit_size(width: int, height: int, max_pixels: int) -> tuple[int, int]:
    """The largest size with the same aspect whose area is at most ``max_pixels``."""
    scale = (max_pixels / (width * height)) ** 0.5
    w, h = max(1, int(width * scale)), max(1, int(height * scale))
    while w * h > max_pixels and (w > 1 or h > 1):  # rounding guard
        w, h = max(1, w - (w >= h)), max(1, h - (h > w))
    return w, h


def _limit(im: Image.Image, max_pixels: int) -> Image.Image:
    if im.width * im.height <= max_pixels:
        return im
    return im.resize(
        _fit_size(im.width, im.height, max_pixels), Image.Resampling.LANCZOS, reducing_gap=3.0
    )


# ---------------------------------------------------------------------------- decoding


def decode_image(
    source: Any,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    name: str | None = None,
    target_size: int | None = None,
) -> DecodedImage:
    """Decodes any supported input to RGB, strictly.

    Args:
        source: a path (``str`` / ``Path``), ``bytes`` / ``bytearray`` / ``memoryview``,
            a PIL image, or a numpy array (HxW, HxWx1/3/4; uint8, uint16, bool, or float
            in [0, 1]).
        max_pixels: larger images are decoded reduced to at most this many pixels (JPEG
            through the decoder's own scaling); a header claiming more than
            ``BOMB_FACTOR`` times this (or more than twice Pillow's
            ``Image.MAX_IMAGE_PIXELS``) is refused as a decompression bomb.
        name: how to call the input in error messages (defaults to the path or type).
        target_size: a speed hint from callers that will shrink the image to about
            ``target_size`` pixels a side anyway: a JPEG may then be decoded at 1/2, 1/4 or
            1/8 scale while both sides stay at least ``target_size`` (``reduced`` is True).

    Returns:
        A :class:`DecodedImage` holding a loaded RGB image.

    Raises:
        BadImageError: ``"<name>: <reason>"`` for anything that is not a usable image.

    Examples:
        >>> from PIL import Image
        >>> decode_image(Image.new("CMYK", (3, 2))).image.mode
        'RGB'
    """
    name = _name_of(source, name)
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be positive, not {max_pixels}")
    if isinstance(source, Image.Image):
        return _decode_pil(source, name, max_pixels)
    if isinstance(source, np.ndarray):
        im = _array_to_pil(source, name)
        rgb = _limit(_to_rgb(im), max_pixels)
        return DecodedImage(rgb, rgb.width, rgb.height, None, im.mode, rgb.size != im.size)
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
    elif isinstance(source, str | os.PathLike):
        data = read_regular_file(source, name)
    else:
        raise BadImageError(
            f"{name}: unsupported input of type {type(source).__name__} "
            "(give a path, bytes, a PIL image or a numpy array)"
        )
    return _decode_bytes(data, name, max_pixels, target_size)


def _decode_pil(source: Image.Image, name: str, max_pixels: int) -> DecodedImage:
    try:
        im = _first_frame(source)
        im.load()
        mode = im.mode
        oriented, was_oriented = _exif_transpose(im)
        rgb = _to_rgb(oriented)
    except MemoryError:
        raise BadImageError(f"{name}: too large to convert in memory") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise BadImageError(f"{name}: unusable PIL image ({exc})") from None
    limited = _limit(rgb, max_pixels)
    if limited is source:
        limited = limited.copy()  # never hand back (and later mutate) the caller's object
    return DecodedImage(
        limited,
        limited.width,
        limited.height,
        getattr(source, "format", None),
        mode,
        limited.size != rgb.size,
        was_oriented,
    )


@dataclass(frozen=True)
class DecodePlan:
    """How an image of a given header will be decoded, or why it will not.

    Attributes:
        pixels: pixels of the largest raster the decode makes.
        bytes: the memory the decode reserves from :data:`DECODE_MEMORY`.
        draft: the size to ask the JPEG decoder for (None: full size).
        refused: the reason it is refused before any pixel is decoded (None: accepted).
    """

    pixels: int
    bytes: int
    draft: tuple[int, int] | None = None
    refused: str | None = None


def decode_plan(
    fmt: str | None, width: int, height: int, max_pixels: int, target_size: int | None = None
) -> DecodePlan:
    """The one pixel rule, for the importer and the server alike.

    A JPEG decodes at 1/1, 1/2, 1/4 or 1/8 scale: the smallest scale that still keeps
    ``max_pixels`` (and ``target_size`` a side, as a hint) is chosen, so a 200 MP phone
    photo costs what a 12 MP one does. Other formats decode in full: above
    ``max_pixels`` they are refused before decoding. Headers claiming more than
    ``BOMB_FACTOR`` times what could be decoded (or over twice Pillow's
    ``Image.MAX_IMAGE_PIXELS`` once reduced) are decompression bombs.

    Examples:
        >>> decode_plan("JPEG", 16320, 12240, 40_000_000).draft
        (4080, 3060)
        >>> decode_plan("PNG", 7000, 7000, 24_000_000).refused[:28]
        'too large: 7000x7000 pixels;'
    """
    total = width * height
    if fmt in ("JPEG", "MPO"):
        scale = next((s for s in (1, 2, 4, 8) if _scaled(width, height, s) <= max_pixels), 0)
        if target_size:
            while scale and scale < 8 and min(width, height) // (2 * scale) >= target_size:
                scale *= 2
        if not scale:
            limit = 64 * max_pixels
            kind = "decompression bomb" if total > BOMB_FACTOR * limit else "too large"
            return DecodePlan(
                total,
                0,
                refused=f"{kind}: {width}x{height} pixels exceeds the limit of {limit:,} "
                "pixels for JPEG (decoded at 1/8 scale at most)",
            )
        pixels = _scaled(width, height, scale)
        # Pillow picks the largest scale whose output still covers the asked size
        draft = None if scale == 1 else (max(1, width // scale), max(1, height // scale))
    else:
        pixels, draft = total, None
    bomb = _bomb_limit(max_pixels)
    if pixels > bomb:
        return DecodePlan(
            pixels,
            0,
            refused=f"decompression bomb: {width}x{height} pixels exceeds the limit of "
            f"{bomb:,} pixels",
        )
    if pixels > max_pixels:
        return DecodePlan(
            pixels,
            0,
            refused=f"too large: {width}x{height} pixels; {fmt} images are decoded in full "
            f"and the limit is {max_pixels:,} pixels (JPEG can be larger: it decodes reduced)",
        )
    # the decoded raster (4 bytes a pixel at most for 8-bit modes, 8 for 16/32-bit and
    # float), its RGB copy, and the reduced copy
    return DecodePlan(pixels, pixels * 4 * 3, draft)


def _scaled(width: int, height: int, scale: int) -> int:
    return -(-width // scale) * -(-height // scale)


class DecodeMemory:
    """The memory that all decodes of a process share (the importer's and the server's).

    Each decode reserves its :class:`DecodePlan` bytes before any pixel is decoded and
    waits while the others hold too much, so N concurrent requests cannot together
    decode more than ``limit_bytes``; a single decode larger than the whole budget is
    refused.

    Args:
        limit_bytes: the budget (``IMGCLASS_DECODE_MEMORY_MB``, default 1024 MB).
        wait_s: how long a decode waits for room before it is refused.
    """

    def __init__(self, limit_bytes: int, wait_s: float = 120.0):
        self.limit_bytes = int(limit_bytes)
        self.wait_s = wait_s
        self.in_use = 0
        self.peak = 0
        self._cond = threading.Condition()

    @contextmanager
    def reserve(self, nbytes: int, name: str = "image"):
        """Holds ``nbytes`` of the budget for the ``with`` block.

        Raises:
            BadImageError: when ``nbytes`` exceeds the budget, or no room came in time.
        """
        nbytes = int(nbytes)
        if nbytes > self.limit_bytes:
            raise BadImageError(
                f"{name}: decoding needs about {nbytes >> 20} MB, more than the "
                f"{self.limit_bytes >> 20} MB decode budget (IMGCLASS_DECODE_MEMORY_MB)"
            )
        with self._cond:
            if not self._cond.wait_for(
                lambda: self.in_use + nbytes <= self.limit_bytes, timeout=self.wait_s
            ):
                raise BadImageError(
                    f"{name}: no decode memory free for {self.wait_s:.0f} s (too many large "
                    "images at once); try again"
                )
            self.in_use += nbytes
            self.peak = max(self.peak, self.in_use)
        try:
            yield
        finally:
            with self._cond:
                self.in_use -= nbytes
                self._cond.notify_all()


def _decode_memory_limit() -> int:
    text = os.environ.get("IMGCLASS_DECODE_MEMORY_MB", "").strip()
    try:
        return max(64, int(float(text))) << 20 if text else 1024 << 20
    except ValueError:
        return 1024 << 20


DECODE_MEMORY = DecodeMemory(_decode_memory_limit())
"""The process's decode budget (see :class:`DecodeMemory`)."""


def _bomb_limit(max_pixels: int) -> int:
    limit = max_pixels * BOMB_FACTOR
    pillow_limit = Image.MAX_IMAGE_PIXELS  # read per call: a user may have changed it
    if pillow_limit is not None:
        limit = min(limit, 2 * int(pillow_limit))
    return limit


def _decode_bytes(
    data: bytes, name: str, max_pixels: int, target_size: int | None = None
) -> DecodedImage:
    if not data:
        raise BadImageError(f"{name}: empty file (0 bytes)")
    try:
        try:
            im = _open_unchecked(data)
        except UnidentifiedImageError:
            raise BadImageError(f"{name}: {_not_an_image_reason(data)}") from None
        fmt = im.format
        mode = im.mode
        w, h = im.size
        if w < 1 or h < 1:
            raise BadImageError(f"{name}: image of {w}x{h} pixels has no pixels")
        plan = decode_plan(fmt, w, h, max_pixels, target_size)
        if plan.refused:
            raise BadImageError(f"{name}: {plan.refused}")
        reduced = False
        if plan.draft is not None:
            # The JPEG decoder produces a 1/2, 1/4 or 1/8 scale image directly: the full
            # raster of a huge photo never exists.
            im.draft(im.mode, plan.draft)
            reduced = im.size != (w, h)
        with DECODE_MEMORY.reserve(plan.bytes, name):
            im = _first_frame(im)
            im.load()
            oriented, was_oriented = _exif_transpose(im)
            rgb = _to_rgb(oriented)
            limited = _limit(rgb, max_pixels)
            reduced = reduced or limited.size != rgb.size
            del im, oriented, rgb
    except BadImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise BadImageError(f"{name}: decompression bomb ({exc})") from None
    except MemoryError:
        raise BadImageError(f"{name}: too large to decode in memory") from None
    except OSError as exc:
        text = str(exc)
        if "truncated" in text:
            raise BadImageError(f"{name}: truncated image data ({text})") from None
        raise BadImageError(f"{name}: corrupt or truncated image data ({text})") from None
    except (ValueError, SyntaxError, EOFError, IndexError, TypeError, struct.error) as exc:
        raise BadImageError(f"{name}: corrupt image data ({type(exc).__name__}: {exc})") from None
    return DecodedImage(limited, limited.width, limited.height, fmt, mode, reduced, was_oriented)


def unreadable_reason(path: str | os.PathLike) -> str | None:
    """Why a stored image file cannot be used (missing, empty, not an image), or None.

    Reads the file's first MiB and parses its header only (no pixels): cheap enough to
    run over a project before training, so one lost or damaged file is skipped with a
    warning instead of failing the whole run.
    """
    path = Path(path)
    try:
        data = read_regular_file(path, str(path), prefix=HEADER_BYTES)
    except BadImageError as exc:
        return str(exc).removeprefix(f"{path}: ")
    if not data:
        return "empty file (0 bytes)"
    try:
        im = _open_unchecked(data)
        w, h = im.size
    except Exception:  # Pillow raises many types on garbage; all mean "not an image"
        return _not_an_image_reason(data)
    return None if w > 0 and h > 0 else f"image of {w}x{h} pixels has no pixels"


# ---------------------------------------------------------------------------- storing


def to_storable(
    source: Any, name: str | None = None, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[bytes, str, DecodedImage]:
    """The bytes to store for ``source``, their extension, and the decoded image.

    A file (path or bytes) in a common format that decodes at full size is stored as its
    original bytes: its sha256 is the file's, duplicates under other names are found, and
    the original is kept bit for bit. PIL images, arrays, rare formats and reduced huge
    images are stored re-encoded: JPEG for reduced JPEGs, PNG otherwise.

    Args:
        source: anything :func:`decode_image` accepts.
        name: how to call it in error messages.
        max_pixels: as for :func:`decode_image`.

    Returns:
        ``(data, ext, decoded)`` with ``ext`` like ``".jpg"``.

    Raises:
        BadImageError: when the source does not decode.

    Examples:
        >>> import numpy as np
        >>> data, ext, decoded = to_storable(np.zeros((2, 2, 3), np.uint8))
        >>> ext, data[:4]
        ('.png', b'\\x89PNG')
    """
    name = _name_of(source, name)
    if isinstance(source, str | os.PathLike):
        # read once: decoded and stored from these bytes
        source = read_regular_file(source, name)
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        decoded = _decode_bytes(data, name, max_pixels)
        ext = _KEEP_FORMATS.get(decoded.format or "")
        if not decoded.reduced and ext is not None:
            return data, ext, decoded
        if decoded.reduced and decoded.format in ("JPEG", "MPO"):
            return encode_jpeg(decoded.image), ".jpg", decoded
        return encode_png(decoded.image), ".png", decoded
    decoded = decode_image(source, max_pixels=max_pixels, name=name)
    return encode_png(decoded.image), ".png", decoded


def encode_png(image: Image.Image) -> bytes:
    """PNG bytes of an image (deterministic: the same pixels give the same bytes)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def encode_jpeg(image: Image.Image, quality: int = 92) -> bytes:
    """JPEG bytes of an image (converted to RGB)."""
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def thumbnail_bytes(image: Image.Image, size: int = 160) -> bytes:
    """JPEG bytes of a thumbnail whose longer side is at most ``size`` (aspect kept).

    Examples:
        >>> from PIL import Image
        >>> data = thumbnail_bytes(Image.new("RGB", (640, 320)), 160)
        >>> Image.open(io.BytesIO(data)).size
        (160, 80)
    """
    thumb = image if image.mode == "RGB" else _to_rgb(image)
    thumb = thumb.copy()
    thumb.thumbnail((size, size), Image.Resampling.LANCZOS)
    return encode_jpeg(thumb, quality=85)


RESIZE_MODES = ("squash", "pad", "crop")
"""How an image becomes the network's square input: ``squash`` stretches it to the square
(the aspect ratio is lost), ``pad`` scales its longer side to the square and fills the rest
with white (the background transparency is composited on, so a drawing on a transparent
canvas looks the same either way), ``crop`` scales its shorter side and keeps the centre."""
DEFAULT_RESIZE = "squash"
"""What a model recorded before resize modes existed was trained with."""
PAD_FILL = (255, 255, 255)
"""The colour ``pad`` fills with: the background :func:`decode_image` puts behind
transparency."""


RESIZE_WORDS = {
    "squash": "squashed (aspect ratio not kept)",
    "pad": "scaled to fit and centred on white (aspect ratio kept)",
    "crop": "centre-cropped to a square",
}
"""Each mode of :data:`RESIZE_MODES` in the words the report, the bundle and the ONNX
description use."""


def describe_resize(size: int, resize: str) -> str:
    """What the network sees, in words.

    Examples:
        >>> describe_resize(224, "pad")
        '224x224 pixels, scaled to fit and centred on white (aspect ratio kept)'
    """
    return f"{size}x{size} pixels, {RESIZE_WORDS[check_resize(resize)]}"


def check_resize(resize: Any, what: str = "resize") -> str:
    """``resize`` when it is one of :data:`RESIZE_MODES`, else a ``ValueError`` naming them.

    Examples:
        >>> check_resize("pad")
        'pad'
        >>> check_resize("fill")
        Traceback (most recent call last):
        ...
        ValueError: resize: 'fill' is not one of 'squash', 'pad', 'crop'
    """
    if resize not in RESIZE_MODES:
        names = ", ".join(repr(m) for m in RESIZE_MODES)
        raise ValueError(f"{what}: {resize!r} is not one of {names}")
    return resize


def load_rgb(
    source: Any,
    size: int | None = None,
    *,
    name: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    resize: str = DEFAULT_RESIZE,
) -> np.ndarray:
    """uint8 ``HxWx3`` pixels, made ``size x size`` (as ``resize`` says) when given.

    The resize is antialiased bilinear (Pillow's, with a box pre-reduction for large
    shrinks); JPEGs are decoded directly at a smaller scale when that still leaves at least
    ``size`` pixels a side. Training, evaluation and the REST service all go through here,
    so the same bytes always give the same array.

    Examples:
        >>> import numpy as np
        >>> load_rgb(np.zeros((10, 20), np.uint8), 8).shape
        (8, 8, 3)
    """
    check_resize(resize)
    image = decode_image(source, name=name, max_pixels=max_pixels, target_size=size).image
    if size is None:
        return np.asarray(image, np.uint8)
    return resize_square(image, size, resize)


def resize_square(
    image: Image.Image | np.ndarray, size: int, resize: str = DEFAULT_RESIZE
) -> np.ndarray:
    """uint8 ``size x size x 3`` pixels by the one resize every path uses (antialiased
    bilinear, a box pre-reduction for large shrinks), framed as ``resize`` says (one of
    :data:`RESIZE_MODES`).

    Examples:
        >>> wide = np.zeros((10, 20, 3), np.uint8)
        >>> resize_square(wide, 8).shape
        (8, 8, 3)
        >>> padded = resize_square(wide, 8, "pad")  # 8x4 of the image, white above and below
        >>> padded[:, :, 0].min(axis=1).tolist()
        [255, 255, 0, 0, 0, 0, 255, 255]
        >>> int(resize_square(wide, 8, "crop").max())  # the centre 10x10, scaled
        0
    """
    check_resize(resize)
    if isinstance(image, np.ndarray):
        image = Image.fromarray(np.asarray(image, np.uint8))
    if image.mode != "RGB":
        image = _to_rgb(image)
    w, h = image.size
    if (w, h) == (size, size):
        return np.asarray(image, dtype=np.uint8)
    if resize == "squash" or w == h:
        out = image.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
    elif resize == "crop":
        side = min(w, h)
        box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
        out = image.resize((size, size), Image.Resampling.BILINEAR, box=box, reducing_gap=3.0)
    else:  # pad
        scale = size / max(w, h)
        inner = (max(1, min(size, round(w * scale))), max(1, min(size, round(h * scale))))
        scaled = image.resize(inner, Image.Resampling.BILINEAR, reducing_gap=3.0)
        out = Image.new("RGB", (size, size), PAD_FILL)
        out.paste(scaled, ((size - inner[0]) // 2, (size - inner[1]) // 2))
    return np.asarray(out, dtype=np.uint8)
