"""Evaluation metrics on held-out predictions: pure numpy, no JAX, no UI.

The numbers follow the hosted custom-vision services:

* **precision / recall at a threshold.** In a *multiclass* project an image counts as a
  prediction of tag ``t`` when ``t`` is its most probable tag **and** that probability is at
  least the threshold; below the threshold the image predicts nothing (it lowers recall,
  not precision). At threshold 0 this is plain argmax precision/recall. In a *multilabel*
  project every tag whose probability is at least its threshold is predicted.
* **average precision (AP)**: the area under the precision/recall curve of one tag's
  probabilities (one-vs-rest), computed exactly as scikit-learn's
  ``average_precision_score`` (a step sum, no interpolation). It does not depend on the
  threshold.
* **undefined values are 0.0.** Precision of a tag that was never predicted, recall of a
  tag with no true images and AP of a tag with no true images are reported as ``0.0``
  (scikit-learn's ``zero_division=0``). The mean AP averages only tags that have at least
  one true image, so a tag missing from the validation set does not drag it down.

Every value in the returned dict is a plain Python ``int``/``float``/``list``/``str`` so the
dict can be written to JSON (SQLite, ``model.json``) as it is.

Examples:
    >>> import numpy as np
    >>> from jupyter_imgclass.evaluate import compute_metrics
    >>> probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.7, 0.3]])
    >>> m = compute_metrics(np.array([0, 1, 1]), probs, ["cat", "dog"], "multiclass")
    >>> m["overall"]["accuracy"], m["per_tag"]["dog"]["recall"]
    (0.6666666666666666, 0.5)
    >>> m["confusion_matrix"]
    [[1, 0], [1, 1]]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from .vocabulary import DEFAULT_THRESHOLD, check_kind

__all__ = [
    "Loss",
    "average_precision",
    "best_f1_thresholds",
    "validation_metrics",
    "compute_metrics",
    "example_losses",
    "metrics_dataframe",
    "passing",
    "top_losses",
]

_EPS = 1e-7


class Loss(NamedTuple):
    """One image's loss, as returned by :func:`top_losses`.

    Attributes:
        index: row of the image in ``y_true`` / ``probabilities``.
        loss: cross-entropy of the image (natural log; mean binary cross-entropy over
            tags for multilabel).
        true: true tag index (multiclass) or tuple of true tag indices (multilabel).
        predicted: argmax tag index (multiclass) or tuple of tag indices with probability
            at least 0.5 (multilabel).
    """

    index: int
    loss: float
    true: int | tuple[int, ...]
    predicted: int | tuple[int, ...]


def _as_probabilities(probabilities: Any, n_tags: int | None = None) -> np.ndarray:
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"probabilities must be a 2-D [images, tags] array, got shape {p.shape}")
    if n_tags is not None and p.shape[1] != n_tags:
        raise ValueError(f"probabilities have {p.shape[1]} columns but there are {n_tags} tags")
    if not np.all(np.isfinite(p)):
        raise ValueError("probabilities contain NaN or infinite values")
    return p


def _as_targets(y_true: Any, kind: str, shape: tuple[int, int]) -> np.ndarray:
    y = np.asarray(y_true)
    n, t = shape
    if kind == "multiclass":
        if y.ndim != 1 or y.shape[0] != n:
            raise ValueError(f"multiclass y_true must be int[{n}] tag indices, got shape {y.shape}")
        if y.size and (not np.issubdtype(y.dtype, np.integer) and not np.all(y == np.round(y))):
            raise ValueError("multiclass y_true must hold integer tag indices")
        y = y.astype(np.int64)
        if y.size and (y.min() < 0 or y.max() >= t):
            raise ValueError(f"multiclass y_true holds tag indices outside 0..{t - 1}")
        return y
    if y.shape != (n, t):
        raise ValueError(f"multilabel y_true must be a 0/1 array of shape {(n, t)}, got {y.shape}")
    if y.size and not np.all((y == 0) | (y == 1)):
        raise ValueError("multilabel y_true must hold only 0 and 1")
    return y.astype(bool)


def _thresholds(
    tags: Sequence[str], threshold: float, per_tag_thresholds: Mapping[str, float] | None
) -> np.ndarray:
    values = np.full(len(tags), float(threshold))
    for tag, value in (per_tag_thresholds or {}).items():
        if tag not in tags:
            raise ValueError(f"per_tag_thresholds names unknown tag {tag!r}")
        values[list(tags).index(tag)] = float(value)
    if np.any(~np.isfinite(values)) or np.any(values < 0) or np.any(values > 1):
        raise ValueError(f"thresholds must lie in [0, 1], got {values.tolist()}")
    return values


def best_f1_thresholds(
    y_true: Any, probabilities: Any, tags: Sequence[str], kind: str, default: float = 0.5
) -> dict[str, float]:
    """Per tag, the threshold with the best F1 on these (out-of-fold) predictions.

    A tag is predicted as :func:`compute_metrics` counts it: in a multiclass project when it
    is the most probable tag and its probability reaches the threshold; in a multilabel one
    when its probability does. Of equally good thresholds the highest is taken; a tag with
    no image keeps ``default``.

    Examples:
        >>> import numpy as np
        >>> p = np.array([[0.9, 0.1], [0.6, 0.4], [0.55, 0.45], [0.2, 0.8]])
        >>> best_f1_thresholds(np.array([0, 0, 1, 1]), p, ["a", "b"], "multiclass")
        {'a': 0.6, 'b': 0.8}
    """
    check_kind(kind)
    tags = [str(t) for t in tags]
    p = _as_probabilities(probabilities, len(tags))
    y = _as_targets(y_true, kind, p.shape)
    n = len(p)
    truth = np.zeros(p.shape, bool)
    if kind == "multiclass":
        truth[np.arange(n), y] = True
        argmax = p.argmax(axis=1) if n else np.zeros(0, np.int64)
    else:
        truth = y
    out = {}
    for j, tag in enumerate(tags):
        rows = np.flatnonzero(argmax == j) if kind == "multiclass" else np.arange(n)
        positives = int(truth[:, j].sum())
        if not positives or not len(rows):
            out[tag] = float(default)
            continue
        order = rows[np.argsort(-p[rows, j], kind="stable")]
        scores = p[order, j]
        tp = np.cumsum(truth[order, j])
        predicted = np.arange(1, len(order) + 1)
        f1 = 2 * tp / (predicted + positives)  # 2TP / (2TP + FP + FN)
        # Thresholds sit at distinct scores: the last index of each run of equal scores.
        last = np.r_[np.flatnonzero(np.diff(scores) != 0), len(scores) - 1]
        best = last[np.argmax(f1[last])]
        out[tag] = float(np.floor(scores[best] * 1e4) / 1e4)  # rounded down: still included
    return out


def passing(probabilities: Any, thresholds: Sequence[float], kind: str) -> np.ndarray:
    """Which tags are predicted at these thresholds, for one row ``[T]`` or rows
    ``[N, T]``: in a multiclass model the most probable tag when it reaches its threshold
    (below it the image predicts nothing), in a multilabel one every tag that reaches its
    own. The one rule the metrics, ``Predictor`` and the REST answers share.

    Examples:
        >>> passing(np.array([0.6, 0.3, 0.1]), [0.7, 0.2, 0.05], "multiclass").tolist()
        [False, False, False]
        >>> passing(np.array([0.6, 0.3, 0.1]), [0.7, 0.2, 0.05], "multilabel").tolist()
        [False, True, True]
    """
    p = np.asarray(probabilities, np.float64)
    thr = np.asarray(thresholds, np.float64)
    if kind == "multilabel":
        return p >= thr
    rows = p.reshape(-1, p.shape[-1])
    out = np.zeros(rows.shape, bool)
    if rows.size:
        top = rows.argmax(axis=1)
        index = np.arange(len(rows))
        out[index, top] = rows[index, top] >= thr[top]
    return out.reshape(p.shape)


def _ratio(num: float, den: float) -> float:
    """``num / den``, or 0.0 when the denominator is 0 (scikit-learn's zero_division=0)."""
    return float(num) / float(den) if den else 0.0


def average_precision(y_true: Any, scores: Any) -> float:
    """Area under the precision/recall curve of one binary problem.

    Equal to ``sklearn.metrics.average_precision_score(y_true, scores)``:
    ``AP = sum_n (R_n - R_{n-1}) * P_n`` over the distinct score thresholds, highest
    first. Returns 0.0 when ``y_true`` has no positives.

    Args:
        y_true: 0/1 (or bool) labels, shape ``[N]``.
        scores: scores of the positive class, shape ``[N]``; higher means more positive.

    Returns:
        The average precision in ``[0, 1]``.

    Examples:
        >>> average_precision([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1])
        0.8333333333333333
    """
    y = np.asarray(y_true).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    positives = int(y.sum())
    if positives == 0:
        return 0.0
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    # The last index of each run of equal scores: one point of the curve per threshold.
    last = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]
    tps = np.cumsum(y)[last]
    predicted = last + 1
    precision = tps / predicted
    recall = tps / positives
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def compute_metrics(
    y_true: Any,
    probabilities: Any,
    tags: Sequence[str],
    kind: str,
    threshold: float = DEFAULT_THRESHOLD,
    *,
    per_tag_thresholds: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """Per-tag and overall precision, recall and average precision of held-out predictions.

    Args:
        y_true: multiclass: int ``[N]`` tag indices; multilabel: 0/1 ``[N, T]``.
        probabilities: ``[N, T]`` probabilities (softmax rows for multiclass, independent
            sigmoids for multilabel), columns in the order of ``tags``.
        tags: tag names, one per column.
        kind: ``"multiclass"`` or ``"multilabel"``.
        threshold: probability threshold in ``[0, 1]`` for precision and recall.
        per_tag_thresholds: optional ``{tag: threshold}`` overriding ``threshold`` for
            some tags (most useful for multilabel; in multiclass the argmax tag's own
            threshold applies).

    Returns:
        A JSON-ready dict::

            {"kind", "threshold", "tags",
             "overall": {"precision", "recall", "average_precision", "count",
                         "accuracy" (multiclass) | "subset_accuracy" (multilabel)},
             "per_tag": {tag: {"precision", "recall", "average_precision", "count",
                               "threshold"}},
             "confusion_matrix": [[...], ...]  # multiclass only, rows true, cols argmax
            }

        ``overall.precision``/``recall`` are micro-averaged (pooled over tags) at the
        threshold; ``overall.average_precision`` is the mean AP over tags with at least one
        true image; ``count`` is the number of true images (per tag) or of images (overall).
        Undefined ratios are 0.0 (see the module docstring).

    Raises:
        ValueError: for mismatched shapes, out-of-range labels or thresholds, NaN
            probabilities or an unknown kind.

    Examples:
        >>> import numpy as np
        >>> y = np.array([[1, 0], [1, 1], [0, 1]])
        >>> p = np.array([[0.8, 0.2], [0.6, 0.4], [0.3, 0.9]])
        >>> m = compute_metrics(y, p, ["a", "b"], "multilabel")
        >>> m["per_tag"]["b"]["recall"], m["overall"]["subset_accuracy"]
        (0.5, 0.6666666666666666)
    """
    check_kind(kind)
    tags = [str(t) for t in tags]
    if len(set(tags)) != len(tags):
        raise ValueError(f"tags must be unique, got {tags}")
    p = _as_probabilities(probabilities, len(tags))
    y = _as_targets(y_true, kind, p.shape)
    thr = _thresholds(tags, threshold, per_tag_thresholds)
    n, t = p.shape

    if kind == "multiclass":
        argmax = p.argmax(axis=1) if n else np.zeros(0, dtype=np.int64)
        onehot_true = np.zeros((n, t), dtype=bool)
        onehot_true[np.arange(n), y] = True
        truth = onehot_true
    else:
        truth = y
    predicted = passing(p, thr, kind)

    tp = (predicted & truth).sum(axis=0)
    n_pred = predicted.sum(axis=0)
    n_true = truth.sum(axis=0)
    per_tag: dict[str, dict[str, float | int]] = {}
    aps = []
    for j, tag in enumerate(tags):
        ap = average_precision(truth[:, j], p[:, j])
        if n_true[j]:
            aps.append(ap)
        per_tag[tag] = {
            "precision": _ratio(tp[j], n_pred[j]),
            "recall": _ratio(tp[j], n_true[j]),
            "average_precision": ap,
            "count": int(n_true[j]),
            "threshold": float(thr[j]),
        }
    overall: dict[str, float | int] = {
        "precision": _ratio(tp.sum(), n_pred.sum()),
        "recall": _ratio(tp.sum(), n_true.sum()),
        "average_precision": float(np.mean(aps)) if aps else 0.0,
        "count": int(n),
    }
    result: dict[str, Any] = {
        "kind": kind,
        "threshold": float(threshold),
        "tags": tags,
        "overall": overall,
        "per_tag": per_tag,
    }
    if kind == "multiclass":
        overall["accuracy"] = _ratio(np.sum(argmax == y), n)
        cm = np.zeros((t, t), dtype=np.int64)
        np.add.at(cm, (y, argmax), 1)
        result["confusion_matrix"] = cm.tolist()
    else:
        overall["subset_accuracy"] = _ratio(np.sum(np.all(predicted == truth, axis=1)), n)
    return result


def metrics_dataframe(metrics: Mapping[str, Any]) -> Any:
    """The metrics of :func:`compute_metrics` as a pandas DataFrame.

    One row per tag (in tag order) and a last row ``"overall"``; columns ``precision``,
    ``recall``, ``average_precision``, ``count`` and ``threshold`` (the overall row's is
    the default threshold), every one filled for every tag. Figures that exist only for
    the whole set -- ``accuracy`` (multiclass) or ``subset_accuracy`` (multilabel) -- are
    in ``frame.attrs``, not in a column that would be empty for every tag.

    Examples:
        >>> import numpy as np
        >>> m = compute_metrics([0, 1], np.array([[0.9, 0.1], [0.2, 0.8]]), ["a", "b"],
        ...                     "multiclass")
        >>> frame = metrics_dataframe(m)
        >>> frame.attrs["accuracy"], list(frame.columns)
        (1.0, ['precision', 'recall', 'average_precision', 'count', 'threshold'])
    """
    import pandas as pd

    columns = ["precision", "recall", "average_precision", "count"]
    rows = []
    index = []
    for tag, values in metrics["per_tag"].items():
        rows.append({**{c: values[c] for c in columns}, "threshold": values.get("threshold")})
        index.append(tag)
    overall = metrics["overall"]
    rows.append({**{c: overall[c] for c in columns}, "threshold": metrics.get("threshold")})
    index.append("overall")
    frame = pd.DataFrame(rows, index=pd.Index(index, name="tag"))
    frame["count"] = frame["count"].astype(int)
    frame.attrs["kind"] = metrics.get("kind")
    for extra in ("accuracy", "subset_accuracy"):
        if extra in overall:
            frame.attrs[extra] = float(overall[extra])
    return frame


def top_losses(y_true: Any, probabilities: Any, kind: str, n: int = 10) -> list[Loss]:
    """The ``n`` images with the highest cross-entropy: likely mislabelled or hard images.

    Args:
        y_true: multiclass: int ``[N]``; multilabel: 0/1 ``[N, T]``.
        probabilities: ``[N, T]`` predicted probabilities.
        kind: ``"multiclass"`` or ``"multilabel"``.
        n: how many to return (fewer when there are fewer images).

    Returns:
        :class:`Loss` tuples ``(index, loss, true, predicted)``, highest loss first (ties
        by index). Multiclass loss is ``-log p[true]``; multilabel loss is the mean binary
        cross-entropy over tags. Probabilities are clipped to ``[1e-7, 1 - 1e-7]``.

    Examples:
        >>> import numpy as np
        >>> top_losses([0, 1], np.array([[0.9, 0.1], [0.8, 0.2]]), "multiclass", n=1)
        [Loss(index=1, loss=1.6094379124341003, true=1, predicted=0)]
    """
    check_kind(kind)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    p = _as_probabilities(probabilities)
    y = _as_targets(y_true, kind, p.shape)
    losses = example_losses(y, p, kind)
    order = np.argsort(-losses, kind="mergesort")[:n]
    out = []
    for i in order:
        if kind == "multiclass":
            true: int | tuple[int, ...] = int(y[i])
            pred: int | tuple[int, ...] = int(p[i].argmax())
        else:
            true = tuple(int(j) for j in np.nonzero(y[i])[0])
            pred = tuple(int(j) for j in np.nonzero(p[i] >= 0.5)[0])
        out.append(Loss(int(i), float(losses[i]), true, pred))
    return out


def example_losses(labels: Any, probabilities: Any, kind: str) -> np.ndarray:
    """Cross-entropy of each example (unsmoothed), probabilities clipped to [1e-7, 1 - 1e-7].

    Multiclass: ``-log p[true]``; multilabel: the mean binary cross-entropy over tags.

    Examples:
        >>> example_losses([1], [[0.8, 0.2]], "multiclass").round(4).tolist()
        [1.6094]
    """
    p = np.clip(np.asarray(probabilities, np.float64), _EPS, 1 - _EPS)
    if kind == "multiclass":
        return -np.log(p[np.arange(len(p)), np.asarray(labels).astype(np.int64)])
    y = np.asarray(labels, np.float64)
    return -(y * np.log(p) + (1 - y) * np.log1p(-p)).mean(axis=1)


def validation_metrics(labels: Any, probabilities: Any, kind: str) -> dict[str, float]:
    """The figures a training loop reports per epoch and keeps its best checkpoint by.

    Args:
        labels: ``[N]`` class indices (multiclass) or ``[N, T]`` 0/1 targets (multilabel).
        probabilities: ``[N, T]`` predicted probabilities.
        kind: ``"multiclass"`` or ``"multilabel"``.

    Returns:
        ``val_loss`` (mean cross-entropy, unsmoothed) and ``val_accuracy``; multilabel adds
        ``val_average_precision`` (the mean over tags with a true image) and its accuracy
        is per tag decision at 0.5.

    Examples:
        >>> validation_metrics([0, 1], [[0.8, 0.2], [0.4, 0.6]], "multiclass")["val_accuracy"]
        1.0
    """
    check_kind(kind)
    probs = np.asarray(probabilities, np.float64)
    loss = float(example_losses(labels, probs, kind).mean()) if len(probs) else 0.0
    if kind == "multilabel":
        y = np.asarray(labels, np.float64)
        aps = [average_precision(y[:, t], probs[:, t]) for t in range(y.shape[1]) if y[:, t].any()]
        acc = float(((probs >= 0.5) == (y >= 0.5)).mean()) if len(y) else 0.0
        return {
            "val_loss": loss,
            "val_average_precision": float(np.mean(aps)) if aps else 0.0,
            "val_accuracy": acc,
        }
    idx = np.asarray(labels).astype(np.int64)
    acc = float((probs.argmax(axis=-1) == idx).mean()) if len(idx) else 0.0
    return {"val_loss": loss, "val_accuracy": acc}
