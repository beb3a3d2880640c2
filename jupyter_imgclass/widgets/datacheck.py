"""The data check as a panel: what ``project.check()`` found, each with a one-click fix."""

from __future__ import annotations

import html

import ipywidgets as W

from ..errors import ImgClassError
from ._common import StaticReprMixin, describe_error

SHOWN = 10
"""Findings of each kind shown at once (the header says how many there are)."""


class DataCheckWidget(StaticReprMixin, W.VBox):
    """``ic.data_check(project)``: likely label errors (relabel), near-duplicate pairs
    (remove one), thin or imbalanced tags (merge two tags). Every fix is one project call
    (one store transaction); the panel then checks again.

    Args:
        project: the project to check.
        report: a report to show first (the panel computes one when None).
    """

    def __init__(self, project, report=None):
        self.project = project
        self.summary = W.HTML()
        self.summary.add_class("imgclass-check-summary")
        self.again = W.Button(description="Check again", icon="refresh")
        self.again.on_click(lambda _b: self.refresh())
        self.message = W.HTML()
        self.message.add_class("imgclass-check-message")
        self.issues = W.VBox()
        self.pairs = W.VBox()
        self.merge_from = W.Dropdown(description="merge", options=[])
        self.merge_into = W.Dropdown(description="into", options=[])
        self.merge_button = W.Button(description="Merge tags")
        self.merge_button.on_click(
            lambda _b: self.merge(self.merge_from.value, self.merge_into.value)
        )
        self.tags_note = W.HTML()
        super().__init__(
            [
                W.HBox([self.summary, self.again]),
                self.message,
                W.HTML("<b>Likely label errors</b>"),
                self.issues,
                W.HTML("<b>Near-duplicates</b>"),
                self.pairs,
                W.HTML("<b>Tags</b>"),
                self.tags_note,
                W.HBox([self.merge_from, self.merge_into, self.merge_button]),
            ]
        )
        self.add_class("imgclass-check")
        self.report = None
        self.refresh(report)

    # ------------------------------------------------------------------ fixes
    def relabel(self, image_id: int, tag: str) -> None:
        """Gives ``image_id`` the tag ``tag`` (the model's suggestion) and checks again."""
        self._fix(lambda: self.project.set_tags(image_id, tag), f"image {image_id} is now {tag!r}")

    def remove(self, image_id: int) -> None:
        """Removes one image of a near-duplicate pair and checks again."""
        self._fix(lambda: self.project.remove_images([image_id]), f"removed image {image_id}")

    def merge(self, source: str | None, into: str | None) -> None:
        """Merges tag ``source`` into ``into`` and checks again."""
        if not source or not into or source == into:
            self._say("choose two different tags to merge", error=True)
            return
        self._fix(lambda: self.project.merge_tags(source, into), f"merged {source!r} into {into!r}")

    def refresh(self, report=None) -> None:
        """Runs the check again (or shows ``report``) and redraws the findings."""
        try:
            self.report = report if report is not None else self.project.check()
        except ImgClassError as exc:
            self._say(describe_error(exc), error=True)
            return
        r = self.report
        self.summary.value = f"<b>Data check:</b> {html.escape(r.summary())}"
        self.issues.children = self._more(
            [self._issue_row(i) for i in r.label_issues[:SHOWN]], len(r.label_issues)
        ) or [
            W.HTML(
                "<i>none found" + ("" if r.iteration else " (train once to check labels)") + "</i>"
            )
        ]
        self.pairs.children = self._more(
            [self._pair_row(p) for p in r.near_duplicates[:SHOWN]], len(r.near_duplicates)
        ) or [W.HTML("<i>none found</i>")]
        notes = []
        if r.thin_tags:
            notes.append(f"thin tags (fewer than 5 images): {', '.join(r.thin_tags)}")
        if r.imbalance:
            notes.append(f"imbalance: {r.imbalance}")
        if r.odd_sizes:
            notes.append(f"odd sizes: images {', '.join(map(str, r.odd_sizes[:SHOWN]))}")
        if r.outliers:
            notes.append(f"outliers: images {', '.join(str(i) for i, _ in r.outliers[:SHOWN])}")
        self.tags_note.value = (
            "<br>".join(html.escape(n) for n in notes) or "<i>no tag problems</i>"
        )
        names = list(self.project.tag_names)
        self.merge_from.options, self.merge_into.options = names, names

    # ------------------------------------------------------------------ internals
    def _issue_row(self, issue: dict) -> W.HBox:
        image_id, suggested = issue["image_id"], issue["suggested"]
        button = W.Button(description=f"Relabel as {suggested}", button_style="warning")
        button.add_class("imgclass-check-relabel")
        button.on_click(lambda _b: self.relabel(image_id, suggested))
        text = (
            f"image {image_id}: tagged <b>{html.escape(issue['tag'])}</b>, the model prefers "
            f"<b>{html.escape(str(suggested))}</b> (quality {issue['quality']:.2f})"
        )
        return W.HBox([self._thumb(image_id), W.HTML(text), button])

    def _pair_row(self, pair: dict) -> W.HBox:
        a, b = pair["a"], pair["b"]
        button = W.Button(description=f"Remove image {b}")
        button.add_class("imgclass-check-remove")
        button.on_click(lambda _b: self.remove(b))
        folds = {True: ", scored in different folds", False: "", None: ""}[pair["straddles_folds"]]
        text = f"images {a} and {b}: similarity {pair['similarity']:.3f}{folds}"
        return W.HBox([self._thumb(a), self._thumb(b), W.HTML(html.escape(text)), button])

    def _thumb(self, image_id: int) -> W.Widget:
        try:
            data = self.project.thumbnail(image_id, size=64)
        except Exception:  # a damaged file: the row still offers its fix
            return W.HTML("(no preview)")
        return W.Image(value=data, format="jpeg", width=64, height=64)

    def _more(self, rows: list, total: int) -> list:
        if rows and total > len(rows):
            rows.append(
                W.HTML(f"<i>showing {len(rows)} of {total}; fix these, then check again</i>")
            )
        return rows

    def _fix(self, action, done: str) -> None:
        try:
            action()
        except ImgClassError as exc:
            self._say(describe_error(exc), error=True)
            return
        self.refresh()
        self._say(done)

    def _say(self, text: str, error: bool = False) -> None:
        cls = "imgclass-error" if error else "imgclass-ok"
        self.message.value = f"<div class='{cls}'>{html.escape(text, quote=False)}</div>"

    def _static_text(self) -> str:
        return repr(self.report) if self.report is not None else "Data check"
