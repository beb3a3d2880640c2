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


# ------------------------------------------------------- untagged images (issue 35, item 2)
def _blobs(per_class: int, seed: int, classes: int = 3, dim: int = 16):
    """Well separated clusters along a curved line: few labels leave the head unsure, the
    untagged images fill the clusters in."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (classes, dim)) * 3
    x = np.concatenate([c + rng.normal(0, 1.0, (per_class, dim)) for c in centres])
    y = np.repeat(np.arange(classes), per_class)
    return x.astype(np.float32), y


def _spread(x, y, pool, seed=0, c_grid=C_GRID):
    classes = int(y.max()) + 1
    config = training.TrainConfig(
        model="small_cnn", kind="multiclass", num_classes=classes, class_weights=None, seed=seed
    )
    folds = cross_validation_folds(y, "multiclass", seed=seed)
    data = {"features": x, "label": y}
    head = training.fit_head(config, _Backbone(x.shape[1], classes), data, folds=folds,
                             c_grid=c_grid)  # fmt: skip
    result, report = training.spread_unlabelled(config, head, data, pool, folds=folds)
    return head, result, report, folds


def test_untagged_images_join_the_head_when_cross_validation_says_they_help():
    x, y = _blobs(60, seed=1)
    labelled = np.concatenate([np.flatnonzero(y == c)[:3] for c in range(3)])
    pool = np.delete(x, labelled, axis=0)
    head, result, report, _ = _spread(x[labelled], y[labelled], pool)
    assert report["images"] == len(pool) == 171
    loss = report["cv_log_loss"]
    assert report["used"] is True and loss["with"] < loss["without"]
    assert report["reason"].startswith("171 untagged images used")
    assert result.extra["unlabelled"] == 171
    assert result.history[-1]["val_loss"] < head.history[-1]["val_loss"]
    # the final head changed, and still knows its clusters
    assert not np.allclose(result.weights["head.kernel"], head.weights["head.kernel"])
    xn = np.asarray(l2_normalise(x))
    logits = xn @ result.weights["head.kernel"] + result.weights["head.bias"]
    assert (logits.argmax(1) == y).mean() > 0.95


def test_untagged_images_never_score_an_image_with_its_own_label():
    """A tagged image half-way between clusters 0 and 1, tagged 0 and then 1: its fold's
    head never saw that tag (the image is untagged to the fold's spreading and outside
    its training rows), so its out-of-fold probabilities stay the same, while the final
    head, which trains on the tag, moves towards it."""
    x, y = _blobs(60, seed=2)
    labelled = np.concatenate([np.flatnonzero(y == c)[:6] for c in range(3)])
    pool = np.delete(x, labelled, axis=0)
    mid = (x[y == 0].mean(0) + x[y == 1].mean(0)) / 2
    xs = np.concatenate([x[labelled], [mid]]).astype(np.float32)
    i = len(xs) - 1
    config = training.TrainConfig(
        model="small_cnn", kind="multiclass", num_classes=3, class_weights=None, seed=0
    )  # no class weights: one changed tag changes nothing else
    folds = cross_validation_folds(np.concatenate([y[labelled], [0]]), "multiclass", seed=0)
    oof, final = [], []
    for tag in (0, 1):
        data = {"features": xs, "label": np.concatenate([y[labelled], [tag]])}
        head = training.fit_head(config, _Backbone(16, 3), data, folds=folds, c_grid=[10.0])
        result, report = training.spread_unlabelled(config, head, data, pool, folds=folds)
        assert report["used"], report
        oof.append(result.val_probabilities[i])
        xn = np.asarray(l2_normalise(xs[i : i + 1]))
        logits = xn @ result.weights["head.kernel"] + result.weights["head.bias"]
        final.append(np.exp(logits[0]) / np.exp(logits[0]).sum())
    # All problems share one L-BFGS run (training.logistic), so a changed problem moves
    # the others by the solver's tolerance: 0.005 allows that and no more.
    np.testing.assert_allclose(oof[1], oof[0], atol=5e-3)
    assert final[1][1] - final[0][1] > 0.05, final  # the tag does reach the final head


def test_untagged_images_are_left_out_with_the_reason_when_they_do_not_help():
    x, y = _blobs(30, seed=3)
    head, result, report, _ = _spread(x, y, np.zeros((0, 16), np.float32))
    assert result is head and report == {"images": 0, "used": False,
                                         "reason": "no untagged images"}  # fmt: skip
    # a pool of one tight clump far from every cluster: spreading gives it one tag, which
    # only pulls the head away; whichever way it goes, the switch follows the figures
    rng = np.random.default_rng(0)
    clump = (rng.normal(0, 0.05, (200, 16)) + 9).astype(np.float32)
    head, result, report, _ = _spread(x, y, clump)
    loss = report["cv_log_loss"]
    assert report["used"] == (loss["with"] < loss["without"])
    if not report["used"]:
        assert result is head and report["reason"].startswith("not used: label spreading")
    multilabel = training.TrainConfig(model="small_cnn", kind="multilabel", num_classes=2)
    labels = np.eye(2, dtype=np.float32)[y % 2]
    folds = cross_validation_folds(labels, "multilabel", seed=0)
    head = training.fit_head(multilabel, _Backbone(16, 2), {"features": x, "label": labels},
                             folds=folds)  # fmt: skip
    same, report = training.spread_unlabelled(
        multilabel, head, {"features": x, "label": labels}, clump, folds=folds
    )
    assert same is head and report["reason"] == "label spreading needs one tag per image"
