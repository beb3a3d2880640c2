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

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import OptionError
from .vocabulary import check_kind

__all__ = [
    "METHODS",
    "STRATEGIES",
    "STRATEGY_TABLE",
    "Strategy",
    "check_strategy",
    "choose",
    "k_center",
    "typical",
    "typical_uncertain",
    "herding",
    "badge",
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


def _density(members: np.ndarray, neighbours: int) -> np.ndarray:
    """Typicality of each L2-normalised row among ``members``: minus its mean cosine
    distance to its ``neighbours`` nearest other rows (a lone row scores 0)."""
    distance = 1.0 - members @ members.T
    np.fill_diagonal(distance, np.inf)
    nearest = np.sort(distance, axis=1)[:, : max(1, min(neighbours, len(members) - 1))]
    return -np.where(np.isfinite(nearest), nearest, 0.0).mean(axis=1)


def _cluster_picks(
    features: Any,
    chosen: Any,
    candidates: Any,
    n: int,
    pick: Callable[[np.ndarray, np.ndarray], int],
    seed: int,
) -> np.ndarray:
    """TypiClust's selection skeleton: k-means every image into ``len(chosen) + n``
    clusters; from each cluster holding no chosen image, largest first, one candidate:
    ``pick(members, rows)`` returns a position in ``members`` (positions into
    ``candidates``) given their L2-normalised feature ``rows``. :func:`k_center` fills
    in when every cluster is covered."""
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
        picked.append(int(candidates[members[pick(members, x[candidates[members]])]]))
        if len(picked) == n:
            break
    if len(picked) < n:
        rest = np.setdiff1d(candidates, picked)
        picked += k_center(x, np.concatenate([chosen, picked]), rest, n - len(picked)).tolist()
    return np.asarray(picked, np.int64)


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

    def densest(members: np.ndarray, rows: np.ndarray) -> int:
        return int(np.argmax(_density(rows, neighbours)))

    return _cluster_picks(features, chosen, candidates, n, densest, seed)


def typical_uncertain(
    features: Any,
    chosen: Any,
    candidates: Any,
    n: int,
    uncertainty: Any,
    *,
    neighbours: int = 20,
    seed: int = 0,
) -> np.ndarray:
    """TypiClust's clusters, the model's doubt inside each: from every uncovered cluster
    (largest first), the most uncertain candidate of its more typical half (density at or
    above the cluster's median). Coverage keeps the picks spread and typical; uncertainty
    picks, among typical images, the ones the model still gets wrong. Without a model it
    is :func:`typical`.

    Args:
        uncertainty: one score per candidate, higher = more uncertain (e.g.
            :func:`informativeness`), or ``None``.

    Returns:
        int64 indices from ``candidates``, in the order picked.

    Examples:
        >>> x = np.array([[1.0, 0.0], [0.99, 0.14], [0.98, 0.2], [0.0, 1.0], [0.1, 0.99]])
        >>> typical_uncertain(x, [3], [0, 1, 2, 4], 1, [0.1, 0.9, 0.2, 1.0]).tolist()
        [1]
    """
    if uncertainty is None:
        return typical(features, chosen, candidates, n, neighbours=neighbours, seed=seed)
    doubt = np.asarray(uncertainty, np.float64)

    def doubtful_typical(members: np.ndarray, rows: np.ndarray) -> int:
        density = _density(rows, neighbours)
        typical_half = np.flatnonzero(density >= np.median(density))
        return int(typical_half[int(np.argmax(doubt[members[typical_half]]))])

    return _cluster_picks(features, chosen, candidates, n, doubtful_typical, seed)


HERDING_REFERENCE = 3000
""":func:`herding` measures coverage on at most this many images (a fixed sample)."""
HERDING_WIDTH = 1.0
""":func:`herding`'s kernel width, in median nearest-neighbour distances."""


def herding(
    features: Any,
    chosen: Any,
    candidates: Any,
    n: int,
    weights: Any = None,
    *,
    width: float = HERDING_WIDTH,
    seed: int = 0,
) -> np.ndarray:
    """MaxHerding (Bae et al., 2024, "Generalized Coverage for More Robust Low-Budget
    Active Learning"): greedily, the candidate that most raises the weighted coverage
    ``sum_x w_x max_s k(x, s)`` over the images ``x``, where ``s`` runs over the chosen
    and picked images and ``k`` is a Gaussian kernel on L2-normalised features.

    With ``weights`` (the model's doubt per candidate) coverage counts only where the
    model is unsure: picks are typical of the doubtful regions, not their outliers, and
    each pick discounts its neighbours, so the picks spread out.

    Args:
        features: ``[N, D]`` feature rows of every image.
        chosen: indices already labelled; may be empty.
        candidates: indices to pick from.
        n: how many to pick.
        weights: ``[len(candidates)]`` non-negative weights (None: 1 for every image;
            given, the chosen images weigh 0).
        width: kernel width in median distances from an image to its nearest other one.
        seed: picks the reference sample when there are more than
            :data:`HERDING_REFERENCE` images.

    Memory: a float32 ``[candidates, reference]`` kernel matrix (10,000 candidates:
    120 MB).

    Returns:
        int64 indices from ``candidates``, in the order picked.

    Examples:
        >>> x = np.array([[1.0, 0.0], [0.99, 0.1], [0.98, 0.2], [0.0, 1.0], [0.1, 0.99]])
        >>> herding(x, [], [0, 1, 2, 3, 4], 2).tolist()  # the middle of the big group first
        [1, 3]
        >>> herding(x, [], [0, 1, 2, 3, 4], 1, [0, 0, 0, 0, 1]).tolist()  # where doubt is
        [4]
    """
    x, chosen, candidates, n = _selection(features, chosen, candidates, n)
    if not width > 0:
        raise ValueError(f"width must be > 0, got {width}")
    if weights is not None:
        weights = np.asarray(weights, np.float64)
        if weights.shape != candidates.shape:
            raise ValueError(
                f"weights must hold one value per candidate ({len(candidates)}), "
                f"got shape {weights.shape}"
            )
        if not np.all(np.isfinite(weights)) or np.any(weights < 0):
            raise ValueError("weights must be finite and >= 0")
    if n <= 0:
        return np.zeros(0, np.int64)
    rows = np.concatenate([chosen, candidates])
    if len(rows) > HERDING_REFERENCE:
        rng = np.random.default_rng(seed)
        rows = rng.choice(rows, HERDING_REFERENCE, replace=False)
    ref = x[rows].astype(np.float32)
    w = np.ones(len(rows), np.float32)
    if weights is not None:
        full = np.zeros(len(x), np.float32)
        full[candidates] = weights
        w = full[rows]
    d2 = np.maximum(2.0 - 2.0 * ref @ ref.T, 0.0)
    np.fill_diagonal(d2, np.inf)
    nearest = np.sqrt(d2.min(axis=1))
    nearest = nearest[np.isfinite(nearest) & (nearest > 0)]  # copies would shrink it to 0
    sigma2 = (width * (float(np.median(nearest)) if nearest.size else 1.0)) ** 2

    def kernel(a: np.ndarray) -> np.ndarray:
        return np.exp(-np.maximum(2.0 - 2.0 * a @ ref.T, 0.0) / (2.0 * sigma2))

    cover = np.zeros(len(rows), np.float32)
    if len(chosen):
        cover = kernel(x[chosen].astype(np.float32)).max(axis=0)
    k_cand = kernel(x[candidates].astype(np.float32))  # [candidates, reference]
    picked: list[int] = []
    for _ in range(n):
        gain = (np.maximum(k_cand - cover, 0.0) * w).sum(axis=1)
        gain[picked] = -np.inf
        k = int(np.argmax(gain))
        picked.append(k)
        cover = np.maximum(cover, k_cand[k])
    return candidates[picked]


def badge(
    features: Any,
    candidates: Any,
    n: int,
    probabilities: Any,
    *,
    kind: str = "multiclass",
    seed: int = 0,
) -> np.ndarray:
    """BADGE (Ash et al., 2020): k-means++ seeding over each candidate's gradient
    embedding, the gradient of the loss on the head's weights had the model's guess been
    the label: ``(p - onehot(guess)) ⊗ x`` (multilabel: ``p - round(p)``) on the
    L2-normalised features ``x``. Its length is the model's doubt and its direction says
    where the image lies, so the picks are uncertain and unlike each other. The product
    factorises: ``<a ⊗ x, b ⊗ y> = <a, b> <x, y>``, so no ``T x D`` rows are built.

    Args:
        features: ``[N, D]`` feature rows of every image.
        candidates: indices to pick from.
        n: how many to pick.
        probabilities: ``[len(candidates), T]`` predictions for the candidates.
        kind: ``"multiclass"`` or ``"multilabel"``.
        seed: for the k-means++ draws after the first (the longest embedding).

    Returns:
        int64 indices from ``candidates``, in the order picked.

    Examples:
        >>> x = np.array([[1.0, 0.0], [0.0, 1.0], [0.1, 1.0], [1.0, 0.1]])
        >>> p = np.array([[0.99, 0.01], [0.5, 0.5], [0.55, 0.45], [0.6, 0.4]])
        >>> badge(x, [0, 1, 2, 3], 2, p).tolist()[0]
        1
    """
    check_kind(kind)
    x = unit_rows(features)[np.asarray(candidates, np.int64)]
    candidates = np.asarray(candidates, np.int64)
    p = _probabilities(probabilities)
    n = min(int(n), len(candidates))
    if n <= 0:
        return np.zeros(0, np.int64)
    if kind == "multilabel":
        a = p - np.round(p)
    else:
        a = p.copy()
        a[np.arange(len(p)), p.argmax(axis=1)] -= 1.0
    gram = (a @ a.T) * (x @ x.T)  # inner products of the gradient embeddings
    sq = np.diag(gram).copy()
    rng = np.random.default_rng(seed)
    picked = [int(np.argmax(sq))]
    nearest = np.maximum(sq + sq[picked[0]] - 2.0 * gram[:, picked[0]], 0.0)
    for _ in range(n - 1):
        nearest[picked] = 0.0
        total = nearest.sum()
        if total <= 1e-12:  # every rest is a copy of a pick: take the longest left
            rest = np.setdiff1d(np.arange(len(candidates)), picked)
            k = int(rest[np.argmax(sq[rest])])
        else:
            k = int(rng.choice(len(candidates), p=nearest / total))
        picked.append(k)
        nearest = np.minimum(nearest, np.maximum(sq + sq[k] - 2.0 * gram[:, k], 0.0))
    return candidates[picked]


@dataclass(frozen=True)
class Strategy:
    """One way :func:`choose` picks images: its ``pick`` and what it is, in a sentence.

    ``pick(features, labelled, candidates, n, probabilities, kind, seed)`` returns indices
    from ``candidates``; ``probabilities`` is None before a model exists. ``uses_model``:
    whether ``pick`` reads the probabilities (the caller need not predict otherwise)."""

    pick: Callable[..., np.ndarray]
    about: str
    uses_model: bool = True


def _doubt(probabilities, kind: str):
    return None if probabilities is None else informativeness(probabilities, "margin", kind)


def _uncertainty(method: str) -> Strategy:
    def pick(features, labelled, candidates, n, probabilities, kind, seed):
        if probabilities is None:  # no model yet: what coverage picks
            return k_center(features, labelled, candidates, n)
        return candidates[rank(probabilities, method, n, kind=kind)]

    return Strategy(pick, f"the model's uncertainty alone ({method}); coverage before a model")


def _diverse(features, labelled, candidates, n, probabilities, kind, seed):
    if probabilities is None:
        return k_center(features, labelled, candidates, n)
    uncertain = candidates[rank(probabilities, "margin", DIVERSE_POOL * n, kind=kind)]
    return k_center(features, labelled, uncertain, n)


def _badge(features, labelled, candidates, n, probabilities, kind, seed):
    if probabilities is None:  # before any model: TypiClust's cold start
        return typical(features, labelled, candidates, n, seed=seed)
    return badge(features, candidates, n, probabilities, kind=kind, seed=seed)


STRATEGY_TABLE: dict[str, Strategy] = {
    "herding_uncertain": Strategy(
        lambda f, lab, c, n, p, kind, seed: herding(f, lab, c, n, _doubt(p, kind), seed=seed),
        "the default: MaxHerding's kernel coverage weighted by the model's doubt",
    ),
    "herding": Strategy(
        lambda f, lab, c, n, p, kind, seed: herding(f, lab, c, n, seed=seed),
        "the kernel coverage of every image (MaxHerding)",
        uses_model=False,
    ),
    "typical_uncertain": Strategy(
        lambda f, lab, c, n, p, kind, seed: typical_uncertain(
            f, lab, c, n, _doubt(p, kind), seed=seed
        ),
        "TypiClust's clusters, the image the model doubts most in each uncovered one",
    ),
    "typical": Strategy(
        lambda f, lab, c, n, p, kind, seed: typical(f, lab, c, n, seed=seed),
        "TypiClust: the densest image of each of the largest clusters holding no label",
        uses_model=False,
    ),
    "badge": Strategy(_badge, "k-means++ over the head's gradient embeddings (BADGE)"),
    "diverse": Strategy(_diverse, "the most uncertain images, spread by k-center"),
    "coverage": Strategy(
        lambda f, lab, c, n, p, kind, seed: k_center(f, lab, c, n),
        "k-center on the backbone's features alone",
        uses_model=False,
    ),
    **{method: _uncertainty(method) for method in METHODS},
    "random": Strategy(
        lambda f, lab, c, n, p, kind, seed: np.random.default_rng(seed).permutation(c)[:n],
        "random choice, the baseline every strategy is measured against",
        uses_model=False,
    ),
}
"""Every ``Project.suggest`` strategy, in one place (the first is the default)."""

STRATEGIES = tuple(STRATEGY_TABLE)
"""The strategies' names (see :data:`STRATEGY_TABLE` for what each does)."""


def check_strategy(strategy: Any) -> str:
    """Returns ``strategy`` when it names one of :data:`STRATEGIES`.

    Raises:
        OptionError: naming the value and the choices (an ``ImgClassError`` and a
            ``ValueError``).
    """
    if strategy not in STRATEGY_TABLE:
        raise OptionError(f"strategy {strategy!r}: choose one of {', '.join(STRATEGIES)}")
    return strategy


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
    """The ``n`` candidates to label next by ``strategy`` (see :data:`STRATEGY_TABLE`).

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
        seed: for ``"random"`` and the strategies that draw.

    Returns:
        int64 indices from ``candidates``, most wanted first.
    """
    entry = STRATEGY_TABLE[check_strategy(strategy)]
    candidates = np.asarray(candidates, np.int64)
    n = min(max(int(n), 0), len(candidates))
    return entry.pick(features, labelled, candidates, n, probabilities, kind, seed)
