"""train.py: real (short) trainings on scikit-learn digits and synthetic tags."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest
from PIL import Image

from jupyter_imgclass import models, training
from jupyter_imgclass.data.labelled import cross_validation_folds
from jupyter_imgclass.errors import TrainingError
from jupyter_imgclass.models.apply import probabilities
from jupyter_imgclass.models.layers import l2_normalise
from jupyter_imgclass.predict import Predictor

NO_FLIP = ("shift", "brightness")  # digits are not mirror-symmetric


def _digits(n: int | None = None):
    """scikit-learn's 8x8 digits upscaled to 28x28 RGB uint8, seeded split 80/20."""
    from sklearn.datasets import load_digits

    raw = load_digits()
    small = (raw.images / 16.0 * 255.0).astype(np.uint8)
    images = np.stack(
        [
            np.asarray(Image.fromarray(im).resize((28, 28), Image.Resampling.BILINEAR))
            for im in small
        ]
    )
    images = np.repeat(images[..., None], 3, axis=3)
    labels = raw.target.astype(np.int32)
    order = np.random.default_rng(0).permutation(len(images))
    if n is not None:
        order = order[:n]
    cut = int(len(order) * 0.8)
    tr, va = order[:cut], order[cut:]
    return (
        {"image": images[tr], "label": labels[tr]},
        {"image": images[va], "label": labels[va]},
    )


@pytest.fixture(scope="module")
def digits():
    return _digits()


@pytest.fixture(scope="module")
def trained(digits):
    """One short real training shared by several tests."""
    events = []
    config = training.TrainConfig(model="small_cnn", epochs=2, batch_size=64, augment=NO_FLIP)
    result = training.fit(config, *digits, on_event=events.append)
    return result, events


def test_digits_training_beats_chance_by_far(trained, digits):
    result, events = trained
    assert result.history[-1]["val_accuracy"] > 0.8  # chance is 0.1
    assert (
        result.best_epoch
        == max(result.history, key=lambda h: (h["val_accuracy"], -h["val_loss"]))["epoch"]
    )
    assert result.val_probabilities.shape == (len(digits[1]["label"]), 10)
    np.testing.assert_allclose(result.val_probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert not result.stopped
    phases = [e["phase"] for e in events if "phase" in e]
    assert phases[:2] == ["compiling", "training"]
    epochs = [e for e in events if e.get("event") == "epoch"]
    assert [e["epoch"] for e in epochs] == [1, 2]
    keys = {"epochs", "loss", "accuracy", "val_loss", "val_accuracy", "elapsed_s", "eta_s"}
    assert keys <= set(epochs[0])
    assert any(e.get("event") == "step" and "loss" in e for e in events)


def test_weights_round_trip_give_identical_predictions(trained, digits, tmp_path):
    from safetensors.numpy import load_file, save_file

    result, _ = trained
    save_file(result.weights, str(tmp_path / "w.safetensors"))
    loaded = load_file(str(tmp_path / "w.safetensors"))
    assert set(loaded) == set(result.weights)
    tags = [str(d) for d in range(10)]
    a = Predictor("small_cnn", tags, "multiclass", result.weights).predict_arrays(
        digits[1]["image"]
    )
    b = Predictor("small_cnn", tags, "multiclass", loaded).predict_arrays(digits[1]["image"])
    np.testing.assert_array_equal(a, b)
    # The kept (best) weights are the ones whose validation probabilities were reported.
    np.testing.assert_allclose(a, result.val_probabilities, atol=1e-5)


def test_same_seed_same_weights_other_seed_other_weights():
    small = _digits(200)
    config = training.TrainConfig(
        model="small_cnn", epochs=1, batch_size=32, augment=NO_FLIP, seed=7
    )
    a = training.fit(config, *small).weights
    b = training.fit(config, *small).weights
    c = training.fit(training.TrainConfig(**{**config.__dict__, "seed": 8}), *small).weights
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["conv1.kernel"], c["conv1.kernel"])


def test_should_stop_returns_promptly_with_the_best_weights():
    small = _digits(300)
    calls = {"steps": 0}

    def should_stop():
        calls["steps"] += 1
        return calls["steps"] > 20  # 7 steps per epoch: stops in the 3rd epoch

    config = training.TrainConfig(model="small_cnn", epochs=50, batch_size=32, augment=NO_FLIP)
    result = training.fit(config, *small, should_stop=should_stop)
    assert result.stopped
    assert len(result.history) == 3 and result.history[-1].get("partial")
    best = max(result.history, key=lambda h: (h["val_accuracy"], -h["val_loss"]))
    assert result.best_epoch == best["epoch"]
    probs = Predictor(
        "small_cnn", [str(d) for d in range(10)], "multiclass", result.weights
    ).predict_arrays(small[1]["image"])
    np.testing.assert_allclose(probs, result.val_probabilities, atol=1e-5)


