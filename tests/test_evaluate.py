"""Metrics: hand-computed cases and parity with scikit-learn on seeded random data."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn import metrics as skm

from jupyter_imgclass.evaluate import (
    Loss,
    average_precision,
    compute_metrics,
    metrics_dataframe,
    top_losses,
)

TAGS = ["apple", "banana", "cherry", "date"]


def _random_multiclass(seed: int, n: int = 120, t: int = 4):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, t, size=n)
    logits = rng.normal(size=(n, t)) + 1.5 * np.eye(t)[y] * rng.random((n, 1))
    # Round to create ties, which AP must handle like scikit-learn.
    p = np.round(np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True), 2)
    p = p / p.sum(axis=1, keepdims=True)
    return y, p


def _random_multilabel(seed: int, n: int = 120, t: int = 4):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, t)) < 0.35).astype(int)
    p = np.clip(0.35 * y + rng.random((n, t)) * 0.7, 0, 1).round(2)
    return y, p


# ---------------------------------------------------------------- hand-computed cases


def test_multiclass_hand_computed():
    y = np.array([0, 0, 1, 1, 2])
    p = np.array(
        [
            [0.8, 0.1, 0.1],  # true 0, predicted 0 (confident)
            [0.4, 0.35, 0.25],  # true 0, argmax 0 but below 0.5: no prediction
            [0.6, 0.3, 0.1],  # true 1, predicted 0
            [0.1, 0.7, 0.2],  # true 1, predicted 1
            [0.2, 0.2, 0.6],  # true 2, predicted 2
        ]
    )
    m = compute_metrics(y, p, ["a", "b", "c"], "multiclass", threshold=0.5)
    a, b, c = (m["per_tag"][k] for k in "abc")
    assert a["precision"] == 0.5 and a["recall"] == 0.5 and a["count"] == 2
    assert b["precision"] == 1.0 and b["recall"] == 0.5
    assert c["precision"] == 1.0 and c["recall"] == 1.0
    # micro: 3 true positives of 4 predictions; 3 of 5 images found
    assert m["overall"]["precision"] == 0.75
    assert m["overall"]["recall"] == 0.6
    assert m["overall"]["accuracy"] == 0.8  # argmax ignores the threshold
    assert m["confusion_matrix"] == [[2, 0, 0], [1, 1, 0], [0, 0, 1]]
    # AP of tag a: scores 0.8(+) 0.6(-) 0.4(+) 0.2 0.1 -> 1*0.5 + (2/3)*0.5
    assert a["average_precision"] == pytest.approx(0.5 + 1 / 3)
    assert m["overall"]["count"] == 5
    # threshold 0 is plain argmax precision/recall
    m0 = compute_metrics(y, p, ["a", "b", "c"], "multiclass", threshold=0.0)
    assert m0["per_tag"]["a"]["precision"] == pytest.approx(2 / 3)
    assert m0["per_tag"]["a"]["recall"] == 1.0
    assert m0["overall"]["precision"] == m0["overall"]["recall"] == 0.8


def test_multilabel_hand_computed():
    y = np.array([[1, 0], [1, 1], [0, 1], [0, 0]])
    p = np.array([[0.9, 0.2], [0.4, 0.7], [0.6, 0.8], [0.1, 0.1]])
    m = compute_metrics(y, p, ["x", "y"], "multilabel")
    assert m["per_tag"]["x"] == {
        "precision": 0.5,
        "recall": 0.5,
        "average_precision": pytest.approx(1 * 0.5 + (2 / 3) * 0.5),
        "count": 2,
        "threshold": 0.5,
    }
    assert m["per_tag"]["y"]["precision"] == 1.0 and m["per_tag"]["y"]["recall"] == 1.0
    assert m["overall"]["precision"] == 0.75 and m["overall"]["recall"] == 0.75
    # rows 0 and 3 exactly right; row 1 misses x; row 2 adds x
    assert m["overall"]["subset_accuracy"] == 0.5
    assert "confusion_matrix" not in m and "accuracy" not in m["overall"]


def test_per_tag_thresholds_multilabel():
    y = np.array([[1, 0], [1, 1], [0, 1], [0, 0]])
    p = np.array([[0.9, 0.2], [0.4, 0.7], [0.6, 0.8], [0.1, 0.1]])
    m = compute_metrics(y, p, ["x", "y"], "multilabel", per_tag_thresholds={"x": 0.95})
    assert m["per_tag"]["x"]["threshold"] == 0.95
    assert m["per_tag"]["x"]["precision"] == 0.0  # never predicted: zero_division=0
    assert m["per_tag"]["x"]["recall"] == 0.0
    assert m["per_tag"]["y"]["recall"] == 1.0 and m["per_tag"]["y"]["threshold"] == 0.5
    with pytest.raises(ValueError, match="unknown tag 'z'"):
        compute_metrics(y, p, ["x", "y"], "multilabel", per_tag_thresholds={"z": 0.1})


def test_undefined_values_are_zero_and_map_skips_empty_tags():
    y = np.array([0, 0, 1])
    p = np.array([[0.9, 0.05, 0.05], [0.8, 0.1, 0.1], [0.3, 0.6, 0.1]])
    m = compute_metrics(y, p, ["a", "b", "c"], "multiclass")
    c = m["per_tag"]["c"]
    assert c == {
        "precision": 0.0,
        "recall": 0.0,
        "average_precision": 0.0,
        "count": 0,
        "threshold": 0.5,
    }
    aps = [m["per_tag"][k]["average_precision"] for k in "ab"]
    assert m["overall"]["average_precision"] == pytest.approx(np.mean(aps))


def test_metrics_are_json_ready():
    y, p = _random_multiclass(3, n=20)
    m = compute_metrics(y, p, TAGS, "multiclass")
    assert json.loads(json.dumps(m)) == m


def test_empty_input():
    m = compute_metrics(np.zeros(0, int), np.zeros((0, 2)), ["a", "b"], "multiclass")
    assert m["overall"] == {
        "precision": 0.0,
        "recall": 0.0,
        "average_precision": 0.0,
        "count": 0,
        "accuracy": 0.0,
    }
    assert m["confusion_matrix"] == [[0, 0], [0, 0]]


@pytest.mark.parametrize(
    "y, p, kind, match",
    [
        ([0, 1], [[0.5, 0.5]], "multiclass", "int\\[1\\]"),
        ([0, 3], [[0.5, 0.5], [0.5, 0.5]], "multiclass", "outside 0..1"),
        ([0, 1], [[0.5, 0.5, 0.0]] * 2, "multiclass", "3 columns but there are 2 tags"),
        ([[1, 2], [0, 0]], [[0.5, 0.5]] * 2, "multilabel", "only 0 and 1"),
        ([0, 1], [[np.nan, 0.5], [0.5, 0.5]], "multiclass", "NaN"),
        ([0, 1], [[0.5, 0.5]] * 2, "regression", "kind .regression.: choose"),
    ],
)
def test_bad_inputs_raise_clear_errors(y, p, kind, match):
    with pytest.raises(ValueError, match=match):
        compute_metrics(np.asarray(y), np.asarray(p), ["a", "b"], kind)


def test_bad_threshold():
    with pytest.raises(ValueError, match="thresholds must lie in"):
        compute_metrics([0], [[0.6, 0.4]], ["a", "b"], "multiclass", threshold=1.5)


# ---------------------------------------------------------------- scikit-learn parity


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.5, 0.8])
def test_multiclass_matches_sklearn(seed, threshold):
    y, p = _random_multiclass(seed)
    m = compute_metrics(y, p, TAGS, "multiclass", threshold=threshold)
    labels = list(range(len(TAGS)))
    argmax = p.argmax(axis=1)
    # Below the threshold an image predicts no tag: label -1 is outside `labels`.
    y_pred = np.where(p.max(axis=1) >= threshold, argmax, -1)
    kw = {"labels": labels, "zero_division": 0}
    prec = skm.precision_score(y, y_pred, average=None, **kw)
    rec = skm.recall_score(y, y_pred, average=None, **kw)
    for j, tag in enumerate(TAGS):
        got = m["per_tag"][tag]
        assert got["precision"] == pytest.approx(prec[j], abs=1e-12)
        assert got["recall"] == pytest.approx(rec[j], abs=1e-12)
        assert got["average_precision"] == pytest.approx(
            skm.average_precision_score(y == j, p[:, j]), abs=1e-12
        )
        assert got["count"] == int(np.sum(y == j))
    assert m["overall"]["precision"] == pytest.approx(
        skm.precision_score(y, y_pred, average="micro", **kw), abs=1e-12
    )
    assert m["overall"]["recall"] == pytest.approx(
        skm.recall_score(y, y_pred, average="micro", **kw), abs=1e-12
    )
    assert m["overall"]["accuracy"] == pytest.approx(skm.accuracy_score(y, argmax), abs=1e-12)
    onehot = np.eye(len(TAGS))[y]
    assert m["overall"]["average_precision"] == pytest.approx(
        skm.average_precision_score(onehot, p, average="macro"), abs=1e-12
    )
    np.testing.assert_array_equal(
        m["confusion_matrix"], skm.confusion_matrix(y, argmax, labels=labels)
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("threshold", [0.0, 0.25, 0.5, 0.9])
def test_multilabel_matches_sklearn(seed, threshold):
    y, p = _random_multilabel(seed)
    m = compute_metrics(y, p, TAGS, "multilabel", threshold=threshold)
    y_pred = (p >= threshold).astype(int)
    prec = skm.precision_score(y, y_pred, average=None, zero_division=0)
    rec = skm.recall_score(y, y_pred, average=None, zero_division=0)
    for j, tag in enumerate(TAGS):
        got = m["per_tag"][tag]
        assert got["precision"] == pytest.approx(prec[j], abs=1e-12)
        assert got["recall"] == pytest.approx(rec[j], abs=1e-12)
        assert got["average_precision"] == pytest.approx(
            skm.average_precision_score(y[:, j], p[:, j]), abs=1e-12
        )
    assert m["overall"]["precision"] == pytest.approx(
        skm.precision_score(y, y_pred, average="micro", zero_division=0), abs=1e-12
    )
    assert m["overall"]["recall"] == pytest.approx(
        skm.recall_score(y, y_pred, average="micro", zero_division=0), abs=1e-12
    )
    assert m["overall"]["average_precision"] == pytest.approx(
        skm.average_precision_score(y, p, average="macro"), abs=1e-12
    )
    assert m["overall"]["subset_accuracy"] == pytest.approx(
        skm.accuracy_score(y, y_pred), abs=1e-12
    )


def test_average_precision_matches_sklearn_with_ties():
    rng = np.random.default_rng(7)
    for _ in range(20):
        y = rng.integers(0, 2, size=30)
        s = rng.integers(0, 5, size=30) / 4.0
        if y.sum() == 0:
            continue
        assert average_precision(y, s) == pytest.approx(
            skm.average_precision_score(y, s), abs=1e-12
        )
    assert average_precision([0, 0, 0], [0.1, 0.5, 0.2]) == 0.0


# ---------------------------------------------------------------- DataFrame, losses, warnings


def test_metrics_dataframe():
    y, p = _random_multiclass(4, n=40)
    m = compute_metrics(y, p, TAGS, "multiclass")
    df = metrics_dataframe(m)
    assert list(df.index) == [*TAGS, "overall"]
    assert df.index.name == "tag"
    assert list(df.columns) == ["precision", "recall", "average_precision", "count", "threshold"]
    assert not df.loc[TAGS].isna().all().any()  # no column is empty for every tag
    assert df.loc["banana", "recall"] == m["per_tag"]["banana"]["recall"]
    assert df.attrs["accuracy"] == m["overall"]["accuracy"]
    assert df["count"].dtype.kind == "i"
    assert df.loc["overall", "count"] == 40

    ym, pm = _random_multilabel(4, n=10)
    dfm = metrics_dataframe(compute_metrics(ym, pm, TAGS, "multilabel"))
    assert "subset_accuracy" in dfm.attrs and "accuracy" not in dfm.attrs
    assert not dfm.loc[TAGS].isna().all().any()


def test_top_losses_multiclass():
    y = np.array([0, 1, 2, 0])
    p = np.array([[0.9, 0.05, 0.05], [0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.05, 0.9, 0.05]])
    out = top_losses(y, p, "multiclass", n=2)
    assert out == [
        Loss(3, pytest.approx(-math.log(0.05)), 0, 1),
        Loss(1, pytest.approx(-math.log(0.2)), 1, 0),
    ]
    assert len(top_losses(y, p, "multiclass", n=10)) == 4
    # a probability of exactly 0 is clipped, not infinite
    assert math.isfinite(top_losses([1], [[1.0, 0.0]], "multiclass", n=1)[0].loss)


def test_top_losses_multilabel():
    y = np.array([[1, 0], [0, 1]])
    p = np.array([[0.8, 0.1], [0.9, 0.6]])
    out = top_losses(y, p, "multilabel", n=5)
    expected_1 = -(math.log(0.1) + math.log(0.6)) / 2
    expected_0 = -(math.log(0.8) + math.log(0.9)) / 2
    assert [o.index for o in out] == [1, 0]
    assert out[0].loss == pytest.approx(expected_1)
    assert out[1].loss == pytest.approx(expected_0)
    assert out[0].true == (1,) and out[0].predicted == (0, 1)
