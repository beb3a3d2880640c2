"""Try a trained iteration on new images: upload, drop or take with the camera, see
probabilities, add to the project."""

from __future__ import annotations

import html
from typing import Any

import anywidget
import ipywidgets as W
import traitlets

from ..errors import ImgClassError
from ._common import STATIC, StaticReprMixin, describe_error


class ProbabilityBars(anywidget.AnyWidget):
    """The image and one bar per tag; also a drop zone and a camera: a dropped file or a
    captured frame arrives as a custom message ``{"action": "drop", "name"}`` with the
    bytes as its buffer (an action, not state: nothing of it is saved in the notebook)."""

    _esm = STATIC / "bars.js"
    _css = STATIC / "widgets.css"
    image = traitlets.Bytes(b"").tag(sync=True)
    name = traitlets.Unicode("").tag(sync=True)
    predictions = traitlets.List().tag(sync=True)  # [{"tag", "probability"}], highest first


class TesterWidget(StaticReprMixin, W.VBox):
    """``ic.tester(project)`` / ``ic.tester(iteration)``.

    Args:
        project: the project (new images are added to it).
        iteration: the iteration to test; by default the latest, following new ones.

    Examples:
        >>> t = ic.tester(project)           # doctest: +SKIP
        >>> t.test(open("new.jpg", "rb").read())  # what an upload does  # doctest: +SKIP
    """

    def __init__(self, project, iteration=None):
        self.project = project
        self._fixed = iteration is not None
        self.iteration = iteration
        self.upload = W.FileUpload(
            accept="image/*",
            multiple=False,
            description="Upload image",
            layout=W.Layout(width="auto", min_width="190px"),  # room for "(1)" after it
        )
        self.upload.add_class("imgclass-tester-upload")
        self.upload.observe(self._on_upload, "value")
        self.choice = W.Dropdown(
            description="iteration", options=[], layout=W.Layout(width="280px")
        )
        self.choice.observe(self._on_choice, "value")
        self.bars = ProbabilityBars()
        self.bars.on_msg(self._on_drop)
        self.tag = W.Combobox(
            placeholder="tag for this image", ensure_option=False, layout=W.Layout(width="200px")
        )
        self.add_button = W.Button(description="Add to project", disabled=True, icon="plus")
        self.add_button.add_class("imgclass-tester-add")
        self.add_button.on_click(self._on_add)
        self.message = W.HTML("")
        self.message.add_class("imgclass-tester-message")
        self._bytes: bytes | None = None
        self._name = ""
        super().__init__(
            [
                W.HBox([self.upload, self.choice]),
                self.bars,
                W.HBox([self.tag, self.add_button]),
                self.message,
            ]
        )
        self.add_class("imgclass-tester")
        self._refresh_choices()
        self._subscriptions = [
            project.on("iteration_ready", self._on_iteration_ready),
            project.on("tags_changed", self._on_tags_changed),
        ]
        self._on_tags_changed()

    # ------------------------------------------------------------------ public
    def test(self, data: bytes, name: str = "image") -> list:
        """Predicts ``data`` (image bytes) and shows the bars; returns the predictions."""
        self._bytes, self._name = bytes(data), name
        self.bars.name = name
        self.bars.image = self._bytes
        self.bars.predictions = []
        self.tag.value = ""  # the last image's tag does not carry over to this one
        self.add_button.disabled = False
        if self.iteration is None:
            self._say(
                "no trained iteration yet: train one, or add the image with a tag", error=True
            )
            return []
        try:
            preds = self.iteration.predict(self._bytes)
        except Exception as exc:
            # Nothing of the previous image stays on show beside the reason.
            self._bytes = None
            self.bars.image = b""
            self._say(f"{name}: {describe_error(exc)}", error=True)
            self.add_button.disabled = True
            return []
        self.bars.predictions = [{"tag": p.tag, "probability": float(p.probability)} for p in preds]
        self._keep_for_review(preds)
        if preds:
            self.tag.value = preds[0].tag
        self._say(
            f"{html.escape(name)}: {html.escape(preds[0].tag)} ({preds[0].probability:.1%})"
            if preds
            else ""
        )
        return preds

    def add_to_project(self, tag: str | None = None):
        """Adds the image under test to the project with ``tag`` (or the tag box)."""
        if self._bytes is None:
            self._say("nothing to add: upload or drop an image first", error=True)
            return None
        tag = (tag if tag is not None else self.tag.value).strip()
        try:
            report = self.project.add_images([self._bytes], tags=[[tag]] if tag else None)
        except ImgClassError as exc:
            self._say(describe_error(exc), error=True)
            return None
        if report.rejected:
            self._say(f"{self._name}: {report.rejected[0][1]}", error=True)
        elif not report.added:
            self._say(
                f"{html.escape(self._name)} is already in the project (duplicate)", error=True
            )
        else:
            self._say(f"added {html.escape(self._name)} as {html.escape(tag or 'untagged')}")
            self.add_button.disabled = True
        return report

    def close(self) -> None:
        """Stops listening to the project and closes the view."""
        for sub in self._subscriptions:
            sub.cancel()
        super().close()

    # ------------------------------------------------------------------ internals
    def _say(self, text: str, error: bool = False) -> None:
        cls = "imgclass-error" if error else "imgclass-ok"
        self.message.value = (
            f"<div class='{cls}'>{text if not error else html.escape(text)}</div>" if text else ""
        )

    def _keep_for_review(self, preds) -> None:
        """Keeps the tried image with its predictions for the labeller's review queue (as
        the endpoint keeps what it serves)."""
        answer = {"predictions": [{"tagName": p.tag, "probability": p.probability} for p in preds]}
        try:
            self.project.prediction_logger(f"{self.iteration.name} (tester)")(self._bytes, answer)
        except ImgClassError as exc:
            self._say(f"not kept for review: {describe_error(exc)}", error=True)

    def _refresh_choices(self) -> None:
        its = self.project.iterations
        if (
            self._fixed
            and self.iteration is not None
            and all(i.number != self.iteration.number for i in its)
        ):
            its = [*its, self.iteration]
        self.choice.options = [(f"{it.name} ({it.model})", it.number) for it in its]
        if self.iteration is None and its:
            self.iteration = its[-1]
        if self.iteration is not None:
            self.choice.value = self.iteration.number

    def _on_choice(self, change) -> None:
        number = change["new"]
        if number is None or (self.iteration is not None and self.iteration.number == number):
            return
        try:
            self.iteration = self.project.iteration(number)
        except Exception as exc:
            self._say(describe_error(exc), error=True)
            return
        if self._bytes is not None:
            self.test(self._bytes, self._name)

    def _on_iteration_ready(self, iteration=None, **_: Any) -> None:
        if not self._fixed and iteration is not None:
            self.iteration = iteration
        self._refresh_choices()

    def _on_tags_changed(self, **_: Any) -> None:
        self.tag.options = list(self.project.tag_names)

    def _on_upload(self, change) -> None:
        files = change["new"] or ()
        if not files:
            return
        f = files[-1]
        self.test(bytes(f["content"]), str(f.get("name") or "upload"))

    def _on_drop(self, _bars: Any, content: Any, buffers: list) -> None:
        """A file dropped on the bars or a camera frame (a message with its bytes)."""
        if isinstance(content, dict) and content.get("action") == "drop" and buffers:
            # the browser's ArrayBuffer arrives as a memoryview
            self.test(bytes(buffers[0]), str(content.get("name") or "dropped image"))

    def _on_add(self, _button: Any = None) -> None:
        self.add_to_project()

    def _static_text(self) -> str:
        it = getattr(self, "iteration", None)
        preds = self.bars.predictions if hasattr(self, "bars") else []
        top = ", ".join(f"{p['tag']} {p['probability']:.1%}" for p in preds[:3])
        return f"Tester ({it.name if it is not None else 'no iteration yet'})" + (
            f": {top}" if top else ""
        )
