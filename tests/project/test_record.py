"""IterationRecord: one type for iteration.json and the store, defaults in one place."""

from __future__ import annotations

from jupyter_imgclass.project.record import IterationRecord


def test_an_old_record_reads_with_the_defaults_and_unknown_keys_survive_a_write():
    old = {  # as an early version wrote it: no head_input, threshold, evaluation, fit
        "model": "small_cnn",
        "budget": "advanced",
        "classes": ["a", "b"],
        "input_size": 28,
        "history": [{"epoch": 1}],
        "best_epoch": 1,
        "some_future_key": {"x": 1},
        "name": "Iteration1",
        "number": 1,
    }
    record = IterationRecord.from_json(old, kind="multiclass")
    assert record.head_input == "raw" and record.threshold == 0.5 and record.thresholds == {}
    assert record.evaluation == {} and record.fit is None and record.head_c is None
    assert record.kind == "multiclass" and record.extra == {"some_future_key": {"x": 1}}
    assert record.resize == "squash"  # what every model before the resize modes had
    written = record.to_json()
    assert written["some_future_key"] == {"x": 1}
    assert "name" not in written and "number" not in written and "fit" not in written
    assert IterationRecord.from_json(written) == record


def test_a_fallback_never_overrides_what_the_record_says():
    record = IterationRecord.from_json(
        {"model": "efficientnet_lite0", "budget": "quick", "kind": "multilabel"},
        kind="multiclass",
        model="small_cnn",
    )
    assert (record.kind, record.model, record.classes, record.input_size) == (
        "multilabel", "efficientnet_lite0", [], 0,
    )  # fmt: skip
