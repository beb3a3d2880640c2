"""A project's labelled images written out as a plain dataset that needs no jupyter_imgclass.

Three formats (:data:`~jupyter_imgclass.vocabulary.EXPORT_FORMATS`), each with the stored
image files copied byte for byte (the store keeps the originals it could):

* ``folder``: ``<tag>/<file>`` for every tagged image, untagged images at the top (where
  ``Project.add_folder`` reads them back as untagged). Re-imported with ``add_folder``, a
  new project gets the same images with the same tags.
* ``csv``: ``images/<file>`` and ``labels.csv`` (``path,image_id,original_name,tag...``)
  that ``Project.add_csv`` reads back (the header marks the two information columns).
* ``coco``: ``images/<file>`` and ``annotations.json`` in the COCO layout.

A file keeps the name of the file it was imported from where there was one (its extension
made the stored format's), ``image-<id>`` otherwise; a second image with the same name in a
folder gets its id added. The whole dataset is written into a hidden folder beside the
target and swapped in at the end (``data.integrity.staging_folder`` / ``swap_in``), so a
failed or killed export never leaves a half dataset that looks complete. A hidden marker
(:data:`MARKER_FILE`) says what wrote the folder; ``overwrite`` replaces only such a folder.

Examples:
    >>> import tempfile, pathlib, numpy as np
    >>> from jupyter_imgclass.data.importer import Importer
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> store = ImageStore.create(root / "project.sqlite", kind="multiclass", name="demo")
    >>> _ = Importer(store, root / "images").import_items(
    ...     [(np.zeros((4, 4, 3), np.uint8), "black", ["black"])])
    >>> report = export_dataset(store, root / "images", root / "out", "csv")
    >>> report.counts, (root / "out" / "labels.csv").is_file()
    ({'black': 1, 'untagged': 0}, True)
"""

from __future__ import annotations

import csv
import datetime as _dt
import html
import io
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .._version import __version__
from ..errors import BadImageError, ProjectError, TagError
from ..vocabulary import check_export_format
from . import images as imgs
from .importer import (
    MANIFEST_INFO_COLUMNS,
    _html_table,
    _text_rows,
    is_hidden,
    stored_path,
)
from .integrity import atomic_write, fsync_folder, staging_folder, swap_in
from .store import ImageRow, ImageStore, TagRow

__all__ = [
    "COCO_FILE",
    "CSV_FILE",
    "MARKER_FILE",
    "ExportReport",
    "export_dataset",
    "exported_negative_tag",
]

MARKER_FILE = ".imgclass-export.json"
"""Hidden (``add_folder`` skips it): what wrote the folder, so an overwrite knows it."""
IMAGES_FOLDER = "images"
CSV_FILE = "labels.csv"
COCO_FILE = "annotations.json"
MAX_NAME_BYTES = 255
# Extensions that name the same format as the one the store gave the file.
_SAME_FORMAT = {".jpeg": ".jpg", ".jpe": ".jpg", ".tiff": ".tif"}


