"""Acquisition functions: which unlabelled images would teach the model most.

Pure functions on a ``[N, T]`` array of predicted probabilities (numpy, no JAX), in the
spirit of superintendent's ``acquisition_functions``: each scores every image, and
:func:`rank` orders images most informative first.

* multiclass rows are probability distributions (softmax);
* multilabel rows are independent per-tag probabilities (sigmoids): each tag is a binary
  problem and an image is as uncertain as its least certain tag, i.e. the tag closest to
  0.5 (:func:`closeness_to_half`).

Examples:
    >>> import numpy as np
    >>> probs = np.array([[0.98, 0.01, 0.01], [0.4, 0.35, 0.25], [0.6, 0.3, 0.1]])
    >>> rank(probs, method="margin").tolist()
    [1, 2, 0]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .vocabulary import check_kind

__all__ = [
    "METHODS",
    "STRATEGIES",
    "choose",
    "k_center",
    "typical",
    "closeness_to_half",
    "entropy",
    "informativeness",
    "least_confidence",
    "margin",
    "rank",
    "unit_rows",
]

METHODS = ("margin", "entropy", "least_confidence")


def _probabilities(probabilities: Any) -> np.ndarray:
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"probabilities must be a 2-D [images, tags] array, got shape {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError("probabilities contain NaN or infinite values")
    return np.clip(p, 0.0, 1.0)


def _xlogx(p: np.ndarray) -> np.ndarray:
    return np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)


def entropy(probabilities: Any, kind: str = "multiclass") -> np.ndarray:
    """Shannon entropy of each row, in nats; higher means more uncertain.

    For ``kind="multilabel"`` the sum of the per-tag binary entropies.

    Examples:
        >>> entropy([[0.5, 0.5], [1.0, 0.0]]).round(4).tolist()
        [0.6931, 0.0]
    """
    p = _probabilities(probabilities)
    if kind == "multilabel":
        h = -(_xlogx(p) + _xlogx(1.0 - p)).sum(axis=1)
    else:
        check_kind(kind)
        h = -_xlogx(p).sum(axis=1)
    return np.maximum(h, 0.0)  # no -0.0 for certain rows


def margin(probabilities: Any) -> np.ndarray:
    """Top probability minus the runner-up, per row; lower means more uncertain.

    A single-column array has margin ``p`` (the runner-up is taken as 0).

    Examples:
        >>> margin([[0.7, 0.2, 0.1], [0.4, 0.45, 0.15]]).round(2).tolist()
        [0.5, 0.05]
    """
    p = _probabilities(probabilities)
    if p.shape[1] < 2:
        return p[:, 0] if p.shape[1] else np.zeros(p.shape[0])
    top2 = np.sort(p, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def least_confidence(probabilities: Any) -> np.ndarray:
    """One minus the top probability, per row; higher means more uncertain.

    Examples:
        >>> least_confidence([[0.7, 0.3], [0.5, 0.5]]).round(2).tolist()
        [0.3, 0.5]
    """
    p = _probabilities(probabilities)
    if p.shape[1] == 0:
        return np.ones(p.shape[0])
    return 1.0 - p.max(axis=1)


def closeness_to_half(probabilities: Any) -> np.ndarray:
    """Multilabel uncertainty: ``1 - 2 * min_t |p_t - 0.5|``, in ``[0, 1]``.

    1 when some tag sits exactly at 0.5 (the model cannot tell), 0 when every tag is
    certainly on or off. Per tag it is the binary version of ``1 - margin``.

    Examples:
        >>> closeness_to_half([[0.9, 0.05], [0.1, 0.45], [0.5, 1.0]]).round(2).tolist()
        [0.2, 0.9, 1.0]
    """
    p = _probabilities(probabilities)
    if p.shape[1] == 0:
        return np.zeros(p.shape[0])
    return 1.0 - 2.0 * np.abs(p - 0.5).min(axis=1)


def informativeness(
    probabilities: Any, method: str = "margin", kind: str = "multiclass"
) -> np.ndarray:
    """A score per image where higher always means "label this one first".

    Multiclass: ``margin`` -> ``1 - margin``, ``entropy`` -> entropy,
    ``least_confidence`` -> ``1 - max p``. Multilabel: ``entropy`` -> summed binary
    entropy; ``margin`` and ``least_confidence`` both reduce, per binary tag, to
    :func:`closeness_to_half`.

    Raises:
        ValueError: for an unknown method or kind.
    """
    check_kind(kind)
    if method not in METHODS:
        raise ValueError(f"unknown acquisition method {method!r}; choose one of {METHODS}")
    if method == "entropy":
        return entropy(probabilities, kind)
    if kind == "multilabel":
        return closeness_to_half(probabilities)
    if method == "margin":
        return 1.0 - margin(probabilities)
    return least_confidence(probabilities)


def rank(
    probabilities: Any,
    method: str = "margin",
    n: int | None = None,
    *,
    kind: str = "multiclass",
) -> np.ndarray:
    """Indices of the ``n`` most informative images, most informative first.

    Args:
        probabilities: ``[N, T]`` predicted probabilities of the unlabelled images.
        method: ``"margin"`` (default), ``"entropy"`` or ``"least_confidence"``.
        n: how many indices to return; ``None`` returns all ``N``.
        kind: ``"multiclass"`` or ``"multilabel"`` (see :func:`informativeness`).

    Returns:
        int64 indices into ``probabilities``; ties keep the original order.

    Examples:
        >>> rank([[0.5, 0.5], [0.9, 0.1], [0.6, 0.4]], "least_confidence", n=2).tolist()
        [0, 2]
        >>> rank([[0.9, 0.95], [0.55, 0.99]], kind="multilabel").tolist()
        [1, 0]
    """
    if n is not None and n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    scores = informativeness(probabilities, method, kind)
    order = np.argsort(-scores, kind="stable")
    return order if n is None else order[:n]


STRATEGIES = (
    "diverse",
    "typical",
    "coverage",
    "margin",
    "entropy",
    "least_confidence",
    "random",
)
"""``Project.suggest`` strategies: ``"typical"`` (TypiClust, the default), ``"diverse"``
(uncertain and spread out), ``"coverage"`` (k-center on the features alone), the
uncertainty :data:`METHODS`, and ``"random"`` (the baseline every strategy is measured
against)."""
DIVERSE_POOL = 3
"""``"diverse"`` spreads its picks over the ``DIVERSE_POOL * n`` most uncertain images."""


def unit_rows(features: Any) -> np.ndarray:
    """float64 rows scaled to unit length (a zero row stays zero): cosine similarity is
    then a dot product.

    Examples:
        >>> unit_rows([[3.0, 4.0], [0.0, 0.0]]).tolist()
        [[0.6, 0.8], [0.0, 0.0]]
    """
    x = np.asarray(features, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _selection(features: Any, chosen: Any, candidates: Any, n: int):
    """L2-normalised features, index arrays, and ``n`` capped by the candidates."""
    x = unit_rows(features)
    candidates = np.asarray(candidates, np.int64)
    return x, np.asarray(chosen, np.int64), candidates, min(int(n), len(candidates))


def k_center(features: Any, chosen: Any, candidates: Any, n: int) -> np.ndarray:
    """Greedy k-center (farthest-first): ``n`` candidates, each the farthest (cosine
    distance on L2-normalised rows) from everything chosen or picked before it.

    Args:
        features: ``[N, D]`` feature rows of every image.
        chosen: indices already covered (the labelled images); may be empty.
        candidates: indices to pick from.
        n: how many to pick.

    Returns:
        int64 indices from ``candidates``, in the order picked.

    Examples:
        >>> x = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.0]])
        >>> k_center(x, [0], [1, 2, 3], 2).tolist()
        [3, 2]
    """
    x, chosen, candidates, n = _selection(features, chosen, candidates, n)
    if n <= 0:
        return np.zeros(0, np.int64)
    cand = x[candidates]
    if len(chosen):
        distance = 1.0 - (cand @ x[chosen].T).max(axis=1)
    else:  # nothing covered yet: start from the candidate nearest the centre
        distance = np.full(len(candidates), np.inf)
        distance[int(np.argmax(cand @ cand.mean(axis=0)))] = np.finfo(np.float64).max
    picked = []
    for _ in range(n):
        k = int(np.argmax(distance))
        picked.append(k)
        distance = np.minimum(distance, 1.0 - cand @ cand[k])
        distance[picked] = -np.inf
    return candidates[picked]


def typical(
    features: Any, chosen: Any, candidates: Any, n: int, *, neighbours: int = 20, seed: int = 0
) -> np.ndarray:
    """TypiClust (Hacohen et al., 2022): k-means the images into ``len(chosen) + n``
    clusters; from the largest clusters holding no chosen image, the most typical
    candidate (the densest: smallest mean cosine distance to its nearest neighbours in the
    cluster). Spreads the labels over the data's dense regions, which is what helps most
    when only a few labels exist; :func:`k_center` fills in when every cluster is covered.

    Returns:
        int64 indices from ``candidates``, in the order picked.
    """
    from sklearn.cluster import KMeans

    x, chosen, candidates, n = _selection(features, chosen, candidates, n)
    if n <= 0:
        return np.zeros(0, np.int64)
    rows = np.concatenate([chosen, candidates])
    k = min(len(rows), len(chosen) + n)
    assign = KMeans(k, n_init=3, random_state=seed).fit_predict(x[rows])
    covered = set(assign[: len(chosen)].tolist())
    cand_assign = assign[len(chosen) :]
    sizes = np.bincount(assign, minlength=k)
    picked: list[int] = []
    for c in sorted(set(range(k)) - covered, key=lambda c: -sizes[c]):
        members = np.flatnonzero(cand_assign == c)
        if not len(members):
            continue
        m = x[candidates[members]]
        distance = 1.0 - m @ m.T
        np.fill_diagonal(distance, np.inf)
        nearest = np.sort(distance, axis=1)[:, : max(1, min(neighbours, len(members) - 1))]
        density = -np.where(np.isfinite(nearest), nearest, 0.0).mean(axis=1)
        picked.append(int(candidates[members[int(np.argmax(density))]]))
        if len(picked) == n:
            break
    if len(picked) < n:
        rest = np.setdiff1d(candidates, picked)
        picked += k_center(x, np.concatenate([chosen, picked]), rest, n - len(picked)).tolist()
    return np.asarray(picked, np.int64)


def choose(
    strategy: str,
    n: int,
    *,
    features: Any,
    labelled: Any,
    candidates: Any,
    probabilities: Any = None,
    kind: str = "multiclass",
    seed: int = 0,
) -> np.ndarray:
    """The ``n`` candidates to label next by ``strategy`` (see :data:`STRATEGIES`).

    Args:
        strategy: a name of :data:`STRATEGIES`.
        n: how many.
        features: ``[N, D]`` backbone features of every image (labelled and candidates).
        labelled: indices of the labelled images.
        candidates: indices of the unlabelled images to choose from.
        probabilities: ``[len(candidates), T]`` predictions for the candidates, needed by
            the uncertainty strategies and ``"diverse"``; without them (no model yet)
            those fall back to ``"coverage"``.
        kind: ``"multiclass"`` or ``"multilabel"``.
        seed: for ``"random"``.

    Returns:
        int64 indices from ``candidates``, most wanted first.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy {strategy!r}: choose one of {', '.join(STRATEGIES)}")
    candidates = np.asarray(candidates, np.int64)
    n = min(max(int(n), 0), len(candidates))
    if strategy == "random":
        return np.random.default_rng(seed).permutation(candidates)[:n]
    if strategy == "typical":
        return typical(features, labelled, candidates, n, seed=seed)
    if strategy == "coverage" or probabilities is None:
        return k_center(features, labelled, candidates, n)
    if strategy in METHODS:
        return candidates[rank(probabilities, strategy, n, kind=kind)]
    uncertain = candidates[rank(probabilities, "margin", DIVERSE_POOL * n, kind=kind)]
    return k_center(features, labelled, uncertain, n)
