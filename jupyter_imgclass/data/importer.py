"""Import of images into a project folder: folders, lists of items, CSV manifests.

Every item is decoded strictly (``data.images``), copied content-addressed under
``images/<sha[:2]>/<sha><ext>`` and recorded with its tags in one transaction. A bad item
never aborts the batch: it lands in the :class:`ImportReport` with the reason.
"""

from __future__ import annotations

import csv
import errno
import html
import io
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BadImageError, ImgClassError, ProjectError, StorageError, TagError
from . import images as imgs
from .integrity import stage_file
from .store import ImageStore

HIDDEN_PREFIXES = (".", "__MACOSX", "~$")
MANIFEST_MAX_BYTES = 50_000_000
MANIFEST_PATH_HEADERS = ("path", "file", "filename", "image")
"""A manifest's first row is a header when its first cell is one of these (any case)."""
MANIFEST_INFO_COLUMNS = ("image_id", "original_name")
"""Header names of manifest columns that describe an image rather than tag it (the CSV
that ``data.export`` writes has them)."""


@dataclass
class ImportReport:
    """What an import did: added image ids, duplicates, and rejected items with reasons.

    Attributes:
        added: ids of the images stored by this import.
        duplicates: ``(source, existing_image_id)`` for items already in the project.
        duplicate_of: ``{existing_image_id: its source}`` (the file it came from, or the
            name it was added under), so a duplicate names the image it duplicates.
        rejected: ``(source, reason)`` for items that were refused.
        skipped_hidden: how many hidden files or folders were passed over.
    """

    added: list[int] = field(default_factory=list)
    duplicates: list[tuple[str, int]] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)
    skipped_hidden: int = 0
    duplicate_of: dict[int, str] = field(default_factory=dict)

    def merge(self, other: ImportReport) -> ImportReport:
        """Adds another report's entries to this one (returns self)."""
        self.added += other.added
        self.duplicates += other.duplicates
        self.duplicate_of.update(other.duplicate_of)
        self.rejected += other.rejected
        self.skipped_hidden += other.skipped_hidden
        return self

    def to_json(self) -> dict:
        """The report as plain JSON (used by the CLI)."""
        return {
            "added": len(self.added),
            "duplicates": len(self.duplicates),
            "duplicate_files": [
                {"path": s, "image_id": i, "duplicates": self.duplicate_of.get(i)}
                for s, i in self.duplicates
            ],
            "rejected": [{"path": s, "reason": r} for s, r in self.rejected],
            "skipped_hidden": self.skipped_hidden,
        }

    def summary(self) -> str:
        """One line: counts of added, duplicate and rejected items."""
        text = (
            f"{len(self.added)} added, {len(self.duplicates)} duplicate(s), "
            f"{len(self.rejected)} rejected"
        )
        if self.skipped_hidden:
            text += f", {self.skipped_hidden} hidden skipped"
        return text

    def _duplicate_text(self, source: str, image_id: int) -> str:
        existing = self.duplicate_of.get(image_id)
        return f"image #{image_id}" + (f" ({existing})" if existing else "")

    def __repr__(self) -> str:
        rejected = [f"  rejected {s}: {r}" for s, r in self.rejected]
        duplicates = [f"  duplicate {s} = {self._duplicate_text(s, i)}" for s, i in self.duplicates]
        return "\n".join(
            [
                f"ImportReport: {self.summary()}",
                *_text_rows(rejected, "rejected", ".rejected"),
                *_text_rows(duplicates, "duplicates", ".duplicates"),
            ]
        )

    def _repr_html_(self) -> str:
        tables = [
            _html_table(("rejected", "reason"), self.rejected, ".rejected"),
            _html_table(
                ("duplicate", "same image as"),
                [(s, self._duplicate_text(s, i)) for s, i in self.duplicates],
                ".duplicates",
            ),
        ]
        return (
            f"<div class='imgclass-import-report'><b>Import</b>: {html.escape(self.summary())}"
            f"{''.join(tables)}</div>"
        )


def _text_rows(lines: Sequence[str], what: str, attr: str, limit: int = 20) -> list[str]:
    """Up to ``limit`` lines of a report's text, then one saying how many more ``attr`` holds."""
    more = (
        [f"  ... and {len(lines) - limit} more {what} (see {attr})"] if len(lines) > limit else []
    )
    return [*lines[:limit], *more]


