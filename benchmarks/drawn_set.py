"""A small offline set of DRAWN images in eight tags, for few-shot benchmarks.

Every image is one emoji from Debian's ``fonts-noto-color-emoji`` (Noto Color Emoji,
a colour bitmap font: drawings with outlines, flat fills and soft shading), rendered
with Pillow and pasted on a varied canvas, so a benchmark needs no network at run
time. Install the font (about 10 MB; tested with bookworm's 2.042)::

    apt-get install -y --no-install-recommends fonts-noto-color-emoji

Without root, ``apt-get download fonts-noto-color-emoji && dpkg -x *.deb DIR`` and point
``DRAWN_SET_FONT`` (or ``build(font=...)``) at
``DIR/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf``.

Tags (``TAGS``, code points listed below; counts with the version above, capped at
``MAX_PER_TAG`` = 60): ``face`` 60 (smileys), ``animal`` 60 (mammals, birds, reptiles,
sea life, insects), ``food`` 60 (fruit, vegetables, dishes, sweets, drinks), ``vehicle``
54, ``place`` 53 (buildings, monuments, landscapes, fairground), ``clothing`` 46
(clothes, shoes, hats, bags, jewellery), ``sport`` 53 (balls, sports gear, medals, games),
``tool`` 49 (hand tools, hardware, office and household tools). Each emoji appears ONCE
in the whole set (one image per glyph, no glyph in two tags), so a test image never shows
a glyph seen in training; ``place``, ``sport`` and ``tool`` are the visually mixed ones.

What ``build`` does, in a fixed order (code points in the order listed):

* renders each glyph at the font's only bitmap size (109 px, ``embedded_color=True``),
  crops it to its alpha box and drops glyphs the font lacks (nothing drawn);
* keeps at most ``MAX_PER_TAG`` glyphs of a tag, drawn with ``random.Random("0:<tag>")``;
* draws every image from its own generator (``random.Random("0:<code point>")``, string
  seeds are stable across runs and machines): a canvas of 4:3, 3:4, 16:9, 9:16 or 1:1
  (long side 320 px; 2 in 5 square, the rest non-square), a background (plain colour,
  a two-colour linear gradient at any angle, or smooth colour noise: each a third of the
  images), the glyph scaled to 35-85 % of the canvas's short side, rotated by -25 to 25
  degrees and placed anywhere it fits whole;
* writes ``OUT/<tag>/<code point>-<name>.png`` and ``OUT/drawn_set.json`` (the settings,
  the font's sha256 and the file list). A later ``build`` with the same settings and font
  reads that list back instead of drawing again (``force=True`` redraws);
* lists each tag in a fixed pseudo-random order (``random.Random("0:<tag>")`` shuffling
  the sorted names).

``few_shot_split(tags_to_paths, n_train_per_tag, seed)`` puts ``n`` images of each tag,
drawn with ``seed``, in train and EVERY other image in test (as ``photo_set`` does).

Usage::

    python benchmarks/drawn_set.py OUT [--tags face animal ...] [--force]

prints the image count per tag and the canvas shapes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import re
import shutil
import sys
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, str(Path(__file__).parent))
# the same split as the photo set's (bench_transfer calls drawn_set.few_shot_split)
from photo_set import few_shot_split as few_shot_split  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))

FONT_PACKAGE = "fonts-noto-color-emoji"
APT_LINE = f"apt-get install -y --no-install-recommends {FONT_PACKAGE}"
FONT_PATH = Path(
    os.environ.get("DRAWN_SET_FONT", "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
)

GLYPH_PX = 109  # Noto Color Emoji's only bitmap strike
LONG_SIDE = 320
ASPECTS = ((4, 3), (3, 4), (16, 9), (9, 16), (1, 1), (1, 1))  # width:height, drawn evenly
BACKGROUNDS = ("plain", "gradient", "noise")
SCALE = (0.35, 0.85)  # the glyph's long side as a fraction of the canvas's short side
MAX_ROTATION = 25.0  # degrees, either way
MAX_PER_TAG = 60
ORDER_SEED = 0
FORMAT = 1  # bump when the drawing changes, so that cached folders are redrawn


class MissingPackageError(RuntimeError):
    """The Debian package that the drawn set renders from is not installed."""


def _cps(*spans: int | tuple[int, int], drop: Iterable[int] = ()) -> tuple[int, ...]:
    """Code points from single values and inclusive ``(first, last)`` ranges, minus
    ``drop``, in the order given."""
    out: list[int] = []
    for s in spans:
        out += list(range(s[0], s[1] + 1)) if isinstance(s, tuple) else [s]
    dropped = set(drop)
    return tuple(c for c in out if c not in dropped)


# Each glyph in one tag only; Unicode names are in the file names that build writes.
TAGS: dict[str, tuple[int, ...]] = {
    "face": _cps(
        (0x1F600, 0x1F637),
        (0x1F641, 0x1F644),
        (0x1F910, 0x1F915),
        0x1F917,
        (0x1F920, 0x1F925),
        (0x1F927, 0x1F92F),
        (0x1F970, 0x1F976),
        (0x1F978, 0x1F97A),
        0x1F9D0,
        (0x1FAE0, 0x1FAE5),
        0x263A,
        0x2639,
    ),
    "animal": _cps(
        (0x1F400, 0x1F43C),
        0x1F43F,
        (0x1F980, 0x1F9AD),
        (0x1FAB0, 0x1FAB3),
        0x1F54A,
        0x1F577,
        drop=(0x1F409, 0x1F432, 0x1F9A0),  # dragons, microbe
    ),
    "food": _cps(
        (0x1F32D, 0x1F32F),
        (0x1F345, 0x1F37F),
        (0x1F950, 0x1F96F),
        (0x1F9C0, 0x1F9CB),
        (0x1FAD0, 0x1FAD9),
        0x1F336,
        0x1F33D,
        0x2615,
        drop=(0x1F374, 0x1F37D, 0x1F962),  # cutlery, chopsticks
    ),
    "vehicle": _cps(
        (0x1F680, 0x1F6A4),
        0x1F6B2,
        0x1F6E5,
        0x1F6E9,
        0x1F6EB,
        0x1F6EC,
        0x1F6F0,
        (0x1F6F3, 0x1F6F6),
        0x1F6F8,
        0x1F6FA,
        0x1F6FB,
        0x1F3CD,
        0x1F3CE,
        0x26F4,
        0x26F5,
        0x2708,
        0x1F9BC,
        0x1F9BD,
        drop=(0x1F689, 0x1F68F),  # station, bus stop
    ),
    "place": _cps(
        (0x1F3D4, 0x1F3DF),
        (0x1F3E0, 0x1F3F0),
        (0x1F5FB, 0x1F5FD),
        (0x1F54B, 0x1F54D),
        (0x1F303, 0x1F307),
        0x1F309,
        0x1F30B,
        (0x1F3A0, 0x1F3A2),
        0x1F3AA,
        0x1F492,
        0x1F6D5,
        0x1F6D6,
        0x26E9,
        0x26EA,
        0x26F0,
        0x26F2,
        0x26FA,
        drop=(0x1F3E7, 0x1F3EE),  # cash machine, lantern
    ),
    "clothing": _cps(
        (0x1F451, 0x1F462),
        0x1F3A9,
        0x1F393,
        0x26D1,
        (0x1F9E2, 0x1F9E6),
        (0x1F97B, 0x1F97F),
        (0x1FA70, 0x1FA74),
        0x1FA96,
        0x1F48D,
        0x1F484,
        0x1F392,
        0x1F576,
        0x1F6CD,
        0x1F3BD,
        0x1F302,
        0x2602,
        0x1F9BA,
    ),
    "sport": _cps(
        0x26BD,
        0x26BE,
        0x1F3C0,
        0x1F3C8,
        0x1F3C9,
        0x1F3BE,
        0x1F3D0,
        0x1F3CF,
        (0x1F3D1, 0x1F3D3),
        0x1F3F8,
        (0x1F94A, 0x1F94F),
        0x1F945,
        0x26F3,
        0x26F8,
        0x1F3BF,
        0x1F6F7,
        0x1F6F9,
        0x1F6FC,
        0x1F3B1,
        0x1F3B3,
        0x1F3AF,
        0x1F3A3,
        0x1F93F,
        0x1F3C5,
        0x1F3C6,
        (0x1F947, 0x1F949),
        0x1FA80,
        0x1FA81,
        0x1F3F9,
        0x1F3AE,
        0x1F579,
        0x1F3B2,
        0x1F9E9,
        0x265F,
        0x1F0CF,
        0x1F004,
        0x1F3B4,
        0x1FA83,
        0x1FA85,
    ),
    "tool": _cps(
        0x1F528,
        0x1FA93,
        0x26CF,
        0x2692,
        0x1F6E0,
        0x1F5E1,
        0x2694,
        0x1FA9A,
        0x1F527,
        0x1FA9B,
        0x1F529,
        0x2699,
        0x1F5DC,
        0x2696,
        0x1F517,
        0x26D3,
        0x1FA9D,
        0x1F9F0,
        0x1F9F2,
        0x1FA9C,
        0x2702,
        0x1F4CF,
        0x1F4D0,
        0x1F4CC,
        0x1F4CD,
        0x1F4CE,
        0x1F587,
        0x1F58A,
        0x1F58B,
        0x270F,
        0x1F58C,
        0x1F58D,
        0x1F526,
        0x1F50B,
        0x1F50C,
        0x1F9EF,
        0x1FAA0,
        0x1FAA3,
        0x1F9F9,
        0x1FAA4,
        0x1F52A,
        0x1F52B,
        0x1F9EA,
        0x1F52C,
        0x1F52D,
        0x1F50D,
        0x1F511,
        0x1F5DD,
        0x1F512,
        0x1FAA1,
    ),
}


def check_font(font: str | Path | None = None) -> Path:
    """The font's path, or ``MissingPackageError`` naming the Debian package."""
    path = Path(font) if font else FONT_PATH
    if not path.is_file():
        raise MissingPackageError(
            f"the drawn set needs the Debian package {FONT_PACKAGE!r} (looked for {path}). "
            f"Install with: {APT_LINE}  (or set DRAWN_SET_FONT to NotoColorEmoji.ttf of a "
            "package unpacked with dpkg -x)"
        )
    return path


