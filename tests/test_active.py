"""Acquisition functions, checked against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from jupyter_imgclass.active import (
    badge,
    choose,
    closeness_to_half,
    entropy,
    herding,
    informativeness,
    k_center,
    least_confidence,
    margin,
    rank,
    typical,
    typical_uncertain,
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


def test_k_center_picks_the_farthest_first_and_covers_clusters():
    rng = np.random.default_rng(0)
    centres = np.eye(4) * 10
    x = np.concatenate([c + rng.normal(0, 0.1, (25, 4)) for c in centres])  # 4 clusters
    labelled = [0]  # one image of cluster 0 is labelled
    picked = k_center(x, labelled, np.arange(1, 100), 3)
    assert sorted(int(p) // 25 for p in picked) == [1, 2, 3]  # one per uncovered cluster
    assert len(set(picked.tolist())) == 3 and 0 not in picked
    assert k_center(x, [], np.arange(100), 4).size == 4  # no labels yet: still spread
    assert sorted({int(p) // 25 for p in k_center(x, [], np.arange(100), 4)}) == [0, 1, 2, 3]
    assert k_center(x, labelled, [], 3).size == 0 and k_center(x, labelled, [5, 6], 9).size == 2


def test_choose_strategies():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 8))
    candidates = np.arange(10, 40)
    probs = np.tile([0.98, 0.02], (30, 1))
    probs[[3, 7, 11, 12]] = [0.5, 0.5]  # four uncertain candidates: 13, 17, 21, 22
    kw = dict(features=x, labelled=np.arange(10), candidates=candidates)
    assert sorted(choose("margin", 4, probabilities=probs, **kw).tolist()) == [13, 17, 21, 22]
    diverse = choose("diverse", 2, probabilities=probs, **kw)
    # diverse: from the 6 most uncertain (the 4 ties, then the first certain ones), spread
    assert set(diverse.tolist()) <= {13, 17, 21, 22, 10, 11} and len(set(diverse.tolist())) == 2
    assert choose("diverse", 3, **kw).tolist() == choose("coverage", 3, **kw).tolist()  # no model
    a, b = choose("random", 5, seed=3, **kw), choose("random", 5, seed=3, **kw)
    assert a.tolist() == b.tolist() and set(a.tolist()) <= set(candidates.tolist())
    with pytest.raises(ValueError, match="strategy 'best'"):
        choose("best", 2, **kw)


def _four_clusters():
    """Rows in four clusters of 30, 25, 15 and 5 (cluster 0 first); their centres; and
    each row's cluster."""
    rng = np.random.default_rng(0)
    centres = np.eye(4) * 10
    sizes = [30, 25, 15, 5]
    x = np.concatenate(
        [c + rng.normal(0, 0.3, (s, 4)) for c, s in zip(centres, sizes, strict=True)]
    )
    return x, centres, np.repeat(np.arange(4), sizes)


def test_typical_picks_the_densest_image_of_the_largest_uncovered_clusters():
    x, centres, cluster = _four_clusters()
    x[30] = centres[1]  # the most typical image of cluster 1 sits at its centre
    picked = typical(x, [0], np.arange(1, len(x)), 2)
    assert [int(cluster[p]) for p in picked] == [1, 2]  # largest uncovered first
    assert int(picked[0]) == 30
    assert len(set(typical(x, [], np.arange(len(x)), 6).tolist())) == 6  # fills in when covered


def test_typical_uncertain_takes_the_most_uncertain_of_each_clusters_typical_half():
    x, centres, cluster = _four_clusters()
    candidates = np.arange(1, len(x))
    x[30] = centres[1]  # cluster 1's densest image, no doubt: TypiClust's pick
    x[31] = centres[1] + [0.0, 0.0, 0.3, 0.0]  # typical, and given the highest doubt
    x[32] = centres[1] + 5.0  # an outlier of cluster 1 with more doubt still: not typical
    doubt = np.zeros(len(candidates))
    doubt[[31 - 1, 32 - 1]] = [0.5, 0.9]
    x[57] = centres[2]  # cluster 2: typical, and its most doubtful
    doubt[57 - 1] = 0.7
    assert int(typical(x, [0], candidates, 1)[0]) == 30
    picked = typical_uncertain(x, [0], candidates, 2, doubt)
    assert [int(cluster[p]) for p in picked] == [1, 2]  # largest uncovered first, as typical
    assert int(picked[0]) == 31  # the outlier's higher doubt does not win
    assert int(picked[1]) == 57
    # without a model it is TypiClust; through choose, the doubt is the margin's
    assert (
        typical_uncertain(x, [0], candidates, 2, None).tolist()
        == typical(x, [0], candidates, 2).tolist()
    )
    probs = np.tile([0.9, 0.1], (len(candidates), 1))
    probs[31 - 1] = [0.5, 0.5]
    via_choose = choose(
        "typical_uncertain", 1, features=x, labelled=[0], candidates=candidates,
        probabilities=probs,
    )  # fmt: skip
    assert via_choose.tolist() == [31]
    assert (
        choose("typical_uncertain", 2, features=x, labelled=[0], candidates=candidates).tolist()
        == typical(x, [0], candidates, 2).tolist()
    )  # no model yet


