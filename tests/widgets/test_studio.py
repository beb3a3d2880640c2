"""Studio: the tabs work together on one project."""

from __future__ import annotations

import html
import json
import re
import subprocess

import jupyter_imgclass as ic


def click(button) -> None:
    button._handle_button_msg(None, {"event": "click"}, [])


def test_studio_import_label_train_evaluate(tmp_path, make_png):
    folder = tmp_path / "photos"
    for name in ("red", "blue"):
        (folder / name).mkdir(parents=True)
        for k in range(4):
            (folder / name / f"{k}.png").write_bytes(make_png(name, seed=k))
    p = ic.Project.create(tmp_path / "p")
    s = ic.Studio(p)
    assert [s.get_title(k) for k in range(6)] == [
        "Data",
        "Label",
        "Train",
        "Evaluate",
        "Test",
        "Publish",
    ]
    s.folder.value = str(folder)
    click(s.import_button)
    assert ic.Project.open(p.path).counts() == {"blue": 4, "red": 4, "untagged": 0}
    assert "red" in s.data_summary.value and s.labeller.total == 8
    # The model choice shows "automatic" from the start, not a blank dropdown.
    assert (s.model.index, s.model.label, s.model.value) == (0, "automatic", "automatic")
    # One input per TrainOptions field, each with its help as the tooltip.
    from jupyter_imgclass.training.options import option_fields

    assert list(s.options) == [f.name for f in option_fields()]
    assert all(w.tooltip for w in s.options.values())
    assert s.options["learning_rate"].value == 0 and s.options["seed"].value == 0
    s.model.value, s.budget.value, s.epochs.value = "small_cnn", "advanced", 1
    s.options["name"].value, s.options["batch_size"].value = "first-try", 4
    click(s.train_button)
    s.run.wait(timeout=600)
    assert s.monitor_box.children and s.run.status == "done"
    assert (s.run.options.model, s.run.options.epochs, s.run.options.batch_size) == (
        "small_cnn", 1, 4,
    )  # fmt: skip
    assert s.run.options.learning_rate is None and s.run.iteration.name == "first-try"
    assert s.iteration_choice.value == s.run.number
    assert s.report_box.children[0].iteration.number == s.run.number
    assert s.tester.iteration.number == s.run.number
    assert "Studio for" in repr(s)
    click(s.serve_button)
    server = s._server
    assert server.running and server.url in s.publish_message.value
    shown = html.unescape(s.publish_message.value)
    project_id = p.id
    assert f"/customvision/v3.0/Prediction/{project_id}/classify/iterations/" in shown
    assert "no key needed" in shown and "classify_image(" in shown
    # The curl snippet works as printed, with a real photo in place of photo.jpg.
    curl = re.search(r"<pre class='imgclass-snippet'>(curl .*?)</pre>", shown).group(1)
    photo = next(folder.rglob("*.png"))
    out = subprocess.run(
        curl.replace("@photo.jpg", f"@{photo}"), shell=True, capture_output=True, timeout=60
    )
    assert json.loads(out.stdout)["project"] == project_id, out
    s.export_folder.value = str(tmp_path / "bundle")
    click(s.export_button)
    assert "exported to" in s.publish_message.value
    click(s.export_button)
    assert "overwrite" in s.publish_message.value  # a second export is refused...
    s.export_overwrite.value = True
    click(s.export_button)
    assert "exported to" in s.publish_message.value  # ...unless asked to replace it
    events = ("images_added", "labels_changed", "tags_changed", "iteration_ready")
    assert all(p._events.listeners(e) > 0 for e in events)
    s.close()
    # A closed Studio stops its server and every view inside it stops listening.
    assert not server.running
    assert [p._events.listeners(e) for e in events] == [0, 0, 0, 0]
    assert s.run._hub.listeners("event") == 1  # the project's own forwarding only
    p.close()


def test_studio_shows_errors_in_place(tmp_path):
    p = ic.Project.create(tmp_path / "p")
    s = ic.Studio(p)
    click(s.import_button)  # empty path
    assert "folder path: empty" in s.data_message.value
    click(s.train_button)  # nothing labelled
    assert "imgclass-error" in s.train_message.value
    s.options["learning_rate"].value = -1.0  # refused by TrainOptions, said in place
    click(s.train_button)
    assert "learning_rate -1.0: must be a positive number" in s.train_message.value
    click(s.export_button)
    assert "no trained iteration" in s.publish_message.value
    s.close()
    p.close()
