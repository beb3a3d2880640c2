"""Import of messy folders, CSV manifests and batches: everything usable is taken,
everything refused is explained, nothing stored is lost."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import png_bytes
from PIL import Image

import jupyter_imgclass as ic


def _save(path: Path, image: Image.Image, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **kwargs)
    return path


def _noise(w: int, h: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


@pytest.fixture
def messy_folder(tmp_path) -> Path:
    """A folder as users bring it: odd modes, broken files, duplicates, hidden clutter."""
    root = tmp_path / "messy"
    cats = root / "cat"
    dogs = root / "dog"
    _save(cats / "rgb.jpg", Image.fromarray(_noise(40, 30, 1)), quality=90)
    _save(cats / "cmyk.jpg", Image.fromarray(_noise(32, 32, 2)).convert("CMYK"))
    pal = Image.fromarray(_noise(20, 20, 3)).convert("P")
    _save(cats / "palette_transparent.png", pal, transparency=0)
    rgba = Image.fromarray(np.dstack([_noise(16, 16, 4), np.full((16, 16), 128, np.uint8)]))
    _save(cats / "rgba.png", rgba)
    _save(
        dogs / "gray16.png",
        Image.fromarray((np.arange(400).reshape(20, 20) * 100).astype(np.uint16)),
    )
    # EXIF orientation 6 (rotate 90): stored 40x20, shown 20x40.
    exif = Image.Exif()
    exif[0x0112] = 6
    _save(dogs / "rotated.jpg", Image.fromarray(_noise(40, 20, 5)), exif=exif.tobytes())
    _save(dogs / "nested" / "deeper" / "inner.png", Image.fromarray(_noise(12, 12, 6)))
    frames = [Image.fromarray(_noise(10, 10, 7 + k)).convert("P") for k in range(3)]
    frames[0].save(dogs / "animated.gif", save_all=True, append_images=frames[1:])
    # Broken things.
    (dogs / "empty.jpg").write_bytes(b"")
    good = io.BytesIO()
    Image.fromarray(_noise(64, 64, 8)).save(good, format="JPEG")
    (dogs / "truncated.jpg").write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
    (dogs / "notes.txt").write_text("not a picture")
    (dogs / "fake.png").write_text("<html>a web page saved as png</html>")
    # A duplicate of rgb.jpg under another name and folder.
    (dogs / "copy_of_rgb.jpg").write_bytes((cats / "rgb.jpg").read_bytes())
    # Hidden clutter.
    (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    _save(root / ".ipynb_checkpoints" / "x.png", Image.fromarray(_noise(8, 8, 9)))
    (cats / "._rgb.jpg").write_bytes(b"AppleDouble")
    # A unicode name.
    _save(root / "chat é" / "photo ☀.png", Image.fromarray(_noise(9, 9, 10)))
    return root


def test_messy_folder_import_reports_everything(tmp_path, messy_folder):
    p = ic.Project.create(tmp_path / "proj")
    report = p.add_folder(messy_folder)
    rejected = {Path(s).name: reason for s, reason in report.rejected}
    assert set(rejected) == {"empty.jpg", "truncated.jpg", "notes.txt", "fake.png"}
    assert "empty" in rejected["empty.jpg"]
    assert "truncat" in rejected["truncated.jpg"]
    assert "not an image" in rejected["notes.txt"] and "not an image" in rejected["fake.png"]
    assert [Path(s).name for s, _ in report.duplicates] == ["copy_of_rgb.jpg"]
    assert len(report.added) == 9
    assert report.skipped_hidden == 3  # .DS_Store, .ipynb_checkpoints, ._rgb.jpg
    by_name = {Path(im.source).name: im for im in p.images}
    assert by_name["rotated.jpg"].width == 20 and by_name["rotated.jpg"].height == 40
    assert by_name["inner.png"].tags == ("dog",)  # nested folders take the top folder's tag
    assert by_name["photo ☀.png"].tags == ("chat é",)
    assert p.counts() == {"cat": 4, "chat é": 1, "dog": 4, "untagged": 0}
    # The stored copy of a file that needed no conversion is the original, bit for bit.
    assert by_name["rgb.jpg"].path.read_bytes() == (messy_folder / "cat" / "rgb.jpg").read_bytes()
    # Every stored image decodes as RGB.
    for im in p.images:
        with Image.open(im.path) as opened:
            assert opened.size[0] > 0
    text = repr(report)
    assert "9 added, 1 duplicate(s), 4 rejected" in text and "empty.jpg" in text
    # A duplicate names the file and the image it duplicates (file <-> existing image).
    (dup_source, dup_id), original = report.duplicates[0], by_name["rgb.jpg"]
    assert dup_id == original.id
    line = next(line for line in text.splitlines() if "copy_of_rgb.jpg" in line)
    assert f"image #{original.id}" in line and "rgb.jpg" in line.split("=")[1]
    page = report._repr_html_()
    assert "<table>" in page and "same image as" in page and "copy_of_rgb.jpg" in page
    assert report.to_json()["duplicate_files"] == [
        {"path": dup_source, "image_id": original.id, "duplicates": original.source}
    ]
    p.close()


def test_reimport_of_same_folder_adds_nothing(tmp_path, colour_folder):
    p = ic.Project.create(tmp_path / "proj")
    assert len(p.add_folder(colour_folder).added) == 18
    again = p.add_folder(colour_folder)
    assert again.added == [] and len(again.duplicates) == 18
    p.close()


def test_originals_are_never_modified(tmp_path, colour_folder):
    before = {f: f.read_bytes() for f in colour_folder.rglob("*.png")}
    stat = {f: f.stat().st_mtime_ns for f in before}
    p = ic.Project.create(tmp_path / "proj")
    p.add_folder(colour_folder)
    p.close()
    assert all(f.read_bytes() == b and f.stat().st_mtime_ns == stat[f] for f, b in before.items())


def test_csv_manifest_with_broken_rows(tmp_path, colour_folder):
    manifest = tmp_path / "list.csv"
    reds = sorted((colour_folder / "red").glob("*.png"))
    manifest.write_text(
        "path,tag\n"
        f"{reds[0]},red\n"
        f"{os.path.relpath(reds[1], tmp_path)},red\n"  # relative to the manifest
        "missing.png,red\n"
        ",red\n"
        f"{reds[2]}\n"  # no tag: untagged
        "\n",
        encoding="utf-8",
    )
    p = ic.Project.create(tmp_path / "proj")
    report = p.add_csv(manifest)
    assert len(report.added) == 3
    reasons = dict(report.rejected)
    assert any("missing.png" in s for s in reasons)
    assert "list.csv:5" in reasons and "empty path" in reasons["list.csv:5"]
    assert p.counts() == {"red": 2, "untagged": 1}
    (tmp_path / "binary.csv").write_bytes(b"\x00\x01\x02")
    with pytest.raises(ic.ImgClassError, match="binary"):
        p.add_csv(tmp_path / "binary.csv")
    with pytest.raises(ic.ImgClassError, match="cannot read"):
        p.add_csv(tmp_path / "nope.csv")
    p.close()


def test_bad_folder_argument(tmp_path):
    p = ic.Project.create(tmp_path / "proj")
    with pytest.raises(ic.ImgClassError, match="not a folder"):
        p.add_folder(tmp_path / "nope")
    p.close()


def _write_many(folder: Path, n: int) -> None:
    for i in range(n):
        tag = ("a", "b", "c")[i % 3]
        (folder / tag).mkdir(parents=True, exist_ok=True)
        arr = np.random.default_rng(i).integers(0, 255, (16, 16, 3), dtype=np.uint8)
        Image.fromarray(arr).save(folder / tag / f"{i:04d}.png")


def test_import_of_1000_images_is_quick_enough_to_report(tmp_path, capsys):
    folder = tmp_path / "many"
    _write_many(folder, 1000)
    p = ic.Project.create(tmp_path / "proj")
    start = time.perf_counter()
    report = p.add_folder(folder)
    elapsed = time.perf_counter() - start
    assert len(report.added) == 1000
    with capsys.disabled():
        print(f"\n[import] 1000 images in {elapsed:.2f} s = {1000 / elapsed:.0f} images/s")
    p.close()


def test_kill_during_import_leaves_a_consistent_project(tmp_path):
    """SIGKILL an importing process mid-way; the project must open, agree with its files,
    and a second import of the same folder must complete it."""
    folder = tmp_path / "many"
    _write_many(folder, 1000)
    proj = tmp_path / "proj"
    ic.Project.create(proj).close()
    script = textwrap.dedent(
        f"""
        import jupyter_imgclass as ic
        p = ic.Project.open({str(proj)!r})
        p.on("images_added", lambda ids: print("progress", len(ids), flush=True))
        p.add_folder({str(folder)!r})
        print("finished", flush=True)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    # Wait until the child has committed at least one batch, then kill it without warning.
    line = child.stdout.readline()
    assert line.startswith("progress"), line
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL

    p = ic.Project.open(proj)
    images = p.images
    assert 0 < len(images) < 1000, "the kill should land mid-import"
    stored = {f.name for f in (proj / "images").glob("*/*")}
    assert stored == {im.path.name for im in images}, "rows and stored files must agree"
    assert all(im.tags and im.path.is_file() for im in images)
    report = p.add_folder(folder)
    assert len(report.added) + len(report.duplicates) == 1000
    assert len(p.images) == 1000
    assert sum(v for k, v in p.counts().items() if k != "untagged") == 1000
    p.close()


