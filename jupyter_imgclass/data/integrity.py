"""How the image files and the database stay in step, and what opening a project checks.

The rule: the store never deletes a file it cannot account for.

- A new image is written complete under a staging name (``.staging-<name>``), its row is
  committed, then the file is renamed to its final name. A kill before the commit leaves a
  staging file with no row (an import that did not happen: removed at the next open); a
  kill after it leaves a row whose file is still staged (the rename is completed).
- A removed image's file is first renamed to ``.deleting-<name>``, its row is deleted,
  then the file; a kill in between puts the file back (row still there) or finishes.
- A final-named file with no row (a copy made while a kernel had the project open, a
  damaged page, a restored backup) is never deleted: its name is its content hash, so it
  comes back as an untagged image; a file whose content does not match its name goes to
  ``recovered/`` for the user to look at.

Opening also runs SQLite's ``PRAGMA quick_check``; a damaged database opens read-only and
nothing on disk is changed until the user asks for :func:`salvage`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "DELETING_PREFIX",
    "atomic_write",
    "fsync_folder",
    "STAGING_PREFIX",
    "OpenReport",
    "quick_check",
    "reconcile",
    "salvage",
    "stage_file",
    "staging_folder",
    "swap_in",
]

STAGING_PREFIX = ".staging-"
DELETING_PREFIX = ".deleting-"
TMP_PREFIX = ".tmp-"
"""atomic_write's temporary files: never a complete, named file."""
RECOVERED_FOLDER = "recovered"
SALVAGE_CHUNK = 256


@dataclass
class OpenReport:
    """What opening a project found and did.

    Attributes:
        readonly: the project is open read-only (asked for, the folder or file cannot be
            written, or the database is damaged); ``readonly_reason`` says which.
        damaged: ``PRAGMA quick_check`` messages; empty for a sound database.
        recovered: ids of images whose file had no row and came back untagged.
        moved: files (relative to the project) with no row whose content did not match
            their name, moved under ``recovered/``.
        completed: images whose interrupted import or removal was completed.
        discarded: staging files of imports that had not committed, removed.
        missing: ids of images whose file is gone (kept; training skips them).
    """

    readonly: bool = False
    readonly_reason: str | None = None
    damaged: list[str] = field(default_factory=list)
    recovered: list[int] = field(default_factory=list)
    moved: list[str] = field(default_factory=list)
    completed: int = 0
    discarded: int = 0
    missing: list[int] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        """True when there is nothing to tell the user."""
        return not (self.readonly or self.damaged or self.recovered or self.moved or self.missing)

    def summary(self) -> str:
        """One paragraph for the user (empty when :attr:`clean`)."""
        parts = []
        if self.damaged:
            parts.append(
                f"the database is damaged ({self.damaged[0]}"
                + (f"; {len(self.damaged) - 1} more" if len(self.damaged) > 1 else "")
                + "); it is open read-only and nothing was changed: back it up, then "
                "Project.salvage(path) rebuilds it from what is readable"
            )
        elif self.readonly:
            why = self.readonly_reason or "its folder or file cannot be written"
            parts.append(f"the project is open read-only ({why})")
        if self.recovered:
            parts.append(
                f"{len(self.recovered)} image file(s) had no database row (a copy made while "
                "a kernel had the project open?) and were added back untagged: "
                f"ids {_ids(self.recovered)}"
            )
        if self.moved:
            parts.append(
                f"{len(self.moved)} unknown file(s) moved to {RECOVERED_FOLDER}/ (not deleted)"
            )
        if self.missing:
            parts.append(
                f"{len(self.missing)} image(s) have no file (kept; training skips them): "
                f"ids {_ids(self.missing)}"
            )
        return "; ".join(parts)


def _ids(ids: list[int]) -> str:
    text = ", ".join(str(i) for i in ids[:10])
    return text + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")


def sha256_file(path: Path) -> str:
    """The SHA-256 of a file's bytes, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write(path: Path, data: bytes) -> None:
    """Writes ``data`` so that ``path`` holds either the old file or all of the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f"{TMP_PREFIX}{uuid.uuid4().hex}"
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def fsync_folder(folder: Path) -> None:
    """Flushes every file under ``folder`` to disk (before the folder is renamed into place)."""
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())