def _html_table(header: tuple[str, str], rows: Sequence[tuple[str, str]], attr: str) -> str:
    """Up to 50 rows as an HTML table, with a line for the rest; empty for no rows."""
    if not rows:
        return ""
    body = "".join(
        f"<tr><td>{html.escape(str(a))}</td><td>{html.escape(str(b))}</td></tr>"
        for a, b in rows[:50]
    )
    more = (
        f"<p>... and {len(rows) - 50} more (see <code>{attr}</code>)</p>" if len(rows) > 50 else ""
    )
    return f"<table><tr><th>{header[0]}</th><th>{header[1]}</th></tr>{body}</table>{more}"


def is_hidden(path: Path) -> bool:
    """True for dot-files, ``.ipynb_checkpoints``, ``__MACOSX`` and Office lock files."""
    return path.name.startswith(HIDDEN_PREFIXES)


def stored_path(images_dir: Path, filename: str) -> Path:
    """Where the stored file ``filename`` (``<sha256><ext>``) lives under ``images_dir``."""
    return Path(images_dir) / filename[:2] / filename


def describe(item: Any, index: int) -> str:
    """A short human name for an item of ``add_images``."""
    if isinstance(item, str | os.PathLike):
        return str(item)
    return f"item {index} ({type(item).__name__})"


class Importer:
    """Stores decoded images under ``images_dir`` and rows in ``store``."""

    def __init__(
        self,
        store: ImageStore,
        images_dir: Path,
        *,
        max_pixels: int | None = None,
        on_added: Callable[[list[int]], None] | None = None,
    ):
        self.store = store
        self.images_dir = Path(images_dir)
        self.max_pixels = max_pixels
        self.on_added = on_added

    def stored_path(self, filename: str) -> Path:
        """Where a stored file lives."""
        return stored_path(self.images_dir, filename)

    def import_one(
        self, item: Any, name: str, tag_names: Sequence[str], report: ImportReport
    ) -> int | None:
        """Decodes, stores and records one item; bad items go to ``report.rejected``."""
        try:
            kwargs = {} if self.max_pixels is None else {"max_pixels": self.max_pixels}
            data, ext, decoded = imgs.to_storable(item, name=name, **kwargs)
        except BadImageError as exc:
            report.rejected.append((name, _reason(exc, name)))
            return None
        except (OSError, ValueError, TypeError) as exc:
            report.rejected.append((name, f"{type(exc).__name__}: {exc}"))
            return None
        sha = imgs.sha256_bytes(data)
        existing = self.store.image_by_sha(sha)
        if existing is not None:
            report.duplicates.append((name, existing.id))
            report.duplicate_of[existing.id] = existing.source or existing.filename
            return None
        try:  # a tag is created with its first image, never left empty by rejects
            tag_names = self.store.ensure_tags(tag_names) if tag_names else []
        except TagError as exc:
            report.rejected.append((name, str(exc)))
            return None
        filename = f"{sha}{ext}"
        target = self.stored_path(filename)
        source = str(Path(item).resolve()) if isinstance(item, str | os.PathLike) else name
        # Staged, committed, renamed (data/integrity.py): a kill at any point leaves a
        # file that the next open can account for.
        staged = None if target.exists() else stage_file(target, data)
        try:
            image_id = self.store.insert_image(
                sha256=sha,
                filename=filename,
                source=source,
                width=decoded.width,
                height=decoded.height,
                format=decoded.format,
                tag_names=tag_names,
            )
        except BaseException:
            if staged is not None:
                staged.unlink(missing_ok=True)
            raise
        if staged is not None:
            os.replace(staged, target)
        report.added.append(image_id)
        return image_id

    def adopt(self, path: Path, digest: str) -> int | None:
        """Records a stored file that has no row (see ``data/integrity.py``) as an untagged
        image; returns its id, or None when it does not decode or is not the file its
        name says."""
        if self.store.image_by_sha(digest) is not None:
            return None
        try:
            decoded = imgs.decode_image(path, name=str(path))
        except (BadImageError, OSError):
            return None
        return self.store.insert_image(
            sha256=digest,
            filename=path.name,
            source=f"recovered: {path.name}",
            width=decoded.width,
            height=decoded.height,
            format=decoded.format,
        )

    def import_items(
        self, items: Iterable[tuple[Any, str, Sequence[str]]], report: ImportReport | None = None
    ) -> ImportReport:
        """Imports ``(item, name, tags)`` triples; a tag is created with its first image."""
        report = report or ImportReport()
        self.store.require_writable()
        batch: list[int] = []
        try:
            for item, name, tags in items:
                try:
                    image_id = self.import_one(item, name, tags, report)
                except OSError as exc:
                    if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
                        raise
                    raise self._storage_error(name, exc, report) from exc
                except ProjectError as exc:  # the database refused: disk full or read-only
                    raise self._storage_error(name, exc, report) from exc
                if image_id is not None:
                    batch.append(image_id)
                if len(batch) >= 200 and self.on_added:
                    self.on_added(batch)
                    batch = []
        finally:
            if batch and self.on_added:
                self.on_added(batch)
        return report

    def _storage_error(self, name: str, exc: Exception, report: ImportReport) -> StorageError:
        reason = (
            "the disk is read-only"
            if getattr(exc, "errno", None) == errno.EROFS or "read-only" in str(exc)
            else "the disk is full"
        )
        return StorageError(
            f"{self.images_dir.parent}: import stopped at {name}: {reason} ({exc}); "
            f"{len(report.added)} image(s) were stored before it and are kept "
            "(the partial report is on this error's .report)",
            report,
        )


