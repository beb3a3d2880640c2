"""The data rules: labelled sets, trainability, warnings, splits."""

from __future__ import annotations

import numpy as np
import pytest

from jupyter_imgclass.data.labelled import (
    LabelledSet,
    check_trainable,
    data_warnings,
    stratified_split,
)
from jupyter_imgclass.errors import TrainingError


def test_data_warnings_name_thin_and_lopsided_tags():
    assert data_warnings({"cat": 50, "dog": 30}) == []
    assert data_warnings({"cat": 50, "dog": 25}) == []  # exactly 1:2 is fine
    w = data_warnings({"cat": 51, "dog": 25})
    assert len(w) == 1 and "imbalanced" in w[0] and "'cat'" in w[0] and "'dog'" in w[0]
    w = data_warnings({"cat": 4, "dog": 4, "cow": 1})
    assert sum("at least 5" in s for s in w) == 3
    assert any("'cow' has 1 image;" in s for s in w)
    assert any("4.0:1" in s for s in w)
    w = data_warnings({"cat": 10, "new": 0})
    assert w == ["tag 'new' has 0 images; at least 5 are needed (50 or more recommended)"]
    assert data_warnings({}) == []


def test_check_trainable_refuses_one_tag_and_thin_tags_and_warns_on_small_ones():
    one = LabelledSet(np.arange(3), np.zeros(3, np.int32), ["cat"], "multiclass")
    with pytest.raises(TrainingError, match="at least 2 tags"):
        check_trainable(one)
    thin = LabelledSet(np.arange(4), np.array([0, 0, 0, 1], np.int32), ["cat", "dog"], "multiclass")
    with pytest.raises(TrainingError, match=r"'dog' \(1\)"):
        check_trainable(thin)
    small = LabelledSet(
        np.arange(6), np.array([0, 0, 0, 1, 1, 1], np.int32), ["a", "b"], "multiclass"
    )
    assert check_trainable(small) == data_warnings({"a": 3, "b": 3})


def test_stratified_split_is_seeded_and_keeps_every_class_on_both_sides():
    labels = np.repeat(np.arange(3), 5).astype(np.int32)
    tr, va = stratified_split(labels, "multiclass", seed=3)
    assert set(labels[tr]) == set(labels[va]) == {0, 1, 2}
    assert sorted(np.concatenate([tr, va]).tolist()) == list(range(15))
    tr2, va2 = stratified_split(labels, "multiclass", seed=3)
    assert tr.tolist() == tr2.tolist() and va.tolist() == va2.tolist()