def test_stop_before_the_first_step_still_gives_weights():
    small = _digits(100)
    config = training.TrainConfig(model="small_cnn", epochs=5, batch_size=32)
    result = training.fit(config, *small, should_stop=lambda: True)
    assert result.stopped and result.best_epoch == 0 and result.history == []
    assert result.val_probabilities.shape == (20, 10)
    assert "head.kernel" in result.weights


def test_time_limit_ends_training():
    small = _digits(200)
    config = training.TrainConfig(
        model="small_cnn", epochs=None, time_limit_s=0.5, batch_size=32, augment=NO_FLIP
    )
    result = training.fit(config, *small)
    assert not result.stopped and len(result.history) >= 1
    assert result.best_epoch >= 1


def test_deadline_includes_compilation_and_validation():
    """The wall-clock deadline covers the compiling step, queued steps and the last
    validation pass: the run returns by it (the slack is bookkeeping, not a step)."""
    import time

    small = _digits(300)
    deadline = time.time() + 6.0
    config = training.TrainConfig(
        model="small_cnn", epochs=None, time_limit_s=1000.0, batch_size=32,
        augment=NO_FLIP, deadline=deadline,
    )  # fmt: skip
    result = training.fit(config, *small)
    assert time.time() <= deadline + 0.5
    assert result.history and not result.stopped  # trained, then ended by the deadline
    with pytest.raises(training.DeadlineError, match="time budget ran out"):
        training.fit(
            training.TrainConfig(model="small_cnn", epochs=1, deadline=time.time() - 1),
            *small,
        )