@dataclass
class ExportReport:
    """What an export wrote: where, how, how many images per tag, and what it skipped.

    Attributes:
        path: the dataset folder.
        format: ``"folder"``, ``"csv"`` or ``"coco"``.
        written: ids of the images written.
        counts: images written per tag (an image with two tags counts for both), plus
            ``"untagged"``: what ``Project.counts()`` shows for a project re-imported
            from the dataset.
        skipped: ``(image_id, reason)`` for images whose stored file is missing,
            unreadable or not the content it was stored as (the rest was written).
        left_out_untagged: untagged images left out (``include_untagged=False``).
        negative_tag: the project's negative tag, if any, written in the marker file:
            ``Project.add_folder`` / ``add_csv`` of the export make it the new project's
            negative tag (:func:`exported_negative_tag`).
    """

    path: Path
    format: str
    written: list[int] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    skipped: list[tuple[int, str]] = field(default_factory=list)
    left_out_untagged: int = 0
    negative_tag: str | None = None

    def to_json(self) -> dict:
        """The report as plain JSON (used by the CLI)."""
        return {
            "path": str(self.path),
            "format": self.format,
            "written": len(self.written),
            "counts": dict(self.counts),
            "skipped": [{"image_id": i, "reason": r} for i, r in self.skipped],
            "left_out_untagged": self.left_out_untagged,
            "negative_tag": self.negative_tag,
        }

    def summary(self) -> str:
        """One line: how many images went where, and how many were skipped."""
        text = (
            f"{len(self.written)} image(s) written as {self.format} to {self.path}, "
            f"{len(self.skipped)} skipped"
        )
        if self.left_out_untagged:
            text += f", {self.left_out_untagged} untagged left out"
        return text

    def __repr__(self) -> str:
        skipped = [f"  skipped image #{i}: {r}" for i, r in self.skipped]
        return "\n".join(
            [
                f"ExportReport: {self.summary()}",
                *(f"  {tag}: {n}" for tag, n in self.counts.items()),
                *_text_rows(skipped, "skipped", ".skipped"),
            ]
        )

    def _repr_html_(self) -> str:
        tables = [
            _html_table(("tag", "images"), list(self.counts.items()), ".counts"),
            _html_table(
                ("skipped", "reason"), [(f"image #{i}", r) for i, r in self.skipped], ".skipped"
            ),
        ]
        return (
            f"<div class='imgclass-export-report'><b>Export</b>: {html.escape(self.summary())}"
            f"{''.join(tables)}</div>"
        )


