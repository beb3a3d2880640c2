"""The project's SQLite file: images, tags, labels, iterations, the prediction log.

The database is the truth on disk. It runs in WAL mode with foreign keys on, and every
public method that writes is exactly one committed transaction, so a process killed at
any moment leaves a file that opens with either all or none of an action.

Examples:
    >>> import tempfile, pathlib
    >>> store = ImageStore.create(pathlib.Path(tempfile.mkdtemp()) / "project.sqlite",
    ...                           kind="multiclass", name="demo")
    >>> tag = store.create_tag("cat")
    >>> store.tag_names()
    ['cat']
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import unicodedata
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ProjectError, TagError
from ..vocabulary import check_kind
from .integrity import quick_check, salvage

SCHEMA_VERSION = 3
MAX_TAG_LENGTH = 100

# Each entry upgrades the schema from version i to i + 1. Version 0 is an empty file.
_MIGRATIONS: list[str] = [
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE images (
        id INTEGER PRIMARY KEY,
        sha256 TEXT NOT NULL UNIQUE,
        filename TEXT NOT NULL,
        source TEXT,
        width INTEGER NOT NULL,
        height INTEGER NOT NULL,
        format TEXT,
        added_at REAL NOT NULL
    );
    CREATE TABLE tags (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE COLLATE NOCASE,
        kind TEXT NOT NULL DEFAULT 'regular' CHECK (kind IN ('regular', 'negative')),
        created_at REAL NOT NULL
    );
    CREATE TABLE image_tags (
        image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
        tag_id INTEGER NOT NULL REFERENCES tags(id) ON DELETE CASCADE,
        PRIMARY KEY (image_id, tag_id)
    );
    CREATE INDEX image_tags_by_tag ON image_tags(tag_id);
    CREATE TABLE label_history (
        id INTEGER PRIMARY KEY,
        image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
        before_json TEXT NOT NULL,
        after_json TEXT NOT NULL,
        at REAL NOT NULL
    );
    CREATE TABLE iterations (
        id INTEGER PRIMARY KEY,
        number INTEGER NOT NULL UNIQUE,
        name TEXT NOT NULL,
        status TEXT NOT NULL,
        model TEXT NOT NULL,
        budget TEXT NOT NULL,
        created_at REAL NOT NULL,
        finished_at REAL,
        metrics_json TEXT,
        config_json TEXT NOT NULL DEFAULT '{}'
    );
    CREATE TABLE predictions_log (
        id INTEGER PRIMARY KEY,
        created_at REAL NOT NULL,
        iteration TEXT,
        image_sha256 TEXT,
        image_path TEXT,
        predictions_json TEXT NOT NULL
    );
    """,
    # 2: the prediction log is pruned by age and read newest first by kept path
    """
    CREATE INDEX predictions_log_by_time ON predictions_log(created_at);
    CREATE INDEX predictions_log_by_path ON predictions_log(image_path);
    """,
    # 3: the hosted API's GUIDs of tags, images and iterations (given on first use)
    """
    ALTER TABLE tags ADD COLUMN guid TEXT;
    ALTER TABLE images ADD COLUMN guid TEXT;
    ALTER TABLE iterations ADD COLUMN guid TEXT;
    CREATE UNIQUE INDEX tags_by_guid ON tags(guid);
    CREATE UNIQUE INDEX images_by_guid ON images(guid);
    CREATE UNIQUE INDEX iterations_by_guid ON iterations(guid);
    """,
]
GUID_KEYS = {"tags": "id", "images": "id", "iterations": "number"}
"""The tables whose rows carry a hosted GUID, and the column that names a row."""


_TABLES = ("meta", "tags", "images", "image_tags", "label_history", "iterations", "predictions_log")
"""The tables a salvage copies, in that order."""


@dataclass(frozen=True)
class ImageRow:
    """One stored image as the database knows it."""

    id: int
    sha256: str
    filename: str
    source: str | None
    width: int
    height: int
    format: str | None
    added_at: float
    tags: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class TagRow:
    """One tag; ``is_negative`` marks the special "none of these" tag."""

    id: int
    name: str
    is_negative: bool
    count: int = 0


