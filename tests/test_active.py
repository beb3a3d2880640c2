"""Acquisition functions, checked against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from jupyter_imgclass.active import (
    closeness_to_half,
    entropy,
    informativeness,
    least_confidence,
    margin,
    rank,
)

P = np.array(
    [
        [0.98, 0.01, 0.01],  # 0: confident
        [0.40, 0.35, 0.25],  # 1: unsure between 0 and 1
        [0.34, 0.33, 0.33],  # 2: nearly uniform
        [0.60, 0.30, 0.10],  # 3: middling
    ]
)


def test_entropy_hand_values():
    expected = [-sum(q * math.log(q) for q in row) for row in P]
    np.testing.assert_allclose(entropy(P), expected, rtol=1e-12)
    assert entropy([[1.0, 0.0]])[0] == 0.0  # 0 log 0 = 0, no NaN
    assert entropy([[0.25] * 4])[0] == pytest.approx(math.log(4))


def test_multilabel_entropy_is_sum_of_binary_entropies():
    h = entropy([[0.5, 0.5], [0.5, 1.0], [0.0, 1.0]], kind="multilabel")
    np.testing.assert_allclose(h, [2 * math.log(2), math.log(2), 0.0], atol=1e-12)


def test_margin_and_least_confidence_hand_values():
    np.testing.assert_allclose(margin(P), [0.97, 0.05, 0.01, 0.30], atol=1e-12)
    np.testing.assert_allclose(least_confidence(P), [0.02, 0.60, 0.66, 0.40], atol=1e-12)
    assert margin([[0.7]])[0] == 0.7


def test_closeness_to_half():
    np.testing.assert_allclose(
        closeness_to_half([[0.9, 0.05], [0.1, 0.45], [0.5, 1.0], [0.0, 1.0]]),
        [0.2, 0.9, 1.0, 0.0],
        atol=1e-12,
    )


@pytest.mark.parametrize(
    "method, expected",
    [
        ("margin", [2, 1, 3, 0]),
        ("least_confidence", [2, 1, 3, 0]),
        ("entropy", [2, 1, 3, 0]),
    ],
)
def test_rank_multiclass(method, expected):
    assert rank(P, method).tolist() == expected
    assert rank(P, method, n=2).tolist() == expected[:2]
    assert rank(P, method, n=0).tolist() == []


def test_rank_methods_can_disagree():
    # margin looks only at the top two; entropy at the whole row
    p = np.array([[0.5, 0.5, 0.0, 0.0], [0.4, 0.2, 0.2, 0.2]])
    assert rank(p, "margin").tolist() == [0, 1]
    assert rank(p, "entropy").tolist() == [1, 0]


def test_rank_ties_keep_order():
    p = np.array([[0.5, 0.5], [0.9, 0.1], [0.5, 0.5]])
    assert rank(p).tolist() == [0, 2, 1]


def test_rank_multilabel_uses_closeness_to_half():
    p = np.array([[0.9, 0.95], [0.55, 0.99], [0.02, 0.3]])
    assert rank(p, kind="multilabel").tolist() == [1, 2, 0]
    assert rank(p, "least_confidence", kind="multilabel").tolist() == [1, 2, 0]
    np.testing.assert_allclose(
        informativeness(p, "margin", kind="multilabel"), closeness_to_half(p)
    )


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown acquisition method 'random'"):
        rank(P, "random")
    with pytest.raises(ValueError, match="kind .*: choose"):
        rank(P, kind="regression")
    with pytest.raises(ValueError, match="2-D"):
        entropy([0.5, 0.5])
    with pytest.raises(ValueError, match="n must be"):
        rank(P, n=-1)