def export_dataset(
    store: ImageStore,
    images_dir: Path,
    path: str | os.PathLike,
    format: str = "folder",
    *,
    include_untagged: bool = True,
    overwrite: bool = False,
) -> ExportReport:
    """Writes the store's images and tags to ``path`` as a dataset (see the module).

    ``folder`` holds one tag per image: an image with several tags (a multilabel
    project) is refused, because a copy in each tag's folder would come back from
    ``add_folder`` as one image with one tag (the copies are duplicates). ``coco`` holds
    image-level annotations: one per image and tag, ``image_id`` and ``category_id``,
    no ``bbox`` or ``segmentation`` (classification labels have no region); every tag is
    a category (``is_negative`` marks the negative one), untagged images are in
    ``images`` with no annotation.

    Args:
        store: the project's store.
        images_dir: the project's ``images/`` folder.
        path: the dataset folder: new, empty, or (with ``overwrite``) an earlier export.
        format: ``"folder"``, ``"csv"`` or ``"coco"``.
        include_untagged: write the untagged images too.
        overwrite: replace an earlier export at ``path`` (a folder holding
            :data:`MARKER_FILE`); its old files are removed once the new dataset is in place.

    Returns:
        An :class:`ExportReport`.

    Raises:
        OptionError: an unknown ``format``.
        ProjectError: ``path`` is a file, or a non-empty folder that is not an earlier
            export or is one without ``overwrite``.
        TagError: ``folder`` for an image with several tags or a tag that cannot be a
            folder name.
    """
    check_export_format(format)
    target = Path(path).expanduser()
    _check_target(target, overwrite)
    rows = store.images()
    report = ExportReport(path=target, format=format, negative_tag=store.negative_tag_name())
    if not include_untagged:
        report.left_out_untagged = sum(1 for r in rows if not r.tags)
        rows = [r for r in rows if r.tags]
    if format == "folder":
        _check_folder_layout(rows)
    staging = staging_folder(target)
    try:
        placed = _copy_images(rows, images_dir, staging, format, report)
        tags = store.tags()
        if format == "csv":
            atomic_write(staging / CSV_FILE, _csv_text(placed).encode("utf-8"))
        elif format == "coco":
            coco = _coco(store, tags, placed)
            atomic_write(staging / COCO_FILE, json.dumps(coco, indent=1).encode("utf-8"))
        marker = {
            "format": format,
            "project": store.meta("name"),
            "project_id": store.meta("project_id"),
            "kind": store.meta("kind"),
            "negative_tag": report.negative_tag,
            "images": len(report.written),
            "created": _now().isoformat(timespec="seconds"),
            "jupyter_imgclass": __version__,
        }
        atomic_write(staging / MARKER_FILE, json.dumps(marker, indent=1).encode("utf-8"))
        fsync_folder(staging)
        swap_in(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    written = [r for r, _ in placed]
    per_tag = {t.name: sum(t.name in r.tags for r in written) for t in tags}
    report.counts = {name: n for name, n in per_tag.items() if n}
    report.counts["untagged"] = sum(1 for r in written if not r.tags)
    return report


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


def _check_target(target: Path, overwrite: bool) -> None:
    """Refuses a file, and a non-empty folder unless ``overwrite`` and an earlier export."""
    if target.exists() and not target.is_dir():
        raise ProjectError(f"{target}: exists and is not a folder")
    if not (target.is_dir() and any(target.iterdir())):
        return
    if not (target / MARKER_FILE).is_file():
        raise ProjectError(
            f"{target}: folder is not empty and holds no earlier dataset export "
            f"({MARKER_FILE}); export into a new or empty folder"
        )
    if not overwrite:
        raise ProjectError(
            f"{target}: holds a dataset export already; pass overwrite=True (CLI: "
            "--overwrite) to replace it, or export into a new or empty folder"
        )


def _check_folder_layout(rows: Sequence[ImageRow]) -> None:
    """Refuses what a folder per tag cannot hold so that ``add_folder`` reads it back."""
    several = [r for r in rows if len(r.tags) > 1]
    if several:
        first = several[0]
        raise TagError(
            f"format 'folder': {len(several)} image(s) carry several tags (image "
            f"#{first.id}: {', '.join(first.tags)}); a folder per tag holds one tag per "
            "image (a copy in each folder comes back as one image with one tag), so use "
            "format='csv' or 'coco', which keep every tag"
        )
    for tag in sorted({t for r in rows for t in r.tags}):
        why = _folder_name_problem(tag)
        if why:
            raise TagError(
                f"format 'folder': tag {tag!r} cannot be a folder name ({why}); rename it "
                "(project.rename_tag) or use format='csv' or 'coco'"
            )


def _folder_name_problem(name: str) -> str | None:
    """Why a tag cannot be a folder that ``add_folder`` reads back as that tag, or None."""
    if "/" in name or "\\" in name:
        return "it holds a slash"
    if name in (".", ".."):
        return "it names a folder itself"
    if is_hidden(Path(name)):
        return "add_folder skips hidden folders (names starting with '.', '__MACOSX' or '~$')"
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        return f"longer than {MAX_NAME_BYTES} bytes"
    return None


def original_name(row: ImageRow) -> str | None:
    """The name of the file an image was imported from, when it came from a file."""
    source = Path(row.source or "")
    return source.name if source.is_absolute() and source.name else None


def _file_name(row: ImageRow) -> str:
    """The image's name in the dataset before clashes: the original name with the
    stored format's extension, ``image-<id>`` without one; never a hidden name."""
    ext = Path(row.filename).suffix
    name = original_name(row) or f"image-{row.id}{ext}"
    stem, suffix = Path(name).stem, Path(name).suffix
    if _SAME_FORMAT.get(suffix.lower(), suffix.lower()) != ext:  # converted, or no suffix
        name = (stem if suffix.lower() in imgs.IMAGE_EXTENSIONS else name) + ext
    return f"image-{row.id}-{name}" if is_hidden(Path(name)) else name


def _unique(name: str, image_id: int, taken: set[str]) -> str:
    """``name``, or with the image id added when the folder has it (any case) already;
    shortened to what a file system takes."""
    stem, suffix = Path(name).stem, Path(name).suffix
    n = 0
    while True:
        tail = (f"-{image_id}" + (f"-{n}" if n > 1 else "") if n else "") + suffix
        fitted = stem
        while len((fitted + tail).encode("utf-8")) > MAX_NAME_BYTES:
            fitted = fitted[:-1]
        candidate = fitted + tail
        if candidate.casefold() not in taken:
            taken.add(candidate.casefold())
            return candidate
        n += 1


def _copy_images(
    rows: Sequence[ImageRow], images_dir: Path, staging: Path, format: str, report: ExportReport
) -> list[tuple[ImageRow, str]]:
    """Copies each readable stored file into ``staging``; returns ``(row, relative path)``
    of those written and lists the others in ``report.skipped``."""
    taken: dict[str, set[str]] = {}
    if format == "folder":  # a tag's folder and an untagged file must not share a name
        taken[""] = {t.casefold() for r in rows for t in r.tags} | {MARKER_FILE.casefold()}
    placed = []
    for row in rows:
        try:
            data = _read_stored(row, images_dir)
        except BadImageError as exc:
            report.skipped.append((row.id, str(exc)))
            continue
        folder = (row.tags[0] if row.tags else "") if format == "folder" else IMAGES_FOLDER
        name = _unique(_file_name(row), row.id, taken.setdefault(folder, set()))
        relative = f"{folder}/{name}" if folder else name
        (staging / relative).parent.mkdir(parents=True, exist_ok=True)
        (staging / relative).write_bytes(data)
        placed.append((row, relative))
        report.written.append(row.id)
    return placed


def _read_stored(row: ImageRow, images_dir: Path) -> bytes:
    """The stored file's bytes, checked against the content hash they were stored under.

    Raises:
        BadImageError: naming the stored file and why it cannot be exported.
    """
    path = stored_path(images_dir, row.filename)
    name = f"{IMAGES_FOLDER}/{path.parent.name}/{path.name}"
    data = imgs.read_regular_file(path, name)
    if imgs.sha256_bytes(data) != row.sha256:
        raise BadImageError(
            f"{name}: its content is not what was stored (damaged or replaced since)"
        )
    return data


def _csv_text(placed: Sequence[tuple[ImageRow, str]]) -> str:
    """``labels.csv``: one row per image, ``path,image_id,original_name`` then a column
    per tag (as many as the most tagged image has; empty cells are no tag)."""
    width = max((len(r.tags) for r, _ in placed), default=1)
    tag_columns = ["tag"] if width <= 1 else [f"tag{k}" for k in range(1, width + 1)]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["path", *MANIFEST_INFO_COLUMNS, *tag_columns])
    for row, relative in placed:
        info = {"image_id": row.id, "original_name": original_name(row) or ""}
        tags = list(row.tags) + [""] * (width - len(row.tags))
        writer.writerow([relative, *(info[c] for c in MANIFEST_INFO_COLUMNS), *tags])
    return out.getvalue()


