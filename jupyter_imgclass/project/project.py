"""The one object a notebook holds: a :class:`Project` on disk.

A project is a folder::

    project.sqlite     images, tags, labels, iterations (the truth)
    images/            content-addressed copies (sha256 names)
    cache/             thumbnails, resized arrays, backbone features
    iterations/<n>/    weights.safetensors and model.json of each training run

Examples:
    >>> import jupyter_imgclass as ic, tempfile, numpy as np
    >>> project = ic.Project.create(tempfile.mkdtemp() + "/demo", kind="multiclass")
    >>> report = project.add_images([np.zeros((8, 8, 3), np.uint8)], tags=["black"])
    >>> project.counts()
    {'black': 1, 'untagged': 0}
"""

from __future__ import annotations

import html
import logging
import os
import shutil
import threading
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock, Timeout

from ..data.export import ExportReport, export_dataset, exported_negative_tag
from ..data.images import DEFAULT_RESIZE
from ..data.importer import (
    Importer,
    ImportReport,
    describe,
    read_manifest,
    stored_path,
    walk_folder,
)
from ..data.integrity import (
    DELETING_PREFIX,
    RECOVERED_FOLDER,
    STAGING_PREFIX,
    TMP_PREFIX,
    OpenReport,
    reconcile,
)
from ..data.labelled import check_trainable, data_warnings, labelled_set
from ..data.store import ImageStore, check_project_id
from ..errors import ImgClassError, ProjectError, TagError, TrainingError
from ..training.events import ENDED, Phase
from ..training.options import TrainOptions
from ..vocabulary import check_kind
from . import served, suggestions
from .check import check_project
from .events import Events, Subscription
from .iteration import Iteration
from .moved import moved
from .runs import TrainingRun, recover_interrupted, take_training_lock

log = logging.getLogger(__name__)

DB_NAME = "project.sqlite"
"""The review queue looks at this many of the newest kept served images."""
EVENTS = (
    "images_added",
    "images_removed",
    "tags_changed",
    "labels_changed",
    "training_event",
    "iteration_ready",
)


@dataclass(frozen=True)
class ImageRecord:
    """One image of a project.

    Attributes:
        id: the project's id for the image.
        path: the stored copy inside the project (never the original).
        source: where it came from (a path, or a description such as ``item 3 (ndarray)``).
        tags: tag names, sorted.
        width: width in pixels after EXIF orientation.
        height: height in pixels after EXIF orientation.
        sha256: content hash of the stored file.
    """

    id: int
    path: Path
    source: str | None
    tags: tuple[str, ...]
    width: int
    height: int
    sha256: str
    format: str | None = None

    def __repr__(self) -> str:
        return f"ImageRecord(id={self.id}, tags={list(self.tags)}, {self.width}x{self.height})"


@dataclass(frozen=True)
class TagRecord:
    """One tag: ``is_negative`` marks the "none of these" tag."""

    id: int
    name: str
    is_negative: bool
    count: int

    def __repr__(self) -> str:
        flag = ", negative" if self.is_negative else ""
        return f"TagRecord({self.name!r}, {self.count} images{flag})"