def test_special_files_in_a_folder_are_rejected_without_hanging(tmp_path):
    """A FIFO named x.jpg hung add_folder for ever; a link to /dev/zero read until
    MemoryError. Each is now rejected with the reason and the rest of the folder imports."""
    import socket as _socket

    folder = tmp_path / "odd" / "cats"
    folder.mkdir(parents=True)
    (folder / "good.png").write_bytes(png_bytes((200, 100, 0)))
    os.mkfifo(folder / "x.jpg")
    (folder / "zero.jpg").symlink_to("/dev/zero")
    (folder / "null.png").symlink_to("/dev/null")
    sock = _socket.socket(_socket.AF_UNIX)
    sock.bind(str(folder / "s.png"))
    p = ic.Project.create(tmp_path / "proj")
    done = threading.Event()
    result = {}

    def run():
        result["report"] = p.add_folder(tmp_path / "odd")
        done.set()

    threading.Thread(target=run, daemon=True).start()
    assert done.wait(60), "add_folder hung on a special file"
    sock.close()
    report = result["report"]
    assert len(report.added) == 1
    reasons = {Path(src).name: why for src, why in report.rejected}
    assert "not a regular file (a FIFO)" in reasons["x.jpg"]
    assert "not a regular file (a character device)" in reasons["zero.jpg"]
    assert "not a regular file (a character device)" in reasons["null.png"]
    assert "not a regular file" in reasons["s.png"]
    p.close()


def test_a_tag_is_created_with_its_first_image_not_by_rejected_files(tmp_path):
    folder = tmp_path / "photos"
    (folder / "odd").mkdir(parents=True)
    (folder / "odd" / "notes.jpg").write_text("not an image")
    (folder / "cats").mkdir()
    (folder / "cats" / "a.png").write_bytes(png_bytes((9, 9, 9)))
    p = ic.Project.create(tmp_path / "proj")
    report = p.add_folder(folder)
    assert len(report.added) == 1 and len(report.rejected) == 1
    assert p.tag_names == ["cats"]
    p.close()
