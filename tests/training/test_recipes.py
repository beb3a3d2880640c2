"""The training recipes on plain arrays: no Project, no folder, no thread."""

from __future__ import annotations

import numpy as np
import pytest

from jupyter_imgclass.data.labelled import LabelledSet
from jupyter_imgclass.errors import TrainingError
from jupyter_imgclass.models.apply import extract_features
from jupyter_imgclass.training import recipes
from jupyter_imgclass.training.options import TrainOptions

SIZE = 64


def _blobs(per_class: int = 8, seed: int = 0):
    """Three tags of coloured squares with noise, uint8 [N, SIZE, SIZE, 3]."""
    rng = np.random.default_rng(seed)
    colours = [(220, 40, 40), (40, 200, 60), (50, 60, 210)]
    images, labels = [], []
    for k, colour in enumerate(colours):
        for _ in range(per_class):
            im = rng.integers(0, 60, (SIZE, SIZE, 3))
            x, y = rng.integers(0, SIZE // 2, 2)
            im[y : y + SIZE // 2, x : x + SIZE // 2] = colour
            images.append(im.astype(np.uint8))
            labels.append(k)
    data = LabelledSet(np.arange(len(labels)), np.array(labels, np.int32), ["r", "g", "b"],
                       "multiclass")  # fmt: skip
    return np.stack(images), data


def _inputs(images, calls):
    def features(backbone, spec, size, on_progress):
        calls.append(("features", spec.name, size))
        return extract_features(backbone, spec, images, on_progress=on_progress)

    def load(size, stream, on_progress):
        calls.append(("images", size, stream))
        on_progress(len(images), len(images))
        return images

    return recipes.Inputs(features=features, images=load)


def test_quick_recipe_trains_a_cross_validated_head_from_plain_arrays():
    images, data = _blobs()
    events, calls = [], []
    options = TrainOptions(model="efficientnet_lite0", input_size=SIZE)
    trained = recipes.train(
        options, data, _inputs(images, calls), on_event=events.append, should_stop=lambda: False
    )
    assert calls == [("features", "efficientnet_lite0", SIZE)]
    assert trained.evaluation == {"method": "cross-validation", "folds": 5, "images": 24}
    assert trained.result.head_input == "l2" and trained.result.val_probabilities.shape == (24, 3)
    accuracy = (trained.result.val_probabilities.argmax(1) == data.labels).mean()
    assert accuracy > 0.8  # colours: out-of-fold, every image scored by a head that never saw it
    assert {"preparing", "extracting features"} <= {e.get("phase") for e in events}


def test_a_stop_while_extracting_features_ends_the_recipe_with_the_reason():
    images, data = _blobs(per_class=6)
    options = TrainOptions(model="efficientnet_lite0", input_size=SIZE)
    with pytest.raises(TrainingError, match="stopped while extracting features"):
        recipes.train(options, data, _inputs(images, []), on_event=lambda e: None,
                      should_stop=lambda: True)  # fmt: skip


def test_advanced_without_time_to_fine_tune_keeps_the_head_and_says_why():
    images, data = _blobs(per_class=6)
    events = []
    options = TrainOptions(
        budget="advanced", model="efficientnet_lite0", input_size=SIZE, minutes=0.2
    )  # fmt: skip  (12 s: under the 20 s fine-tuning needs)
    trained = recipes.train(options, data, _inputs(images, []), on_event=events.append,
                            should_stop=lambda: False)  # fmt: skip
    assert trained.result.head_input == "l2"  # the head, not a fine-tuned top
    message = "no time left to fine-tune; kept the transfer-learned head"
    assert trained.warnings == [message]
    assert {"phase": "warning", "message": message} in events


def test_the_default_network_and_who_spreads_over_processes():
    from jupyter_imgclass import models

    assert recipes.default_model(recipes.TRANSFER_MAX_IMAGES) == "efficientnet_lite0"
    assert recipes.default_model(recipes.TRANSFER_MAX_IMAGES + 1) == "small_cnn"
    small, lite = models.get("small_cnn"), models.get("efficientnet_lite0")
    assert recipes.spreads(small, TrainOptions(budget="advanced"))
    assert not recipes.spreads(small, TrainOptions(budget="quick"))
    assert not recipes.spreads(lite, TrainOptions(budget="advanced"))


@pytest.mark.parametrize(
    "options, says",
    [
        ({"budget": "turbo"}, "budget 'turbo'"),
        ({"model": "resnet9000"}, "unknown model 'resnet9000'"),
        ({"epochs": 2.5}, "epochs 2.5: must be a whole number"),
        ({"batch_size": 0}, "batch_size 0"),
        ({"seed": -1}, "seed -1"),
        ({"minutes": float("nan")}, "minutes nan: must be a positive number"),
        ({"learning_rate": True}, "learning_rate True"),
        ({"input_size": 4096}, "input_size 4096"),
        ({"name": "  "}, "name '  '"),
        ({"name": "first try"}, "name 'first try': use 1 to 64 letters"),
        ({"name": "a/../b"}, "name 'a/../b'"),
        ({"epoch": 3}, "unknown training option\\(s\\) epoch; choose from budget, model"),
    ],
)
def test_train_options_refuse_each_bad_value_by_name(options, says):
    with pytest.raises(TrainingError, match=says):
        TrainOptions.from_keywords(**options)


def test_choose_keeps_the_backbone_of_lowest_cv_log_loss():
    images, data = _blobs(per_class=6)
    calls = []
    options = TrainOptions(model="choose", input_size=SIZE)  # every backbone is tried
    trained = recipes.train(
        options, data, _inputs(images, calls), on_event=lambda e: None, should_stop=lambda: False
    )
    assert [c[1] for c in calls] == list(recipes.BACKBONES)  # each one's features, once
    choice = trained.choice
    assert choice["by"] == "cv_log_loss" and set(choice["candidates"]) == set(recipes.BACKBONES)
    losses = {name: c["cv_log_loss"] for name, c in choice["candidates"].items()}
    assert choice["chosen"] == trained.model == min(losses, key=losses.get)
    assert all(
        0 <= c["cv_accuracy"] <= 1 and c["seconds"] > 0 for c in choice["candidates"].values()
    )
    assert trained.input_size == SIZE and trained.result.weights  # the chosen one's head
    # A named network is trained as asked, and so is the default: no search.
    named = recipes.train(
        TrainOptions(model="efficientnet_lite1", input_size=SIZE), data, _inputs(images, []),
        on_event=lambda e: None, should_stop=lambda: False,
    )  # fmt: skip
    assert named.choice is None and named.model == "efficientnet_lite1"
    assert recipes.first_model(TrainOptions(), 10) == "efficientnet_lite0"
    assert recipes.first_model(TrainOptions(model="choose"), 10) == recipes.BACKBONES[0]
