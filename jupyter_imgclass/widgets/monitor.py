"""Live view of a training run: phase, progress with ETA, loss/accuracy curves, Stop."""

from __future__ import annotations

import html
from typing import Any

import anywidget
import ipywidgets as W
import traitlets

from ..training.events import Event, Phase
from ..vocabulary import figure
from ._common import STATIC, StaticReprMixin

CURVE_KEYS = ("epoch", "loss", "val_loss", "accuracy", "val_accuracy")


class CurvesChart(anywidget.AnyWidget):
    """Loss and accuracy curves (train and validation) drawn as SVG from ``history``."""

    _esm = STATIC / "curves.js"
    _css = STATIC / "widgets.css"
    history = traitlets.List().tag(sync=True)


class TrainingMonitor(StaticReprMixin, W.VBox):
    """Phase text, progress bar with ETA, live curves and a Stop button for one run.

    Args:
        run: the :class:`~jupyter_imgclass.project.TrainingRun` to follow.

    Examples:
        >>> run = project.train(budget="quick")  # doctest: +SKIP
        >>> ic.monitor(run)                      # doctest: +SKIP
    """

    def __init__(self, run):
        self.run = run
        self.phase = W.HTML("starting…", layout=W.Layout(width="auto"))
        self.phase.add_class("imgclass-monitor-phase")
        self.progress = W.FloatProgress(value=0.0, min=0.0, max=1.0, description="")
        self.progress.add_class("imgclass-monitor-progress")
        self._busy(True)  # indeterminate until a phase has a count or an epoch ends
        self.eta = W.Label("")
        self.eta.add_class("imgclass-monitor-eta")
        self.chart = CurvesChart()
        self.stop_button = W.Button(description="Stop", button_style="warning", icon="stop")
        self.stop_button.add_class("imgclass-monitor-stop")
        self.stop_button.on_click(self._on_stop)
        self.summary = W.HTML("")
        self.summary.add_class("imgclass-monitor-summary")
        self.error = W.HTML("")
        self.error.add_class("imgclass-monitor-error")
        self.warnings = W.HTML("")
        self.warnings.add_class("imgclass-monitor-warnings")
        self._warnings: list[str] = []
        super().__init__(
            [
                W.HBox([self.phase, self.stop_button]),
                W.HBox([self.progress, self.eta]),
                self.chart,
                self.summary,
                self.warnings,
                self.error,
            ]
        )
        self.add_class("imgclass-monitor")
        self._seen: set[int] = set()
        self._subscription = run.on_event(self._on_event)
        for event in list(run.events):  # events before this view existed
            self._on_event(event)
        if not run.running:
            self._finish()

    def close(self) -> None:
        """Stops listening to the run and closes the view."""
        self._subscription.cancel()
        super().close()

    def _busy(self, busy: bool) -> None:
        """An indeterminate bar (work with no count yet), or a bar that shows a fraction."""
        if busy:
            self.progress.value = 0.0
            self.progress.add_class("imgclass-indeterminate")
        else:
            self.progress.remove_class("imgclass-indeterminate")

    def _on_stop(self, _button: Any = None) -> None:
        self.run.stop()
        self.stop_button.disabled = True
        self.stop_button.description = "Stopping…"

    def _on_event(self, event: dict) -> None:
        if id(event) in self._seen:
            return
        self._seen.add(id(event))
        if event.get("event") == Event.EPOCH:
            epoch, epochs = event.get("epoch"), event.get("epochs")
            parts = [f"epoch {epoch}" + (f" of {epochs}" if epochs else "")]
            for key in ("loss", "val_loss", "val_accuracy"):
                if isinstance(event.get(key), int | float):
                    parts.append(f"{key} {figure(event[key])}")
            self.phase.value = "training: " + " · ".join(parts)
            if epochs:
                self._busy(False)
                self.progress.value = min(1.0, float(epoch) / float(epochs))
            if event.get("eta_s") is not None:
                self.eta.value = f"ETA {_duration(event['eta_s'])}"
            point = {k: event[k] for k in CURVE_KEYS if isinstance(event.get(k), int | float)}
            self.chart.history = [*self.chart.history, point]
        elif event.get("event") == Event.STEP:
            pass  # epochs carry the curves; steps would only redraw faster
        elif "phase" in event:
            phase = event["phase"]
            if phase == Phase.FAILED:
                reason = event.get("error") or self.run.error or "no reason given"
                if event.get("error") or "Training failed" not in self.error.value:
                    self.error.value = (
                        f"<div class='imgclass-error'>Training failed: "
                        f"{html.escape(str(reason))}</div>"
                    )
                self.phase.value = "failed"
                self.stop_button.disabled = True
                self.stop_button.description = "Failed"
                self.stop_button.button_style = ""
                self.stop_button.icon = ""
                self._busy(False)
            elif phase in (Phase.DONE, Phase.STOPPED):
                self._finish()
            elif phase == Phase.WARNING:
                # Warnings stay in view (data too thin, fine-tuning kept the head, ...).
                self._warnings.append(str(event.get("message", "")))
                items = "".join(f"<li>{html.escape(w)}</li>" for w in self._warnings)
                self.warnings.value = f"<ul class='imgclass-warning'>{items}</ul>"
            else:
                # A phase with a count fills the bar; one without (compiling, fitting the
                # head) shows an indeterminate bar and an ellipsis, never a full bar.
                if event.get("total"):
                    done, total = int(event.get("done", 0)), int(event["total"])
                    text = f"{phase} {done} of {total}"
                    self._busy(False)
                    self.progress.value = done / total
                else:
                    text = f"{phase}…" + (f" ({event['message']})" if event.get("message") else "")
                    self._busy(True)
                self.phase.value = html.escape(text)

    def _finish(self) -> None:
        run = self.run
        self.stop_button.disabled = True
        self.stop_button.description = {"done": "Done", "stopped": "Stopped"}.get(
            run.status, run.status.capitalize()
        )
        self.stop_button.button_style = ""  # neutral: nothing left to stop
        self.stop_button.icon = "check" if run.status == "done" else ""
        self._busy(False)
        self.eta.value = ""
        if run.status == "failed":
            self.phase.value = "failed"
            reason = run.error or "no reason given"
            self.error.value = (
                f"<div class='imgclass-error'>Training failed: {html.escape(str(reason))}</div>"
            )
            return
        it = run.iteration
        self.progress.value = 1.0
        self.phase.value = f"{run.status}: iteration {run.number}"
        if it is None:
            return
        figures = " · ".join(
            f"{k.replace('_', ' ')} {v:.3f}" for k, v in it.headline_metrics().items()
        )
        self.summary.value = (
            f"<div class='imgclass-summary'><b>{html.escape(it.name)}</b> "
            f"({html.escape(str(it.model))}, {html.escape(run.status)}) — {figures}"
            f"<br>Next: <code>ic.report(project.iterations[-1])</code></div>"
        )

    def _static_text(self) -> str:
        run = getattr(self, "run", None)
        if run is None:
            return "TrainingMonitor"
        last = [e for e in run.events if e.get("event") == Event.EPOCH]
        tail = ""
        if last:
            e = last[-1]
            tail = f", epoch {e.get('epoch')}, loss {figure(e.get('loss'))}"
        return f"Training run {run.number}: {run.status}{tail}"


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(float(seconds))))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"
