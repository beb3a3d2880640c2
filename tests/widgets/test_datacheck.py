"""DataCheckWidget: each finding's fix, clicked as the browser clicks it, lands on disk."""

from __future__ import annotations

import numpy as np

import jupyter_imgclass as ic
from jupyter_imgclass.widgets import DataCheckWidget

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


def _images(colour, n, seed):
    rng = np.random.default_rng(seed)
    base = np.array(colour, np.int16)
    return [
        np.clip(base + rng.integers(-40, 40, (32, 32, 3)), 0, 255).astype(np.uint8)
        for _ in range(n)
    ]


def click(button) -> None:
    button._handle_button_msg(None, {"event": "click"}, [])


def test_panel_relabels_removes_a_copy_and_merges_tags(tmp_path):
    p = ic.Project.create(tmp_path / "p")
    ids = {
        t: p.add_images(_images(c, 10, seed=k), tags=[t]).added
        for k, (t, c) in enumerate(COLOURS.items())
    }
    wrong = ids["red"][0]
    p.set_tags(wrong, "blue")
    p.add_images(_images((128, 128, 128), 3, seed=9), tags=["grey"])
    p.train(budget="quick", seed=0).wait()

    panel = ic.data_check(p, p.check())
    assert isinstance(panel, DataCheckWidget) and "likely label issue" in panel.summary.value
    row = panel.issues.children[0]
    relabel = row.children[-1]
    assert relabel.description == "Relabel as red" and f"image {wrong}" in row.children[1].value
    click(relabel)
    with ic.Project.open(p.path) as again:
        assert again.image(wrong).tags == ("red",)
    assert wrong not in [i["image_id"] for i in panel.report.label_issues]  # checked again
    assert "is now 'red'" in panel.message.value

    # Noise images of one colour all look alike to the network: many pairs; remove one.
    rows = [r for r in panel.pairs.children if hasattr(r, "children")]
    assert len(rows) == 10 and "showing 10 of" in panel.pairs.children[-1].value
    remove = rows[0].children[-1]
    removed = int(remove.description.rsplit(" ", 1)[1])
    click(remove)
    with ic.Project.open(p.path) as again:
        assert removed not in [im.id for im in again.images]
    assert f"removed image {removed}" in panel.message.value

    assert "thin tags" in panel.tags_note.value and "grey" in panel.tags_note.value
    panel.merge_from.value, panel.merge_into.value = "grey", "green"
    click(panel.merge_button)
    assert p.counts().get("grey") is None and "merged 'grey' into 'green'" in panel.message.value
    before = p.counts()
    panel.merge_from.value = panel.merge_into.value = "red"
    click(panel.merge_button)
    assert "two different tags" in panel.message.value and p.counts() == before
    assert "Data check" in repr(panel) or "DataCheck" in repr(panel)
    p.close()
