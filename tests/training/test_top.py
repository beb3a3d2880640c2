"""The advanced budget's top fine-tuning on cached activations (training.top.fit_top)."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest

from jupyter_imgclass import models, training
from jupyter_imgclass.data.labelled import cross_validation_folds
from jupyter_imgclass.errors import TrainingError
from jupyter_imgclass.models.apply import extract_features, extract_lower, probabilities
from jupyter_imgclass.training.top import _Top

SIZE = 64  # any size works; small keeps the test fast


@pytest.fixture(scope="module")
def setup():
    """Two tags of coloured noise, the head by cross-validation, the lower activations."""
    rng = np.random.default_rng(0)
    colours = [(200, 40, 40), (40, 40, 200)]
    images = np.concatenate(
        [np.clip(np.array(c) + rng.integers(-60, 60, (12, SIZE, SIZE, 3)), 0, 255) for c in colours]
    ).astype(np.uint8)
    labels = np.repeat([0, 1], 12)
    spec = models.get("efficientnet_lite0")
    config = training.TrainConfig(
        model=spec.name, budget="advanced", num_classes=2, input_size=SIZE, seed=0
    )
    backbone = training.create_model(config, pretrained=True)
    folds = cross_validation_folds(labels, "multiclass", seed=0)
    head = training.fit_head(
        dataclasses.replace(config, label_smoothing=0.0),
        backbone,
        {"features": extract_features(backbone, spec, images), "label": labels},
        folds=folds,
    )
    model = training.weights_to_model(
        spec, 2, head.weights, input_size=SIZE, head_input=head.head_input
    )
    split = model.top_split()
    data = {
        "activation": extract_lower(model, spec, images, split),
        "mirrored": extract_lower(model, spec, images[:, :, ::-1], split),
        "label": labels,
    }
    return config, model, split, folds, head, data, images, spec


def test_the_split_is_the_last_stage_and_lower_then_upper_is_features(setup):
    _, model, split, *_, images, spec = setup
    assert split == 15 and model.top_split(2) == 11 and model.top_split(7) == 0
    x = np.asarray(images[:4], np.float32) / 255.0
    x = (x - np.asarray(spec.mean)) / np.asarray(spec.std)
    whole = np.asarray(model.features(x))
    np.testing.assert_allclose(np.asarray(model.upper(model.lower(x, split), split)), whole)


def test_every_image_is_scored_out_of_fold_and_only_the_top_changes(setup):
    config, model, split, folds, head, data, images, spec = setup
    events = []
    top = training.fit_top(
        config,
        model,
        data,
        split=split,
        folds=folds,
        fold_heads=head.extra["fold_heads"],
        epochs=3,
        on_event=events.append,
    )
    assert 1 <= top.best_epoch <= 3 and len(top.history) == 3
    assert top.val_probabilities.shape == (24, 2)
    np.testing.assert_allclose(top.val_probabilities.sum(1), 1.0, atol=1e-5)
    assert [e["epoch"] for e in events if e.get("event") == "epoch"] == [1, 2, 3]
    assert top.head_input == "l2" and top.extra["split"] == split
    before = head.weights
    for name, value in top.weights.items():
        changed = not np.array_equal(value, before[name])
        trainable = name.startswith(("head.", "conv_head.", "bn1.", f"blocks.{split}."))
        is_param = not any(k in name for k in ("mean", "var"))
        assert changed == (trainable and is_param), name  # statistics and lower blocks fixed
    # The network the weights make predicts what the training's own view of them does.
    tuned = training.weights_to_model(spec, 2, top.weights, input_size=SIZE, head_input="l2")
    net = _Top(tuned, split, "multiclass", 1e-4, 0.0)
    x = np.asarray(images, np.float32) / 255.0
    x = (x - np.asarray(spec.mean)) / np.asarray(spec.std)
    direct = np.asarray(probabilities(tuned(x), "multiclass"))
    via_top = net.predict(net.start(net.final_head), data["activation"])
    np.testing.assert_allclose(direct, via_top, atol=1e-4)
    assert (direct.argmax(1) == data["label"]).mean() == 1.0


def test_deadline_stop_and_bad_inputs(setup):
    config, model, split, folds, head, data, *_ = setup
    kwargs = dict(split=split, folds=folds, fold_heads=head.extra["fold_heads"], epochs=2)
    late = dataclasses.replace(config, deadline=time.time() - 1)
    with pytest.raises(training.DeadlineError, match="time budget"):
        training.fit_top(late, model, data, **kwargs)
    with pytest.raises(TrainingError, match="stopped"):
        training.fit_top(config, model, data, should_stop=lambda: True, **kwargs)
    with pytest.raises(TrainingError, match="labels"):
        training.fit_top(config, model, {**data, "label": data["label"][:5]}, **kwargs)
    with pytest.raises(TrainingError, match="folds"):
        training.fit_top(config, model, data, **{**kwargs, "fold_heads": kwargs["fold_heads"][:1]})
