"""``ic.Studio(project)``: the whole workflow in one tabbed widget (workshops)."""

from __future__ import annotations

import html
import importlib.util
from typing import Any

import ipywidgets as W

from ..training.options import choices_of, option_fields
from ._common import StaticReprMixin, describe_error
from .evaluation import EvaluationWidget
from .labeller import LabellerWidget
from .monitor import TrainingMonitor
from .tester import TesterWidget

TABS = ("Data", "Label", "Train", "Evaluate", "Test", "Publish")
AUTOMATIC = "automatic"
"""The Train tab's model choice that lets the project pick (``Project.train(model=None)``)."""
MAIN_OPTIONS = ("budget", "model", "epochs", "minutes")
"""The Train tab's first row; the other options sit under "more options"."""


def _option_input(field) -> W.ValueWidget:
    """The input of one :class:`TrainOptions` field: a dropdown of its choices (with
    "automatic" where ``None`` lets the engine choose), a number (0 = automatic) or a text;
    its help is the tooltip."""
    label = field.name.replace("_", " ")
    choices, kind = choices_of(field), field.metadata["type"]
    style = {"description_width": "90px"}  # the labels line up, in the row and folded
    if choices:
        options = ([AUTOMATIC] if field.default is None else []) + choices
        widget = W.Dropdown(
            description=label, options=options, value=field.default or AUTOMATIC, style=style
        )
    elif isinstance(field.default, bool):
        widget = W.Checkbox(description=label, value=field.default, style=style, indent=False)
    elif kind is int:
        widget = W.IntText(description=label, value=field.default or 0, style=style)
    elif kind is float:
        widget = W.FloatText(description=label, value=field.default or 0.0, style=style)
    else:
        widget = W.Text(
            description=label, value=field.default or "", placeholder="automatic", style=style
        )
    widget.tooltip = field.metadata["help"] + ("; 0 = automatic" if kind in (int, float) else "")
    widget.layout = W.Layout(width="250px")
    return widget


def _option_value(field, widget: W.ValueWidget) -> Any:
    """What the input says for ``Project.train`` (``None``: let the engine choose)."""
    value = widget.value
    if value in (AUTOMATIC, "") or (field.default is None and value == 0):
        return None
    return value