class Project:
    """A labelled image collection with its trained iterations, stored in a folder.

    Create one with :meth:`create` or :meth:`open`; do not call the constructor directly.
    """

    def __init__(self, root: Path, store: ImageStore):
        self.root = Path(root)
        self._store = store
        self._events = Events(EVENTS)
        self._runs: list[TrainingRun] = []
        self._runs_lock = threading.Lock()
        self._cache = None
        self._iterations_cache: dict[int, Iteration] = {}
        self.open_report = OpenReport()
        """What opening the project found (see :meth:`open`)."""

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        kind: str = "multiclass",
        *,
        name: str | None = None,
        project_id: str | None = None,
    ):
        """Creates a new, empty project folder.

        Args:
            path: folder to create (it may exist if empty).
            kind: ``"multiclass"`` (one tag per image) or ``"multilabel"`` (any number).
            name: display name; defaults to the folder name.
            project_id: the project's UUID (:attr:`id`, the hosted API's ``projectId``),
                e.g. the hosted project's it was brought from; a new one by default.

        Raises:
            ProjectError: when a project (or other files) already exist at ``path``.
        """
        check_kind(kind, error=ProjectError)
        if project_id is not None:  # before anything is made on disk
            project_id = check_project_id(project_id)
        root = Path(path).expanduser()
        if (root / DB_NAME).exists():
            raise ProjectError(f"{root}: a project already exists here; use Project.open()")
        if root.exists() and not root.is_dir():
            raise ProjectError(f"{root}: exists and is not a folder")
        if root.exists() and any(p for p in root.iterdir() if not p.name.startswith(".")):
            raise ProjectError(f"{root}: folder is not empty; choose a new or empty folder")
        root.mkdir(parents=True, exist_ok=True)
        for sub in ("images", "cache", "iterations"):
            (root / sub).mkdir(exist_ok=True)
        store = ImageStore.create(
            root / DB_NAME, kind=kind, name=name or root.name, project_id=project_id
        )
        return cls(root, store)

    @classmethod
    def open(cls, path: str | os.PathLike, *, readonly: bool = False) -> Project:
        """Opens an existing project folder, restoring every image, tag and iteration.

        Opening checks the database (SQLite's ``quick_check``) and compares its rows with
        the files under ``images/``; what it finds and does is in :attr:`open_report`
        (and logged). A file without a row is never deleted: it comes back untagged. A
        damaged database, or a folder that cannot be written, opens read-only.

        Args:
            path: the project folder.
            readonly: open without writing anything (also for a copy you only read).

        Raises:
            ProjectError: when ``path`` is not a project folder.
        """
        root = Path(path).expanduser()
        if not root.is_dir():
            raise ProjectError(f"{root}: no such folder")
        if not (root / DB_NAME).is_file():
            raise ProjectError(
                f"{root}: not a jupyter_imgclass project (no {DB_NAME}); "
                "use Project.create() to start one"
            )
        store = ImageStore.open(
            root / DB_NAME, readonly="opened with readonly=True" if readonly else None
        )
        project = cls(root, store)
        report = OpenReport(
            readonly=store.readonly,
            readonly_reason=store.readonly_reason,
            damaged=list(store.damaged),
        )
        if not store.readonly:
            for sub in ("images", "cache", "iterations"):
                (root / sub).mkdir(exist_ok=True)
            store.project_id()  # projects older than ids get theirs when first opened
            with project._writer_lock(blocking=False) as got:
                if got:  # another process importing: its files are in flight
                    report = reconcile(
                        {row.filename: row.id for row in store.images()},
                        root / "images",
                        root / RECOVERED_FOLDER,
                        add_untagged=project._importer().adopt,
                    )
            recover_interrupted(project)
        project.open_report = report
        if not report.clean and not (readonly and not report.damaged):  # asked: no news
            log.warning("%s: %s", root, report.summary())
        return project

    @classmethod
    def salvage(cls, path: str | os.PathLike) -> Project:
        """Rebuilds a damaged project database from every row that can still be read.

        The damaged file is kept beside it (``project.sqlite.damaged-<time>``); image
        files whose rows were lost come back untagged when the project opens.

        Returns:
            The project, opened on the rebuilt database.
        """
        root = Path(path).expanduser()
        kept = ImageStore.salvage(root / DB_NAME)
        log.warning("%s: damaged database kept as %s", root, kept.name)
        return cls.open(root)

    def backup(self, path: str | os.PathLike, *, images: bool = True) -> Path:
        """Copies the project to a new folder while it stays open and in use.

        The database is copied with SQLite's backup API (a consistent snapshot, even
        while another thread or process writes), then the image files and iterations;
        the copy opens like the original. Copying the folder by hand while a kernel has
        the project open can miss the newest rows (they may still be in
        ``project.sqlite-wal``).

        Args:
            path: a new or empty folder.
            images: copy ``images/`` and ``iterations/`` too (the database alone otherwise).

        Returns:
            The copy's folder.
        """
        target = Path(path).expanduser()
        if target.exists() and any(target.iterdir()):
            raise ProjectError(f"{target}: folder is not empty; choose a new or empty folder")
        target.mkdir(parents=True, exist_ok=True)
        with self._writer_lock():  # no import half-way through while the files are copied
            self._store.backup_to(target / DB_NAME)
            if images:
                for sub in ("images", "iterations"):
                    if (self.root / sub).is_dir():
                        shutil.copytree(
                            self.root / sub,
                            target / sub,
                            ignore=shutil.ignore_patterns(
                                f"{STAGING_PREFIX}*", f"{TMP_PREFIX}*", ".*.lock"
                            ),
                        )
        return target

    def export_dataset(
        self,
        path: str | os.PathLike,
        format: str = "folder",
        *,
        include_untagged: bool = True,
        overwrite: bool = False,
    ) -> ExportReport:
        """Writes the images and their tags out as a plain dataset that needs no
        jupyter_imgclass: the stored files, byte for byte, under their original names.

        ``"folder"`` (``<tag>/<file>``, untagged at the top) reads back with
        :meth:`add_folder`; it holds one tag per image, so an image with several is
        refused. ``"csv"`` (``images/`` + ``labels.csv``) reads back with :meth:`add_csv`,
        every tag kept. ``"coco"`` is ``images/`` + ``annotations.json`` with image-level
        annotations. The negative tag is written as a tag of its name: create it first in
        a project you re-import into (:meth:`create_negative_tag`). Details in
        :mod:`jupyter_imgclass.data.export`.

        Args:
            path: a new or empty folder, or an earlier export (with ``overwrite``).
            format: ``"folder"``, ``"csv"`` or ``"coco"``.
            include_untagged: write the untagged images too.
            overwrite: replace an earlier export at ``path`` (nothing else is replaced).

        Returns:
            An :class:`~jupyter_imgclass.data.export.ExportReport`: images per tag, and
            the images skipped because their stored file is missing or damaged.

        Raises:
            OptionError: an unknown format.
            ProjectError: ``path`` is not empty (and not an earlier export with ``overwrite``).
            TagError: ``"folder"`` and an image with several tags, or a tag that cannot
                be a folder name.

        Examples:
            >>> project.export_dataset("data/fruit", "csv")  # doctest: +SKIP
            >>> copy = ic.Project.create("projects/copy")  # doctest: +SKIP
            >>> copy.add_csv("data/fruit/labels.csv")  # doctest: +SKIP
        """
        with self._writer_lock() if not self._store.readonly else nullcontext():
            return export_dataset(
                self._store,
                self.root / "images",
                path,
                format,
                include_untagged=include_untagged,
                overwrite=overwrite,
            )

    def close(self) -> None:
        """Stops running trainings and closes the database."""
        for run in self.runs:
            run.stop()
            run.wait(timeout=60)
        self._store.close()

    def __enter__(self) -> Project:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @contextmanager
    def _writer_lock(self, blocking: bool = True):
        """An OS lock held while importing (every OS, via filelock); a killed process
        releases it. Yields whether it was taken (always, when ``blocking``)."""
        lock = FileLock(self.root / ".import.lock", timeout=-1 if blocking else 0)
        try:
            lock.acquire()
        except Timeout:
            yield False
            return
        try:
            yield True
        finally:
            lock.release()

    # ------------------------------------------------------------------ properties
    @property
    def path(self) -> Path:
        """The project folder."""
        return self.root

    @property
    def kind(self) -> str:
        """``"multiclass"`` or ``"multilabel"``."""
        return self._store.meta("kind") or "multiclass"

    @property
    def name(self) -> str:
        """The display name."""
        return self._store.meta("name") or self.root.name

    @property
    def id(self) -> str:
        """The project's stable UUID: the ``projectId`` of the hosted prediction routes,
        written into every exported bundle."""
        return self._store.project_id()

    @property
    def store(self) -> ImageStore:
        """The SQLite store (for engine modules; widgets use Project methods)."""
        return self._store

    @property
    def cache(self):
        """Derived thumbnails, arrays and features (rebuilt when missing)."""
        if self._cache is None:
            from ..data.cache import DerivativeCache

            self._cache = DerivativeCache(self.root / "cache")
        return self._cache

    # ------------------------------------------------------------------ events
    def on(self, event: str, callback: Callable[..., Any]) -> Subscription:
        """Calls ``callback(**payload)`` whenever ``event`` happens.

        Events: ``images_added`` (ids), ``images_removed`` (ids), ``tags_changed`` (),
        ``labels_changed`` (ids), ``training_event`` (run, event), ``iteration_ready``
        (iteration).

        Returns:
            A :class:`~jupyter_imgclass.project.events.Subscription`: ``.cancel()`` it (a
            widget does when it closes) to stop listening.
        """
        return self._events.subscribe(event, callback)

    def off(self, event: str, callback: Callable[..., Any]) -> None:
        """Stops calling ``callback`` for ``event``."""
        self._events.unsubscribe(event, callback)

    def _emit(self, _event_name: str, /, **payload: Any) -> None:
        self._events.emit(_event_name, **payload)

    # ------------------------------------------------------------------ images
    def _record(self, row) -> ImageRecord:
        return ImageRecord(
            id=row.id,
            path=stored_path(self.root / "images", row.filename),
            source=row.source,
            tags=row.tags,
            width=row.width,
            height=row.height,
            sha256=row.sha256,
            format=row.format,
        )

    @property
    def images(self) -> list[ImageRecord]:
        """Every image, oldest first."""
        return [self._record(r) for r in self._store.images()]

    def image(self, image_id: int) -> ImageRecord:
        """One image by id.

        Raises:
            ImgClassError: when there is no such image.
        """
        row = self._store.image(image_id)
        if row is None:
            raise ImgClassError(f"image id {image_id!r}: no such image in {self.name}")
        return self._record(row)

    def images_by_id(self, ids: Iterable[int]) -> list[ImageRecord]:
        """Images for ``ids``, in that order (unknown ids left out)."""
        return [self._record(r) for r in self._store.images(ids)]

    def filter_images(self, filter: str | None = None) -> list[ImageRecord]:
        """Images matching a filter: None/``"all"``, ``"untagged"``, ``"tagged"`` or a tag name."""
        if filter in (None, "all"):
            return self.images
        return self.images_by_id(self.image_ids(filter))

    def image_ids(self, filter: str | None = None) -> list[int]:
        """Ids of the images :meth:`filter_images` gives, oldest first, read without the
        images' records (fast on large projects: what a paged view needs).

        Raises:
            TagError: ``filter`` names no tag.
        """
        if filter in (None, "all", "untagged", "tagged"):
            return self._store.image_ids(filter or "all")
        tag = self._store.tag(filter)
        if tag is None:
            raise TagError(f"filter {filter!r}: no such tag")
        return self._store.image_ids("tag", tag.id)

    def _importer(self) -> Importer:
        return Importer(
            self._store,
            self.root / "images",
            on_added=lambda ids: self._emit("images_added", ids=ids),
        )

    def add_images(
        self,
        items: Iterable[Any],
        tags: Sequence[Any] | None = None,
        *,
        names: Sequence[str] | None = None,
    ) -> ImportReport:
        """Adds images given as paths, bytes, PIL images or numpy arrays.

        Args:
            items: the images; a single item is accepted too.
            tags: None (untagged), one list of tag names for every item, or one list per item.
            names: one name per item, what the report calls it and, for an item that is not
                a path, the source its record keeps (``ImageRecord.source``); by default a
                path itself, else ``"item <k> (<type>)"``.

        Returns:
            An :class:`ImportReport`; bad items are listed in ``.rejected`` with the reason.

        Examples:
            >>> report = project.add_images(["a.jpg", "b.png"], tags=["cat"])  # doctest: +SKIP
        """
        if isinstance(items, str | os.PathLike | bytes | bytearray | np.ndarray) or hasattr(
            items, "getpixel"
        ):
            items = [items]
        items = list(items)
        per_item = _per_item_tags(tags, len(items))
        if names is not None and len(names) != len(items):
            raise ImgClassError(f"names: {len(names)} names for {len(items)} images")
        report = ImportReport()
        triples = []
        for k, (item, item_tags) in enumerate(zip(items, per_item, strict=True)):
            name = describe(item, k) if names is None else str(names[k])
            try:
                self._check_rule(item_tags)
            except TagError as exc:
                report.rejected.append((name, str(exc)))
                continue
            triples.append((item, name, item_tags))
        with self._writer_lock():
            self._importer().import_items(triples, report)
        if report.added:
            self._emit("tags_changed")
        return report

    def add_folder(self, path: str | os.PathLike) -> ImportReport:
        """Adds every image under a folder; top-level sub-folder names become tags.

        Hidden files and folders (``.DS_Store``, ``.ipynb_checkpoints``) are skipped and
        counted; nested folders are searched; files directly in ``path`` stay untagged.
        A folder written by :meth:`export_dataset` brings its negative tag back as one.
        """
        root = Path(path).expanduser()
        if not root.is_dir():
            raise ImgClassError(f"{root}: not a folder")
        self._adopt_negative_tag(root)
        report = ImportReport()
        return self._import_files(walk_folder(root, report), report)

    def add_csv(self, path: str | os.PathLike) -> ImportReport:
        """Adds the images listed in a CSV manifest of ``path,tag[,tag...]`` rows (the
        ``labels.csv`` of :meth:`export_dataset` brings its negative tag back as one)."""
        path = Path(path).expanduser()
        self._adopt_negative_tag(path.parent)
        report = ImportReport()
        return self._import_files(read_manifest(path, report), report)

    def _adopt_negative_tag(self, folder: Path) -> None:
        """The negative tag an export in ``folder`` names, made this project's, when it
        has none and no tag of that name yet."""
        name = exported_negative_tag(folder)
        if name and self.negative_tag is None and self._store.tag(name) is None:
            self.create_negative_tag(name)

    def _import_files(self, rows: list[tuple[Path, list[str]]], report: ImportReport):
        """Imports ``(file, tags)`` rows under the writer lock; rule breaks are rejected."""
        triples = []
        for file, tags in rows:
            try:
                self._check_rule(tags)
            except TagError as exc:
                report.rejected.append((str(file), str(exc)))
                continue
            triples.append((file, str(file), tags))
        with self._writer_lock():
            self._importer().import_items(triples, report)
        if report.added:
            self._emit("tags_changed")
        return report

    def remove_images(self, ids: Iterable[int]) -> int:
        """Removes images from the project (the stored copies too); returns how many."""
        self._store.require_writable()
        rows = self._store.images(ids)
        # Renamed aside first, row deleted, then the file (data/integrity.py): a kill in
        # between never leaves a row without its file or a file nobody accounts for.
        aside = []
        for row in rows:
            path = stored_path(self.root / "images", row.filename)
            if path.exists():
                moved = path.with_name(DELETING_PREFIX + path.name)
                os.replace(path, moved)
                aside.append((moved, path))
        try:
            rows = self._store.delete_images([r.id for r in rows])
        except BaseException:
            for moved, path in aside:
                os.replace(moved, path)
            raise
        for moved, _ in aside:
            moved.unlink(missing_ok=True)
        if rows:
            self._emit("images_removed", ids=[r.id for r in rows])
            self._emit("tags_changed")
        return len(rows)

    def thumbnail(self, image_id: int, size: int = 160) -> bytes:
        """JPEG bytes of a thumbnail (cached)."""
        im = self.image(image_id)
        return self.cache.thumbnail(im.sha256, im.path, size)

    def array(self, image_id: int, size: int, resize: str = DEFAULT_RESIZE) -> np.ndarray:
        """The image as a uint8 ``[size, size, 3]`` array (cached), made square as
        ``resize`` says (``"squash"``, ``"pad"`` or ``"crop"``)."""
        im = self.image(image_id)
        return self.cache.array(im.sha256, im.path, size, resize)

    # ------------------------------------------------------------------ tags
    @property
    def tags(self) -> list[TagRecord]:
        """Every tag with its image count (the negative tag last)."""
        return [TagRecord(t.id, t.name, t.is_negative, t.count) for t in self._store.tags()]

    @property
    def tag_names(self) -> list[str]:
        """Names of the regular tags (what a classifier predicts)."""
        return [t.name for t in self.tags if not t.is_negative]

    @property
    def negative_tag(self) -> str | None:
        """The name of the negative ("none of these") tag, if the project has one."""
        return self._store.negative_tag_name()

    def tag_guids(self) -> dict[str, str]:
        """``{tag name: GUID}``: the ids the hosted APIs (prediction answers' ``tagId``,
        the Training API) give each tag; stored in the project, given on first use."""
        guids = self._store.guids("tags")
        return {t.name: guids[t.id] for t in self._store.tags()}

    def create_tag(self, name: str, *, negative: bool = False) -> TagRecord:
        """Creates a tag; ``negative=True`` makes the special "none of these" tag."""
        row = self._store.create_tag(name, negative=negative)
        self._emit("tags_changed")
        return TagRecord(row.id, row.name, row.is_negative, row.count)

    def create_negative_tag(self, name: str = "Negative") -> TagRecord:
        """Creates (or returns) the negative tag."""
        existing = self.negative_tag
        if existing is not None:
            return next(t for t in self.tags if t.is_negative)
        return self.create_tag(name, negative=True)

    def rename_tag(self, old: str, new: str) -> None:
        """Renames a tag; every label follows."""
        self._store.rename_tag(old, new)
        self._emit("tags_changed")

    def delete_tag(self, name: str) -> int:
        """Deletes a tag; its images stay, without it. Returns how many images lost it."""
        n = self._store.delete_tag(name)
        self._emit("tags_changed")
        self._emit("labels_changed", ids=[])
        return n

    def merge_tags(self, sources: Sequence[str] | str, into: str) -> int:
        """Moves the labels of ``sources`` onto ``into`` and deletes the sources."""
        if isinstance(sources, str):
            sources = [sources]
        n = self._store.merge_tags(list(sources), into, kind=self.kind)
        self._emit("tags_changed")
        self._emit("labels_changed", ids=[])
        return n

    def _check_rule(self, names: Sequence[str]) -> None:
        """Raises :class:`TagError` if ``names`` break the project's kind rules."""
        if len({n.casefold() for n in names}) != len(names):
            names = list(dict.fromkeys(names))
        negative = self.negative_tag
        is_negative = [negative is not None and n.casefold() == negative.casefold() for n in names]
        regular = [n for n, neg in zip(names, is_negative, strict=True) if not neg]
        if any(is_negative) and regular:
            raise TagError(
                f"tags {list(names)}: the negative tag {negative!r} means 'none of these' and "
                "cannot be combined with other tags"
            )
        if self.kind == "multiclass" and len(regular) > 1:
            raise TagError(
                f"tags {list(names)}: a multiclass project allows one tag per image "
                "(create the project with kind='multilabel' for several)"
            )

    def set_tags(self, image_id: int, tags: Sequence[str] | str | None) -> ImageRecord:
        """Replaces an image's tags (an empty list makes it untagged).

        Tags are created when missing. Multiclass projects allow one regular tag; the
        negative tag stands alone.

        Raises:
            TagError: when the tags break the project's rule or a name is invalid.
        """
        if tags is None:
            tags = []
        elif isinstance(tags, str):
            tags = [tags]
        tags = list(dict.fromkeys(tags))
        self._check_rule(tags)
        if self._store.image(image_id) is None:
            raise ImgClassError(f"image id {image_id!r}: no such image in {self.name}")
        before = set(self._store.tag_names())
        names = self._store.ensure_tags(tags)
        self._store.set_image_tags(image_id, names)
        if set(self._store.tag_names()) != before:
            self._emit("tags_changed")
        self._emit("labels_changed", ids=[int(image_id)])
        return self.image(image_id)

    def undo(self) -> tuple[int, list[str], list[str]] | None:
        """Undoes the last labelling action.

        Returns:
            ``(image_id, tags_restored, tags_removed)``, or None when there is nothing to undo.
        """
        undone = self._store.pop_label_history()
        if undone is not None:
            self._emit("labels_changed", ids=[undone[0]])
        return undone

    # ------------------------------------------------------------------ summaries
    def counts(self) -> dict[str, int]:
        """Images per tag, plus ``"untagged"``."""
        out = {t.name: t.count for t in self.tags}
        out["untagged"] = self._store.untagged_count()
        return out

    def warnings(self) -> list[str]:
        """Data problems worth fixing before training (few tags, thin tags, imbalance)."""
        regular = {t.name: t.count for t in self.tags if not t.is_negative}
        out = []
        if len(regular) < 2:
            out.append(
                f"only {len(regular)} tag(s): a classifier needs at least 2 tags to tell apart"
            )
        return out + data_warnings(regular)

    # ------------------------------------------------------------------ training
    def train(
        self,
        budget: str = "quick",
        *,
        coordinator: str | None = None,
        num_processes: int | None = None,
        process_id: int | None = None,
        **options: Any,
    ) -> TrainingRun:
        """Starts training a new iteration in the background and returns at once.

        Args:
            budget: ``"quick"`` (frozen pretrained backbone, cached features, a head trained
                in seconds) or ``"advanced"`` (fine-tune the network's top, or train a
                network from scratch, under a time budget).
            coordinator: ``"HOST:PORT"`` of process 0, for training over several processes
                or hosts (``jax.distributed``): run the same call once per process, each
                with the same ``coordinator`` and ``num_processes`` and its own
                ``process_id``, before any other JAX computation in the process, on one
                project folder every process can read. A network trained from scratch
                (``budget="advanced"``) trains data-parallel over every device of every
                process; process 0 writes the iteration and ``run.wait()`` returns it in
                every process.
            num_processes: how many processes take part.
            process_id: this process's index, 0 to ``num_processes - 1``.
            **options: the other fields of
                :class:`~jupyter_imgclass.training.options.TrainOptions`: ``model``,
                ``epochs``, ``minutes``, ``seed``, ``name``, ``input_size``,
                ``batch_size``, ``learning_rate`` (each described there).

        Returns:
            A :class:`~jupyter_imgclass.project.runs.TrainingRun`; ``run.wait()`` blocks,
            ``ic.monitor(run)`` shows it live.

        Raises:
            TrainingError: an unknown option, a bad value or too few labelled images, at
                once (not in the background thread).

        Examples:
            >>> run = project.train("quick", seed=1)  # doctest: +SKIP
            >>> iteration = run.wait()                 # doctest: +SKIP
        """
        if "show" in options:
            raise TrainingError(
                "show=: Project.train no longer displays a monitor; call ic.monitor(run)"
            )
        settings = TrainOptions.from_keywords(budget=budget, **options)
        taken = {r["name"]: r["number"] for r in self._store.iterations()
                 if r["status"] != "failed"}  # fmt: skip
        if settings.name in taken:
            raise TrainingError(
                f"name {settings.name!r}: iteration {taken[settings.name]} has it already; a "
                "published name picks one model, so choose another"
            )
        self._store.require_writable()
        check_trainable(labelled_set(self._store))  # refuse at once, not in the thread
        from ..platform import runtime

        try:
            processes = runtime.start_processes(coordinator, num_processes, process_id)
        except ValueError as exc:
            raise TrainingError(str(exc)) from None
        if processes > 1:
            # every process reads the next iteration number before process 0 takes it
            runtime.barrier("imgclass-train-start")
        # process 0 writes the iteration and holds the project's training lock until the
        # run ends; a second training (this kernel or another) is refused here
        lock = take_training_lock(self.root) if runtime.process_rank() == 0 else None
        with self._runs_lock:
            number = self._store.next_iteration_number()
            run = TrainingRun(self, number, settings, lock=lock)
            self._runs.append(run)
        run.on_event(lambda event: self._on_run_event(run, event))
        return run.start()

    def _on_run_event(self, run: TrainingRun, event: dict) -> None:
        """Forwards a run's events; a finished run leaves :attr:`runs` first."""
        phase = event.get("phase")
        if phase in ENDED:
            with self._runs_lock:
                if run in self._runs:
                    self._runs.remove(run)
        self._emit("training_event", run=run, event=event)
        if phase in (Phase.DONE, Phase.STOPPED) and run.iteration is not None:
            self._emit("iteration_ready", iteration=run.iteration)

    @property
    def runs(self) -> list[TrainingRun]:
        """Training runs of this kernel that are still going."""
        with self._runs_lock:
            return list(self._runs)

    @property
    def iterations(self) -> list[Iteration]:
        """Every saved iteration, oldest first (reloaded from disk)."""
        out = []
        for row in self._store.iterations():
            if row["status"] not in ("done", "stopped"):
                continue
            cached = self._iterations_cache.get(row["number"])
            if cached is None or cached.status != row["status"]:
                cached = Iteration(self, row)
                self._iterations_cache[row["number"]] = cached
            out.append(cached)
        return out

    def iteration(self, number: int | str | None = None):
        """One iteration: the latest when None, else by number (``2`` or ``"2"``) or by the
        name its answers and routes carry (``"Iteration2"``, its published name)."""
        its = self.iterations
        if not its:
            raise ImgClassError(f"{self.name}: no trained iteration yet; run project.train()")
        if number is None:
            return its[-1]
        wanted = str(number).strip()
        for it in its:
            if wanted in (str(it.number), it.name, it.published_name):
                return it
        have = ", ".join(f"{i.number} ({i.published_name})" for i in its)
        raise ImgClassError(f"iteration {number}: not found (have {have})")

    # ------------------------------------------------------------------ what to do next
    def suggest(
        self,
        n: int = 20,
        *,
        strategy: str = "herding_uncertain",
        iteration=None,
        seed: int = 0,
    ) -> list[ImageRecord]:
        """The ``n`` untagged images to label next (active learning).

        Args:
            n: how many.
            strategy: a name of ``jupyter_imgclass.active.STRATEGY_TABLE``, which says
                what each does; ``"herding_uncertain"`` by default (MaxHerding weighted by
                the model's doubt, chosen by ``benchmarks/active_learning.py`` on digits and
                real photos; before any iteration exactly ``"herding"``).
            iteration: whose predictions to use; the latest by default.
            seed: for ``"random"``, the k-means of the clustering strategies,
                ``"badge"``'s draws and the herding strategies' reference sample (more
                than 3,000 images).

        Returns:
            Image records, most wanted first.
        """
        return suggestions.suggest(self, n, strategy, iteration, seed)

    def guesses(self, image_ids: Iterable[int], iteration=None) -> dict[int, str]:
        """The latest (or given) iteration's most likely tag for each image: what the
        labeller pre-selects when it walks the suggestions. Empty without an iteration."""
        return suggestions.guesses(self, image_ids, iteration)

    def check(self, iteration=None):
        """What is probably wrong with the data: likely label errors (cleanlab on the
        latest iteration's out-of-fold predictions), near-duplicate pairs and whether
        they straddle folds, thin and imbalanced tags, odd sizes and outliers.

        Returns:
            A :class:`~jupyter_imgclass.project.check.DataCheck`; fix what it finds with
            :meth:`set_tags`, :meth:`remove_images` or :meth:`merge_tags`.
        """
        return check_project(self, iteration)

    # ------------------------------------------------------------------ what was served
    def prediction_logger(
        self,
        iteration_name: str,
        *,
        keep_images: bool = True,
        quota_bytes: int | None = None,
        retention_days: float | None = None,
    ) -> Callable[[bytes, dict], None]:
        """A callback for the REST service that logs each answered prediction here.

        Each call appends the image's sha256 and the probabilities to the project's
        prediction log; with ``keep_images`` the image itself is kept under ``served/``
        (content-addressed, at most ``quota_bytes`` — 1 GiB — for ``retention_days`` —
        30 — after it was last served; see :mod:`jupyter_imgclass.project.served`).
        """
        return served.prediction_logger(
            self,
            iteration_name,
            keep_images=keep_images,
            quota_bytes=quota_bytes,
            retention_days=retention_days,
        )

    def served_images(self, limit: int = served.REVIEW_LIMIT) -> list[dict]:
        """Logged predictions whose image is still kept, newest first (at most ``limit``):
        ``id``, ``created_at``, ``iteration``, ``image_sha256``, ``path`` (absolute) and
        the served ``predictions`` (for reviewing what the endpoint saw)."""
        return served.served_images(self, limit)

    def review_queue(self) -> list[dict]:
        """Kept images the endpoint (or the tester) saw that are not in the project yet,
        most uncertain first: each :meth:`served_images` entry plus ``guess`` (the served
        top tag), ``probability`` and ``margin`` (top minus runner-up probability)."""
        return served.review_queue(self)

    def add_review_queue(self) -> list[tuple[int, str | None]]:
        """Adds the :meth:`review_queue`'s images to the project, untagged (untagged images
        do not train); returns ``(image_id, served guess)`` in queue order. Tagging one
        (in the labeller's ``"review"`` view) moves it into the training set."""
        return served.add_review_queue(self)

    def __getattr__(self, name: str):
        # only for names not found: an old spelling gets the new one in the error
        raise moved(self, name)

    # ------------------------------------------------------------------ reprs
    def __repr__(self) -> str:
        return (
            f"Project({self.name!r}, kind={self.kind!r}, images={self._store.image_count()}, "
            f"tags={self.tag_names})"
        )

    def _repr_html_(self) -> str:
        counts = self.counts()
        rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{v}</td></tr>" for k, v in counts.items())
        found = [] if self.open_report.clean else [f"On opening: {self.open_report.summary()}"]
        warn = "".join(f"<li>{html.escape(w)}</li>" for w in [*found, *self.warnings()])
        return (
            f"<div class='imgclass-project'><b>{html.escape(self.name)}</b> "
            f"({self.kind}, {self._store.image_count()} images)"
            f"<table>{rows}</table>{'<ul>' + warn + '</ul>' if warn else ''}</div>"
        )


def _per_item_tags(tags: Sequence[Any] | None, n: int) -> list[list[str]]:
    """Normalises ``tags`` of :meth:`Project.add_images` to one list per item."""
    if tags is None:
        return [[] for _ in range(n)]
    if isinstance(tags, str):
        return [[tags] for _ in range(n)]
    tags = list(tags)
    if tags and all(isinstance(t, str) for t in tags):
        return [list(tags) for _ in range(n)]
    if len(tags) != n:
        raise TagError(
            f"tags: got {len(tags)} per-item entries for {n} items; pass one list for all "
            "items or one entry per item"
        )
    out = []
    for t in tags:
        if t is None:
            out.append([])
        elif isinstance(t, str):
            out.append([t])
        else:
            out.append(list(t))
    return out
