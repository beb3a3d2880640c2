"""Evaluation report of an :class:`~jupyter_imgclass.project.Iteration`.

Per-tag precision / recall / average precision and overall figures, a threshold slider
(recomputed by :meth:`Iteration.evaluate`), a confusion-matrix heatmap whose cells open
their images for re-tagging, top losses with one-click relabel, and a comparison with
another iteration. The widget displays numbers; the engine computes them.
"""

from __future__ import annotations

import html

import anywidget
import ipywidgets as W
import traitlets

from ..vocabulary import DEFAULT_THRESHOLD
from ._common import STATIC, StaticReprMixin, describe_error

GALLERY_LIMIT = 24


class MetricsView(anywidget.AnyWidget):
    """Per-tag table and confusion-matrix heatmap; a cell click sets ``selected``."""

    _esm = STATIC / "metrics.js"
    _css = STATIC / "widgets.css"
    metrics = traitlets.Dict().tag(sync=True)
    classes = traitlets.List().tag(sync=True)
    kind = traitlets.Unicode("multiclass").tag(sync=True)
    threshold = traitlets.Float(DEFAULT_THRESHOLD).tag(sync=True)
    selected = traitlets.List().tag(sync=True)  # [row, column] of the confusion matrix


class ImageCard(W.VBox):
    """A thumbnail with a tag picker and an optional one-click "relabel as" button."""

    def __init__(self, project, image_id: int, caption: str, suggestion: str | None, on_error):
        self.project, self.image_id, self._on_error = project, image_id, on_error
        record = project.image(image_id)
        options = list(project.tag_names)
        if project.negative_tag:
            options.append(project.negative_tag)
        current = record.tags[0] if record.tags else None
        self.image = W.Image(value=project.thumbnail(image_id), format="jpeg", width=96, height=96)
        self.caption = W.HTML(f"<small>{html.escape(caption)}</small>")
        self.picker = W.Dropdown(
            options=[("(untagged)", "")] + [(o, o) for o in options],
            value=current or "",
            layout=W.Layout(width="120px"),
        )
        self.picker.observe(self._on_pick, "value")
        children = [self.image, self.caption, self.picker]
        self.relabel = None
        if suggestion and suggestion != current:
            self.relabel = W.Button(description=f"→ {suggestion}", layout=W.Layout(width="120px"))
            self.relabel.add_class("imgclass-relabel")
            self.relabel.on_click(lambda _b: self._set(suggestion))
            children.append(self.relabel)
        super().__init__(children, layout=W.Layout(margin="2px", border="1px solid #ddd"))
        self.add_class("imgclass-image-card")

    def _on_pick(self, change) -> None:
        if change["new"] != change["old"]:
            self._set(change["new"])

    def _set(self, tag: str) -> None:
        try:
            record = self.project.set_tags(self.image_id, [tag] if tag else [])
        except Exception as exc:
            self._on_error(describe_error(exc))
            return
        now = record.tags[0] if record.tags else ""
        if self.picker.value != now:
            self.picker.unobserve(self._on_pick, "value")
            self.picker.value = now
            self.picker.observe(self._on_pick, "value")
        if self.relabel is not None:
            self.relabel.disabled = True
            self.relabel.description = "relabelled"
        self.caption.value = f"<small>now: {html.escape(now or 'untagged')}</small>"


