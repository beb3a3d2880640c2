"""The quick budget's head: logistic regression on frozen, L2-normalised backbone features.

:func:`fit_head` trains the head on every labelled image and, in the same call, scores it
by cross-validation: every image gets an out-of-fold probability from a head that did not
see it. The penalty ``C`` is chosen by cross-validation too, without peeking:

* each outer fold chooses its own ``C`` by an inner cross-validation on its training part
  only (over the other outer folds), and its held-out images are predicted by that fold's
  head -- these out-of-fold probabilities are the iteration's metrics (from
  :data:`NESTED_BELOW` images on, every fold takes the ``C`` chosen over all folds);
* the final head (every image) takes the ``C`` that did best over the outer folds.

Every problem of both levels is solved in one batched L-BFGS call (:mod:`.logistic`).

:func:`spread_unlabelled` then puts a project's untagged images to work when that helps:
their tags are guessed by label spreading over the feature graph (scikit-learn's
``LabelSpreading``) and they join the head's training rows, switched on only when it
lowers the cross-validated log-loss of the labelled images.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from flax import nnx

from ..errors import TrainingError
from ..evaluate import example_losses, validation_metrics
from ..models.apply import probabilities
from ..models.layers import l2_normalise
from ..models.weights import model_to_weights
from .config import FitResult, TrainConfig, checked_sets, class_weights
from .events import Emitter, Event, Phase
from .logistic import C_GRID, solve

__all__ = ["HEAD_INPUT", "MAX_UNLABELLED", "fit_head", "pool_rows", "spread_unlabelled"]

HEAD_INPUT = "l2"
NESTED_BELOW = 200
"""Below this many images each outer fold chooses its C by an inner cross-validation
(nested); from it on, every fold uses the C chosen over all folds (four times fewer
problems; with 40+ images a fold, choosing one of six C on them barely flatters the
estimate)."""


def fit_head(
    config: TrainConfig,
    backbone: nnx.Module,
    data: Mapping[str, Any],
    *,
    folds: Sequence[np.ndarray],
    c_grid: Sequence[float] = C_GRID,
    on_event: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> FitResult:
    """Logistic regression on every labelled image, cross-validated over ``folds``.

    Args:
        config: ``kind``, ``seed``, ``class_weights`` and ``num_classes`` are used.
        backbone: the network the features came from (not modified); the head's weights
            replace its ``head`` in the returned flat weights.
        data: ``{'features': float32 [N, D], 'label': int [N] or 0/1 [N, T]}``.
        folds: disjoint held-out index sets covering every example (see
            ``data.labelled.cross_validation_folds``).
        c_grid: inverse penalties to choose from (scikit-learn's ``C``).
        on_event: gets ``{'phase': 'training', ...}`` and one ``{'event': 'epoch', ...}``
            whose validation figures are the cross-validated ones.
        should_stop: checked before solving; a stop then ends the run with nothing.

    Returns:
        A :class:`FitResult` with ``val_probabilities`` the out-of-fold probabilities of
        every example (in ``data``'s order), ``head_input="l2"``, and in ``extra`` the
        chosen ``c``, each fold's ``c`` and ``(kernel, bias)`` (``fold_heads``, trained
        without that fold) and the number of folds.

    Raises:
        TrainingError: bad arrays, folds that do not cover the data, or a stop.
    """
    started = time.perf_counter()
    emit = Emitter(on_event)
    kind = config.kind
    x, y, _, _, num_classes = checked_sets(config, data, data, "features")
    x = np.asarray(l2_normalise(np.asarray(x, np.float32).reshape(len(x), -1)))
    n = len(x)
    held = np.concatenate([np.asarray(f, np.int64) for f in folds]) if folds else np.array([])
    if len(folds) < 2 or sorted(held.tolist()) != list(range(n)):
        raise TrainingError(f"folds: need 2 or more disjoint held-out sets covering all {n} images")
    cw = class_weights(config, y, num_classes)
    base = np.ones(n, np.float32) if kind == "multilabel" else cw[y.astype(np.int64)]
    grid = [float(c) for c in c_grid]
    emit(
        {"phase": Phase.TRAINING, "what": "head", "message": f"{len(folds)} folds x {len(grid)} C"}
    )
    if should_stop is not None and should_stop():
        raise TrainingError("stopped before the head was trained; nothing to keep")

    # One batched solve. With k outer folds, the inner cross-validation of outer fold o
    # runs over the other k - 1 folds: its problem "train on all but folds o and j" is
    # the same problem for o and j, so k (k - 1) / 2 pair problems serve every inner CV.
    k = len(folds)
    nested = n < NESTED_BELOW
    pairs = [(a, b) for a in range(k) for b in range(a + 1, k)] if nested else []
    index: dict[tuple, int] = {}
    masks, cs = [], []
    for g, c in enumerate(grid):
        for a, b in pairs:
            index[("pair", a, b, g)] = len(masks)
            masks.append(_mask(n, _without(n, folds, a, b), base))
            cs.append(c)
        for o in range(k):
            index[("outer", o, g)] = len(masks)
            masks.append(_mask(n, _without(n, folds, o), base))
            cs.append(c)
        # The final head for every C too, so that one call solves everything.
        index[("all", g)] = len(masks)
        masks.append(base.copy())
        cs.append(c)
    kernels, biases = solve(x, y, kind, np.stack(masks), cs, num_classes)

    def loss_on(problem: int, rows: np.ndarray) -> float:
        p = np.asarray(probabilities(x[rows] @ kernels[problem] + biases[problem], kind))
        return float((example_losses(y[rows], p, kind) * base[rows]).sum())

    oof = np.zeros((n, num_classes), np.float32)
    outer_loss = np.zeros(len(grid))
    fold_c, fold_heads = [], []
    for o, held_out in enumerate(folds):
        for g in range(len(grid)):
            outer_loss[g] += loss_on(index[("outer", o, g)], held_out)
    c_best = int(np.argmin(outer_loss))
    for o, held_out in enumerate(folds):
        best = c_best
        if nested:
            inner_loss = [
                sum(
                    loss_on(index[("pair", *sorted((o, j)), g)], folds[j])
                    for j in range(k)
                    if j != o
                )
                for g in range(len(grid))
            ]
            best = int(np.argmin(inner_loss))
        fold_c.append(grid[best])
        chosen = index[("outer", o, best)]
        fold_heads.append((kernels[chosen], biases[chosen]))
        oof[held_out] = np.asarray(
            probabilities(x[held_out] @ kernels[chosen] + biases[chosen], kind)
        )
    c_final = grid[c_best]
    kernel, bias = kernels[index[("all", c_best)]], biases[index[("all", c_best)]]

    train_probs = np.asarray(probabilities(x @ kernel + bias, kind))
    train = validation_metrics(y, train_probs, kind)
    record = {
        "epoch": 1,
        "epochs": 1,
        "loss": train["val_loss"],
        "accuracy": train["val_accuracy"],
        **validation_metrics(y, oof, kind),
        "c": c_final,
        "folds": len(folds),
        "elapsed_s": round(time.perf_counter() - started, 3),
        "eta_s": 0.0,
    }
    emit({"event": Event.EPOCH, **record})
    weights = model_to_weights(backbone)
    if weights.get("head.kernel") is None or weights["head.kernel"].shape[0] != x.shape[1]:
        raise TrainingError(
            f"{config.model}: the backbone's head does not take {x.shape[1]}-d features"
        )
    weights["head.kernel"], weights["head.bias"] = kernel, bias
    return FitResult(
        weights=weights,
        history=[record],
        best_epoch=1,
        val_probabilities=oof,
        stopped=False,
        seconds=round(time.perf_counter() - started, 3),
        head_input=HEAD_INPUT,
        extra={
            "c": c_final,
            "fold_c": fold_c,
            "fold_heads": fold_heads,
            "folds": len(folds),
            "nested": nested,
            "problems": len(masks),
        },
    )


MAX_UNLABELLED = 1000
"""Untagged images :func:`spread_unlabelled` uses at most (a seeded choice beyond)."""


def pool_rows(count: int, seed: int) -> np.ndarray:
    """Which of ``count`` untagged images :func:`spread_unlabelled` uses, in order: all of
    them up to :data:`MAX_UNLABELLED`, a seeded choice beyond (callers pick with it before
    extracting features, so that a large pool costs no more than it can give).

    Examples:
        >>> pool_rows(3, seed=0).tolist()
        [0, 1, 2]
        >>> len(pool_rows(5000, seed=0))
        1000
    """
    if count <= MAX_UNLABELLED:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).permutation(count)[:MAX_UNLABELLED])


SPREAD_NEIGHBOURS = 10
"""Neighbours of each image in the label-spreading graph (scikit-learn's knn kernel)."""


def spread_unlabelled(
    config: TrainConfig,
    head: FitResult,
    data: Mapping[str, Any],
    pool: np.ndarray,
    *,
    folds: Sequence[np.ndarray],
    on_event: Callable[[dict], None] | None = None,
) -> tuple[FitResult, dict]:
    """``head`` retrained with untagged images whose tags label spreading guessed, when
    cross-validation says it helps; else ``head`` unchanged. Multiclass only.

    The switch, measured before it was built (``benchmarks/few_shot_levers.py``, method
    ``h``): in each of ``folds``, label spreading runs over the fold's training images
    (tagged), ``pool`` and the fold's held-out images (untagged: their labels never reach
    it); two heads at ``head``'s ``C`` are trained on the fold's training images, one with
    the pool's guessed tags, and both are scored by log-loss on the held-out images. The
    pool is used when its summed held-out log-loss is lower. Then the held-out images keep
    the probabilities of their fold's pool-trained head (no image is scored by a head
    that saw its label) and the final head trains on every tagged image plus the pool
    spread from all of them.

    Args:
        config: ``kind``, ``seed``, ``class_weights`` and ``num_classes`` are used.
        head: :func:`fit_head`'s result on ``data`` over ``folds``.
        data: ``{'features': [N, D], 'label': [N]}`` (tagged images).
        pool: float32 ``[P, D]`` features of untagged images (those :func:`pool_rows`
            picks are used).
        folds: ``head``'s folds.

    Returns:
        ``(result, report)``: ``report`` has ``images`` (untagged images considered),
        ``used`` (bool), ``cv_log_loss`` ``{"without", "with"}`` and ``reason``.
    """
    from sklearn.semi_supervised import LabelSpreading

    emit = Emitter(on_event)
    pool = np.asarray(pool, np.float32)
    report = {"images": int(len(pool)), "used": False}
    if config.kind != "multiclass":
        return head, {**report, "reason": "label spreading needs one tag per image"}
    if len(pool) == 0:
        return head, {**report, "reason": "no untagged images"}
    pool = pool.reshape(len(pool), -1)[pool_rows(len(pool), config.seed)]
    x, y, _, _, num_classes = checked_sets(config, data, data, "features")
    x = np.asarray(l2_normalise(np.asarray(x, np.float32).reshape(len(x), -1)))
    z = np.asarray(l2_normalise(pool))
    n, m = len(x), len(z)
    y = y.astype(np.int64)
    if n + m <= SPREAD_NEIGHBOURS:
        return head, {**report, "reason": "too few images for the neighbour graph"}
    emit({"phase": Phase.TRAINING, "what": "head", "message": f"{m} untagged images"})

    def spread(train: np.ndarray, unknown: np.ndarray) -> np.ndarray:
        """The pool's tags spread from ``train``'s (``unknown`` rows take part untagged)."""
        rows = np.concatenate([x[train], z, x[unknown]])
        known = np.concatenate([y[train], np.full(m + len(unknown), -1)])
        model = LabelSpreading(kernel="knn", n_neighbors=SPREAD_NEIGHBOURS).fit(rows, known)
        return model.transduction_[len(train) : len(train) + m].astype(np.int64)

    every = np.arange(n)
    trains = [np.setdiff1d(every, f) for f in folds]
    guesses = [spread(t, np.asarray(f, np.int64)) for t, f in zip(trains, folds, strict=True)]
    guesses.append(spread(every, np.zeros(0, np.int64)))
    # rows: the tagged images, then one copy of the pool per fold and one for the final head
    rows = np.concatenate([x, *([z] * len(guesses))])
    labels = np.concatenate([y, *guesses])
    cw = class_weights(config, y, num_classes)
    base = np.zeros(len(rows), np.float32)
    base[:n] = cw[y]
    masks = []
    for o, train in enumerate(trains):
        without = np.zeros(len(rows), np.float32)
        without[train] = base[train]
        with_pool = without.copy()
        start = n + o * m
        with_pool[start : start + m] = cw[guesses[o]]
        masks += [without, with_pool]
    final = base.copy()
    final[n + len(trains) * m :] = cw[guesses[-1]]
    masks.append(final)
    c = float(head.extra["c"])
    kernels, biases = solve(rows, labels, "multiclass", np.stack(masks), [c] * len(masks),
                            num_classes)  # fmt: skip
    loss = np.zeros(2)
    oof = np.zeros((n, num_classes), np.float32)
    fold_heads = []
    for o, held in enumerate(folds):
        held = np.asarray(held, np.int64)
        for j in range(2):
            problem = 2 * o + j
            probs = np.asarray(probabilities(x[held] @ kernels[problem] + biases[problem],
                                             "multiclass"))  # fmt: skip
            loss[j] += float((example_losses(y[held], probs, "multiclass") * cw[y[held]]).sum())
            if j == 1:
                oof[held] = probs
                fold_heads.append((kernels[problem], biases[problem]))
    figures = {"without": round(loss[0] / n, 4), "with": round(loss[1] / n, 4)}
    report = {**report, "images": m, "cv_log_loss": figures}
    if not loss[1] < loss[0]:
        reason = (
            f"not used: label spreading over {m} untagged images did not lower the "
            f"cross-validated log-loss ({figures['without']:.3g} -> {figures['with']:.3g})"
        )
        return head, {**report, "reason": reason}
    weights = dict(head.weights)
    weights["head.kernel"], weights["head.bias"] = kernels[-1], biases[-1]
    train_probs = np.asarray(probabilities(x @ kernels[-1] + biases[-1], "multiclass"))
    train = validation_metrics(y, train_probs, "multiclass")
    record = {
        **head.history[-1],
        "loss": train["val_loss"],
        "accuracy": train["val_accuracy"],
        **validation_metrics(y, oof, "multiclass"),
    }
    reason = (
        f"{m} untagged images used: tags guessed by label spreading lowered the "
        f"cross-validated log-loss ({figures['without']:.3g} -> {figures['with']:.3g})"
    )
    result = dataclasses.replace(
        head,
        weights=weights,
        history=[*head.history[:-1], record],
        val_probabilities=oof,
        extra={**head.extra, "fold_heads": fold_heads, "unlabelled": m},
    )
    return result, {**report, "used": True, "reason": reason}


def _without(n: int, folds: Sequence[np.ndarray], *left_out: int) -> np.ndarray:
    """Every index not in the ``left_out`` folds."""
    return np.setdiff1d(np.arange(n), np.concatenate([folds[f] for f in left_out]))


def _mask(n: int, rows: np.ndarray, base: np.ndarray) -> np.ndarray:
    out = np.zeros(n, np.float32)
    out[rows] = base[rows]
    return out