def _glyph(font: ImageFont.FreeTypeFont, cp: int) -> Image.Image | None:
    """The emoji as an RGBA image cropped to its alpha box, or None when not in the font."""
    im = Image.new("RGBA", (2 * GLYPH_PX, 2 * GLYPH_PX), (0, 0, 0, 0))
    ImageDraw.Draw(im).text((GLYPH_PX // 4, GLYPH_PX // 4), chr(cp), font=font, embedded_color=True)
    box = im.getchannel("A").getbbox()
    if box is None:
        return None
    im = im.crop(box)
    # a missing glyph draws nothing in this font; a lone colourless box would be .notdef
    if len(np.unique(np.asarray(im.convert("RGB")).reshape(-1, 3), axis=0)) < 8:
        return None
    return im


def _colour(rng: random.Random) -> tuple[int, int, int]:
    return tuple(rng.randrange(256) for _ in range(3))  # type: ignore[return-value]


def _background(rng: random.Random, size: tuple[int, int], kind: str) -> Image.Image:
    """A plain, gradient or smooth-noise RGB canvas of ``size`` (width, height)."""
    w, h = size
    if kind == "plain":
        return Image.new("RGB", size, _colour(rng))
    if kind == "gradient":
        a, b = np.array(_colour(rng), np.float32), np.array(_colour(rng), np.float32)
        angle = rng.uniform(0, 2 * math.pi)
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        t = xs * math.cos(angle) + ys * math.sin(angle)
        t = (t - t.min()) / max(1e-6, float(t.max() - t.min()))
        px = a + (b - a) * t[..., None]
        return Image.fromarray(px.round().astype(np.uint8), "RGB")
    # smooth colour noise: a coarse random grid, upscaled bicubic, around a base colour
    nrng = np.random.default_rng(rng.randrange(2**32))
    cells = rng.choice((3, 5, 8, 16))
    base = np.array(_colour(rng), np.float32)
    spread = rng.uniform(30, 110)
    grid = base + nrng.normal(0, spread, (cells, max(2, round(cells * w / h)), 3))
    coarse = Image.fromarray(np.clip(grid, 0, 255).astype(np.uint8), "RGB")
    return coarse.resize(size, Image.Resampling.BICUBIC)


def draw(glyph: Image.Image, rng: random.Random) -> tuple[Image.Image, str]:
    """One image: ``glyph`` on a canvas drawn from ``rng``; returns it and a short
    description (aspect and background)."""
    aw, ah = rng.choice(ASPECTS)
    if aw >= ah:
        size = (LONG_SIDE, round(LONG_SIDE * ah / aw))
    else:
        size = (round(LONG_SIDE * aw / ah), LONG_SIDE)
    kind = rng.choice(BACKGROUNDS)
    canvas = _background(rng, size, kind)
    target = rng.uniform(*SCALE) * min(size)
    scale = target / max(glyph.size)
    g = glyph.resize(
        (max(1, round(glyph.width * scale)), max(1, round(glyph.height * scale))),
        Image.Resampling.LANCZOS,
    )
    g = g.rotate(rng.uniform(-MAX_ROTATION, MAX_ROTATION), Image.Resampling.BICUBIC, expand=True)
    if g.width > size[0] or g.height > size[1]:  # rotated corners can overflow
        g.thumbnail(size, Image.Resampling.LANCZOS)
    x = rng.randint(0, size[0] - g.width)
    y = rng.randint(0, size[1] - g.height)
    canvas.paste(g, (x, y), g)
    return canvas, f"{aw}:{ah} {kind}"


def _name(cp: int) -> str:
    name = unicodedata.name(chr(cp), "") or "unnamed"
    return f"{cp:05x}-" + re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def _settings(font_path: Path, tags: Sequence[str]) -> dict:
    return {
        "format": FORMAT,
        "font_sha256": hashlib.sha256(font_path.read_bytes()).hexdigest(),
        "tags": {t: [f"{c:x}" for c in TAGS[t]] for t in tags},
        "long_side": LONG_SIDE,
        "max_per_tag": MAX_PER_TAG,
        "order_seed": ORDER_SEED,
    }


def _ordered(paths: list[Path], tag: str) -> list[Path]:
    paths = sorted(paths, key=lambda p: p.name)
    random.Random(f"{ORDER_SEED}:{tag}").shuffle(paths)
    return paths


def build(
    out_dir: str | Path,
    *,
    tags: Sequence[str] | None = None,
    font: str | Path | None = None,
    force: bool = False,
    report: list[tuple[str, str, str]] | None = None,
) -> dict[str, list[Path]]:
    """Draw ``out_dir/<tag>/<code point>-<name>.png`` and return ``{tag: [paths]}``.

    Args:
        out_dir: output folder; a folder built before with the same settings and font is
            read back, not redrawn (unless ``force``); otherwise each tag's sub-folder is
            emptied and redrawn.
        tags: which tags (default: all of ``TAGS``).
        font: the font file (default ``$DRAWN_SET_FONT`` or the Debian install location).
        force: redraw even when the folder looks up to date.
        report: if given, ``(tag, name, what)`` is appended for every image drawn
            (``what``: aspect and background) or glyph skipped (``what``: why).

    Returns:
        Each tag's paths in a fixed pseudo-random order (the same on every build).

    Raises:
        MissingPackageError: the font is missing; the message names its package.

    Examples:
        >>> sets = build("/tmp/drawn_set")  # doctest: +SKIP
        >>> sorted(sets)  # doctest: +SKIP
        ['animal', 'clothing', 'face', 'food', 'place', 'sport', 'tool', 'vehicle']
    """
    tags = list(TAGS if tags is None else tags)
    unknown = [t for t in tags if t not in TAGS]
    if unknown:
        raise ValueError(f"unknown tags {unknown}; known: {sorted(TAGS)}")
    twice = [f"{c:x}" for c, n in Counter(c for t in TAGS.values() for c in t).items() if n > 1]
    if twice:
        raise ValueError(f"code points listed twice in TAGS: {twice}")
    font_path = check_font(font)
    out = Path(out_dir)
    stamp = out / "drawn_set.json"
    settings = _settings(font_path, tags)
    if not force and stamp.is_file():
        saved = json.loads(stamp.read_text())
        if saved.get("settings") == settings and all(
            (out / rel).is_file() for rel in saved.get("files", [])
        ):
            return {
                t: _ordered([out / r for r in saved["files"] if r.startswith(t + "/")], t)
                for t in tags
            }
    log = report if report is not None else []
    emoji = ImageFont.truetype(str(font_path), GLYPH_PX)
    result: dict[str, list[Path]] = {}
    for tag in tags:
        glyphs = []
        for cp in TAGS[tag]:
            g = _glyph(emoji, cp)
            if g is None:
                log.append((tag, _name(cp), "skipped: not in the font"))
            else:
                glyphs.append((cp, g))
        if len(glyphs) > MAX_PER_TAG:
            glyphs = random.Random(f"{ORDER_SEED}:{tag}").sample(glyphs, MAX_PER_TAG)
            glyphs.sort(key=lambda cg: cg[0])
        d = out / tag
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        paths = []
        for cp, g in glyphs:
            im, what = draw(g, random.Random(f"{ORDER_SEED}:{cp:x}"))
            p = d / f"{_name(cp)}.png"
            im.save(p, optimize=False)
            paths.append(p)
            log.append((tag, p.stem, what))
        result[tag] = _ordered(paths, tag)
    files = sorted(p.relative_to(out).as_posix() for ps in result.values() for p in ps)
    stamp.write_text(json.dumps({"settings": settings, "files": files}, indent=1))
    return result


def load(out_dir: str | Path, tags: Sequence[str] | None = None) -> dict[str, list[Path]]:
    """``{tag: [paths]}`` of a folder that ``build`` wrote, in the same fixed order."""
    out = Path(out_dir)
    result = {}
    for tag in TAGS if tags is None else tags:
        paths = list((out / tag).glob("*.png"))
        if not paths:
            raise FileNotFoundError(f"{out / tag}: no images; run build({str(out)!r}) first")
        result[tag] = _ordered(paths, tag)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="output folder (OUT/<tag>/<name>.png)")
    ap.add_argument("--tags", nargs="+", choices=sorted(TAGS), help="default: all eight")
    ap.add_argument("--force", action="store_true", help="redraw even if up to date")
    ap.add_argument("-v", "--verbose", action="store_true", help="list every image drawn")
    args = ap.parse_args(argv)
    report: list[tuple[str, str, str]] = []
    try:
        result = build(args.out, tags=args.tags, force=args.force, report=report)
    except MissingPackageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.verbose:
        for tag, key, what in report:
            print(f"{tag}/{key}: {what}")
    for tag, paths in result.items():
        shapes = Counter(Image.open(p).size for p in paths)
        wide = sum(n for (w, h), n in shapes.items() if w > h)
        tall = sum(n for (w, h), n in shapes.items() if w < h)
        square = len(paths) - wide - tall
        print(f"{tag:10s} {len(paths):4d}   (wide {wide}, tall {tall}, square {square})")
    print(f"{'total':10s} {sum(map(len, result.values())):4d}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
