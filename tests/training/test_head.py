"""The quick budget's head against scikit-learn's LogisticRegression on the same features."""

from __future__ import annotations

import time

import numpy as np
import pytest
from flax import nnx
from sklearn.linear_model import LogisticRegressionCV

from jupyter_imgclass import training
from jupyter_imgclass.data import datasets
from jupyter_imgclass.data.labelled import cross_validation_folds, stratified_folds
from jupyter_imgclass.errors import DatasetError, TrainingError
from jupyter_imgclass.models.layers import l2_normalise
from jupyter_imgclass.training.logistic import C_GRID


class _Backbone(nnx.Module):
    """Only the head matters here: features are given, the head's shape is checked."""

    def __init__(self, dim: int, classes: int):
        self.head = nnx.Linear(dim, classes, rngs=nnx.Rngs(0))


def _few_shot(x, y, per_tag: int, seed: int):
    rng = np.random.default_rng(seed)
    train = np.concatenate(
        [rng.choice(np.flatnonzero(y == c), per_tag, replace=False) for c in np.unique(y)]
    )
    return train, np.setdiff1d(np.arange(len(y)), train)


def _ours_and_sklearn(x, y, per_tag: int, seed: int) -> tuple[float, float, float]:
    train, test = _few_shot(x, y, per_tag, seed)
    classes = len(np.unique(y))
    config = training.TrainConfig(
        model="small_cnn", kind="multiclass", num_classes=classes, class_weights=None
    )
    folds = cross_validation_folds(y[train], "multiclass", seed=seed)
    started = time.perf_counter()
    head = training.fit_head(
        config,
        _Backbone(x.shape[1], classes),
        {"features": x[train], "label": y[train]},
        folds=folds,
    )
    seconds = time.perf_counter() - started
    xn = np.asarray(l2_normalise(x))
    logits = xn[test] @ head.weights["head.kernel"] + head.weights["head.bias"]
    ours = float((logits.argmax(1) == y[test]).mean())
    # The same features, the same C grid, the same folds; scikit-learn picks C by accuracy.
    cv = [(np.setdiff1d(np.arange(len(train)), f), f) for f in folds]
    sk = LogisticRegressionCV(Cs=list(C_GRID), cv=cv, max_iter=5000).fit(xn[train], y[train])
    return ours, float(sk.score(xn[test], y[test])), seconds


@pytest.mark.parametrize("per_tag", [10, 30])
def test_digits_head_matches_scikit_learn_logistic_regression(per_tag):
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    scores = [_ours_and_sklearn(x.astype(np.float32), y, per_tag, seed) for seed in (0, 1)]
    ours, theirs = np.mean([s[0] for s in scores]), np.mean([s[1] for s in scores])
    assert ours >= theirs - 0.005, (ours, theirs)


def test_fashion_mnist_head_matches_scikit_learn_logistic_regression():
    try:
        ds = datasets.fashion_mnist(n_per_class=60, split="test", seed=0, rgb=False)
    except DatasetError as exc:
        pytest.fail(f"make test installs dataset-fashion-mnist: {exc}")
    x = ds.images.reshape(len(ds.images), -1).astype(np.float32)
    y = np.asarray(ds.labels)
    ours, theirs, _ = _ours_and_sklearn(x, y, 20, seed=0)
    assert ours >= theirs - 0.005, (ours, theirs)


def test_folds_must_cover_the_data():
    x = np.random.default_rng(0).normal(size=(12, 8)).astype(np.float32)
    y = np.repeat([0, 1], 6)
    config = training.TrainConfig(model="small_cnn", kind="multiclass", num_classes=2)
    with pytest.raises(TrainingError, match="covering all 12"):
        training.fit_head(
            config, _Backbone(8, 2), {"features": x, "label": y}, folds=[np.arange(6)]
        )
    folds = stratified_folds(y, "multiclass", 3, seed=0)
    head = training.fit_head(config, _Backbone(8, 2), {"features": x, "label": y}, folds=folds)
    assert head.val_probabilities.shape == (12, 2)


def test_cross_validation_folds_rule():
    assert [len(f) for f in cross_validation_folds(np.repeat([0, 1], 10), "multiclass")] == [4] * 5
    # a tag of 3 images: 3 folds; fewer than 12 images: leave-one-out
    assert len(cross_validation_folds(np.array([0] * 3 + [1] * 20), "multiclass")) == 3
    assert len(cross_validation_folds(np.array([0, 0, 1, 1, 1]), "multiclass")) == 5
    folds = cross_validation_folds(np.eye(3)[np.arange(30) % 3], "multilabel")
    assert sorted(np.concatenate(folds).tolist()) == list(range(30))
