"""EvaluationWidget: the threshold slider, confusion-matrix cells, relabelling, compare."""

from __future__ import annotations

import jupyter_imgclass as ic
from jupyter_imgclass.widgets import EvaluationWidget


def click(button) -> None:
    button._handle_button_msg(None, {"event": "click"}, [])


def test_threshold_slider_recomputes_through_the_iteration(trained_project):
    it = trained_project.iterations[0]
    w = ic.report(it)
    assert isinstance(w, EvaluationWidget)
    assert w.view.metrics == it.evaluate(it.threshold)
    w.slider.set_state({"value": 0.97})  # as the browser sends a slider move
    assert w.view.threshold == 0.97
    assert w.view.metrics == it.evaluate(0.97)
    assert set(w.view.metrics["per_tag"]) == {"red", "green", "blue"}
    assert "threshold 0.97" in repr(w)


def test_confusion_cell_opens_images_and_retag_goes_to_disk(trained_project):
    p = trained_project
    it = p.iterations[0]
    w = ic.report(it)
    cm = w.view.metrics["confusion_matrix"]
    row, col = next((i, j) for i, r in enumerate(cm) for j, v in enumerate(r) if v)
    w.view.set_state({"selected": [row, col]})  # a click on the heatmap cell
    assert len(w.gallery.children) == cm[row][col]
    card = w.gallery.children[0]
    others = [t for t in p.tag_names if t != it.classes[row]]
    card.picker.set_state({"index": card.picker.options.index((others[0], others[0]))})
    with ic.Project.open(p.path) as again:
        assert again.image(card.image_id).tags == (others[0],)
    p.set_tags(card.image_id, [it.classes[row]])  # put it back for the other tests


def test_top_losses_one_click_relabel_and_undo(trained_project):
    p = trained_project
    it = p.iterations[0]
    w = ic.report(it)
    click(w.losses_button)
    assert w.gallery.children and "top" in w.gallery_title.value
    losses = it.top_losses(len(w.gallery.children))
    assert [c.image_id for c in w.gallery.children] == [d["image_id"] for d in losses]
    card = next((c for c in w.gallery.children if c.relabel is not None), None)
    if card is None:  # the model got every held-out image right: nothing to relabel
        return
    suggestion = card.relabel.description.removeprefix("→ ")
    click(card.relabel)
    with ic.Project.open(p.path) as again:
        assert again.image(card.image_id).tags == (suggestion,)
    p.undo()


def test_compare_two_iterations(trained_project):
    p = trained_project
    if len(p.iterations) < 2:
        p.train(budget="advanced", model="small_cnn", epochs=1, input_size=16).wait()
    its = p.iterations
    w = ic.report(its[-1])
    w.compare.value = its[0].number
    assert its[0].name in w.comparison.value and its[-1].name in w.comparison.value


def test_display_twice_and_errors_in_widget(trained_project):
    it = trained_project.iterations[0]
    w = ic.report(it)
    a, b = w._repr_mimebundle_(), w._repr_mimebundle_()
    assert (
        a["application/vnd.jupyter.widget-view+json"]
        == b["application/vnd.jupyter.widget-view+json"]
    )
    assert "precision" in a["text/plain"]
    w.open_cell(0, 99)  # no such class: the reason is shown, nothing raised
    assert "imgclass-error" in w.error.value


def test_per_tag_thresholds_best_f1_and_save(trained_project):
    it = trained_project.iterations[0]
    w = ic.report(it)
    assert set(w.tag_thresholds) == set(it.classes)
    w.tag_thresholds["red"].set_state({"value": 0.9})  # as the browser sends a typed value
    assert w.view.metrics == it.evaluate(w.slider.value, per_tag=w.thresholds)
    assert w.view.metrics["per_tag"]["red"]["threshold"] == 0.9
    click(w.best_f1_button)
    assert w.thresholds == it.best_f1_thresholds()
    assert "not saved" in w.thresholds_message.value
    assert w.view.metrics == it.evaluate(w.slider.value, per_tag=it.best_f1_thresholds())
    click(w.save_thresholds_button)
    assert "saved" in w.thresholds_message.value
    again = ic.Project.open(trained_project.path)  # disk is the truth
    assert again.iteration(it.number).thresholds == w.thresholds
    again.close()
    w.slider.set_state({"value": 0.3})  # the slider sets every tag
    assert set(w.thresholds.values()) == {0.3}
    assert w.view.metrics == it.evaluate(0.3)
    it.set_thresholds(0.5)  # leave the shared fixture as it was
