"""The labelling widget: a paged grid (or one image at a time) with keyboard shortcuts.

Keys (when the widget has focus): ``1``-``9`` tag with the n-th tag (toggle in multilabel
projects), ``0`` the negative tag, arrows move, ``Enter`` confirms and moves on,
``Backspace`` / ``Ctrl+Z`` undo, ``S`` skips. Every change goes through
:meth:`Project.set_tags` (one committed transaction) before the view shows it.
"""

from __future__ import annotations

import math
from typing import Any

import anywidget
import traitlets

from ..errors import ImgClassError
from ._common import STATIC, StaticReprMixin, describe_error

THUMB_SIZE = 160
SUGGESTED = "suggested"
"""The filter that walks ``project.suggest(SUGGEST_N)`` with the model's guesses."""
SUGGEST_N = 24
REVIEW = "review"
"""The filter over the review queue: images the endpoint or tester saw, added untagged."""
PREVIEW_SIZE = 480  # the single view: the image itself up to this size, never upscaled


class LabellerWidget(StaticReprMixin, anywidget.AnyWidget):
    """Label a project's images with the mouse or the keyboard.

    The widget keeps only view state (the filter, the page, the cursor); labels live in the
    Project. Thumbnails travel as bytes, one page at a time, so 10,000 images are fine.

    Args:
        project: the :class:`~jupyter_imgclass.Project` to label.
        filter: ``"untagged"`` (default), ``"suggested"`` (the images to label next, in
            order, each with the model's guess: Enter accepts it), ``"all"``,
            ``"tagged"`` or a tag name.
        page_size: thumbnails per page.
        mode: ``"grid"`` or ``"single"`` (one large image at a time).

    Examples:
        >>> w = ic.labeller(project, filter="untagged")  # doctest: +SKIP
        >>> w.label(w.current_id, "cat")                 # what pressing 1 does  # doctest: +SKIP
    """

    _esm = STATIC / "labeller.js"
    _css = STATIC / "labeller.css"

    items = traitlets.List().tag(sync=True)
    tags = traitlets.List().tag(sync=True)
    filter = traitlets.Unicode("untagged").tag(sync=True)
    filter_options = traitlets.List().tag(sync=True)
    page = traitlets.Int(0).tag(sync=True)
    page_size = traitlets.Int(24).tag(sync=True)
    n_pages = traitlets.Int(1).tag(sync=True)
    total = traitlets.Int(0).tag(sync=True)
    cursor = traitlets.Int(0).tag(sync=True)
    mode = traitlets.Unicode("grid").tag(sync=True)
    multilabel = traitlets.Bool(False).tag(sync=True)
    progress = traitlets.Unicode("").tag(sync=True)
    counts = traitlets.Dict().tag(sync=True)
    status = traitlets.Unicode("").tag(sync=True)
    # Single view: {"id": image id, "data": JPEG bytes} at up to PREVIEW_SIZE px.
    preview = traitlets.Dict().tag(sync=True)
    error = traitlets.Unicode("").tag(sync=True)
    # The front end's actions (label, undo, skip, ...) come as custom messages, not as a
    # trait: a trait would be saved into the notebook with the widget state.

    def __init__(
        self, project, filter: str | None = "untagged", *, page_size: int = 24, mode: str = "grid"
    ):
        super().__init__(page_size=max(1, int(page_size)), mode=mode)
        self.project = project
        self._ids: list[int] = []
        self.multilabel = project.kind == "multilabel"
        self.filter = filter or "all"
        self._subscriptions = [
            project.on("labels_changed", self._on_labels_changed),
            project.on("tags_changed", self._on_tags_changed),
            project.on("images_added", self._on_images_changed),
            project.on("images_removed", self._on_images_changed),
        ]
        self._reload_ids()
        self._refresh_tags()
        self.on_msg(self._on_message)

    # ------------------------------------------------------------------ public API
    @property
    def current_id(self) -> int | None:
        """Id of the image under the cursor (None when the view is empty)."""
        k = self.page * self.page_size + self.cursor
        return self._ids[k] if 0 <= k < len(self._ids) else None

    @property
    def image_ids(self) -> list[int]:
        """Ids in view order for the current filter (fixed until the filter changes)."""
        return list(self._ids)

    def label(self, image_id: int, tag: str, *, advance: bool = True) -> None:
        """Applies ``tag`` to an image as a tag button does.

        Multiclass: the image gets exactly ``tag``. Multilabel: ``tag`` is toggled. The
        negative tag always stands alone. With ``advance`` the cursor moves on in
        multiclass projects (multilabel ones wait for Enter).
        """
        self._guard(self._label, int(image_id), str(tag), advance)

    def confirm(self) -> None:
        """Enter: an untagged image with a guess (the ``"suggested"`` view) gets the guess;
        otherwise the cursor moves on."""
        item = next((it for it in self.items if it["id"] == self.current_id), None)
        if item is not None and not item["tags"] and item.get("guess"):
            self.label(item["id"], item["guess"], advance=True)
        else:
            self.move(1)

    def undo(self) -> None:
        """Undoes the last labelling action and moves the cursor to that image."""
        self._guard(self._undo)

    def move(self, step: int) -> None:
        """Moves the cursor by ``step`` images, across pages."""
        if not self._ids:
            return
        k = self.page * self.page_size + self.cursor + int(step)
        k = min(max(k, 0), len(self._ids) - 1)
        self._goto(k)

    def skip(self) -> None:
        """Moves on without labelling."""
        self.move(1)

    def close(self) -> None:
        """Stops listening to the project and closes the view."""
        for sub in self._subscriptions:
            sub.cancel()
        super().close()

    # ------------------------------------------------------------------ internals
    def _guard(self, fn, *args: Any) -> None:
        try:
            fn(*args)
            self.error = ""
        except ImgClassError as exc:
            self.error = describe_error(exc)
        except Exception as exc:  # shown in the widget rather than lost in a log
            self.error = describe_error(exc)

    def _label(self, image_id: int, tag: str, advance: bool) -> None:
        project = self.project
        negative = project.negative_tag
        is_negative = tag == "__negative__" or (negative is not None and tag == negative)
        if is_negative:
            tag = negative or project.create_negative_tag().name
            new = [tag]
        else:
            current = list(project.image(image_id).tags)
            if self.multilabel:
                if negative in current:
                    current.remove(negative)
                new = [t for t in current if t != tag] if tag in current else current + [tag]
            else:
                new = [tag]
        record = project.set_tags(image_id, new)  # committed before the view changes
        self.status = f"image {image_id}: {', '.join(record.tags) or 'untagged'}"
        if advance and not self.multilabel and self.current_id == image_id:
            self.move(1)

    def _undo(self) -> None:
        undone = self.project.undo()
        if undone is None:
            self.status = "nothing to undo"
            return
        image_id = undone[0]
        self.status = f"undone: image {image_id} back to {', '.join(undone[1]) or 'untagged'}"
        if image_id in self._ids:
            self._goto(self._ids.index(image_id))

    def _goto(self, k: int) -> None:
        page, cursor = divmod(k, self.page_size)
        if page != self.page:
            self.cursor = cursor
            self.page = page  # observer loads the page
        else:
            self.cursor = cursor

    def _reload_ids(self) -> None:
        self._guesses = {}
        try:
            if self.filter == SUGGESTED:  # the images to label next, the model's guess on each
                self._ids = [im.id for im in self.project.suggest(SUGGEST_N)]
                self._guesses = self.project.guesses(self._ids)
            elif self.filter == REVIEW:  # what the endpoint and tester saw, served guess on each
                queued = self.project.add_review_queue()
                untagged = set(self.project.image_ids("untagged"))
                queued = [(i, g) for i, g in queued if i in untagged]
                self._ids = [i for i, _ in queued]
                self._guesses = {i: g for i, g in queued if g}
                self.status = f"review: {len(queued)} served image(s), most uncertain first"
            else:
                self._ids = self.project.image_ids(self.filter)
        except ImgClassError as exc:
            self.error = describe_error(exc)
            self._ids = []
        self.total = len(self._ids)
        self.n_pages = max(1, math.ceil(len(self._ids) / self.page_size))
        if self.page >= self.n_pages:
            self.page = self.n_pages - 1
        self._load_page()

    def _load_page(self) -> None:
        start = self.page * self.page_size
        ids = self._ids[start : start + self.page_size]
        records = {im.id: im for im in self.project.images_by_id(ids)}
        items = []
        for image_id in ids:
            im = records.get(image_id)
            if im is None:
                continue
            try:
                thumb = self.project.thumbnail(image_id, size=THUMB_SIZE)
            except Exception:  # a damaged file shows as a blank card, not a broken page
                thumb = b""
            name = str(im.source or im.path.name).rsplit("/", 1)[-1]
            items.append(
                {
                    "id": im.id,
                    "thumb": thumb,
                    "tags": list(im.tags),
                    "name": name,
                    "guess": getattr(self, "_guesses", {}).get(im.id),
                }
            )
        self.items = items
        self.cursor = min(self.cursor, max(0, len(items) - 1))
        self._refresh_counts()
        self._load_preview()

    def _load_preview(self) -> None:
        image_id = self.current_id if self.mode == "single" else None
        if image_id is None:
            if self.preview:
                self.preview = {}
            return
        if self.preview.get("id") == image_id:
            return
        try:
            data = self.project.thumbnail(image_id, size=PREVIEW_SIZE)
        except Exception:  # shown as the small thumbnail instead
            data = b""
        self.preview = {"id": image_id, "data": data}

    def _refresh_tags(self) -> None:
        all_tags = self.project.tags
        regular = [t for t in all_tags if not t.is_negative]
        tags = [
            {
                "name": t.name,
                "negative": False,
                "count": t.count,
                "key": str(k + 1) if k < 9 else "",
            }
            for k, t in enumerate(regular)
        ]
        tags += [
            {"name": t.name, "negative": True, "count": t.count, "key": "0"}
            for t in all_tags
            if t.is_negative
        ]
        self.tags = tags
        self.filter_options = ["untagged", SUGGESTED, REVIEW, "all", "tagged"] + [
            t["name"] for t in tags
        ]
        self._refresh_counts()

    def _refresh_counts(self) -> None:
        counts = self.project.counts()
        if self.multilabel:
            total = len(self.project.image_ids())
        else:  # one tag or "untagged" per image
            total = sum(counts.values())
        labelled = total - counts.get("untagged", 0)
        self.counts = counts
        self.progress = f"{labelled} of {total} labelled"

    # -- project events (may come from other views or from code in another cell)
    def _on_labels_changed(self, ids=(), **_: Any) -> None:
        changed = set(ids or [])
        visible = {it["id"] for it in self.items}
        if not changed or changed & visible:
            fresh = {im.id: im for im in self.project.images_by_id(list(visible))}
            self.items = [
                {**it, "tags": list(fresh[it["id"]].tags)} if it["id"] in fresh else it
                for it in self.items
            ]
        self._refresh_tags()

    def _on_tags_changed(self, **_: Any) -> None:
        self._refresh_tags()

    def _on_images_changed(self, **_: Any) -> None:
        self._reload_ids()

    # -- front-end requests: the JS `model.send({action: ..., ...})`
    def _on_message(self, _widget, req: Any, _buffers: list) -> None:
        if not isinstance(req, dict):
            return
        kind = req.get("action")
        if kind == "label":
            image_id = req.get("image_id", self.current_id)  # keys act on the kernel's cursor
            if image_id is None:
                self.error = "no image to label: this filter shows none"
                return
            self.label(image_id, req["tag"], advance=bool(req.get("advance", True)))
        elif kind == "undo":
            self.undo()
        elif kind == "new_tag":
            self._guard(self.project.create_tag, str(req.get("name", "")).strip())
        elif kind == "move":
            self.move(int(req.get("step", 1)))
        elif kind == "confirm":
            self.confirm()
        elif kind == "skip":
            self.skip()

    @traitlets.observe("page")
    def _on_page(self, change) -> None:
        if change["old"] != change["new"]:
            self.page = min(max(0, self.page), self.n_pages - 1)
            self._load_page()

    @traitlets.observe("cursor", "mode")
    def _on_cursor(self, change) -> None:
        if hasattr(self, "_subscriptions"):
            self._load_preview()

    @traitlets.observe("filter")
    def _on_filter(self, change) -> None:
        if change["old"] != change["new"] and hasattr(self, "_subscriptions"):
            self.page = 0
            self.cursor = 0
            self._reload_ids()

    @traitlets.observe("page_size")
    def _on_page_size(self, change) -> None:
        if hasattr(self, "_subscriptions"):
            self._reload_ids()

    def _static_text(self) -> str:
        counts = getattr(self, "counts", {}) or {}
        tags = ", ".join(f"{k} ({v})" for k, v in counts.items() if k != "untagged")
        name = getattr(getattr(self, "project", None), "name", "?")
        return f"Labeller for {name}: {self.progress}; tags: {tags or 'none yet'}"