class EvaluationWidget(StaticReprMixin, W.VBox):
    """The report of one iteration (``ic.report(iteration)``).

    Examples:
        >>> report = ic.report(project.iterations[-1])  # doctest: +SKIP
        >>> report.slider.value = 0.8                    # numbers follow  # doctest: +SKIP
    """

    def __init__(self, iteration):
        self.iteration = iteration
        self.project = iteration.project
        self.header = W.HTML(self._header_html())
        self.slider = W.FloatSlider(
            value=iteration.threshold,
            min=0.0,
            max=1.0,
            step=0.01,
            description="threshold",
            continuous_update=True,
            readout_format=".2f",
        )
        self.slider.add_class("imgclass-threshold")
        # Per-tag thresholds: the slider sets every tag; a box changes one. Saved ones
        # travel with the iteration into the bundle, ONNX metadata and the endpoint.
        saved = iteration.thresholds
        self.tag_thresholds = {
            tag: W.BoundedFloatText(
                value=saved.get(tag, iteration.threshold),
                min=0.0,
                max=1.0,
                step=0.01,
                description=tag,
                layout=W.Layout(width="auto"),
                style={"description_width": "initial"},
            )
            for tag in iteration.classes
        }
        self.best_f1_button = W.Button(description="Best F1 per tag")
        self.best_f1_button.add_class("imgclass-best-f1")
        self.save_thresholds_button = W.Button(description="Save thresholds", icon="save")
        self.save_thresholds_button.add_class("imgclass-save-thresholds")
        self.thresholds_message = W.HTML("")
        self._syncing = False
        for box in self.tag_thresholds.values():
            box.observe(self._on_tag_threshold, "value")
        self.best_f1_button.on_click(lambda _b: self.use_best_f1())
        self.save_thresholds_button.on_click(lambda _b: self.save_thresholds())
        self.view = MetricsView(classes=iteration.classes, kind=iteration.kind)
        self.error = W.HTML("")
        self.gallery_title = W.HTML("")
        self.gallery = W.HBox(layout=W.Layout(flex_flow="row wrap"))
        self.gallery.add_class("imgclass-gallery")
        self.losses_button = W.Button(description="Show top losses")
        self.losses_button.add_class("imgclass-top-losses")
        self.losses_button.on_click(lambda _b: self.show_top_losses())
        others = [it for it in self.project.iterations if it.number != iteration.number]
        self.compare = W.Dropdown(
            options=[("compare with…" if others else "no other iteration to compare", 0)]
            + [(f"{it.name} ({it.model})", it.number) for it in others],
            value=0,
            disabled=not others,
        )
        self.compare.observe(self._on_compare, "value")
        self.comparison = W.HTML("")
        self._evaluated: dict | None = None
        self.slider.observe(self._on_threshold, "value")
        self.view.observe(self._on_cell, "selected")
        super().__init__(
            [
                self.header,
                self.slider,
                W.HBox(list(self.tag_thresholds.values()), layout=W.Layout(flex_flow="row wrap")),
                W.HBox([self.best_f1_button, self.save_thresholds_button, self.thresholds_message]),
                self.view,
                self.error,
                W.HBox([self.losses_button, self.compare]),
                self.comparison,
                self.gallery_title,
                self.gallery,
            ]
        )
        self.add_class("imgclass-evaluation")
        self._recompute()

    # ------------------------------------------------------------------ public
    @property
    def metrics(self) -> dict:
        """The metrics shown now (at the slider's threshold)."""
        return dict(self.view.metrics)

    @property
    def thresholds(self) -> dict[str, float]:
        """The per-tag thresholds shown now."""
        return {tag: float(box.value) for tag, box in self.tag_thresholds.items()}

    def use_best_f1(self) -> None:
        """Sets each tag's threshold to its best F1 on the cross-validated predictions."""
        try:
            best = self.iteration.best_f1_thresholds()
        except Exception as exc:
            self._fail(exc)
            return
        self._set_boxes(best)
        self.thresholds_message.value = "best F1 per tag (not saved yet)"

    def save_thresholds(self) -> None:
        """Saves the thresholds shown with the iteration."""
        try:
            saved = self.iteration.set_thresholds(self.thresholds)
        except Exception as exc:
            self._fail(exc)
            return
        shown = ", ".join(f"{html.escape(t)} {v:.2f}" for t, v in saved.items())
        self.thresholds_message.value = (
            f"saved ({shown}); exports and the endpoint use them from now on"
        )

    def open_cell(self, row: int, column: int) -> None:
        """Shows the held-out images of one confusion-matrix cell (true row, predicted column)."""
        classes = self.iteration.classes
        try:
            true, predicted = classes[row], classes[column]
            every = self.iteration.top_losses(len(self.iteration.val_image_ids))
        except Exception as exc:
            self._fail(exc)
            return
        hits = [d for d in every if d["true"] == true and d["predicted"] == predicted]
        shown = hits[:GALLERY_LIMIT]
        more = f" (showing {len(shown)} of {len(hits)})" if len(hits) > len(shown) else ""
        self.gallery_title.value = (
            f"<b>true {html.escape(true)}, predicted {html.escape(predicted)}</b>: "
            f"{len(hits)} image(s){more}"
        )
        self._fill_gallery(shown, suggest=True)

    def show_top_losses(self, n: int = 12) -> None:
        """Shows the ``n`` held-out images the model got most wrong, with a relabel button."""
        try:
            losses = self.iteration.top_losses(n)
        except Exception as exc:
            self._fail(exc)
            return
        self.gallery_title.value = f"<b>top {len(losses)} losses</b> (likely mislabelled first)"
        self._fill_gallery(losses, suggest=True)

    # ------------------------------------------------------------------ internals
    def _fill_gallery(self, entries: list[dict], suggest: bool) -> None:
        cards = []
        for d in entries:
            predicted = d["predicted"] if isinstance(d["predicted"], str) else None
            caption = f"#{d['image_id']} loss {d['loss']:.2f}"
            try:
                cards.append(
                    ImageCard(
                        self.project,
                        d["image_id"],
                        caption,
                        predicted if suggest else None,
                        self._show_error,
                    )
                )
            except Exception as exc:  # e.g. an image removed since training
                self._show_error(f"image {d['image_id']}: {describe_error(exc)}")
        self.gallery.children = cards

    def _show_error(self, text: str) -> None:
        self.error.value = f"<div class='imgclass-error'>{html.escape(text)}</div>"

    def _fail(self, exc: BaseException) -> None:
        self._show_error(describe_error(exc))

    def _recompute(self) -> None:
        threshold = float(self.slider.value)
        try:
            metrics = self.iteration.evaluate(threshold, per_tag=self.thresholds)
        except Exception as exc:
            self._fail(exc)
            metrics = self.iteration.metrics or {}
        else:
            self.error.value = ""
        self.view.threshold = threshold
        self.view.metrics = metrics

    def _set_boxes(self, values: dict[str, float]) -> None:
        self._syncing = True
        try:
            for tag, box in self.tag_thresholds.items():
                box.value = float(values.get(tag, box.value))
        finally:
            self._syncing = False
        self._recompute()

    def _on_threshold(self, change) -> None:
        self._set_boxes(dict.fromkeys(self.tag_thresholds, float(change["new"])))
        self.thresholds_message.value = ""

    def _on_tag_threshold(self, change) -> None:
        if not self._syncing:
            self.thresholds_message.value = ""
            self._recompute()

    def _on_cell(self, change) -> None:
        sel = change["new"]
        if isinstance(sel, list | tuple) and len(sel) == 2:
            self.open_cell(int(sel[0]), int(sel[1]))

    def _on_compare(self, change) -> None:
        number = change["new"]
        if not number:  # the "compare with…" entry
            self.comparison.value = ""
            return
        try:
            other = self.project.iteration(number)
        except Exception as exc:
            self._fail(exc)
            return
        a, b = self.iteration.headline_metrics(), other.headline_metrics()
        rows = "".join(
            f"<tr><td>{k.replace('_', ' ')}</td><td>{v:.3f}</td><td>{b[k]:.3f}</td></tr>"
            for k, v in a.items()
            if k in b
        )
        self.comparison.value = (
            "<div class='imgclass-metrics'><table><tr><th></th>"
            f"<th>{html.escape(self.iteration.name)}</th>"
            f"<th>{html.escape(other.name)}</th></tr>{rows}</table></div>"
        )

    def _header_html(self) -> str:
        it = self.iteration
        return (
            f"<b>{html.escape(it.name)}</b> — {html.escape(str(it.model))}, "
            f"{html.escape(it.kind)}, "
            f"{html.escape(str(it.status))}; metrics {html.escape(it.evaluation_text())}"
            + f"<br><small>images: {html.escape(it.input_text())}</small>"
            + (f"<br><small>untagged images: {html.escape(it.unlabelled_text())}</small>"
               if it.unlabelled_text() else "")
            + (f"<br><small>backbone: {html.escape(it.choice_text())}</small>"
               if it.choice_text() else "")
        )  # fmt: skip

    def _static_text(self) -> str:
        it = getattr(self, "iteration", None)
        if it is None:
            return "EvaluationWidget"
        metrics = self.view.metrics if hasattr(self, "view") else it.metrics
        lines = [f"Evaluation of {it.name} ({it.model}) at threshold {self.slider.value:.2f}"]
        lines.append(f"  images: {it.input_text()}")
        if it.unlabelled_text():
            lines.append(f"  untagged images: {it.unlabelled_text()}")
        if it.choice_text():
            lines.append(f"  backbone: {it.choice_text()}")
        for tag, m in (metrics.get("per_tag") or {}).items():
            lines.append(
                f"  {tag}: precision {m['precision']:.3f}, recall {m['recall']:.3f}, "
                f"AP {m['average_precision']:.3f}, n={m['count']}"
            )
        o = metrics.get("overall") or {}
        if o:
            lines.append(
                f"  overall: precision {o.get('precision', 0):.3f}, "
                f"recall {o.get('recall', 0):.3f}, "
                f"AP {o.get('average_precision', 0):.3f}"
            )
        return "\n".join(lines)