def validate_tag_name(name: Any) -> str:
    """Returns the cleaned tag name or raises :class:`TagError` saying why it is refused."""
    if not isinstance(name, str):
        raise TagError(f"tag name {name!r}: must be a string, not {type(name).__name__}")
    cleaned = " ".join(name.split())
    if not cleaned:
        raise TagError(f"tag name {name!r}: empty after removing white space")
    if len(cleaned) > MAX_TAG_LENGTH:
        raise TagError(f"tag name {cleaned[:20]!r}...: longer than {MAX_TAG_LENGTH} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in cleaned):
        raise TagError(f"tag name {cleaned!r}: contains control characters")
    hidden = [c for c in cleaned if unicodedata.category(c) in ("Cf", "Cc", "Co", "Cs", "Cn")]
    if hidden:
        names = ", ".join(f"U+{ord(c):04X} {unicodedata.name(c, 'unassigned')}" for c in hidden[:3])
        raise TagError(
            f"tag name {cleaned!r}: contains invisible or direction-changing characters "
            f"({names}); two tags that look the same must not differ by them"
        )
    return cleaned


def check_project_id(value: Any) -> str:
    """A project id in the UUID's normal form, or a ``ProjectError`` naming it.

    Examples:
        >>> check_project_id("0F8FAD5B-D9CB-469F-A165-70867728950E")
        '0f8fad5b-d9cb-469f-a165-70867728950e'
    """
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise ProjectError(f"project_id {value!r}: not a UUID") from None


class ImageStore:
    """A project's SQLite database, safe to share between threads of one process."""

    def __init__(self, path: Path, conn: sqlite3.Connection, *, readonly: str | None = None):
        self.path = Path(path)
        self._conn = conn
        self._lock = threading.RLock()
        self.readonly_reason = readonly
        """Why the store is read-only (None when it can be written)."""
        self.damaged: list[str] = []
        """``PRAGMA quick_check``'s problems found when it was opened."""

    @property
    def readonly(self) -> bool:
        """True when the store was opened read-only (see :attr:`readonly_reason`)."""
        return self.readonly_reason is not None

    # ------------------------------------------------------------------ opening
    @classmethod
    def create(
        cls, path: Path, *, kind: str, name: str, project_id: str | None = None
    ) -> ImageStore:
        """Creates a new database file at ``path`` (which must not exist); ``project_id``
        (a UUID, e.g. a hosted project's) or a new one."""
        check_kind(kind, error=ProjectError)
        project_id = check_project_id(project_id) if project_id else str(uuid.uuid4())
        path = Path(path)
        if path.exists():
            raise ProjectError(f"{path}: a project database already exists here")
        store = cls(path, _connect(path))
        store._migrate()
        with store.transaction() as cur:
            cur.executemany(
                "INSERT INTO meta(key, value) VALUES (?, ?)",
                [
                    ("kind", kind),
                    ("name", name),
                    ("created_at", repr(time.time())),
                    ("project_id", project_id),
                ],
            )
        return store

    @classmethod
    def open(cls, path: Path, *, readonly: str | None = None) -> ImageStore:
        """Opens an existing database, upgrading its schema when it is older.

        Args:
            path: the database file.
            readonly: a reason to open it read-only (nothing is written, not even the
                schema upgrade); it is opened read-only anyway when the file or its
                folder cannot be written.
        """
        path = Path(path)
        if not path.is_file():
            raise ProjectError(f"{path}: no project database here")
        if readonly is None and not (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)):
            readonly = "the project's folder or database file cannot be written"
        try:
            conn = _connect_readonly(path) if readonly else _connect(path)
        except sqlite3.OperationalError as exc:
            if readonly or not _is_disk_error(exc):
                raise ProjectError(f"{path}: {_describe_open_error(exc)}") from exc
            readonly = f"the disk or file is read-only ({exc})"
            conn = None
        except sqlite3.DatabaseError as exc:
            raise ProjectError(f"{path}: {_describe_open_error(exc)}") from exc
        try:
            if conn is None:
                conn = _connect_readonly(path)
            damaged = quick_check(conn)
        except sqlite3.DatabaseError as exc:
            raise ProjectError(f"{path}: {_describe_open_error(exc)}") from exc
        if damaged and not readonly:
            conn.close()  # nothing is written to a damaged file until the user asks
            readonly = "the database is damaged"
            conn = _connect_readonly(path)
        store = cls(path, conn, readonly=readonly)
        store.damaged = damaged
        version = store.schema_version()
        if version > SCHEMA_VERSION:
            raise ProjectError(
                f"{path}: made by a newer jupyter_imgclass (schema {version} > "
                f"{SCHEMA_VERSION}); upgrade the package to open it"
            )
        if version == 0:
            raise ProjectError(
                f"{path}: holds no project tables (no schema). A folder copied while a kernel "
                f"had a new project open lacks {path.name}-wal, where its first rows were; "
                "Project.salvage(folder) rebuilds the database and brings its images back "
                "untagged"
            )
        if version < SCHEMA_VERSION and readonly:
            raise ProjectError(
                f"{path}: made by an older jupyter_imgclass (schema {version}) and read-only "
                f"({readonly}); open it once where it can be written to upgrade it"
            )
        if not readonly:
            store._migrate()
        return store

    def backup_to(self, target: Path) -> None:
        """A consistent copy of the database at ``target`` through SQLite's backup API
        (safe while other connections write)."""
        dest = sqlite3.connect(str(target))
        try:
            with self._lock:
                self._conn.backup(dest)
        finally:
            dest.close()

    @classmethod
    def salvage(cls, path: Path) -> Path:
        """Rebuilds a damaged database from its readable rows; returns where the damaged
        file was kept (``<name>.damaged-<time>``)."""
        path = Path(path)
        kept = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
        fresh_path = path.with_name(f".{path.name}.salvage-{uuid.uuid4().hex[:8]}")
        fresh = cls(fresh_path, _connect(fresh_path))
        try:
            fresh._migrate()
            fresh._conn.execute("PRAGMA foreign_keys=OFF")  # tags before or after images
            fresh._conn.execute("BEGIN")
            salvage(path, fresh._conn, list(_TABLES))
            fresh._conn.execute("COMMIT")
            fresh._conn.execute("PRAGMA foreign_keys=ON")
            fresh._conn.execute(
                "DELETE FROM image_tags WHERE image_id NOT IN (SELECT id FROM images) "
                "OR tag_id NOT IN (SELECT id FROM tags)"
            )
            fresh._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            fresh.close()
        for suffix in ("", "-wal", "-shm"):
            side = path.with_name(path.name + suffix)
            if side.exists():
                os.replace(side, kept.with_name(kept.name + suffix))
        for suffix in ("-wal", "-shm"):
            fresh_path.with_name(fresh_path.name + suffix).unlink(missing_ok=True)
        os.replace(fresh_path, path)
        return kept

    def close(self) -> None:
        """Closes the connection (the file stays consistent whether or not this runs)."""
        with self._lock:
            self._conn.close()

    def schema_version(self) -> int:
        """The schema version recorded in the file (0 for a file without one)."""
        with self._lock:
            try:
                row = self._conn.execute("SELECT version FROM schema_version").fetchone()
            except sqlite3.OperationalError:
                return 0
            return int(row[0]) if row else 0

    def _migrate(self) -> None:
        with self._lock:
            self._conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER)")
            version = self.schema_version()
            for target in range(version + 1, SCHEMA_VERSION + 1):
                # executescript commits first; the script is wrapped so a failure rolls back.
                script = _MIGRATIONS[target - 1]
                self._conn.executescript(
                    "BEGIN;\n"
                    + script
                    + f"\nDELETE FROM schema_version; INSERT INTO schema_version VALUES ({target});"
                    + "\nCOMMIT;"
                )

    def require_writable(self) -> None:
        """Raises ProjectError naming the reason when the store is read-only."""
        if self.readonly_reason is not None:
            raise ProjectError(
                f"{self.path.parent}: the project is open read-only ({self.readonly_reason}); "
                "nothing was changed"
            )

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Cursor]:
        """One committed transaction; rolled back whole on any exception.

        Raises:
            ProjectError: when the store is read-only, or the disk is full or read-only
                (the transaction is rolled back; nothing stored is lost).
        """
        self.require_writable()
        with self._lock:
            cur = self._conn.cursor()
            try:
                cur.execute("BEGIN IMMEDIATE")
                try:
                    yield cur
                except BaseException:
                    if self._conn.in_transaction:
                        self._conn.rollback()
                    raise
                else:
                    self._conn.commit()
            except sqlite3.OperationalError as exc:
                if _is_disk_error(exc):
                    if self._conn.in_transaction:
                        self._conn.rollback()
                    raise ProjectError(
                        f"{self.path}: {_describe_open_error(exc)}; nothing was changed"
                    ) from exc
                raise
            finally:
                cur.close()

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    # ------------------------------------------------------------------ meta
    def meta(self, key: str, default: str | None = None) -> str | None:
        """A value from the ``meta`` table."""
        rows = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0][0] if rows else default

    def project_id(self) -> str:
        """The project's stable UUID (the hosted prediction API's ``projectId``); a
        project created before ids existed gets one now, once (``INSERT OR IGNORE``, so two
        openers agree on it)."""
        found = self.meta("project_id")
        if found:
            return found
        with self.transaction() as cur:
            cur.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES ('project_id', ?)",
                (str(uuid.uuid4()),),
            )
        return self.meta("project_id")

    def set_meta(self, key: str, value: str) -> None:
        """Sets a ``meta`` value in one transaction."""
        with self.transaction() as cur:
            cur.execute(
                "INSERT INTO meta(key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    # ------------------------------------------------------------------ hosted GUIDs
    def guids(self, table: str) -> dict[int, str]:
        """``{row: GUID}`` of ``table`` (``"tags"``, ``"images"`` by id, ``"iterations"`` by
        number): the hosted API's ids. A row without one (made before GUIDs, or by a
        writer that does not give them) gets a fresh one now, once, in one transaction; a
        read-only store answers a stable stand-in instead (the project id and the row)."""
        key = GUID_KEYS[table]
        rows = self._query(f"SELECT {key}, guid FROM {table}")
        if any(r[1] is None for r in rows) and self.readonly_reason is None:
            with self.transaction() as cur:
                cur.executemany(
                    f"UPDATE {table} SET guid = ? WHERE {key} = ? AND guid IS NULL",
                    [(str(uuid.uuid4()), r[0]) for r in rows if r[1] is None],
                )
            rows = self._query(f"SELECT {key}, guid FROM {table}")
        base = uuid.UUID(self.project_id())
        return {int(r[0]): r[1] or str(uuid.uuid5(base, f"{table}/{r[0]}")) for r in rows}

    def set_guid(self, table: str, row: int, guid: str) -> bool:
        """Gives row ``row`` of ``table`` this GUID unless it has one; whether it did."""
        key = GUID_KEYS[table]
        with self.transaction() as cur:
            cur.execute(
                f"UPDATE {table} SET guid = ? WHERE {key} = ? AND guid IS NULL", (guid, row)
            )
            return cur.rowcount == 1

    # ------------------------------------------------------------------ images
    def image_by_sha(self, sha256: str) -> ImageRow | None:
        """The image stored under this content hash, if any."""
        rows = self._query("SELECT * FROM images WHERE sha256 = ?", (sha256,))
        return self._with_tags(rows)[0] if rows else None

    def image(self, image_id: int) -> ImageRow | None:
        """The image with this id, if any."""
        rows = self._query("SELECT * FROM images WHERE id = ?", (int(image_id),))
        return self._with_tags(rows)[0] if rows else None

    def images(self, ids: Iterable[int] | None = None) -> list[ImageRow]:
        """Every image (or those with ``ids``), oldest first, with their tags."""
        if ids is None:
            rows = self._query("SELECT * FROM images ORDER BY id")
        else:
            wanted = [int(i) for i in ids]
            rows = []
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows += self._query(f"SELECT * FROM images WHERE id IN ({marks})", chunk)
            order = {image_id: k for k, image_id in enumerate(wanted)}
            rows.sort(key=lambda r: order[r["id"]])
        return self._with_tags(rows)

    def image_ids(self, which: str = "all", tag_id: int | None = None) -> list[int]:
        """Ids of every image (``"all"``), the ``"untagged"`` or ``"tagged"`` ones, or those
        with tag ``tag_id`` (``which="tag"``), oldest first, without reading the rows."""
        queries = {
            "all": ("SELECT id FROM images ORDER BY id", ()),
            "untagged": (
                "SELECT id FROM images WHERE id NOT IN (SELECT image_id FROM image_tags) "
                "ORDER BY id",
                (),
            ),
            "tagged": (
                "SELECT id FROM images WHERE id IN (SELECT image_id FROM image_tags) ORDER BY id",
                (),
            ),
            "tag": (
                "SELECT image_id FROM image_tags WHERE tag_id = ? ORDER BY image_id",
                (tag_id,),
            ),  # fmt: skip
        }
        sql, args = queries[which]
        return [int(r[0]) for r in self._query(sql, args)]

    def image_count(self) -> int:
        """How many images are stored."""
        return int(self._query("SELECT count(*) FROM images")[0][0])

    def image_shas(self) -> set[str]:
        """Content hashes of every stored image."""
        return {r[0] for r in self._query("SELECT sha256 FROM images")}

    def _with_tags(self, rows: list[sqlite3.Row]) -> list[ImageRow]:
        if not rows:
            return []
        tags: dict[int, list[str]] = {}
        ids = [r["id"] for r in rows]
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for image_id, name in self._query(
                "SELECT it.image_id, t.name FROM image_tags it JOIN tags t ON t.id = it.tag_id "
                f"WHERE it.image_id IN ({marks}) ORDER BY t.name",
                chunk,
            ):
                tags.setdefault(image_id, []).append(name)
        return [
            ImageRow(
                id=r["id"],
                sha256=r["sha256"],
                filename=r["filename"],
                source=r["source"],
                width=r["width"],
                height=r["height"],
                format=r["format"],
                added_at=r["added_at"],
                tags=tuple(tags.get(r["id"], ())),
            )
            for r in rows
        ]

    def insert_image(
        self,
        *,
        sha256: str,
        filename: str,
        source: str | None,
        width: int,
        height: int,
        format: str | None,
        tag_names: Sequence[str] = (),
    ) -> int:
        """Adds one image and its tags in one transaction; returns its id.

        The tags must exist already (see :meth:`ensure_tags`).
        """
        with self.transaction() as cur:
            cur.execute(
                "INSERT INTO images(sha256, filename, source, width, height, format, added_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (sha256, filename, source, int(width), int(height), format, time.time()),
            )
            image_id = int(cur.lastrowid)
            for name in tag_names:
                cur.execute(
                    "INSERT OR IGNORE INTO image_tags(image_id, tag_id) "
                    "SELECT ?, id FROM tags WHERE name = ?",
                    (image_id, name),
                )
        return image_id

    def delete_images(self, ids: Iterable[int]) -> list[ImageRow]:
        """Removes images (and their labels) in one transaction; returns the removed rows."""
        rows = self.images(ids)
        with self.transaction() as cur:
            cur.executemany("DELETE FROM images WHERE id = ?", [(r.id,) for r in rows])
        return rows

    # ------------------------------------------------------------------ tags
    def tags(self) -> list[TagRow]:
        """Every tag with its image count, regular tags by name then the negative tag."""
        rows = self._query(
            "SELECT t.id, t.name, t.kind, count(it.image_id) AS n FROM tags t "
            "LEFT JOIN image_tags it ON it.tag_id = t.id GROUP BY t.id "
            "ORDER BY t.kind = 'negative', t.name COLLATE NOCASE"
        )
        return [TagRow(r["id"], r["name"], r["kind"] == "negative", int(r["n"])) for r in rows]

    def _tag_rows(self) -> list[sqlite3.Row]:
        # Names and kinds only: lookups on the import and labelling paths need no counts.
        return self._query("SELECT id, name, kind FROM tags")

    def tag_names(self) -> list[str]:
        """Names of every tag."""
        return [t.name for t in self.tags()]

    def negative_tag_name(self) -> str | None:
        """The negative tag's name, if the project has one."""
        rows = self._query("SELECT name FROM tags WHERE kind = 'negative'")
        return rows[0][0] if rows else None

    def tag(self, name: str) -> TagRow | None:
        """The tag called ``name`` (case-insensitive), if any."""
        key = str(name).casefold()
        for r in self._tag_rows():
            if r["name"].casefold() == key:
                n = self._query("SELECT count(*) FROM image_tags WHERE tag_id = ?", (r["id"],))
                return TagRow(r["id"], r["name"], r["kind"] == "negative", int(n[0][0]))
        return None

    def untagged_count(self) -> int:
        """How many images carry no tag."""
        return int(
            self._query(
                "SELECT count(*) FROM images WHERE NOT EXISTS "
                "(SELECT 1 FROM image_tags it WHERE it.image_id = images.id)"
            )[0][0]
        )

    def create_tag(self, name: str, *, negative: bool = False) -> TagRow:
        """Creates a tag; raises :class:`TagError` when it exists or the name is bad."""
        name = validate_tag_name(name)
        if self.tag(name) is not None:
            raise TagError(f"tag {name!r} already exists")
        if negative and self.negative_tag_name() is not None:
            raise TagError("the project already has a negative tag")
        with self.transaction() as cur:
            cur.execute(
                "INSERT INTO tags(name, kind, created_at) VALUES (?, ?, ?)",
                (name, "negative" if negative else "regular", time.time()),
            )
        found = self.tag(name)
        assert found is not None
        return found

    def ensure_tags(self, names: Iterable[str]) -> list[str]:
        """Creates the missing tags in one transaction; returns the canonical names."""
        wanted = [validate_tag_name(n) for n in names]
        existing = {r["name"].casefold(): r["name"] for r in self._tag_rows()}
        missing = []
        for name in wanted:
            if name.casefold() not in existing:
                existing[name.casefold()] = name
                missing.append(name)
        if missing:
            with self.transaction() as cur:
                cur.executemany(
                    "INSERT INTO tags(name, kind, created_at) VALUES (?, 'regular', ?)",
                    [(n, time.time()) for n in missing],
                )
        return [existing[n.casefold()] for n in wanted]

    def rename_tag(self, old: str, new: str) -> None:
        """Renames a tag in one transaction."""
        tag = self._require_tag(old)
        new = validate_tag_name(new)
        other = self.tag(new)
        if other is not None and other.id != tag.id:
            raise TagError(f"cannot rename {old!r} to {new!r}: that tag exists (merge instead)")
        with self.transaction() as cur:
            cur.execute("UPDATE tags SET name = ? WHERE id = ?", (new, tag.id))

    def delete_tag(self, name: str) -> int:
        """Deletes a tag and its labels (images stay); returns how many images lost it."""
        tag = self._require_tag(name)
        with self.transaction() as cur:
            cur.execute("DELETE FROM tags WHERE id = ?", (tag.id,))
        return tag.count

    def merge_tags(self, sources: Sequence[str], into: str, *, kind: str) -> int:
        """Moves every label of ``sources`` onto ``into`` (created if missing) and deletes them.

        For a multiclass project an image never ends with two regular tags: it had at most
        one of the merged tags, which becomes ``into``.

        Returns:
            How many images now carry ``into`` because of the merge.
        """
        source_rows = [self._require_tag(s) for s in sources]
        into = validate_tag_name(into)
        target = self.tag(into)
        source_rows = [s for s in source_rows if target is None or s.id != target.id]
        if any(s.is_negative for s in source_rows):
            raise TagError("the negative tag cannot be merged into a regular tag")
        if target is not None and target.is_negative:
            raise TagError("regular tags cannot be merged into the negative tag")
        with self.transaction() as cur:
            if target is None:
                cur.execute(
                    "INSERT INTO tags(name, kind, created_at) VALUES (?, 'regular', ?)",
                    (into, time.time()),
                )
                target_id = int(cur.lastrowid)
            else:
                target_id = target.id
            moved = 0
            for s in source_rows:
                cur.execute(
                    "INSERT OR IGNORE INTO image_tags(image_id, tag_id) "
                    "SELECT image_id, ? FROM image_tags WHERE tag_id = ?",
                    (target_id, s.id),
                )
                moved += cur.rowcount
                cur.execute("DELETE FROM tags WHERE id = ?", (s.id,))
        del kind  # the rule holds by construction: see the docstring
        return moved

    def _require_tag(self, name: str) -> TagRow:
        tag = self.tag(name)
        if tag is None:
            known = ", ".join(repr(n) for n in self.tag_names()) or "none yet"
            raise TagError(f"no tag called {name!r} (tags: {known})")
        return tag

    # ------------------------------------------------------------------ labels
    def set_image_tags(self, image_id: int, names: Sequence[str], *, record: bool = True) -> None:
        """Replaces an image's tags in one transaction, remembering the change for undo."""
        row = self.image(image_id)
        if row is None:
            raise TagError(f"image id {image_id!r}: no such image in this project")
        tag_ids = [self._require_tag(n).id for n in names]
        with self.transaction() as cur:
            cur.execute("DELETE FROM image_tags WHERE image_id = ?", (row.id,))
            cur.executemany(
                "INSERT OR IGNORE INTO image_tags(image_id, tag_id) VALUES (?, ?)",
                [(row.id, t) for t in tag_ids],
            )
            if record:
                cur.execute(
                    "INSERT INTO label_history(image_id, before_json, after_json, at) "
                    "VALUES (?, ?, ?, ?)",
                    (row.id, json.dumps(list(row.tags)), json.dumps(list(names)), time.time()),
                )

    def pop_label_history(self) -> tuple[int, list[str], list[str]] | None:
        """Undoes the last recorded label change in one transaction.

        Returns:
            ``(image_id, tags_before, tags_after)`` of the undone change, or None.
        """
        with self.transaction() as cur:
            row = cur.execute(
                "SELECT id, image_id, before_json, after_json FROM label_history "
                "ORDER BY id DESC LIMIT 1"
            ).fetchone()
            if row is None:
                return None
            before = json.loads(row[2])
            cur.execute("DELETE FROM label_history WHERE id = ?", (row[0],))
            cur.execute("DELETE FROM image_tags WHERE image_id = ?", (row[1],))
            for name in before:
                # A tag deleted since is simply not restored.
                cur.execute(
                    "INSERT OR IGNORE INTO image_tags(image_id, tag_id) "
                    "SELECT ?, id FROM tags WHERE name = ?",
                    (row[1], name),
                )
            return int(row[1]), before, json.loads(row[3])

    # ------------------------------------------------------------------ iterations
    def next_iteration_number(self) -> int:
        """The number the next iteration gets."""
        return int(self._query("SELECT coalesce(max(number), 0) + 1 FROM iterations")[0][0])

    def insert_iteration(
        self, *, number: int, name: str, status: str, model: str, budget: str, config: dict
    ) -> None:
        """Records a new iteration."""
        with self.transaction() as cur:
            cur.execute(
                "INSERT INTO iterations(number, name, status, model, budget, created_at, "
                "config_json) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (number, name, status, model, budget, time.time(), json.dumps(config)),
            )

    def finish_iteration(self, number: int, *, status: str, metrics: dict | None) -> None:
        """Marks an iteration finished with its status and metrics."""
        with self.transaction() as cur:
            cur.execute(
                "UPDATE iterations SET status = ?, finished_at = ?, metrics_json = ? "
                "WHERE number = ?",
                (status, time.time(), json.dumps(metrics) if metrics is not None else None, number),
            )

    def complete_iteration(
        self, number: int, *, status: str, metrics: dict | None, config: dict
    ) -> None:
        """Records a finished iteration's status, metrics and config in one transaction
        (and its network, ``config["model"]``: the quick budget may choose another than the
        one the row was inserted with)."""
        with self.transaction() as cur:
            cur.execute(
                "UPDATE iterations SET status = ?, finished_at = ?, metrics_json = ?, "
                "config_json = ?, model = COALESCE(?, model) WHERE number = ?",
                (
                    status,
                    time.time(),
                    json.dumps(metrics) if metrics is not None else None,
                    json.dumps(config),
                    config.get("model"),
                    number,
                ),
            )

    def update_iteration_config(self, number: int, changes: dict) -> dict:
        """Merges ``changes`` into an iteration's config in one transaction; returns it."""
        with self.transaction() as cur:
            row = cur.execute(
                "SELECT config_json FROM iterations WHERE number = ?", (number,)
            ).fetchone()
            if row is None:
                raise ProjectError(f"iteration {number}: no such iteration")
            config = {**json.loads(row[0] or "{}"), **changes}
            cur.execute(
                "UPDATE iterations SET config_json = ? WHERE number = ?",
                (json.dumps(config), number),
            )
        return config

    def iterations(self) -> list[dict]:
        """Every iteration row as a dict, oldest first."""
        out = []
        for r in self._query("SELECT * FROM iterations ORDER BY number"):
            d = dict(r)
            d["metrics"] = json.loads(d.pop("metrics_json") or "null")
            d["config"] = json.loads(d.pop("config_json") or "{}")
            out.append(d)
        return out

    def delete_iteration(self, number: int) -> None:
        """Forgets an iteration."""
        with self.transaction() as cur:
            cur.execute("DELETE FROM iterations WHERE number = ?", (number,))

    # ------------------------------------------------------------------ prediction log
    def log_prediction(
        self, *, iteration: str, image_sha256: str | None, image_path: str | None, predictions: list
    ) -> None:
        """Appends a served prediction to the log (the improvement loop)."""
        with self.transaction() as cur:
            cur.execute(
                "INSERT INTO predictions_log(created_at, iteration, image_sha256, image_path, "
                "predictions_json) VALUES (?, ?, ?, ?, ?)",
                (time.time(), iteration, image_sha256, image_path, json.dumps(predictions)),
            )

    def forget_served_paths(self, paths: Sequence[str]) -> None:
        """Marks kept images as gone (pruned): their log rows stay, without a path."""
        if not paths:
            return
        with self.transaction() as cur:
            cur.executemany(
                "UPDATE predictions_log SET image_path = NULL WHERE image_path = ?",
                [(p,) for p in paths],
            )

    def prune_prediction_log(self, older_than: float) -> int:
        """Deletes log rows created before ``older_than`` (a time.time()); returns how many."""
        with self.transaction() as cur:
            cur.execute("DELETE FROM predictions_log WHERE created_at < ?", (older_than,))
            return cur.rowcount

    def prediction_log(self, *, kept_only: bool = False, limit: int | None = None) -> list[dict]:
        """The logged predictions, oldest first.

        Args:
            kept_only: only rows whose image is still kept (read through an index).
            limit: at most the newest ``limit`` rows.
        """
        # kept rows are few (the quota bounds them) in a log that can be long: by the index
        where = (
            "INDEXED BY predictions_log_by_path WHERE image_path IS NOT NULL" if kept_only else ""
        )
        if limit is None:
            rows = self._query(f"SELECT * FROM predictions_log {where} ORDER BY id")
        else:
            rows = self._query(
                f"SELECT * FROM predictions_log {where} ORDER BY id DESC LIMIT ?", (int(limit),)
            )[::-1]
        out = []
        for r in rows:
            d = dict(r)
            d["predictions"] = json.loads(d.pop("predictions_json"))
            out.append(d)
        return out


def _is_disk_error(exc: sqlite3.DatabaseError) -> bool:
    text = str(exc).lower()
    return any(k in text for k in ("disk is full", "readonly", "read-only", "disk i/o"))


def _describe_open_error(exc: sqlite3.DatabaseError) -> str:
    """Says which of disk full, read-only, unreadable or not-a-database it was."""
    text = str(exc).lower()
    if "disk is full" in text:
        return f"the disk is full ({exc}); free some space and try again"
    if "readonly" in text or "read-only" in text:
        return f"the disk or file is read-only ({exc})"
    if "disk i/o" in text or "unable to open" in text:
        return f"cannot read or write the database file ({exc})"
    return f"not a jupyter_imgclass database ({exc})"


def _connect_readonly(path: Path) -> sqlite3.Connection:
    """A connection that cannot write; ``immutable`` where even the WAL index cannot be
    made (a read-only folder without ``-shm``)."""
    base = path.resolve().as_uri()
    last: Exception | None = None
    for query in ("?mode=ro", "?mode=ro&immutable=1"):
        try:
            conn = sqlite3.connect(
                base + query, uri=True, check_same_thread=False, isolation_level=None, timeout=30
            )
            conn.row_factory = sqlite3.Row
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return conn
        except sqlite3.DatabaseError as exc:
            last = exc
    raise last  # type: ignore[misc]


def _connect(path: Path) -> sqlite3.Connection:
    # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE ... COMMIT).
    conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL mode survives a killed process (not a power cut) and is much faster.
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn
