"""A small offline set of REAL photographs in six tags, for few-shot benchmarks.

The photographs come from two Debian packages of children's software, so a benchmark
needs no network at run time:

* ``tuxpaint-stamps-default`` (Tux Paint's stamps, ``/usr/share/tuxpaint/stamps``):
  photographs of animals, plants and tools cut out on a transparent background
  (composited on white here). Mostly small: 100-400 px a side.
* ``gcompris-qt-data`` (GCompris's activity data, ``/usr/share/gcompris-qt/rcc``):
  whole-scene photographs (fish, monuments, tools, animals) inside Qt resource (``.rcc``)
  files, read here by a small pure-Python ``.rcc`` reader. 120-1920 px a side.

Install both (about 300 MB on disk; tested with bookworm's tuxpaint-stamps 2022.06.04
and gcompris-qt 3.1)::

    apt-get install -y --no-install-recommends tuxpaint-stamps-default gcompris-qt-data

Without root, ``apt-get download PKG && dpkg -x PKG*.deb DIR`` and point
``PHOTO_SET_TUXPAINT`` / ``PHOTO_SET_GCOMPRIS`` (or the ``build`` arguments) at
``DIR/usr/share/tuxpaint/stamps`` and ``DIR/usr/share/gcompris-qt/rcc``.

Tags (``TAGS``; counts with the versions above): ``mammal`` 102, ``bird`` 47, ``fish``
36, ``monument`` 85, ``tool`` 48, ``plant`` 32 (flowers, trees, herbs). ``mammal`` and
``bird`` mix both packages (cut-outs on white and whole scenes) and ``mammal`` includes
dolphins, whales and a narwhal (often taken for fish); ``monument`` is GCompris only and
``plant`` Tux Paint only, so for those two the background alone says a lot. An optional
seventh tag, ``energy`` (windmills, solar panels, dams: 29, GCompris only), is defined
(``ALL_TAGS``) but not built by default.

What ``build`` does, in a fixed order (sources sorted by name):

* takes only bitmaps (Tux Paint's SVG stamps are all clip art) and skips Tux Paint's
  ``cartoon/`` and ``toys/`` folders, ``*_mirror`` copies and a short list of drawings
  named in ``_TUXPAINT_DRAWINGS``; then drops Tux Paint stamps that still look drawn:
  more than half of neighbouring opaque pixels exactly equal, or fewer than 100
  distinct colours (5 bits a channel). The GCompris folders used hold only photographs
  (checked by eye) and are not tested: the test misfires on large photos with smooth
  skies or white backgrounds;
* crops to the alpha bounding box, drops images whose box is less than 10 % opaque
  ("mostly transparent") or that are under 64 px on a side, composites RGBA on white,
  shrinks to at most ``max_side`` (512) px on the long side and writes
  ``OUT/<tag>/<source>-<name>.png``;
* deduplicates: exact (sha256 of the source bytes and of the output pixels) and near
  (correlation >= 0.95 of 16x16 grey thumbnails, also against the mirror image),
  keeping the first; a near copy across two tags is dropped from both;
* lists each tag in a fixed pseudo-random order (``random.Random("0:<tag>")`` shuffling
  the sorted names; string seeds are stable across runs and machines).

``few_shot_split(tags_to_paths, n_train_per_tag, seed)`` puts ``n`` images of each tag,
drawn with ``seed``, in train and EVERY other image in test, so the test set is
unbalanced (report balanced accuracy too) and shrinks as ``n`` grows.

Usage::

    python benchmarks/photo_set.py OUT [--tags mammal bird ...] [--all-tags] [-v]

prints the image count per tag (``-v``: also every dropped image and why).
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import io
import os
import random
import re
import shutil
import struct
import sys
import warnings
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

TUXPAINT_PACKAGE = "tuxpaint-stamps-default"
GCOMPRIS_PACKAGE = "gcompris-qt-data"
APT_LINE = f"apt-get install -y --no-install-recommends {TUXPAINT_PACKAGE} {GCOMPRIS_PACKAGE}"
TUXPAINT_ROOT = Path(os.environ.get("PHOTO_SET_TUXPAINT", "/usr/share/tuxpaint/stamps"))
GCOMPRIS_RCC = Path(os.environ.get("PHOTO_SET_GCOMPRIS", "/usr/share/gcompris-qt/rcc"))

MIN_SIDE = 64
MIN_OPAQUE = 0.10
MAX_FLAT = 0.5
MIN_COLOURS = 100
NEAR_CORR = 0.95
ORDER_SEED = 0
_BITMAP = (".png", ".jpg", ".jpeg", ".webp")


class MissingPackageError(RuntimeError):
    """A Debian package that the photo set reads from is not installed."""


@dataclass(frozen=True)
class Tux:
    """Tux Paint stamps: ``pattern`` globbed under the stamps folder, minus ``exclude``
    (file stems) and anything under a folder named in ``skip_dirs``."""

    pattern: str
    exclude: tuple[str, ...] = ()
    skip_dirs: tuple[str, ...] = ()


@dataclass(frozen=True)
class GC:
    """GCompris images: members of ``<rcc>.rcc`` under ``prefix`` (a folder inside the
    resource) whose stem matches one of ``names`` (fnmatch patterns)."""

    rcc: str
    prefix: str
    names: tuple[str, ...] = ("*",)


def _words(s: str) -> tuple[str, ...]:
    return tuple(s.split())


_ACT = "gcompris/src/activities/"
_ERASE_MAMMALS = _words(
    "alpaca calf camels cheetah dolphin flying_fox gibbon giraffe goat gorilla horse "
    "kitten long_nosed_monkey macaque meerkats nubian_ibex pika red_panda rhinoceros "
    "squirrel"
)
_ERASE_BIRDS = _words("gosling heron kingfisher northern_harrier penguin spoonbills swans toucan")
_DETAILS_PHOTOS = tuple(
    n + "_background"
    for n in _words(
        "Chenonceau EgeskovSlotSpejling EilanDonanCastle GizahPyramids Louvre_2007_02_24_c "
        "NDP Nagoya Neuschwanstein OperaSidney TajMahal TourEiffel TowerBridgeLondon"
    )
)
# Drawings (or silhouettes) outside Tux Paint's cartoon/ folders, by stem.
_TUXPAINT_DRAWINGS = frozenset(
    _words("echidna hedgehog teddy_bear kangaroo-silo bee fly snail2 wings iguana")
)

TAGS: dict[str, tuple[Tux | GC, ...]] = {
    "mammal": (
        Tux("animals/mammals/**/*"),
        Tux("animals/marsupials/**/*"),
        GC("erase", _ACT + "erase/resource", _ERASE_MAMMALS),
        GC(
            "explore_farm_animals",
            _ACT + "explore_farm_animals/resource/animals",
            _words("cat cow dog horse pig sheep"),
        ),
        GC(
            "explore_world_animals",
            _ACT + "explore_world_animals/resource/animals",
            _words(
                "bison giraffe hedgehog jaguar kangaroo koala lemur moose narwhal panda polar_bear"
            ),
        ),
    ),
    "bird": (
        Tux("animals/birds/*"),
        GC("erase", _ACT + "erase/resource", _ERASE_BIRDS),
        GC(
            "explore_farm_animals",
            _ACT + "explore_farm_animals/resource/animals",
            _words("chicken duck owl"),
        ),
        GC(
            "explore_world_animals",
            _ACT + "explore_world_animals/resource/animals",
            ("scarlet_macaw",),
        ),
    ),
    "fish": (
        GC("categorization", _ACT + "categorization/resource/images/fishes"),
        Tux("animals/fish/*", exclude=("lobster", "shrimp")),
    ),
    "monument": (
        GC("categorization", _ACT + "categorization/resource/images/monuments"),
        GC("explore_monuments", _ACT + "explore_monuments/resource"),
        GC("details", _ACT + "details/resource/image", _DETAILS_PHOTOS),
    ),
    "tool": (
        GC("categorization", _ACT + "categorization/resource/images/tools"),
        Tux("household/tools/*", exclude=("cementmixer",)),  # a machine, not a hand tool
    ),
    "plant": (
        # flowers, trees, herbs; not mushrooms (fungi) nor a plastic flower
        Tux("plants/**/*", exclude=("chuvanna_plastic_poo",), skip_dirs=("mushrooms", "plastic")),
    ),
}
OPTIONAL_TAGS: dict[str, tuple[Tux | GC, ...]] = {
    "energy": (GC("categorization", _ACT + "categorization/resource/images/renewable"),),
}
ALL_TAGS = {**TAGS, **OPTIONAL_TAGS}


# --------------------------------------------------------------------------- Qt .rcc


def read_rcc(path: str | Path) -> dict[str, bytes]:
    """Every file in a Qt resource file, ``{"dir/sub/name.ext": bytes}``.

    Handles format versions 1-3 and zlib compression (``qCompress``: a 4-byte big-endian
    length, then a zlib stream); zstd-compressed entries need the ``zstandard`` module.
    """
    b = Path(path).read_bytes()
    if b[:4] != b"qres":
        raise ValueError(f"{path}: not a Qt resource file")
    version, tree, data, names = struct.unpack(">IIII", b[4:20])
    node = 14 if version < 2 else 22
    out: dict[str, bytes] = {}

    def name_at(off: int) -> str:
        o = names + off
        (n,) = struct.unpack(">H", b[o : o + 2])
        return b[o + 6 : o + 6 + 2 * n].decode("utf-16-be")

    def walk(i: int, prefix: str) -> None:
        o = tree + i * node
        name_off, flags = struct.unpack(">IH", b[o : o + 6])
        name = name_at(name_off) if i else ""
        if flags & 2:  # directory
            count, first = struct.unpack(">II", b[o + 6 : o + 14])
            for c in range(first, first + count):
                walk(c, f"{prefix}{name}/" if i else "")
            return
        (data_off,) = struct.unpack(">I", b[o + 10 : o + 14])
        d = data + data_off
        (n,) = struct.unpack(">I", b[d : d + 4])
        raw = b[d + 4 : d + 4 + n]
        if flags & 1:
            raw = zlib.decompress(raw[4:])
        elif flags & 4:
            try:
                import zstandard
            except ImportError as e:
                raise RuntimeError(f"{path}: zstd-compressed entries, pip install zstandard") from e
            raw = zstandard.ZstdDecompressor().decompress(raw, max_output_size=1 << 28)
        out[prefix + name] = raw

    walk(0, "")
    return out


# --------------------------------------------------------------------------- sources


@dataclass
class _Candidate:
    tag: str
    key: str  # "<source>-<flattened path>", the output stem
    read: object = field(repr=False)  # () -> bytes
    check_drawn: bool = True  # False for GCompris folders that hold only photographs


def check_packages(
    tags: Sequence[str] | None = None,
    tuxpaint_root: str | Path | None = None,
    gcompris_rcc: str | Path | None = None,
) -> None:
    """Raise ``MissingPackageError`` naming every Debian package that ``tags`` need and
    that is not installed (its folder missing or empty)."""
    tags = list(TAGS if tags is None else tags)
    tux_root = Path(tuxpaint_root) if tuxpaint_root else TUXPAINT_ROOT
    gc_root = Path(gcompris_rcc) if gcompris_rcc else GCOMPRIS_RCC
    missing = []
    srcs = [s for t in tags for s in ALL_TAGS[t]]
    if any(isinstance(s, Tux) for s in srcs) and not (tux_root / "animals").is_dir():
        missing.append((TUXPAINT_PACKAGE, tux_root))
    rccs = sorted({s.rcc for s in srcs if isinstance(s, GC)})
    if rccs and not all((gc_root / f"{r}.rcc").is_file() for r in rccs):
        missing.append((GCOMPRIS_PACKAGE, gc_root))
    if missing:
        what = "; ".join(f"{pkg!r} (looked in {path})" for pkg, path in missing)
        raise MissingPackageError(
            f"the photo set needs the Debian package(s) {what}. Install with: {APT_LINE}"
            "  (or set PHOTO_SET_TUXPAINT / PHOTO_SET_GCOMPRIS to the folders of a package"
            " unpacked with dpkg -x)"
        )


def _flat(rel: str) -> str:
    stem = rel.rsplit(".", 1)[0]
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", stem.replace("/", "_"))


def _candidates(tags: Sequence[str], tux_root: Path, gc_root: Path) -> Iterator[_Candidate]:
    rcc_cache: dict[str, dict[str, bytes]] = {}
    for tag in tags:
        for src in ALL_TAGS[tag]:
            n = 0
            for c in _from_source(tag, src, tux_root, gc_root, rcc_cache):
                n += 1
                yield c
            if n == 0:
                warnings.warn(
                    f"photo_set: {src} for tag {tag!r} matched no file; another version of "
                    "the package may have renamed it",
                    stacklevel=2,
                )


def _from_source(
    tag: str, src: Tux | GC, tux_root: Path, gc_root: Path, rcc_cache: dict
) -> Iterator[_Candidate]:
    """The candidate images of one source of ``tag``, sorted by path."""
    if isinstance(src, Tux):
        for p in sorted(tux_root.glob(src.pattern)):
            rel = p.relative_to(tux_root).as_posix()
            parts = set(rel.split("/")[:-1])
            if (
                p.suffix.lower() not in _BITMAP
                or parts & {"cartoon", "toys", *src.skip_dirs}
                or p.stem.endswith("_mirror")
                or p.stem in src.exclude
                or p.stem in _TUXPAINT_DRAWINGS
            ):
                continue
            yield _Candidate(tag, "tuxpaint-" + _flat(rel), p.read_bytes)
    else:
        if src.rcc not in rcc_cache:
            rcc_cache[src.rcc] = read_rcc(gc_root / f"{src.rcc}.rcc")
        files = rcc_cache[src.rcc]
        for rel in sorted(files):
            if not rel.startswith(src.prefix + "/") or not rel.lower().endswith(_BITMAP):
                continue
            stem = rel.rsplit("/", 1)[-1].rsplit(".", 1)[0]
            if not any(fnmatch.fnmatchcase(stem, n) for n in src.names):
                continue
            short = rel[len(_ACT) :] if rel.startswith(_ACT) else rel
            short = short.replace("/resource/images/", "/").replace("/resource/", "/")
            yield _Candidate(tag, "gcompris-" + _flat(short), lambda b=files[rel]: b, False)


# --------------------------------------------------------------------------- filters


def _looks_drawn(rgba: np.ndarray) -> str | None:
    """Why these pixels look like clip art rather than a photograph, or None."""
    op = rgba[..., 3] > 127
    rgb = rgba[..., :3].astype(np.int32)
    both = op[:, 1:] & op[:, :-1]
    same = (rgb[:, 1:] == rgb[:, :-1]).all(-1) & both
    flat = same.sum() / max(1, both.sum())
    q = rgb[op] >> 3
    colours = len(np.unique(q[:, 0] * 1024 + q[:, 1] * 32 + q[:, 2]))
    if flat > MAX_FLAT:
        return f"drawn: {flat:.0%} of neighbouring pixels equal"
    if colours < MIN_COLOURS:
        return f"drawn: {colours} colours"
    return None


def _thumb(im: Image.Image, mirror: bool = False) -> np.ndarray:
    """16x16 grey thumbnail, zero-mean and unit-norm (for near-duplicate checks)."""
    g = im.convert("L")
    if mirror:
        g = g.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    v = np.asarray(g.resize((16, 16), Image.Resampling.BOX), np.float32).ravel()
    v -= v.mean()
    return v / (np.linalg.norm(v) + 1e-6)


def _prepare(
    data: bytes, max_side: int | None, check_drawn: bool = True
) -> tuple[Image.Image | None, str]:
    """(RGB image, "") or (None, why it was dropped)."""
    try:
        im = Image.open(io.BytesIO(data))
        im.load()
    except Exception as e:  # noqa: BLE001 - any undecodable file is just skipped
        return None, f"undecodable: {e}"
    rgba = im.convert("RGBA")
    a = np.asarray(rgba)
    alpha = a[..., 3]
    if alpha.min() < 255:
        ys, xs = np.nonzero(alpha)
        if len(xs) == 0:
            return None, "fully transparent"
        box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        rgba = rgba.crop(box)
        a = np.asarray(rgba)
        opaque = float((a[..., 3] > 127).mean())
        if opaque < MIN_OPAQUE:
            return None, f"mostly transparent ({opaque:.0%} opaque)"
    if min(rgba.size) < MIN_SIDE:
        return None, f"tiny ({rgba.size[0]}x{rgba.size[1]})"
    why = _looks_drawn(a) if check_drawn else None
    if why:
        return None, why
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    white.alpha_composite(rgba)
    rgb = white.convert("RGB")
    if max_side and max(rgb.size) > max_side:
        rgb.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return rgb, ""


# --------------------------------------------------------------------------- API


def build(
    out_dir: str | Path,
    *,
    tags: Sequence[str] | None = None,
    max_side: int | None = 512,
    tuxpaint_root: str | Path | None = None,
    gcompris_rcc: str | Path | None = None,
    report: list[tuple[str, str, str]] | None = None,
) -> dict[str, list[Path]]:
    """Write ``out_dir/<tag>/<source>-<name>.png`` and return ``{tag: [paths]}``.

    Args:
        out_dir: output folder; each tag's sub-folder is emptied and rewritten.
        tags: which tags (default ``TAGS``, the six; ``ALL_TAGS`` has ``energy`` too).
        max_side: shrink so the long side is at most this many pixels (None: keep).
        tuxpaint_root / gcompris_rcc: where the packages' files are (default: their
            Debian install locations, or ``$PHOTO_SET_TUXPAINT`` / ``$PHOTO_SET_GCOMPRIS``).
        report: if given, ``(tag, name, reason)`` is appended for every dropped image.

    Returns:
        Each tag's paths in a fixed pseudo-random order (the same on every build).

    Raises:
        MissingPackageError: a package's files are missing; the message names it.
    """
    tags = list(TAGS if tags is None else tags)
    unknown = [t for t in tags if t not in ALL_TAGS]
    if unknown:
        raise ValueError(f"unknown tags {unknown}; known: {sorted(ALL_TAGS)}")
    check_packages(tags, tuxpaint_root, gcompris_rcc)
    tux_root = Path(tuxpaint_root) if tuxpaint_root else TUXPAINT_ROOT
    gc_root = Path(gcompris_rcc) if gcompris_rcc else GCOMPRIS_RCC
    dropped = report if report is not None else []

    kept: dict[str, list[tuple[str, Image.Image]]] = {t: [] for t in tags}
    seen_bytes: set[str] = set()
    seen_pixels: set[str] = set()
    thumbs: list[np.ndarray] = []  # _thumb of every kept image
    thumb_keys: list[tuple[str, str]] = []  # its (tag, key)
    cross: set[tuple[str, str]] = set()  # (tag, key) to remove: near copies across tags
    for c in _candidates(tags, tux_root, gc_root):
        data = c.read()
        h = hashlib.sha256(data).hexdigest()
        if h in seen_bytes:
            dropped.append((c.tag, c.key, "duplicate (same bytes)"))
            continue
        seen_bytes.add(h)
        im, why = _prepare(data, max_side, c.check_drawn)
        if im is None:
            dropped.append((c.tag, c.key, why))
            continue
        hp = hashlib.sha256(im.tobytes()).hexdigest()
        if hp in seen_pixels:
            dropped.append((c.tag, c.key, "duplicate (same pixels)"))
            continue
        seen_pixels.add(hp)
        th, tm = _thumb(im), _thumb(im, mirror=True)
        near = None
        if thumbs:
            corr = np.maximum(np.stack(thumbs) @ th, np.stack(thumbs) @ tm)
            j = int(corr.argmax())
            if corr[j] >= NEAR_CORR:
                near = thumb_keys[j]
        if near:
            dropped.append((c.tag, c.key, f"near duplicate of {near[0]}/{near[1]}"))
            if near[0] != c.tag:
                cross.add(near)
            continue
        thumbs.append(th)
        thumb_keys.append((c.tag, c.key))
        kept[c.tag].append((c.key, im))

    out = Path(out_dir)
    result: dict[str, list[Path]] = {}
    for tag in tags:
        items = [(k, im) for k, im in kept[tag] if (tag, k) not in cross]
        for k, _ in kept[tag]:
            if (tag, k) in cross:
                dropped.append((tag, k, "near duplicate in another tag"))
        d = out / tag
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        paths = []
        for key, im in items:
            p = d / f"{key}.png"
            im.save(p, optimize=False)
            paths.append(p)
        paths.sort(key=lambda p: p.name)
        random.Random(f"{ORDER_SEED}:{tag}").shuffle(paths)
        result[tag] = paths
    return result


def load(out_dir: str | Path, tags: Sequence[str] | None = None) -> dict[str, list[Path]]:
    """``{tag: [paths]}`` of a folder that ``build`` wrote, in the same fixed order."""
    out = Path(out_dir)
    tags = list(TAGS if tags is None else tags)
    result = {}
    for tag in tags:
        paths = sorted((out / tag).glob("*.png"), key=lambda p: p.name)
        if not paths:
            raise FileNotFoundError(f"{out / tag}: no images; run build({str(out)!r}) first")
        random.Random(f"{ORDER_SEED}:{tag}").shuffle(paths)
        result[tag] = paths
    return result


def few_shot_split(
    tags_to_paths: dict[str, list[Path]], n_train_per_tag: int, seed: int
) -> tuple[list[tuple[Path, str]], list[tuple[Path, str]]]:
    """``(train, test)`` lists of ``(path, tag)``.

    ``n_train_per_tag`` images of every tag, drawn with ``seed``, are train; every other
    image is test (so test is unbalanced and depends on ``n``). Raises ``ValueError``
    when a tag has fewer than ``n_train_per_tag + 1`` images.
    """
    train: list[tuple[Path, str]] = []
    test: list[tuple[Path, str]] = []
    for tag in sorted(tags_to_paths):
        paths = sorted(tags_to_paths[tag], key=lambda p: Path(p).name)
        if len(paths) <= n_train_per_tag:
            raise ValueError(f"tag {tag!r} has {len(paths)} images, needs > {n_train_per_tag}")
        order = random.Random(f"{seed}:{tag}").sample(paths, len(paths))
        train += [(Path(p), tag) for p in order[:n_train_per_tag]]
        test += [(Path(p), tag) for p in order[n_train_per_tag:]]
    return train, test


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="output folder (OUT/<tag>/<name>.png)")
    ap.add_argument("--tags", nargs="+", choices=sorted(ALL_TAGS), help="default: the six")
    ap.add_argument("--all-tags", action="store_true", help="also the optional 'energy' tag")
    ap.add_argument("--max-side", type=int, default=512, help="0: keep full size")
    ap.add_argument("-v", "--verbose", action="store_true", help="list dropped images")
    args = ap.parse_args(argv)
    tags = args.tags or (list(ALL_TAGS) if args.all_tags else list(TAGS))
    report: list[tuple[str, str, str]] = []
    try:
        result = build(args.out, tags=tags, max_side=args.max_side or None, report=report)
    except MissingPackageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.verbose:
        for tag, key, why in report:
            print(f"dropped {tag}/{key}: {why}")
    for tag, paths in result.items():
        tux = sum(p.name.startswith("tuxpaint-") for p in paths)
        print(f"{tag:10s} {len(paths):4d}   (tuxpaint {tux}, gcompris {len(paths) - tux})")
    print(f"{'total':10s} {sum(map(len, result.values())):4d}   dropped {len(report)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