def _coco(
    store: ImageStore, tags: Sequence[TagRow], placed: Sequence[tuple[ImageRow, str]]
) -> dict:
    """The COCO-style document: image-level annotations, one per image and tag."""
    now = _now()
    category = {t.name: t.id for t in tags}
    labels = [(row.id, category[tag]) for row, _ in placed for tag in row.tags]
    annotations = [
        {"id": k, "image_id": image_id, "category_id": category_id}
        for k, (image_id, category_id) in enumerate(labels, start=1)
    ]
    return {
        "info": {
            "description": f"{store.meta('name')}: image-level tags (classification)",
            "version": __version__,
            "year": now.year,
            "date_created": now.isoformat(timespec="seconds"),
            "contributor": "jupyter_imgclass",
            "project_name": store.meta("name"),
            "project_id": store.meta("project_id"),
            "kind": store.meta("kind"),
        },
        "licenses": [],
        "images": [
            {
                "id": row.id,
                "file_name": Path(relative).name,
                "width": row.width,
                "height": row.height,
                "original_name": original_name(row),
            }
            for row, relative in placed
        ],
        "categories": [
            {"id": t.id, "name": t.name, "supercategory": "", "is_negative": t.is_negative}
            for t in tags
        ],
        "annotations": annotations,
    }


def exported_negative_tag(folder: str | os.PathLike) -> str | None:
    """The negative tag an export in ``folder`` recorded in its :data:`MARKER_FILE`
    (None when the folder is no export, or its project had none): a folder or a CSV
    cannot say which tag is the negative one, the marker can."""
    try:
        marker = json.loads((Path(folder) / MARKER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    name = marker.get("negative_tag") if isinstance(marker, dict) else None
    return name if isinstance(name, str) and name.strip() else None
