"""TrainingMonitor on real runs: live events, Stop from the button, summary."""

from __future__ import annotations

import html

import jupyter_imgclass as ic
from jupyter_imgclass.widgets import TrainingMonitor


def click(button) -> None:
    button._handle_button_msg(None, {"event": "click"}, [])  # what a browser click sends


def test_stop_button_stops_a_running_training(trained_project):
    p = trained_project
    run = p.train(budget="advanced", model="small_cnn", epochs=500, input_size=16)
    m = ic.monitor(run)
    assert isinstance(m, TrainingMonitor)
    click(m.stop_button)
    iteration = run.wait(timeout=600)
    assert run.status == "stopped"
    assert m.stop_button.disabled and m.stop_button.description == "Stopped"
    epochs = [e for e in run.events if e.get("event") == "epoch"]
    assert len(epochs) < 500
    assert iteration is not None and iteration.number in [
        it.number for it in ic.Project.open(p.path).iterations
    ]
    assert f"iteration {run.number}" in m.phase.value


def test_monitor_of_a_finished_run_replays_curves(trained_project):
    p = trained_project
    run = p.train(budget="advanced", model="small_cnn", epochs=2, input_size=16)
    live = ic.monitor(run)  # attached while running: gets events as they come
    run.wait(timeout=600)
    late = ic.monitor(run)  # made afterwards: replays the events
    for m in (live, late):
        assert [pt["epoch"] for pt in m.chart.history] == [1, 2]
        assert {"loss", "val_loss", "accuracy", "val_accuracy"} <= set(m.chart.history[-1])
        assert m.progress.value == 1.0
        assert run.iteration.name in m.summary.value
    assert "done" in repr(late)


def test_failed_run_shows_the_reason(tmp_path, make_images):
    p = ic.Project.create(tmp_path / "p")
    p.add_images(make_images("red", 3), tags=["red"])
    p.add_images(make_images("blue", 3, seed=1), tags=["blue"])
    # A plain file where the iteration's folder must go: the save fails at the very end.
    (p.root / "iterations" / "1").write_text("not a folder")
    run = p.train(budget="advanced", model="small_cnn", epochs=1, input_size=16)
    m = ic.monitor(run)
    try:
        run.wait(timeout=600)
    except ic.TrainingError:
        pass
    assert run.status == "failed"  # the save failed: the widget says so
    assert "iterations/1" in m.error.value
    assert "Training failed" in m.error.value and m.stop_button.disabled
    assert "failed" in repr(m)
    p.close()


def test_warnings_stay_in_view(tmp_path, make_images):
    p = ic.Project.create(tmp_path / "p")
    p.add_images(make_images("red", 8), tags=["red"])
    p.add_images(make_images("blue", 3, seed=1), tags=["blue"])
    run = p.train(budget="advanced", model="small_cnn", epochs=1, input_size=16)
    run.wait(timeout=600)
    m = ic.monitor(run)
    assert run.warnings and all(html.escape(w) in m.warnings.value for w in run.warnings)
    assert "&#x27;blue&#x27; has 3 images" in m.warnings.value
    assert run.iteration.record.warnings == run.warnings
    p.close()


def test_progress_shows_the_phase_and_finishes_neutral(trained_project):
    from jupyter_imgclass.vocabulary import figure

    p = trained_project
    run = p.train(budget="advanced", model="small_cnn", epochs=3, input_size=16)
    m = ic.monitor(run)
    seen = []

    def capture(event):  # after the monitor's own handler: what the user sees then
        busy = "imgclass-indeterminate" in m.progress._dom_classes
        seen.append((dict(event), m.phase.value, m.progress.value, busy))

    run.on_event(capture)
    run.wait(timeout=600)
    phases = [e.get("phase") for e, *_ in seen]
    assert "compiling" in phases, phases
    for event, text, value, busy in seen:
        if event.get("event") == "epoch":
            assert not busy and value == event["epoch"] / event["epochs"]
            assert f"loss {figure(event['loss'])}" in text
        elif event.get("phase") in ("compiling",) or (
            event.get("phase") == "training" and not event.get("total")
        ):
            assert busy and value == 0.0, (event, value)  # not a full bar while waiting
            assert "…" in text
        elif event.get("total"):
            assert not busy and value == event["done"] / event["total"]
    assert m.stop_button.description == "Done" and m.stop_button.button_style == ""
    assert m.stop_button.disabled and m.progress.value == 1.0
    assert "imgclass-indeterminate" not in m.progress._dom_classes


def test_small_losses_keep_their_digits():
    from jupyter_imgclass.vocabulary import figure

    assert figure(0.0003) == "0.000300" and figure(0.000312) == "0.000312"
    assert figure(0.8333) == "0.833" and figure(2.302585) == "2.303"
