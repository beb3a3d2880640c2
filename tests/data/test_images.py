"""data/images.py: strict, total decoding of every input a user can hand over.

Every image is generated here, in ``tmp_path`` or in memory.
"""

from __future__ import annotations

import hashlib
import io
import struct
import subprocess
import sys
import threading
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from jupyter_imgclass.data import images as imgs
from jupyter_imgclass.errors import BadImageError, ImgClassError


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def noise(w: int, h: int, seed: int = 0, channels: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w, channels), dtype=np.uint8)


def rgb_at(decoded: imgs.DecodedImage, x: int, y: int) -> tuple[int, int, int]:
    return tuple(int(v) for v in np.asarray(decoded.image)[y, x])


# ----------------------------------------------------------------------------- modes


def test_cmyk_jpeg_becomes_rgb():
    cmyk = Image.new("CMYK", (20, 10), (0, 255, 255, 0))  # pure red in CMYK
    d = imgs.decode_image(encode(cmyk, "JPEG", quality=95), name="cmyk.jpg")
    assert (d.format, d.original_mode, d.image.mode) == ("JPEG", "CMYK", "RGB")
    r, g, b = rgb_at(d, 10, 5)
    assert r > 200 and g < 60 and b < 60


def test_palette_with_transparency_is_composited_on_white():
    im = Image.new("P", (8, 8), 0)
    im.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    im.putpixel((0, 0), 1)
    data = encode(im, "PNG", transparency=0)  # index 0 (red) is transparent
    d = imgs.decode_image(data)
    assert d.original_mode == "P"
    assert rgb_at(d, 3, 3) == (255, 255, 255)
    assert rgb_at(d, 0, 0) == (0, 0, 255)


def test_palette_gif_with_transparency():
    im = Image.new("P", (8, 8), 0)
    im.putpalette([0, 255, 0, 10, 10, 10] + [0] * 762)
    im.putpixel((1, 1), 1)
    d = imgs.decode_image(encode(im, "GIF", transparency=0))
    assert rgb_at(d, 5, 5) == (255, 255, 255) and rgb_at(d, 1, 1) == (10, 10, 10)


