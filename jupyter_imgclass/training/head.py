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
"""

from __future__ import annotations

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

__all__ = ["HEAD_INPUT", "fit_head"]

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


def _without(n: int, folds: Sequence[np.ndarray], *left_out: int) -> np.ndarray:
    """Every index not in the ``left_out`` folds."""
    return np.setdiff1d(np.arange(n), np.concatenate([folds[f] for f in left_out]))


def _mask(n: int, rows: np.ndarray, base: np.ndarray) -> np.ndarray:
    out = np.zeros(n, np.float32)
    out[rows] = base[rows]
    return out