def _module_available(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


class Studio(StaticReprMixin, W.Tab):
    """Tabs Data, Label, Train, Evaluate, Test and Publish over one project.

    Args:
        project: the :class:`~jupyter_imgclass.Project` to work on.

    Examples:
        >>> import jupyter_imgclass as ic
        >>> studio = ic.Studio(project)  # doctest: +SKIP
    """

    def __init__(self, project):
        self.project = project
        # Data
        self.folder = W.Text(
            placeholder="path/to/folder (sub-folders become tags)", layout=W.Layout(width="360px")
        )
        self.import_button = W.Button(description="Import folder", icon="folder-open")
        self.import_button.on_click(lambda _b: self.import_folder(self.folder.value))
        self.upload = W.FileUpload(accept="image/*", multiple=True, description="Upload images")
        self.upload.observe(self._on_upload, "value")
        self.data_summary = W.HTML("")
        self.data_message = W.HTML("")
        data = W.VBox(
            [
                W.HBox([self.folder, self.import_button]),
                self.upload,
                self.data_message,
                self.data_summary,
            ]
        )
        # Label
        self.labeller = LabellerWidget(project, filter="all")
        # Train: one input per TrainOptions field, built from the field's type and choices
        self.options = {field.name: _option_input(field) for field in option_fields()}
        self.model, self.budget = self.options["model"], self.options["budget"]
        self.epochs = self.options["epochs"]
        self.train_button = W.Button(description="Train", button_style="primary", icon="play")
        self.train_button.on_click(lambda _b: self.start_training())
        self.train_message = W.HTML("")
        self.monitor_box = W.VBox()
        first = [self.options[name] for name in MAIN_OPTIONS]
        more = W.Accordion(
            children=[W.VBox([w for n, w in self.options.items() if n not in MAIN_OPTIONS])],
            titles=("more options",),
        )
        train = W.VBox(
            [
                W.HBox([*first, self.train_button], layout=W.Layout(flex_flow="row wrap")),
                more,
                self.train_message,
                self.monitor_box,
            ]
        )
        # Evaluate
        self.iteration_choice = W.Dropdown(description="iteration", options=[])
        self.iteration_choice.observe(self._on_iteration_choice, "value")
        self.report_box = W.VBox()
        evaluate = W.VBox([self.iteration_choice, self.report_box])
        # Test
        self.tester = TesterWidget(project)
        # Publish
        publish = self._publish_tab()
        super().__init__(children=[data, self.labeller, train, evaluate, self.tester, publish])
        for k, title in enumerate(TABS):
            self.set_title(k, title)
        self.add_class("imgclass-studio")
        self.run = None
        self._subscriptions = [
            project.on("images_added", self._refresh_data),
            project.on("images_removed", self._refresh_data),
            project.on("labels_changed", self._refresh_data),
            project.on("tags_changed", self._refresh_data),
            project.on("iteration_ready", self._refresh_iterations),
        ]
        self._refresh_data()
        self._refresh_iterations()

    # ------------------------------------------------------------------ actions
    def import_folder(self, path: str):
        """Imports a folder tree (what the Import button does); returns the report."""
        try:
            if not path.strip():
                raise ValueError("folder path: empty; type the path of a folder of images")
            report = self.project.add_folder(path.strip())
        except Exception as exc:
            self.data_message.value = (
                f"<div class='imgclass-error'>{html.escape(describe_error(exc))}</div>"
            )
            return None
        self.data_message.value = f"<pre>{html.escape(str(report))}</pre>"
        return report

    def start_training(self):
        """Starts a run with the chosen options and shows its monitor."""
        try:
            chosen = {f.name: _option_value(f, self.options[f.name]) for f in option_fields()}
            self.run = self.project.train(**chosen)
        except Exception as exc:
            self.train_message.value = (
                f"<div class='imgclass-error'>{html.escape(describe_error(exc))}</div>"
            )
            return None
        self.train_message.value = ""
        for old in self.monitor_box.children:
            old.close()
        self.monitor_box.children = [TrainingMonitor(self.run)]
        return self.run

    def close(self) -> None:
        """Stops listening, closes the views inside and stops a server it started."""
        for sub in self._subscriptions:
            sub.cancel()
        for view in (self.labeller, self.tester, *self.monitor_box.children):
            view.close()
        if self._server is not None:
            self._server.stop()
            self._server = None
        super().close()

    # ------------------------------------------------------------------ internals
    def _publish_tab(self) -> W.Widget:
        parts: list[W.Widget] = []
        self.export_folder = W.Text(
            placeholder="output folder for the bundle", layout=W.Layout(width="360px")
        )
        self.export_onnx = W.Checkbox(description="also ONNX", value=False)
        self.export_overwrite = W.Checkbox(description="replace a bundle there", value=False)
        self.export_button = W.Button(description="Export", icon="download")
        self.serve_button = W.Button(description="Serve (REST)", icon="server")
        self.publish_message = W.HTML("")
        if _module_available("jupyter_imgclass.publish.bundle"):
            self.export_button.on_click(lambda _b: self._export())
            export_row = [self.export_folder, self.export_onnx, self.export_overwrite]
            parts.append(W.HBox([*export_row, self.export_button]))
        else:
            parts.append(W.HTML("Export: not available yet in this version."))
        if _module_available("jupyter_imgclass.publish.serve"):
            self.serve_button.on_click(lambda _b: self._serve())
            parts.append(self.serve_button)
        else:
            parts.append(W.HTML("REST service: not available yet in this version."))
        parts.append(self.publish_message)
        self._server = None
        return W.VBox(parts)

    def _latest(self):
        its = self.project.iterations
        if not its:
            raise ValueError("no trained iteration yet: train one in the Train tab")
        chosen = self.iteration_choice.value
        return next((i for i in its if i.number == chosen), its[-1])

    def _export(self) -> None:
        try:
            path = self._latest().export(
                self.export_folder.value.strip(),
                onnx=self.export_onnx.value,
                overwrite=self.export_overwrite.value,
            )
        except Exception as exc:
            self.publish_message.value = (
                f"<div class='imgclass-error'>{html.escape(describe_error(exc))}</div>"
            )
            return
        self.publish_message.value = f"exported to <code>{html.escape(str(path))}</code>"

    def _serve(self) -> None:
        try:
            if self._server is not None:
                self._server.stop()
            self._server = self._latest().serve()
        except Exception as exc:
            self.publish_message.value = (
                f"<div class='imgclass-error'>{html.escape(describe_error(exc))}</div>"
            )
            return
        self.publish_message.value = publish_html(self._server)

    def _on_upload(self, change) -> None:
        files = change["new"] or ()
        if not files:
            return
        try:
            report = self.project.add_images([bytes(f["content"]) for f in files])
        except Exception as exc:
            self.data_message.value = (
                f"<div class='imgclass-error'>{html.escape(describe_error(exc))}</div>"
            )
            return
        self.data_message.value = f"<pre>{html.escape(str(report))}</pre>"

    def _refresh_data(self, **_: Any) -> None:
        counts = self.project.counts()
        rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{v}</td></tr>" for k, v in counts.items())
        warns = "".join(f"<li>{html.escape(w)}</li>" for w in self.project.warnings())
        self.data_summary.value = (
            "<div class='imgclass-metrics'><table><tr><th>tag</th><th>images</th></tr>"
            f"{rows}</table>"
            + (f"<ul class='imgclass-warnings'>{warns}</ul>" if warns else "")
            + "</div>"
        )

    def _refresh_iterations(self, **_: Any) -> None:
        its = self.project.iterations
        self.iteration_choice.options = [(f"{it.name} ({it.model})", it.number) for it in its]
        if its:
            self.iteration_choice.value = its[-1].number

    def _on_iteration_choice(self, change) -> None:
        if change["new"] is None:
            self.report_box.children = [W.HTML("No iteration yet: train one in the Train tab.")]
            return
        try:
            iteration = self.project.iteration(change["new"])
            self.report_box.children = [EvaluationWidget(iteration)]
        except Exception as exc:
            self.report_box.children = [
                W.HTML(f"<div class='imgclass-error'>{html.escape(describe_error(exc))}</div>")
            ]

    def _static_text(self) -> str:
        project = getattr(self, "project", None)
        if project is None:
            return "Studio"
        return f"Studio for {project!r}; tabs: {', '.join(TABS)}"


def publish_html(server) -> str:
    """What the Publish tab shows of a running server: each route's full URL, whether a
    key is needed, and copyable curl and hosted-SDK snippets."""
    esc = html.escape
    rows = "".join(
        f"<tr><td>{esc(what)}</td><td><code>{esc(url)}</code></td></tr>"
        for what, url in server.routes.items()
    )
    key_note = (
        "requests need the header <code>Prediction-Key</code>"
        if server.key_required
        else "no key needed (anyone who can reach this address can call it)"
    )
    image_url = server.routes.get("image", server.url)
    key_header = ' -H "Prediction-Key: $KEY"' if server.key_required else ""
    curl = (
        f'curl -X POST{key_header} -H "Content-Type: application/octet-stream" '
        f'--data-binary @photo.jpg "{image_url}"'
    )
    parts = image_url.split("/")  # .../Prediction/<project id>/classify/iterations/<name>/image
    project_id, name = (parts[-5], parts[-2]) if len(parts) > 6 else ("<project id>", "<name>")
    sdk = (
        "from azure.cognitiveservices.vision.customvision.prediction import "
        "CustomVisionPredictionClient\n"
        "from msrest.authentication import ApiKeyCredentials\n"
        f'client = CustomVisionPredictionClient("{server.url}", '
        'ApiKeyCredentials(in_headers={"Prediction-key": KEY}))\n'
        f'with open("photo.jpg", "rb") as f:\n'
        f'    result = client.classify_image("{project_id}", "{name}", f.read())\n'
        "print([(p.tag_name, p.probability) for p in result.predictions])"
    )
    return (
        f"<div>serving at <code>{esc(server.url)}</code>; {key_note}</div>"
        f"<table class='imgclass-routes'>{rows}</table>"
        f"<div>curl:</div><pre class='imgclass-snippet'>{esc(curl)}</pre>"
        f"<div>Python (the hosted service's SDK):</div>"
        f"<pre class='imgclass-snippet'>{esc(sdk)}</pre>"
    )