def _two_tag_images(n: int, seed: int):
    """Left half red and/or right half blue: two independent tags."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 40, (n, 28, 28, 3)).astype(np.uint8)
    labels = rng.integers(0, 2, (n, 2)).astype(np.float32)
    images[labels[:, 0] == 1, :, :14, 0] = 230
    images[labels[:, 1] == 1, :, 14:, 2] = 230
    return {"image": images, "label": labels}


def test_multilabel_training_gives_sigmoid_probabilities():
    tr, va = _two_tag_images(192, 0), _two_tag_images(48, 1)
    config = training.TrainConfig(
        model="small_cnn", kind="multilabel", epochs=3, batch_size=32, augment=("brightness",)
    )
    result = training.fit(config, tr, va)
    p = result.val_probabilities
    assert p.shape == (48, 2) and (p >= 0).all() and (p <= 1).all()
    assert not np.allclose(p.sum(axis=1), 1.0)
    assert "val_average_precision" in result.history[-1]
    assert result.history[-1]["val_average_precision"] > 0.9
    pred = Predictor("small_cnn", ["red", "blue"], "multilabel", result.weights)
    np.testing.assert_allclose(pred.predict_arrays(va["image"]), p, atol=1e-5)


def test_head_on_features_merges_into_the_full_network(trained, digits):
    result, _ = trained
    spec = models.get("small_cnn")
    backbone = training.weights_to_model(spec, 10, result.weights)
    tr, va = digits
    seen = []
    f_tr = training.extract_features(
        backbone, spec, tr["image"], on_progress=lambda d, t: seen.append(d)
    )
    f_va = training.extract_features(backbone, "small_cnn", va["image"])
    assert f_tr.shape == (len(tr["image"]), 128) and f_tr.dtype == np.float32
    assert seen[-1] == len(tr["image"])
    events = []
    config = training.TrainConfig(model="small_cnn", budget="quick", num_classes=10)
    labels = tr["label"]
    folds = cross_validation_folds(labels, "multiclass", seed=0)
    head = training.fit_head(
        config, backbone, {"features": f_tr, "label": labels}, folds=folds, on_event=events.append
    )
    assert head.head_input == "l2" and head.extra["folds"] == len(folds) == 5
    assert head.history[-1]["val_accuracy"] > 0.8  # cross-validated
    assert set(head.weights) == set(result.weights)
    np.testing.assert_array_equal(head.weights["conv1.kernel"], result.weights["conv1.kernel"])
    # One full-network Predictor (head on L2-normalised features) runs the final head.
    probs = Predictor(
        "small_cnn", [str(d) for d in range(10)], "multiclass", head.weights, head_input="l2"
    )
    expected = probabilities(
        l2_normalise(f_va) @ head.weights["head.kernel"] + head.weights["head.bias"], "multiclass"
    )
    np.testing.assert_allclose(probs.predict_arrays(va["image"]), expected, atol=1e-4)
    # Each image's out-of-fold probability comes from the head of the fold that left it out.
    for (kernel, bias), held in zip(head.extra["fold_heads"], folds, strict=True):
        oof = probabilities(l2_normalise(f_tr[held]) @ kernel + bias, "multiclass")
        np.testing.assert_allclose(head.val_probabilities[held], oof, atol=1e-5)
    assert any(e.get("event") == "epoch" for e in events)


def test_bad_arrays_are_refused_with_reasons(digits):
    tr, va = digits
    config = training.TrainConfig(model="small_cnn", epochs=1)
    with pytest.raises(TrainingError, match="labels"):
        training.fit(config, {"image": tr["image"], "label": tr["label"][:5]}, va)
    with pytest.raises(TrainingError, match="uint8"):
        training.fit(config, {"image": tr["image"].astype(np.float32), "label": tr["label"]}, va)
    with pytest.raises(TrainingError, match="augment"):
        training.fit(training.TrainConfig(augment=("rotate",), epochs=1), tr, va)


def test_fit_streams_cached_rows_a_batch_at_a_time(tmp_path):
    """Images given as a ``CachedRows`` view are read from disk batch by batch (the train
    batch, or the validation pass's part), never all at once; training equals training
    on the same arrays held in memory."""
    from jupyter_imgclass.data.cache import CachedRows, DerivativeCache

    reads: list[int] = []

    class Counted(CachedRows):
        def __getitem__(self, index):
            out = super().__getitem__(index)
            reads.append(len(out))
            return out

        def select(self, rows):
            inner = super().select(rows)
            return Counted(inner._cache, inner._items, inner.size)

    rng = np.random.default_rng(0)
    items = []
    for k in range(320):
        path = tmp_path / f"{k}.png"
        Image.fromarray(rng.integers(0, 256, (28, 28, 3), dtype=np.uint8)).save(path)
        items.append((f"{k:064x}", path))
    cache = DerivativeCache(tmp_path / "cache")
    view = cache.rows(items, 28)
    view = Counted(cache, items, 28)
    whole = cache.arrays(items, 28)
    labels = (whole[..., 0].mean(axis=(1, 2)) > 127).astype(np.int32)
    config = training.TrainConfig(model="small_cnn", epochs=2, batch_size=32, augment=False)
    streamed = training.fit(
        config,
        {"image": view.select(np.arange(256)), "label": labels[:256]},
        {"image": view.select(np.arange(256, 320)), "label": labels[256:]},
    )
    assert reads and max(reads) <= 64 < 320  # batches of 32; the 64 validation images
    held = training.fit(
        config,
        {"image": whole[:256], "label": labels[:256]},
        {"image": whole[256:], "label": labels[256:]},
    )
    np.testing.assert_allclose(
        [h["loss"] for h in streamed.history], [h["loss"] for h in held.history], rtol=1e-5
    )


def test_bfloat16_precision_trains_with_float32_master_weights(digits, trained):
    train, val = digits
    config = training.TrainConfig(
        model="small_cnn", epochs=2, batch_size=64, augment=NO_FLIP, precision="bfloat16"
    )
    result = training.fit(config, train, val)
    assert result.extra["precision"] == "bfloat16"
    assert all(np.isfinite(h["loss"]) for h in result.history)
    # float32 reaches 0.90 here; bfloat16 0.84 after 2 epochs and the same after 4
    # (0.983 / 0.992 against 0.986 / 0.989 over two seeds)
    assert result.history[-1]["val_accuracy"] > trained[0].history[-1]["val_accuracy"] - 0.15
    assert {w.dtype for w in result.weights.values()} == {np.dtype(np.float32)}
    small = {k: v[:128] for k, v in train.items()}
    auto = training.fit(dataclasses.replace(config, precision="auto", epochs=1), small, val)
    # auto: float32 on CPU (whole-network bfloat16 measured slower) with bfloat16 products
    # in small_cnn's convolutions where the CPU has them; bfloat16 on a GPU (seen on an H200)
    from jupyter_imgclass.platform import cpu_kernels

    if jax.default_backend() != "cpu":
        expected = "bfloat16"
    elif cpu_kernels.bf16_products():
        expected = "float32, bfloat16 products"
    else:
        expected = "float32"
    assert auto.extra["precision"] == expected
    exact = training.fit(dataclasses.replace(config, precision="float32", epochs=1), small, val)
    assert exact.extra["precision"] == "float32"
    with pytest.raises(TrainingError, match="precision 'fp8': choose from auto, float32"):
        training.TrainConfig(precision="fp8")
