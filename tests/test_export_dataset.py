"""Project.export_dataset and ``jupyter-imgclass export-dataset``: the data leaves whole.

Every format is read back by the project's own importers (add_folder, add_csv) into a
fresh project, or read as JSON, and compared image by image (content hash and tags).
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import png_bytes

import jupyter_imgclass as ic
from jupyter_imgclass.data.export import MARKER_FILE

COLOURS = {"red": (220, 30, 30), "blue": (30, 40, 220)}


def _photos(root: Path) -> Path:
    """``root/<tag>/img_<i>.png`` (the same names in both tags) and one file at the top."""
    for k, (tag, colour) in enumerate(COLOURS.items()):
        (root / tag).mkdir(parents=True)
        for i in range(3):
            (root / tag / f"img_{i}.png").write_bytes(png_bytes(colour, seed=10 * k + i))
    (root / "loose.png").write_bytes(png_bytes((90, 90, 90), seed=77))
    return root


def _project(tmp_path: Path, kind: str = "multiclass") -> ic.Project:
    """A folder import (one untagged image), two red ``dup.png`` from two folders, and a
    Negative image added from bytes (no original name)."""
    p = ic.Project.create(tmp_path / "proj", kind=kind)
    assert not p.add_folder(_photos(tmp_path / "photos")).rejected
    dups = []
    for k, sub in enumerate(("a", "b")):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "dup.png").write_bytes(png_bytes(COLOURS["red"], seed=50 + k))
        dups.append(tmp_path / sub / "dup.png")
    p.add_images(dups, tags=["red"])
    negative = p.create_negative_tag().name
    p.add_images([png_bytes((5, 5, 5), seed=1)], tags=[negative])
    return p


def _by_sha(project: ic.Project) -> dict[str, tuple[str, ...]]:
    return {im.sha256: im.tags for im in project.images}


def _fresh(tmp_path: Path, name: str, kind: str = "multiclass") -> ic.Project:
    return ic.Project.create(tmp_path / name, kind=kind)  # the export's marker brings Negative


def _files(root: Path) -> list[str]:
    return sorted(str(f.relative_to(root)) for f in root.rglob("*") if f.is_file())


def test_folder_export_round_trips_through_add_folder(tmp_path):
    p = _project(tmp_path)
    out = tmp_path / "out"
    report = p.export_dataset(out)
    red_dup = [im.id for im in p.images if Path(im.source).name == "dup.png"]
    negative_id = p.image_ids("Negative")[0]
    assert _files(out) == sorted(
        [MARKER_FILE, "loose.png", f"Negative/image-{negative_id}.png"]
        + [f"blue/img_{i}.png" for i in range(3)]
        + [f"red/img_{i}.png" for i in range(3)]
        + ["red/dup.png", f"red/dup-{red_dup[1]}.png"]  # the second dup.png gets its id
    )
    assert report.counts == p.counts() == {"blue": 3, "red": 5, "Negative": 1, "untagged": 1}
    assert report.skipped == [] and sorted(report.written) == sorted(im.id for im in p.images)
    assert report.negative_tag == "Negative"
    q = _fresh(tmp_path, "again")
    back = q.add_folder(out)
    assert back.rejected == [] and back.duplicates == [] and back.skipped_hidden == 1
    assert q.counts() == p.counts()
    assert _by_sha(q) == _by_sha(p)  # the same bytes with the same tags
    assert q.negative_tag == "Negative"
    assert sorted(os.listdir(tmp_path)) == ["a", "again", "b", "out", "photos", "proj"]


@pytest.mark.parametrize("kind", ["multiclass", "multilabel"])
def test_csv_export_round_trips_through_add_csv_with_every_tag(tmp_path, kind):
    p = _project(tmp_path, kind)
    first = p.image_ids("blue")[0]
    if kind == "multilabel":
        p.set_tags(first, ["blue", "red"])
    out = tmp_path / "out"
    report = p.export_dataset(out, "csv")
    assert report.counts == p.counts()
    with open(out / "labels.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    tag_columns = ["tag1", "tag2"] if kind == "multilabel" else ["tag"]
    assert rows[0] == ["path", "image_id", "original_name", *tag_columns]
    row = next(r for r in rows[1:] if r[1] == str(first))
    assert row[2] == "img_0.png" and row[3:] == list(p.image(first).tags)
    assert (out / row[0]).read_bytes() == p.image(first).path.read_bytes()
    assert sorted(r[0] for r in rows[1:]) == [f for f in _files(out) if f.startswith("images/")]
    q = _fresh(tmp_path, "again", kind)
    back = q.add_csv(out / "labels.csv")
    assert back.rejected == [] and back.duplicates == []
    assert q.counts() == p.counts()
    assert _by_sha(q) == _by_sha(p)
    assert q.negative_tag == "Negative"  # the marker says which tag it was


def test_coco_export_holds_image_level_annotations(tmp_path):
    p = _project(tmp_path, "multilabel")
    both = p.image_ids("blue")[0]
    p.set_tags(both, ["blue", "red"])
    out = tmp_path / "out"
    report = p.export_dataset(out, "coco")
    doc = json.loads((out / "annotations.json").read_text(encoding="utf-8"))
    assert doc["info"]["project_name"] == p.name and doc["info"]["project_id"] == p.id
    created = dt.datetime.fromisoformat(doc["info"]["date_created"])
    assert abs((dt.datetime.now(dt.UTC) - created).total_seconds()) < 600
    images = {im["id"]: im for im in doc["images"]}
    assert sorted(images) == sorted(im.id for im in p.images)
    for record in p.images:
        entry = images[record.id]
        assert (entry["width"], entry["height"]) == (record.width, record.height)
        data = (out / "images" / entry["file_name"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == record.sha256
    categories = {c["id"]: c for c in doc["categories"]}
    assert {c["name"]: i for i, c in categories.items()} == {t.name: t.id for t in p.tags}
    assert [c["name"] for c in categories.values() if c["is_negative"]] == ["Negative"]
    labels = {(a["image_id"], categories[a["category_id"]]["name"]) for a in doc["annotations"]}
    assert labels == {(im.id, tag) for im in p.images for tag in im.tags}
    assert len(doc["annotations"]) == len(labels) == 10  # the two-tag image counts twice
    assert len({a["id"] for a in doc["annotations"]}) == len(labels)
    assert not any("bbox" in a for a in doc["annotations"])
    assert report.counts == p.counts()


def test_folder_refuses_an_image_with_several_tags_and_points_to_csv(tmp_path):
    p = _project(tmp_path, "multilabel")
    both = p.image_ids("blue")[0]
    p.set_tags(both, ["blue", "red"])
    out = tmp_path / "out"
    with pytest.raises(ic.TagError, match=r"format 'folder'.*several tags.*'csv'"):
        p.export_dataset(out, "folder")
    assert not out.exists()
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]  # no staging left
    p.set_tags(both, ["blue"])  # one tag each: a multilabel project exports as folders
    p.export_dataset(out, "folder")
    q = _fresh(tmp_path, "again", "multilabel")
    q.add_folder(out)
    assert q.counts() == p.counts() and _by_sha(q) == _by_sha(p)


def test_a_tag_that_cannot_be_a_folder_is_refused_for_folder_only(tmp_path):
    p = _project(tmp_path)
    p.rename_tag("blue", "blue/sky")
    with pytest.raises(ic.TagError, match="'blue/sky'.*slash"):
        p.export_dataset(tmp_path / "out")
    p.export_dataset(tmp_path / "out", "csv")
    q = _fresh(tmp_path, "again")
    q.add_csv(tmp_path / "out" / "labels.csv")
    assert q.counts() == p.counts() and q.counts()["blue/sky"] == 3


def test_missing_and_damaged_stored_files_are_skipped_with_the_reason(tmp_path):
    p = _project(tmp_path)
    gone, damaged = p.image_ids("blue")[:2]
    p.image(gone).path.unlink()
    p.image(damaged).path.write_bytes(png_bytes((1, 2, 3), seed=9))
    out = tmp_path / "out"
    report = p.export_dataset(out)
    reasons = dict(report.skipped)
    assert sorted(reasons) == sorted([gone, damaged])
    assert "no such file" in reasons[gone]
    assert "not what was stored" in reasons[damaged]
    assert report.counts == {**p.counts(), "blue": 1}
    assert len(report.written) == len(p.images) - 2
    assert f"skipped image #{gone}" in repr(report) and "2 skipped" in report.summary()
    q = _fresh(tmp_path, "again")
    q.add_folder(out)
    assert q.counts() == report.counts


def test_untagged_images_can_be_left_out(tmp_path):
    p = _project(tmp_path)
    report = p.export_dataset(tmp_path / "out", "csv", include_untagged=False)
    assert report.left_out_untagged == 1 and report.counts["untagged"] == 0
    assert "1 untagged left out" in report.summary()
    q = _fresh(tmp_path, "again")
    q.add_csv(tmp_path / "out" / "labels.csv")
    assert q.counts() == {**p.counts(), "untagged": 0}


def test_a_non_empty_target_is_refused_and_overwrite_replaces_only_an_export(tmp_path):
    p = _project(tmp_path)
    stranger = tmp_path / "holiday-photos"
    stranger.mkdir()
    (stranger / "me.jpg").write_bytes(b"x")
    for overwrite in (False, True):
        with pytest.raises(ic.ProjectError, match=re.escape(f"{stranger}: folder is not empty")):
            p.export_dataset(stranger, overwrite=overwrite)
    assert os.listdir(stranger) == ["me.jpg"]
    with pytest.raises(ic.ProjectError, match="not a folder"):
        p.export_dataset(stranger / "me.jpg")
    out = tmp_path / "out"
    out.mkdir()  # an empty folder is fine
    p.export_dataset(out)
    with pytest.raises(ic.ProjectError, match=re.escape(f"{out}: holds a dataset export")):
        p.export_dataset(out, "csv")
    assert (out / "red").is_dir()
    p.export_dataset(out, "csv", overwrite=True)
    assert not (out / "red").exists() and (out / "labels.csv").is_file()
    assert sorted(n for n in os.listdir(tmp_path) if n.startswith(".")) == []


def test_an_unknown_format_is_refused_by_name(tmp_path):
    p = _project(tmp_path)
    with pytest.raises(ic.OptionError, match="format 'zip': choose 'folder' or 'csv' or 'coco'"):
        p.export_dataset(tmp_path / "out", "zip")
    assert not (tmp_path / "out").exists()


def test_a_killed_export_leaves_no_dataset_and_the_next_one_cleans_up(tmp_path):
    """kill -9 once every file is written but before the folder is swapped in."""
    p = _project(tmp_path)
    out = tmp_path / "out"
    p.export_dataset(out)  # an earlier export, to overwrite
    p.close()
    script = f"""