def test_herding_covers_the_largest_uncovered_groups_from_their_middle():
    x, centres, cluster = _four_clusters()
    x[30] = centres[1]  # the middle of cluster 1
    candidates = np.arange(1, len(x))
    wide = dict(width=5.0)  # a kernel as wide as a cluster: one pick covers it
    picked = herding(x, [0], candidates, 3, **wide)
    assert [int(cluster[p]) for p in picked] == [1, 2, 3]  # cluster 0 is covered by 0
    assert int(picked[0]) == 30
    # everything but cluster 2 covered: it comes first
    assert int(cluster[herding(x, [0, 31, 72], candidates, 1, **wide)[0]]) == 2
    # no labels yet: the biggest group first, then one of each
    assert [int(cluster[p]) for p in herding(x, [], np.arange(len(x)), 4, **wide)] == [0, 1, 2, 3]
    # the default kernel (one nearest-neighbour distance) is narrower than a cluster: the
    # 30 images of cluster 0 earn a second pick before the 15 of cluster 2
    assert [int(cluster[p]) for p in herding(x, [0], candidates, 3)] == [1, 0, 2]
    every = herding(x, [0], candidates, len(candidates) + 5)
    assert sorted(every.tolist()) == candidates.tolist()  # all of them, once each
    assert herding(x, [0], candidates, 0).size == 0 and herding(x, [0], [], 3).size == 0
    copies = np.repeat(x[[0, 30, 60]], 2, axis=0)  # exact copies do not collapse the kernel
    assert sorted(int(p) // 2 for p in herding(copies, [], np.arange(6), 3)) == [0, 1, 2]


def test_herding_weights_steer_coverage_to_doubtful_regions():
    x, centres, cluster = _four_clusters()
    candidates = np.arange(1, len(x))
    doubt = np.zeros(len(candidates))
    doubt[cluster[candidates] == 3] = 0.8  # the model doubts only the smallest cluster
    picked = herding(x, [0], candidates, 3, doubt)
    assert [int(cluster[p]) for p in picked] == [3, 3, 3]  # no gain elsewhere
    assert len(set(picked.tolist())) == 3
    doubt[cluster[candidates] == 2] = 0.8
    spread = herding(x, [0], candidates, 2, doubt, width=5.0)
    assert [int(cluster[p]) for p in spread] == [2, 3]  # both doubtful groups, bigger first
    # through choose: herding_uncertain weighs by the margin's doubt; herding ignores it
    probs = np.tile([0.99, 0.01], (len(candidates), 1))
    probs[cluster[candidates] == 3] = [0.5, 0.5]
    kw = dict(features=x, labelled=[0], candidates=candidates)
    assert int(cluster[choose("herding_uncertain", 1, probabilities=probs, **kw)[0]]) == 3
    assert int(cluster[choose("herding", 1, probabilities=probs, **kw)[0]]) == 1
    # no model yet: herding_uncertain is herding
    assert choose("herding_uncertain", 3, **kw).tolist() == herding(x, [0], candidates, 3).tolist()


@pytest.mark.parametrize(
    "weights, width, message",
    [
        (np.ones(3), 1.0, r"one value per candidate \(74\), got shape \(3,\)"),
        (-np.ones(74), 1.0, "finite and >= 0"),
        (np.full(74, np.nan), 1.0, "finite and >= 0"),
        (None, 0.0, "width must be > 0"),
    ],
)
def test_herding_rejects_broken_arguments(weights, width, message):
    x, _, _ = _four_clusters()
    with pytest.raises(ValueError, match=message):
        herding(x, [0], np.arange(1, len(x)), 2, weights, width=width)


def test_badge_embeds_gradients_and_spreads_uncertain_picks():
    rng = np.random.default_rng(0)
    centres = np.eye(3) * 10
    x = np.concatenate([c + rng.normal(0, 0.1, (10, 3)) for c in centres])  # 3 clusters
    p = np.tile([0.98, 0.01, 0.01], (30, 1))
    p[12] = [0.34, 0.33, 0.33]  # cluster 1's most uncertain image: the longest embedding
    p[13] = [0.35, 0.33, 0.32]  # nearly its copy
    p[25] = [0.45, 0.10, 0.45]  # cluster 2, unsure between tags 0 and 2
    # the factorised inner products equal those of the explicit (p - onehot) ⊗ x rows
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    a = p.copy()
    a[np.arange(30), p.argmax(1)] -= 1.0
    g = np.einsum("nt,nd->ntd", a, u).reshape(30, -1)
    assert int(np.argmax((g * g).sum(1))) == 12
    picked = badge(x, np.arange(30), 2, p, seed=0)
    assert picked.tolist()[0] == 12  # the longest embedding first
    counts = {int(badge(x, np.arange(30), 2, p, seed=s)[1]) for s in range(20)}
    assert 13 not in counts and 25 in counts  # never the copy; the other doubtful one
    assert badge(x, np.arange(30), 5, p).size == 5
    assert len(set(badge(x, np.arange(30), 30, p).tolist())) == 30  # all, once each
    assert badge(x, [4, 5], 9, p[[4, 5]]).size == 2 and badge(x, [], 3, p[:0]).size == 0
    ml = badge(x, np.arange(30), 1, np.where(p > 0.4, 0.55, 0.02), kind="multilabel")
    assert ml.size == 1
    # through choose: without a model, TypiClust's cold start
    kw = dict(features=x, labelled=[0], candidates=np.arange(1, 30))
    assert choose("badge", 2, **kw).tolist() == typical(x, [0], np.arange(1, 30), 2).tolist()
    assert choose("badge", 1, probabilities=p[1:], **kw).tolist() == [12]