def staging_folder(final: Path) -> Path:
    """A new empty folder beside ``final`` to write a whole folder into before
    :func:`swap_in` puts it in place; stale ones of killed writers are removed (and an
    old ``final`` a kill left aside between :func:`swap_in`'s renames goes back)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".{final.name}.staging-*"):
        shutil.rmtree(stale, ignore_errors=True)
    for stale in final.parent.glob(f".{final.name}.old-*"):
        if final.is_dir():  # a swap finished but for the clean-up
            shutil.rmtree(stale, ignore_errors=True)
        else:  # killed between the two renames: the old folder goes back first
            os.replace(stale, final)
    staging = final.parent / f".{final.name}.staging-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    return staging


def swap_in(staging: Path, final: Path) -> None:
    """Puts ``staging`` at ``final``, whose old contents are removed: one atomic exchange
    where the OS has it (``renameat2``), else two renames whose gap
    :func:`staging_folder` repairs."""
    if not final.exists():
        os.replace(staging, final)
        return
    if _exchange(staging, final):
        shutil.rmtree(staging, ignore_errors=True)  # it holds the old folder now
        return
    old = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
    os.replace(final, old)
    os.replace(staging, final)
    shutil.rmtree(old, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swaps two paths (Linux ``renameat2(RENAME_EXCHANGE)``); False when
    the OS or file system cannot."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    result = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    return result == 0


def stage_file(final: Path, data: bytes) -> Path:
    """Writes ``data`` complete and flushed under the staging name beside ``final``."""
    final.parent.mkdir(parents=True, exist_ok=True)
    staged = final.parent / f"{STAGING_PREFIX}{final.name}"
    try:
        with open(staged, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    return staged


def quick_check(conn: sqlite3.Connection, limit: int = 20) -> list[str]:
    """SQLite's ``PRAGMA quick_check`` problems (empty when the file is sound)."""
    try:
        rows = conn.execute(f"PRAGMA quick_check({int(limit)})").fetchall()
    except sqlite3.DatabaseError as exc:
        return [str(exc)]
    messages = [str(r[0]) for r in rows]
    return [] if messages == ["ok"] else messages


def reconcile(
    known: dict[str, int],
    images_dir: Path,
    recovered_dir: Path,
    *,
    add_untagged: Callable[[Path, str], int | None],
) -> OpenReport:
    """Brings ``images/`` and the rows into step, never deleting an unaccounted file.

    Args:
        known: ``{filename: image_id}`` of every row.
        images_dir: the project's ``images/`` folder.
        recovered_dir: where files that cannot be re-added are moved.
        add_untagged: called with a file's path and its content hash for a final-named
            file with no row; returns the new image id, or None when it cannot be added.

    Returns:
        The report (without the database fields).
    """
    report = OpenReport()
    present: set[str] = set()
    for path in sorted(images_dir.glob("*/*")):
        name = path.name
        if not path.is_file() or path.is_symlink():
            continue
        if name.startswith((STAGING_PREFIX, DELETING_PREFIX)):
            prefix = STAGING_PREFIX if name.startswith(STAGING_PREFIX) else DELETING_PREFIX
            final = path.with_name(name[len(prefix) :])
            if final.name in known and not final.exists():
                os.replace(path, final)  # the row committed: finish (or undo) the move
                present.add(final.name)
                report.completed += 1
            elif final.name in known:
                path.unlink()  # a second copy of a file that is in place
            elif prefix == STAGING_PREFIX:
                path.unlink()  # marked in flight; its row never committed
                report.discarded += 1
            else:
                path.unlink()  # its removal committed
                report.completed += 1
            continue
        if name.startswith(TMP_PREFIX):
            path.unlink()  # an import of an older version, killed mid-write
            report.discarded += 1
            continue
        if name in known:
            present.add(name)
            continue
        digest = sha256_file(path)
        image_id = add_untagged(path, digest) if name.startswith(digest) else None
        if image_id is not None:
            report.recovered.append(image_id)
            present.add(name)
            continue
        target = recovered_dir / path.parent.name / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(path), str(target))
        report.moved.append(target.relative_to(recovered_dir.parent).as_posix())
    report.missing = sorted(i for f, i in known.items() if f not in present)
    return report


def salvage(damaged: Path, fresh: sqlite3.Connection, tables: list[str]) -> dict[str, int]:
    """Copies every readable row of ``tables`` from a damaged database into ``fresh``.

    Rows are read by rowid ranges; a range that fails is halved until the single rows
    that cannot be read are left out. Returns ``{table: rows copied}``.
    """
    uri = f"{damaged.resolve().as_uri()}?mode=ro"
    old = sqlite3.connect(uri, uri=True)
    copied: dict[str, int] = {}
    try:
        for table in tables:
            try:
                cols = [r[1] for r in old.execute(f"PRAGMA table_info({table})")]
                top = old.execute(f"SELECT max(rowid) FROM {table}").fetchone()[0] or 0
            except sqlite3.DatabaseError:
                copied[table] = 0
                continue
            names = ", ".join(cols)
            marks = ", ".join("?" for _ in cols)
            insert = f"INSERT OR IGNORE INTO {table}({names}) VALUES ({marks})"
            count = 0
            for lo in range(0, int(top) + 1, SALVAGE_CHUNK):
                for row in _readable_rows(old, table, names, lo, lo + SALVAGE_CHUNK - 1):
                    try:
                        fresh.execute(insert, row)
                        count += 1
                    except sqlite3.DatabaseError:
                        continue  # a row that breaks a constraint after the damage
            copied[table] = count
    finally:
        old.close()
    return copied


def _readable_rows(conn, table: str, names: str, lo: int, hi: int) -> list[tuple]:
    try:
        return conn.execute(
            f"SELECT {names} FROM {table} WHERE rowid BETWEEN ? AND ?", (lo, hi)
        ).fetchall()
    except sqlite3.DatabaseError:
        if lo >= hi:
            return []
        mid = (lo + hi) // 2
        return _readable_rows(conn, table, names, lo, mid) + _readable_rows(
            conn, table, names, mid + 1, hi
        )
