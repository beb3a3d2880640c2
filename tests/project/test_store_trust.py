"""The store never deletes a file it cannot account for (issue 33, finding 1 and 10).

Probes as tests with real parts: a folder copied while a project is open (its newest rows
still in ``project.sqlite-wal``), a database with damaged pages, a read-only mount, a
full ``tmpfs``, and each crash window of an import or a removal.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import png_bytes

import jupyter_imgclass as ic
from jupyter_imgclass.data.integrity import DELETING_PREFIX, STAGING_PREFIX
from jupyter_imgclass.errors import ProjectError, StorageError


def _stored_files(root: Path) -> set[str]:
    return {p.name for p in (root / "images").glob("*/*")}


def _fill(project, n: int, tag: str = "red", seed: int = 0) -> list[int]:
    blobs = [png_bytes((200, 30, 30), size=(20, 20), seed=seed + i) for i in range(n)]
    return project.add_images(blobs, tags=[tag]).added


def test_copy_made_while_open_loses_no_file_and_gets_the_images_back(tmp_path, caplog):
    src = tmp_path / "live"
    p = ic.Project.create(src)
    _fill(p, 20, "red")
    p.store._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # these rows reach the file
    _fill(p, 50, "green", seed=1000)  # these stay in project.sqlite-wal while p is open
    assert (src / "project.sqlite-wal").stat().st_size > 0
    copy = tmp_path / "copy"
    shutil.copytree(src, copy, ignore=shutil.ignore_patterns("*-wal", "*-shm"))
    files_before = _stored_files(copy)
    assert len(files_before) == 70

    with caplog.at_level(logging.WARNING):
        q = ic.Project.open(copy)
    assert _stored_files(copy) == files_before, "opening the copy deleted image files"
    assert len(q.open_report.recovered) == 50
    assert len(q.images) == 70
    assert q.counts()["red"] == 20 and q.counts()["untagged"] == 50
    assert all(im.path.is_file() for im in q.images)
    assert "added back untagged" in caplog.text
    q.close()
    p.close()


def test_backup_while_open_copies_everything(tmp_path):
    p = ic.Project.create(tmp_path / "live")
    _fill(p, 30, "red")
    target = p.backup(tmp_path / "backup")
    _fill(p, 5, "red", seed=500)  # the original goes on being used
    q = ic.Project.open(target)
    assert q.open_report.clean
    assert q.counts()["red"] == 30 and len(_stored_files(target)) == 30
    with pytest.raises(ProjectError, match="not empty"):
        p.backup(target)
    q.close()
    p.close()


def _damage_pages(db: Path, pages: range, page_size: int = 4096) -> None:
    with open(db, "r+b") as fh:
        for page in pages:
            fh.seek(page * page_size)
            fh.write(b"\xa5" * page_size)


def test_damaged_database_opens_read_only_changes_nothing_then_salvages(tmp_path):
    root = tmp_path / "proj"
    p = ic.Project.create(root)
    ids = []
    for k in range(6):  # long sources spread the images table over many pages
        blobs = [png_bytes((30, 30, 200), size=(16, 16), seed=k * 100 + i) for i in range(50)]
        names = [f"{'x' * 300}-{k}-{i}" for i in range(50)]
        ids += p.add_images(blobs, tags=["blue"]).added
        with p.store.transaction() as cur:
            cur.executemany(
                "UPDATE images SET source = ? WHERE id = ?",
                list(zip(names, ids[-50:], strict=True)),
            )
    p.close()
    db = root / "project.sqlite"
    pages = db.stat().st_size // 4096
    assert pages > 40
    _damage_pages(db, range(pages // 2, pages // 2 + 3))
    files_before = _stored_files(root)
    db_before = db.read_bytes()

    q = ic.Project.open(root)
    assert q.open_report.damaged and q.open_report.readonly
    assert "damaged" in q.open_report.summary()
    assert _stored_files(root) == files_before
    with pytest.raises(ProjectError, match="read-only"):
        q.add_images([png_bytes((1, 2, 3))])
    with pytest.raises(ProjectError, match="read-only"):
        q.create_tag("more")
    q.close()
    assert db.read_bytes() == db_before, "opening a damaged database changed it"

    r = ic.Project.salvage(root)
    assert not r.open_report.damaged and not r.open_report.readonly
    assert list(root.glob("project.sqlite.damaged-*")), "the damaged file is kept"
    assert _stored_files(root) == files_before
    assert len(r.images) == 300, "every file is an image again (lost rows come back untagged)"
    assert r.counts()["blue"] + r.counts()["untagged"] == 300
    assert r.counts()["blue"] > 0
    r.close()


def test_each_crash_window_of_an_import_or_removal_is_accounted_for(tmp_path):
    root = tmp_path / "proj"
    p = ic.Project.create(root)
    a, b, c = _fill(p, 3, "red")
    ims = {im.id: im.path for im in p.images}
    # committed import, killed before the rename: row, staged file, no final file
    os.replace(ims[a], ims[a].with_name(STAGING_PREFIX + ims[a].name))
    # removal killed after the rename aside, before the row went
    os.replace(ims[b], ims[b].with_name(DELETING_PREFIX + ims[b].name))
    # an import killed before its row committed: a staged file and nothing else
    stray = root / "images" / "ab" / f"{STAGING_PREFIX}ab{'0' * 62}.png"
    stray.parent.mkdir(exist_ok=True)
    stray.write_bytes(png_bytes((9, 9, 9)))
    p.close()

    q = ic.Project.open(root)
    assert q.open_report.completed == 2 and q.open_report.discarded == 1
    assert {im.id for im in q.images} == {a, b, c}
    assert all(im.path.is_file() for im in q.images)
    assert not stray.exists()
    assert q.remove_images([c]) == 1
    assert not ims[c].exists() and not list((root / "images").glob(f"*/{DELETING_PREFIX}*"))
    q.close()


def test_unknown_file_that_is_not_its_hash_is_moved_not_deleted(tmp_path):
    root = tmp_path / "proj"
    ic.Project.create(root).close()
    odd = root / "images" / "zz" / "holiday.png"
    odd.parent.mkdir(parents=True)
    odd.write_bytes(png_bytes((1, 200, 1)))
    q = ic.Project.open(root)
    assert q.open_report.moved == ["recovered/zz/holiday.png"]
    assert (root / "recovered" / "zz" / "holiday.png").read_bytes() == png_bytes((1, 200, 1))
    q.close()


def test_missing_image_file_is_reported_and_kept(tmp_path):
    root = tmp_path / "proj"
    p = ic.Project.create(root)
    ids = _fill(p, 3)
    p.images[0].path.unlink()
    p.close()
    q = ic.Project.open(root)
    assert q.open_report.missing == [ids[0]]
    assert len(q.images) == 3
    q.close()


def test_kill_9_between_commit_and_rename_keeps_the_image(tmp_path):
    """A real SIGKILL in the window after the row commits: the next open finishes it."""
    root = tmp_path / "proj"
    ic.Project.create(root).close()
    script = textwrap.dedent(
        f"""
        import os, signal
        import jupyter_imgclass as ic
        import jupyter_imgclass.data.importer as importer
        real_replace = os.replace
        def replace(src, dst):
            if os.path.basename(str(src)).startswith({STAGING_PREFIX!r}):
                os.kill(os.getpid(), signal.SIGKILL)
            real_replace(src, dst)
        importer.os.replace = replace
        p = ic.Project.open({str(root)!r})
        p.add_images([{png_bytes((5, 5, 250))!r}], tags=["blue"])
        """
    )
    child = subprocess.run([sys.executable, "-c", script], timeout=120)
    assert child.returncode == -9
    q = ic.Project.open(root)
    assert q.counts()["blue"] == 1 and q.images[0].path.is_file()
    assert q.open_report.completed == 1
    q.close()


@contextlib.contextmanager
def _tmpfs(path: Path, size: str = "1m"):
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)])
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_disk_full_during_import_keeps_the_partial_report_and_names_the_disk(tmp_path):
    with _tmpfs(tmp_path / "small", "1m") as disk:
        p = ic.Project.create(disk / "proj")
        blobs = [png_bytes((7, 7, 7), size=(160, 160), seed=i) for i in range(40)]  # ~77 KB each
        with pytest.raises(StorageError, match="disk is full") as info:
            p.add_images(blobs, tags=["grey"])
        report = info.value.report
        assert 0 < len(report.added) < 40
        stored = {im.id for im in p.images}
        assert stored == set(report.added)
        assert all(im.path.is_file() for im in p.images)
        assert not list((disk / "proj" / "images").glob(f"*/{STAGING_PREFIX}*"))
        p.close()
        q = ic.Project.open(disk / "proj")
        assert q.counts()["grey"] == len(report.added)
        q.close()


def test_read_only_project_opens_read_only(tmp_path):
    mount = tmp_path / "ro"
    with _tmpfs(mount, "4m"):
        p = ic.Project.create(mount / "proj")
        _fill(p, 4, "red")
        p.close()
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        q = ic.Project.open(mount / "proj")
        assert q.open_report.readonly and not q.open_report.damaged
        assert q.counts()["red"] == 4
        assert q.thumbnail(q.images[0].id)[:2] == b"\xff\xd8"  # a JPEG, though cache/ is read-only
        with pytest.raises(ProjectError, match="read-only"):
            q.set_tags(q.images[0].id, "green")
        q.close()


def test_explicit_read_only_open_writes_nothing(tmp_path):
    root = tmp_path / "proj"
    p = ic.Project.create(root)
    _fill(p, 2)
    p.close()
    before = {f.name: f.stat().st_mtime_ns for f in root.iterdir()}
    db = (root / "project.sqlite").read_bytes()
    q = ic.Project.open(root, readonly=True)
    assert "readonly=True" in q.open_report.summary()
    with pytest.raises(ProjectError, match="read-only"):
        q.remove_images([q.images[0].id])
    with pytest.raises(ProjectError, match="read-only"):
        q.train(budget="quick", model="small_cnn")  # before the data's own complaints
    assert len(q.images) == 2
    q.close()
    # SQLite may make its -wal/-shm side files to read; nothing else is touched.
    side = ("project.sqlite-wal", "project.sqlite-shm")
    after = {f.name: f.stat().st_mtime_ns for f in root.iterdir() if f.name not in side}
    assert after == {k: v for k, v in before.items() if k not in side}
    assert (root / "project.sqlite").read_bytes() == db


def test_cli_backup_copies_an_open_project(tmp_path):
    live = tmp_path / "live"
    p = ic.Project.create(live)
    _fill(p, 12, "red")  # rows still in the WAL: p stays open during the backup
    out = tmp_path / "copy"
    done = subprocess.run(
        [sys.executable, "-m", "jupyter_imgclass.cli", "backup", str(live), str(out), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert '"images": 12' in done.stdout
    q = ic.Project.open(out)
    assert q.open_report.clean and q.counts()["red"] == 12
    q.close()
    p.close()


def test_the_notebook_view_of_a_project_says_what_opening_found(tmp_path):
    root = tmp_path / "proj"
    p = ic.Project.create(root)
    _fill(p, 3)
    p.close()
    odd = root / "images" / "zz" / "note.png"
    odd.parent.mkdir(parents=True)
    odd.write_bytes(png_bytes((3, 3, 3)))
    q = ic.Project.open(root)
    assert "On opening: 1 unknown file(s) moved to recovered/" in q._repr_html_()
    q.close()


def test_a_new_project_copied_without_its_wal_names_salvage_and_salvage_brings_it_back(tmp_path):
    live = tmp_path / "live"
    p = ic.Project.create(live)
    _fill(p, 6, "red")  # a new project: its tables themselves are still in the WAL
    copy = tmp_path / "copy"
    shutil.copytree(live, copy, ignore=shutil.ignore_patterns("*-wal", "*-shm"))
    with pytest.raises(ProjectError, match="salvage"):
        ic.Project.open(copy)
    q = ic.Project.salvage(copy)
    assert len(q.images) == 6 and q.counts()["untagged"] == 6
    q.close()
    p.close()
