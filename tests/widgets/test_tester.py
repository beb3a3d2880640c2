"""TesterWidget: an upload gives probability bars; "Add to project" stores the image."""

from __future__ import annotations

import jupyter_imgclass as ic
from jupyter_imgclass.widgets import TesterWidget

TesterWidget.__test__ = False  # a widget, not a test class


def upload(w: TesterWidget, data: bytes, name: str = "new.png") -> None:
    """What the browser's FileUpload sends."""
    w.upload.set_state(
        {
            "value": [
                {
                    "name": name,
                    "type": "image/png",
                    "size": len(data),
                    "content": memoryview(data),
                    "last_modified": 0,
                }
            ]
        }
    )


def drop(w: TesterWidget, name: str, data: bytes) -> None:
    """What the browser's drop (or camera capture) sends: a custom message with the bytes
    as its buffer."""
    message = {"method": "custom", "content": {"action": "drop", "name": name}}
    w.bars._handle_msg({"content": {"data": message}, "buffers": [memoryview(data)]})


def test_upload_predicts_and_adds_with_chosen_tag(trained_project, make_png):
    p = trained_project
    w = ic.tester(p)
    assert w.iteration is not None and w.iteration.number == p.iterations[-1].number
    data = make_png("green", seed=999)
    upload(w, data)
    preds = w.bars.predictions
    assert sorted(x["tag"] for x in preds) == ["blue", "green", "red"]
    assert abs(sum(x["probability"] for x in preds) - 1.0) < 1e-4
    assert w.bars.image == data
    n = len(p.images)
    w.tag.value = "green"
    w.add_button._handle_button_msg(None, {"event": "click"}, [])
    with ic.Project.open(p.path) as again:
        assert len(again.images) == n + 1
        assert again.images[-1].tags == ("green",)
    p.remove_images([p.images[-1].id])


def test_bad_upload_clears_the_last_image_and_drops_work_twice(trained_project, make_png):
    w = ic.tester(trained_project.iterations[0])
    upload(w, make_png("green", seed=7), name="leaf.png")
    assert w.bars.image and w.tag.value and w.bars.predictions
    upload(w, b"not an image at all", name="notes.txt")
    assert "notes.txt" in w.message.value and "imgclass-error" in w.message.value
    # Nothing of leaf.png is left beside the reason: no picture, no bars, no tag.
    assert (w.bars.image, w.bars.predictions, w.tag.value) == (b"", [], "")
    assert w.add_button.disabled
    w.add_to_project("red")
    assert "nothing to add" in w.message.value
    red = make_png("red", seed=5)
    for _ in range(2):  # the same file dropped twice is tested twice
        w.message.value = ""
        drop(w, "drop.png", red)
        assert w.bars.predictions and "drop.png" in w.message.value
        assert w.bars.image == red and w.tag.value == w.bars.predictions[0]["tag"]
    assert "dropped" not in w.bars.get_state()  # nothing of a drop is kept as state


def test_without_iteration_explains(tmp_path, make_png):
    p = ic.Project.create(tmp_path / "p")
    w = ic.tester(p)
    upload(w, make_png("red"))
    assert "no trained iteration" in w.message.value
    w.tag.value = "red"
    w.add_button._handle_button_msg(None, {"event": "click"}, [])
    assert ic.Project.open(p.path).counts()["red"] == 1
    assert "no iteration yet" in repr(w)
    p.close()