import os, signal
import jupyter_imgclass as ic
import jupyter_imgclass.data.export as export
export.swap_in = lambda staging, final: os.kill(os.getpid(), signal.SIGKILL)
ic.Project.open({str(tmp_path / "proj")!r}).export_dataset({str(out)!r}, "csv", overwrite=True)
"""
    done = subprocess.run([sys.executable, "-c", script], timeout=120)
    assert done.returncode == -9
    assert (out / "red").is_dir() and not (out / "labels.csv").exists()  # the old one, whole
    assert [n for n in os.listdir(tmp_path) if n.startswith(".out.staging-")]
    with ic.Project.open(tmp_path / "proj") as p:
        p.export_dataset(out, "csv", overwrite=True)
    assert (out / "labels.csv").is_file()
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "jupyter_imgclass.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_export_dataset(tmp_path):
    p = _project(tmp_path)
    counts = p.counts()
    p.close()
    out = tmp_path / "out"
    done = _cli("export-dataset", tmp_path / "proj", out, "--format", "csv", "--no-untagged")
    assert done.returncode == 0, done.stderr
    assert "9 image(s) written as csv" in done.stdout and "1 untagged left out" in done.stdout
    again = _cli("export-dataset", tmp_path / "proj", out, "--json")
    assert again.returncode == 2
    assert again.stderr.startswith("jupyter-imgclass: error: ") and "--overwrite" in again.stderr
    done = _cli("export-dataset", tmp_path / "proj", out, "--overwrite", "--json")
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["format"] == "folder" and record["counts"] == counts
    assert record["written"] == 10 and record["skipped"] == [] and (out / "loose.png").is_file()
    bad = _cli("export-dataset", tmp_path / "proj", tmp_path / "o2", "--format", "zip")
    assert bad.returncode == 2 and "invalid choice: 'zip'" in bad.stderr
    shown = _cli("export-dataset", "--help").stdout
    assert all(flag in shown for flag in ("--format", "--no-untagged", "--overwrite", "--json"))