def _reason(exc: Exception, name: str) -> str:
    text = str(exc)
    prefix = f"{name}: "
    return text[len(prefix) :] if text.startswith(prefix) else text


def walk_folder(root: Path, report: ImportReport) -> list[tuple[Path, list[str]]]:
    """Files under ``root`` with the tag their top-level sub-folder gives (sorted, hidden skipped).

    ``root/cat/x.jpg`` and ``root/cat/indoor/y.jpg`` are tagged ``cat``; files directly in
    ``root`` are untagged.
    """
    found: list[tuple[Path, list[str]]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        hidden_dirs = [d for d in dirnames if is_hidden(Path(d))]
        report.skipped_hidden += len(hidden_dirs)
        dirnames[:] = sorted(d for d in dirnames if not is_hidden(Path(d)))
        rel = Path(dirpath).relative_to(root)
        tags = [rel.parts[0]] if rel.parts else []
        for filename in sorted(filenames):
            path = Path(dirpath) / filename
            if is_hidden(path):
                report.skipped_hidden += 1
                continue
            found.append((path, tags))
    return found


def read_manifest(path: Path, report: ImportReport) -> list[tuple[Path, list[str]]]:
    """Parses a CSV manifest of ``path,tag[,tag...]`` rows.

    Relative paths are resolved against the manifest's folder; a header row whose first
    cell is ``path`` (any case) is skipped, and the columns it names ``image_id`` or
    ``original_name`` (:data:`MANIFEST_INFO_COLUMNS`) describe the image instead of
    tagging it; empty cells are no tag; bad rows are rejected with their line number.
    """
    path = Path(path)
    try:
        if path.stat().st_size > MANIFEST_MAX_BYTES:
            raise ImgClassError(f"{path}: manifest larger than {MANIFEST_MAX_BYTES} bytes")
        raw = path.read_bytes()
    except OSError as exc:
        raise ImgClassError(f"{path}: cannot read the manifest ({exc.strerror or exc})") from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImgClassError(f"{path}: manifest is not UTF-8 text ({exc.reason})") from exc
    if "\x00" in text:
        raise ImgClassError(f"{path}: manifest is binary, not CSV text")
    rows: list[tuple[Path, list[str]]] = []
    info: set[int] = set()  # columns that are not tags
    for line_no, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        cells = [c.strip() for c in row]
        if not cells or not any(cells):
            continue
        if line_no == 1 and cells[0].casefold() in MANIFEST_PATH_HEADERS:
            info = {k for k, c in enumerate(cells) if c.casefold() in MANIFEST_INFO_COLUMNS}
            continue
        if not cells[0]:
            report.rejected.append((f"{path.name}:{line_no}", "empty path cell"))
            continue
        image_path = Path(cells[0]).expanduser()
        if not image_path.is_absolute():
            image_path = path.parent / image_path
        tags = [c for k, c in enumerate(cells) if k and c and k not in info]
        rows.append((image_path, tags))
    return rows