def test_la_and_rgba_alpha_composited_on_white():
    la = Image.new("LA", (4, 4), (0, 0))  # black, fully transparent
    la.putpixel((1, 1), (0, 255))  # black, opaque
    d = imgs.decode_image(encode(la, "PNG"))
    assert d.original_mode == "LA"
    assert rgb_at(d, 0, 0) == (255, 255, 255) and rgb_at(d, 1, 1) == (0, 0, 0)

    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)
    rgba[0, 1] = (255, 0, 0, 0)
    rgba[0, 2] = (0, 0, 0, 128)
    d = imgs.decode_image(encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert d.original_mode == "RGBA"
    assert rgb_at(d, 0, 0) == (255, 0, 0)
    assert rgb_at(d, 1, 0) == (255, 255, 255)
    assert all(120 <= v <= 135 for v in rgb_at(d, 2, 0))  # half black over white: grey


def test_16_bit_png_is_scaled_by_its_range_not_clipped():
    arr = np.linspace(1000, 3000, 64, dtype=np.uint16).reshape(8, 8)
    im = Image.fromarray(arr)  # mode I;16
    assert im.mode == "I;16"
    d = imgs.decode_image(encode(im, "PNG"))
    assert d.original_mode.startswith("I")
    out = np.asarray(d.image)[..., 0]
    assert out.min() == 0 and out.max() == 255  # 1000 -> 0, 3000 -> 255
    assert np.all(np.diff(out.reshape(-1).astype(int)) >= 0)  # order preserved
    assert len(np.unique(out)) > 50  # a gradient, not a clipped white image


def test_float_tiff_is_scaled_by_its_range():
    arr = np.linspace(-5, 5, 100, dtype=np.float32).reshape(10, 10)
    d = imgs.decode_image(encode(Image.fromarray(arr, "F"), "TIFF"), name="f.tif")
    assert (d.format, d.original_mode) == ("TIFF", "F")
    out = np.asarray(d.image)[..., 0]
    assert out[0, 0] == 0 and out[-1, -1] == 255


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I", "F"])
def test_high_bit_pil_modes(mode):
    im = Image.new(mode, (6, 4), 0)
    im.putpixel((5, 3), 200)
    d = imgs.decode_image(im)
    assert d.image.mode == "RGB" and d.original_mode == mode
    assert rgb_at(d, 5, 3) == (255, 255, 255) and rgb_at(d, 0, 0) == (0, 0, 0)


def test_one_bit_and_grey():
    one = Image.new("1", (9, 9), 0)
    one.putpixel((4, 4), 1)
    d = imgs.decode_image(encode(one, "PNG"))
    assert d.original_mode == "1" and rgb_at(d, 4, 4) == (255, 255, 255)
    assert rgb_at(d, 0, 0) == (0, 0, 0)
    d = imgs.decode_image(encode(Image.new("L", (3, 3), 77), "BMP"))
    assert rgb_at(d, 1, 1) == (77, 77, 77) and d.format == "BMP"


def test_exif_rotated_jpeg_swaps_width_and_height():
    arr = np.zeros((20, 40, 3), np.uint8)  # 40 wide, 20 high
    arr[:, :10] = (255, 0, 0)  # left quarter red
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = 6  # stored rotated: display turned 90 degrees clockwise
    d = imgs.decode_image(encode(im, "JPEG", exif=exif.tobytes(), quality=95))
    assert (d.width, d.height) == (20, 40) and d.image.size == (20, 40)
    assert d.oriented
    r, g, b = rgb_at(d, 10, 3)  # the red left edge is now at the top
    assert r > 200 and g < 50
    r, g, b = rgb_at(d, 10, 36)
    assert r < 50


def test_animated_images_give_their_first_frame(tmp_path):
    frames = [Image.new("RGB", (10, 10), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    for fmt in ("GIF", "PNG", "WEBP"):
        data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=50)
        probe = Image.open(io.BytesIO(data))
        assert getattr(probe, "n_frames", 1) == 3, fmt
        probe.seek(2)  # a PIL image left on its last frame is rewound too
        for source in (data, probe):
            d = imgs.decode_image(source)
            r, g, b = rgb_at(d, 5, 5)
            assert r > 200 and g < 50 and b < 50, fmt


# ---------------------------------------------------------------------- huge images


def test_huge_jpeg_is_decoded_reduced_within_the_limit():
    big = Image.fromarray(noise(3000, 2000, seed=1))
    data = encode(big, "JPEG", quality=80)
    d = imgs.decode_image(data, max_pixels=500_000)
    assert d.reduced and d.width * d.height <= 500_000
    assert abs(d.width / d.height - 1.5) < 0.01  # aspect kept
    # the largest decoder scale (1/4 here) whose raster fits: 1/2 would make 1.5 MP
    assert d.width == 750
    full = imgs.decode_image(data)
    assert not full.reduced and full.image.size == (3000, 2000)


def test_png_over_the_pixel_budget_is_refused_before_decoding():
    data = encode(Image.new("RGB", (1500, 1000), (0, 128, 255)), "PNG")
    d = imgs.decode_image(data, max_pixels=1_500_000)
    assert not d.reduced and rgb_at(d, 10, 10) == (0, 128, 255)
    with pytest.raises(BadImageError, match=r"too large: 1500x1000 pixels; PNG images are decoded"):
        imgs.decode_image(data, max_pixels=1_499_999, name="big.png")
    with pytest.raises(BadImageError, match="the limit is 1,499,999 pixels"):
        imgs.to_storable(data, max_pixels=1_499_999)


def test_200_mp_phone_jpeg_is_accepted_at_a_quarter_scale():
    plan = imgs.decode_plan("JPEG", 16320, 12240, imgs.DEFAULT_MAX_PIXELS)
    assert plan.refused is None and plan.draft == (4080, 3060)
    assert plan.pixels <= imgs.DEFAULT_MAX_PIXELS
    small = imgs.decode_plan("JPEG", 16320, 12240, imgs.DEFAULT_MAX_PIXELS, target_size=224)
    assert small.draft == (2040, 1530)  # 1/8: both sides still >= 224
    assert "decoded at 1/8 scale at most" in imgs.decode_plan("JPEG", 80000, 80000, 10**6).refused


def test_decode_memory_is_shared_and_bounded():
    budget = imgs.DecodeMemory(100, wait_s=0.2)
    with budget.reserve(60):
        with pytest.raises(BadImageError, match="no decode memory free"):
            with budget.reserve(60, "second"):
                pass
        with budget.reserve(40):
            assert budget.in_use == 100
    assert budget.in_use == 0 and budget.peak == 100
    with pytest.raises(BadImageError, match="more than the 0 MB decode budget"):
        with budget.reserve(101, "huge"):
            pass


def test_huge_jpeg_decoding_does_not_materialise_the_full_raster(tmp_path):
    """6000x4000 RGB is 96 MB in Pillow (4 bytes a pixel); the 1/2-scale draft needs 24 MB."""
    path = tmp_path / "huge.jpg"
    Image.new("RGB", (6000, 4000), (200, 100, 50)).save(path, quality=70)
    code = (
        "import resource, sys\n"
        "from jupyter_imgclass.data import images\n"
        "images.decode_image(images.encode_png(images.Image.new('RGB', (2, 2))))\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "d = images.decode_image(sys.argv[1], max_pixels=2_000_000)\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(d.width, d.height, d.reduced, (after - before) // 1024)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True
    )
    w, h, reduced, grown_mb = out.stdout.split()
    assert reduced == "True" and int(w) * int(h) <= 2_000_000
    assert int(grown_mb) < 64, f"peak memory grew {grown_mb} MB"


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` (valid CRCs) with a tiny IDAT."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 1000))
        + chunk(b"IEND", b"")
    )


def test_decompression_bomb_is_rejected_with_its_size():
    with pytest.raises(BadImageError) as info:
        imgs.decode_image(png_claiming(80000, 80000), name="bomb.png")
    msg = str(info.value)
    assert msg.startswith("bomb.png: decompression bomb: 80000x80000 pixels exceeds the limit of")


def test_pillow_globals_are_honoured_and_never_changed(monkeypatch):
    saved = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    small = encode(Image.new("L", (40, 40)), "PNG")  # 1600 px: over Pillow's warning level
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        d = imgs.decode_image(small)
    assert d.width == 40 and not caught  # no DecompressionBombWarning leaks to the user
    with pytest.raises(BadImageError, match="decompression bomb: 50x50"):
        imgs.decode_image(encode(Image.new("L", (50, 50)), "PNG"))  # over twice the limit
    monkeypatch.undo()
    assert (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES) == saved


# ------------------------------------------------------------------------- bad files


@pytest.fixture
def bad_files(tmp_path: Path) -> dict[str, Path]:
    jpg = encode(Image.fromarray(noise(64, 48, seed=2)), "JPEG")
    png = encode(Image.fromarray(noise(64, 48, seed=3)), "PNG")
    files = {
        "empty.jpg": b"",
        "truncated.jpg": jpg[: len(jpg) // 2],
        "truncated.png": png[: len(png) // 2],
        "notes.jpg": b"just some text, not a picture\n" * 3,
        "page.png": b"<!DOCTYPE html>\n<html><body>404 Not Found</body></html>",
        "drawing.png": b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>',
        "random.jpg": noise(32, 32, seed=4).tobytes(),
    }
    out = {}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        out[name] = tmp_path / name
    with zipfile.ZipFile(tmp_path / "archive.jpg", "w") as zf:
        zf.writestr("a.txt", "hello")
    out["archive.jpg"] = tmp_path / "archive.jpg"
    (tmp_path / "folder.jpg").mkdir()
    out["folder.jpg"] = tmp_path / "folder.jpg"
    out["missing.jpg"] = tmp_path / "missing.jpg"
    return out


@pytest.mark.parametrize(
    "name, reason",
    [
        ("empty.jpg", "empty file (0 bytes)"),
        ("truncated.jpg", "truncated image data"),
        ("truncated.png", "truncated image data"),
        ("notes.jpg", "not an image (unrecognised format: looks like text)"),
        ("page.png", "not an image (unrecognised format: looks like an HTML page)"),
        ("drawing.png", "not an image (unrecognised format: SVG"),
        ("archive.jpg", "not an image (unrecognised format: a ZIP archive)"),
        ("random.jpg", "not an image (unrecognised format)"),
        ("folder.jpg", "is a folder, not an image file"),
        ("missing.jpg", "no such file"),
    ],
)
def test_bad_files_are_rejected_with_a_reason(bad_files, name, reason):
    path = bad_files[name]
    with pytest.raises(BadImageError) as info:
        imgs.decode_image(path)
    assert str(info.value).startswith(f"{path}: {reason}")
    assert isinstance(info.value, ImgClassError) and isinstance(info.value, ValueError)
    with pytest.raises(BadImageError):
        imgs.to_storable(path, "x")
    if path.is_file():  # the same bytes fail the same way, named as asked
        with pytest.raises(BadImageError, match=f"^upload: {reason[:10]}"):
            imgs.decode_image(path.read_bytes(), name="upload")


def test_truncated_images_are_never_silently_accepted():
    data = encode(Image.fromarray(noise(200, 150, seed=5)), "JPEG", quality=90)
    for cut in (len(data) - 200, len(data) // 3, 700):
        with pytest.raises(BadImageError, match="truncated"):
            imgs.decode_image(data[:cut])
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_unicode_file_names(tmp_path):
    good = tmp_path / "Über café 猫 🐱.png"
    good.write_bytes(encode(Image.new("RGB", (5, 4), "red"), "PNG"))
    assert imgs.decode_image(good).image.size == (5, 4)
    assert imgs.sniff_is_image_name(good)
    bad = tmp_path / "naïve 写真.JPG"
    bad.write_bytes(b"")
    with pytest.raises(BadImageError, match="naïve 写真.JPG: empty file"):
        imgs.decode_image(bad)


# ------------------------------------------------------------------ in-memory inputs


def test_bytes_like_and_pil_inputs():
    data = encode(Image.new("RGB", (7, 5), (1, 2, 3)), "PNG")
    for source in (data, bytearray(data), memoryview(data)):
        d = imgs.decode_image(source)
        assert (d.width, d.height, d.format) == (7, 5, "PNG")
    pil = Image.new("RGB", (7, 5), (1, 2, 3))
    d = imgs.decode_image(pil)
    assert d.image is not pil and d.image.size == (7, 5) and not d.reduced
    d = imgs.decode_image(Image.new("RGB", (2000, 1000)), max_pixels=20_000)
    assert d.reduced and d.width * d.height <= 20_000
    lazy = Image.open(io.BytesIO(data[: len(data) - 30]))  # a truncated PIL image
    with pytest.raises(BadImageError, match="PIL image"):
        imgs.decode_image(lazy, name="pil")


def test_good_arrays():
    d = imgs.decode_image(np.full((4, 6), 9, np.uint8))
    assert (d.width, d.height) == (6, 4) and rgb_at(d, 0, 0) == (9, 9, 9)
    assert rgb_at(imgs.decode_image(np.full((2, 2, 1), 7, np.uint8)), 1, 1) == (7, 7, 7)
    mask = np.zeros((3, 3), bool)
    mask[1, 1] = True
    d = imgs.decode_image(mask)
    assert rgb_at(d, 1, 1) == (255, 255, 255) and rgb_at(d, 0, 0) == (0, 0, 0)
    d = imgs.decode_image(np.full((2, 2, 3), 0.5, np.float32))
    assert rgb_at(d, 0, 0) == (128, 128, 128)
    d = imgs.decode_image(np.array([[100, 300]], np.uint16))  # by range, like I;16 files
    assert rgb_at(d, 0, 0) == (0, 0, 0) and rgb_at(d, 1, 0) == (255, 255, 255)
    rgba = np.zeros((2, 2, 4), np.uint8)  # transparent black -> white
    assert rgb_at(imgs.decode_image(rgba), 0, 0) == (255, 255, 255)
    strided = noise(10, 10, seed=6)[::2, ::-1]  # not contiguous
    assert np.array_equal(np.asarray(imgs.decode_image(strided).image), strided)


@pytest.mark.parametrize(
    "array, reason",
    [
        (np.zeros((4, 4, 2), np.uint8), "has 2 channels"),
        (np.zeros((4, 4, 3, 2), np.uint8), "is not an image"),
        (np.zeros((5,), np.uint8), "is not an image"),
        (np.zeros((0, 4, 3), np.uint8), "is not an image"),
        (np.zeros((3, 3), np.int64), "dtype int64 is not supported"),
        (np.zeros((3, 3), np.complex64), "dtype complex64 is not supported"),
        (np.full((3, 3), 2.0), r"values in \[2, 2\]; need \[0, 1\]"),
        (np.full((3, 3), np.nan, np.float32), "NaN or infinity"),
        (np.array([[None, 1]], dtype=object), "is not an image"),
    ],
)
def test_bad_arrays_are_rejected_with_a_reason(array, reason):
    with pytest.raises(BadImageError, match=f"^arr: .*{reason}"):
        imgs.decode_image(array, name="arr")


def test_unsupported_source_types():
    for source in (42, None, [1, 2, 3], {"a": 1}):
        with pytest.raises(BadImageError, match="unsupported input"):
            imgs.decode_image(source)


# ---------------------------------------------------------------- storing, helpers


def test_to_storable_keeps_original_bytes_of_good_files(tmp_path):
    data = encode(Image.fromarray(noise(30, 20, seed=7)), "JPEG")
    a, b = tmp_path / "a.jpg", tmp_path / "copy of a.JPEG"
    a.write_bytes(data)
    b.write_bytes(data)
    stored_a, ext, decoded = imgs.to_storable(a)
    stored_b, _, _ = imgs.to_storable(b, "b")
    assert stored_a == data == stored_b and ext == ".jpg"
    assert imgs.sha256_bytes(stored_a) == hashlib.sha256(data).hexdigest()
    assert decoded.width == 30 and decoded.format == "JPEG"
    stored, ext, _ = imgs.to_storable(data)
    assert stored == data and ext == ".jpg"
    tif = encode(Image.new("RGB", (3, 3)), "TIFF")
    assert imgs.to_storable(tif)[:2] == (tif, ".tif")


def test_to_storable_reencodes_arrays_pil_and_reduced_images():
    arr = noise(8, 6, seed=8)
    data, ext, decoded = imgs.to_storable(arr, "array")
    assert ext == ".png" and np.array_equal(np.asarray(Image.open(io.BytesIO(data))), arr)
    assert imgs.to_storable(Image.fromarray(arr))[0] == data  # same pixels, same bytes
    big = encode(Image.fromarray(noise(1200, 800, seed=9)), "JPEG")
    data, ext, decoded = imgs.to_storable(big, "big", max_pixels=100_000)
    assert ext == ".jpg" and decoded.reduced
    again = imgs.decode_image(data, max_pixels=100_000)
    assert not again.reduced and again.width * again.height <= 100_000
    big_png = encode(Image.new("RGBA", (600, 400), "blue"), "PNG")
    data, ext, decoded = imgs.to_storable(big_png, max_pixels=240_000)
    assert ext == ".png" and not decoded.reduced and data == big_png
    # An exotic format is stored as PNG, not under a made-up extension.
    tga = encode(Image.new("RGB", (4, 4), "green"), "TGA")
    assert imgs.to_storable(tga)[1] == ".png"


def test_load_rgb_thumbnail_png_sha_and_names(tmp_path):
    path = tmp_path / "photo.jpg"
    Image.fromarray(noise(400, 300, seed=10)).save(path, quality=90)
    arr = imgs.load_rgb(path, 64)
    assert arr.shape == (64, 64, 3) and arr.dtype == np.uint8
    assert np.array_equal(arr, imgs.load_rgb(path.read_bytes(), 64))  # same bytes, same array
    assert imgs.load_rgb(path).shape == (300, 400, 3)
    thumb = Image.open(io.BytesIO(imgs.thumbnail_bytes(Image.open(path), 160)))
    assert thumb.format == "JPEG" and thumb.size == (160, 120)
    png = imgs.encode_png(Image.new("RGB", (3, 3), "red"))
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png == imgs.encode_png(
        Image.new("RGB", (3, 3), "red")
    )
    assert imgs.sha256_bytes(b"abc").startswith("ba7816bf")
    for name in ("a.JPG", "b.jpeg", "c.Png", "d.gif", "e.bmp", "f.TIF", "g.tiff", "h.webp",
                 "i.ppm", "j.pgm", "k.pbm", "l.ico"):  # fmt: skip
        assert imgs.sniff_is_image_name(name), name
    for name in ("a.txt", "b.jpg.txt", "README", ".jpg", "x.heic", "y.svg"):
        assert not imgs.sniff_is_image_name(name), name


def test_decoding_from_several_threads():
    datas = [encode(Image.fromarray(noise(50, 40, seed=s)), "PNG") for s in range(8)]
    results: dict[int, np.ndarray] = {}

    def work(k: int) -> None:
        results[k] = imgs.load_rgb(datas[k], 16)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(8):
        assert np.array_equal(results[k], imgs.load_rgb(datas[k], 16))


def _samples() -> dict[str, bytes]:
    arr = noise(50, 40, seed=11)
    out = {}
    for fmt in ("JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP", "PPM", "ICO", "TGA"):
        im = Image.fromarray(arr)
        out[fmt] = encode(im.convert("P") if fmt == "GIF" else im, fmt)
    out["progressive JPEG"] = encode(Image.fromarray(arr), "JPEG", progressive=True)
    return out


def test_damaged_files_give_an_image_or_a_bad_image_error_never_anything_else():
    """Decoding is total: seeded random cuts and byte flips of every format."""
    rng = np.random.default_rng(12)
    outcomes = {"ok": 0, "rejected": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow's own UserWarnings about damaged TIFF tags
        for fmt, data in _samples().items():
            for _ in range(40):
                damaged = bytearray(data)
                if rng.random() < 0.5:
                    damaged = damaged[: int(rng.integers(1, len(damaged)))]
                else:
                    for _ in range(int(rng.integers(1, 6))):
                        damaged[int(rng.integers(0, len(damaged)))] = int(rng.integers(0, 256))
                try:
                    d = imgs.decode_image(bytes(damaged), name=fmt)
                    assert d.image.mode == "RGB" and d.image.size == (d.width, d.height)
                    outcomes["ok"] += 1
                except BadImageError as exc:
                    assert str(exc).startswith(f"{fmt}: ")
                    outcomes["rejected"] += 1
    assert outcomes["ok"] > 50 and outcomes["rejected"] > 100


@pytest.mark.filterwarnings("ignore:Truncated File Read")  # Pillow's TIFF reader says so too
@pytest.mark.parametrize("fmt", ["JPEG", "progressive JPEG", "GIF", "BMP", "TIFF", "WEBP", "PPM"])
def test_every_cut_that_loses_pixels_is_rejected(fmt):
    data = _samples()[fmt]
    for cut in range(1, len(data), max(1, len(data) // 60)):
        with pytest.raises(BadImageError):
            imgs.decode_image(data[:cut])


# ------------------------------------------------------------------ resize modes (issue 35)
def _wide_picture() -> Image.Image:
    """A 200x100 image: black, with a red 40x40 square in the middle (a "drawing")."""
    arr = np.zeros((100, 200, 3), np.uint8)
    arr[30:70, 80:120] = (255, 0, 0)
    return Image.fromarray(arr)


def _red_box(arr: np.ndarray) -> tuple[int, int]:
    """Height and width of the red region of an RGB array."""
    red = (arr[..., 0] > 200) & (arr[..., 1] < 60)
    rows, cols = np.flatnonzero(red.any(1)), np.flatnonzero(red.any(0))
    return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


def test_pad_keeps_the_aspect_ratio_that_squash_loses():
    picture = _wide_picture()
    squashed = imgs.resize_square(picture, 64, "squash")
    padded = imgs.resize_square(picture, 64, "pad")
    cropped = imgs.resize_square(picture, 64, "crop")
    assert squashed.shape == padded.shape == cropped.shape == (64, 64, 3)
    h, w = _red_box(squashed)
    assert h > 1.6 * w  # the square became a tall bar
    h, w = _red_box(padded)
    assert abs(h - w) <= 1  # still a square
    # pad: the picture fills the middle 32 rows, white above and below.
    assert (padded[:15] == 255).all() and (padded[-15:] == 255).all()
    assert (padded[17:47, :, 1] == 0).all()  # black/red content, no white, in the band
    # crop: the centre 100x100 scaled to 64: the square is 40% of the side, and square.
    h, w = _red_box(cropped)
    assert abs(h - w) <= 1 and 24 <= h <= 28
    # a square image is the same in every mode
    square = imgs.resize_square(picture.crop((50, 0, 150, 100)), 64, "squash")
    for mode in imgs.RESIZE_MODES:
        np.testing.assert_array_equal(
            imgs.resize_square(picture.crop((50, 0, 150, 100)), 64, mode), square
        )


def test_pad_fills_with_the_colour_transparency_is_composited_on():
    rgba = Image.new("RGBA", (90, 30), (0, 0, 0, 0))  # fully transparent, wide
    rgba.paste((0, 0, 255, 255), (40, 10, 50, 20))
    data = encode(rgba, "PNG")
    padded = imgs.load_rgb(data, 30, resize="pad")
    # transparent pixels and the padding look the same: one white background
    corners = [padded[0, 0], padded[-1, -1], padded[15, 0], padded[0, 15]]
    assert all(tuple(c) == imgs.PAD_FILL for c in corners)
    assert tuple(padded[15, 15]) == (0, 0, 255)


def test_tall_and_tiny_images_pad_and_crop_without_error():
    for size in [(1, 500), (500, 1), (3, 2), (1, 1)]:
        im = Image.new("RGB", size, (10, 200, 10))
        for mode in imgs.RESIZE_MODES:
            out = imgs.resize_square(im, 16, mode)
            assert out.shape == (16, 16, 3)
            assert (out[..., 1] == 200).any()  # the image is somewhere in it


def test_an_unknown_resize_mode_is_refused_by_name():
    with pytest.raises(ValueError, match="resize: 'fill' is not one of 'squash', 'pad', 'crop'"):
        imgs.load_rgb(np.zeros((4, 4, 3), np.uint8), 8, resize="fill")
    with pytest.raises(ValueError, match="'Pad'"):
        imgs.resize_square(np.zeros((4, 4, 3), np.uint8), 8, "Pad")
