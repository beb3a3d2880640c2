"""predict.py: batching, padding, every kind of input, sorted predictions."""

from __future__ import annotations

import io

import numpy as np
import pytest
from flax import nnx
from PIL import Image

from jupyter_imgclass import models
from jupyter_imgclass.models.weights import model_to_weights
from jupyter_imgclass.predict import Prediction, Predictor

TAGS = ["cat", "dog", "fox"]


@pytest.fixture(scope="module")
def weights():
    return model_to_weights(models.get("small_cnn").create(len(TAGS), rngs=nnx.Rngs(3)))


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, (70, 28, 28, 3), dtype=np.uint8)


def test_padded_batches_equal_one_by_one(weights, images):
    pred = Predictor("small_cnn", TAGS, "multiclass", weights)
    together = pred.predict_arrays(images)  # 64 + 6 (padded)
    alone = np.concatenate([pred.predict_arrays(images[i : i + 1]) for i in range(len(images))])
    assert together.shape == (70, 3) and together.dtype == np.float32
    np.testing.assert_allclose(together, alone, atol=1e-5)
    np.testing.assert_allclose(together.sum(axis=1), 1.0, atol=1e-5)


def test_multilabel_gives_independent_sigmoids(weights, images):
    pred = Predictor("small_cnn", TAGS, "multilabel", weights)
    p = pred.predict_arrays(images[:5])
    assert ((p > 0) & (p < 1)).all() and not np.allclose(p.sum(axis=1), 1.0)


def test_every_kind_of_input_gives_sorted_predictions(weights, images, tmp_path):
    pred = Predictor("small_cnn", TAGS, "multiclass", weights)
    arr = images[0]
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    path = tmp_path / "x.png"
    path.write_bytes(buf.getvalue())
    expected = pred.predict_arrays(arr[None])[0]
    for item in (arr, buf.getvalue(), path, str(path), Image.fromarray(arr)):
        (preds,) = pred.predict([item])
        assert all(isinstance(p, Prediction) for p in preds)
        assert [p.tag for p in preds] == [TAGS[i] for i in np.argsort(-expected, kind="stable")]
        probs = [p.probability for p in preds]
        assert probs == sorted(probs, reverse=True)
        np.testing.assert_allclose(probs, np.sort(expected)[::-1], atol=1e-5)


def test_other_sizes_are_resized(weights):
    pred = Predictor("small_cnn", TAGS, "multiclass", weights)
    big = np.full((2, 56, 40, 3), 128, np.uint8)
    small = np.full((2, 28, 28, 3), 128, np.uint8)
    np.testing.assert_allclose(pred.predict_arrays(big), pred.predict_arrays(small), atol=1e-5)


def test_input_size_travels_with_the_predictor():
    spec = models.get("small_cnn")
    w64 = model_to_weights(spec.create(2, rngs=nnx.Rngs(0), input_size=64))
    pred = Predictor("small_cnn", ["a", "b"], "multiclass", w64, input_size=64)
    assert pred.input_size == 64
    assert pred.predict_arrays(np.zeros((3, 64, 64, 3), np.uint8)).shape == (3, 2)


def test_weights_that_do_not_fit_are_refused(weights):
    from jupyter_imgclass.errors import ImgClassError

    with pytest.raises(ImgClassError, match="head"):
        Predictor("small_cnn", ["a", "b"], "multiclass", weights)  # 3-way weights, 2 tags
    broken = dict(weights)
    del broken["bn2.var"]
    with pytest.raises(ImgClassError, match="bn2.var"):
        Predictor("small_cnn", TAGS, "multiclass", broken)
