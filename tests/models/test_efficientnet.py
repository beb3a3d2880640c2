"""EfficientNet-Lite0: structure, the ImageNet port on real photos, the depthwise layer."""

from __future__ import annotations

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from PIL import Image
from skimage import data as skdata

from jupyter_imgclass import models
from jupyter_imgclass.models.apply import normalise
from jupyter_imgclass.errors import ImgClassError
from jupyter_imgclass.models import efficientnet_lite0 as E
from jupyter_imgclass.models.layers import (
    DepthwiseConv,
    depthwise_grouped,
    depthwise_shifted,
    same_pads,
    set_depthwise_impl,
)

# The few ImageNet classes the photos below are about (no label file is downloaded).
IMAGENET_LABELS = {
    281: "tabby cat",
    282: "tiger cat",
    285: "Egyptian cat",
    287: "lynx",
    504: "coffee mug",
    967: "espresso",
    968: "cup",
}
CATS = {281, 282, 285}
COFFEE = {967, 968, 504}


def eval_transform(image: np.ndarray, size: int = 224) -> np.ndarray:
    """TF EfficientNet's eval transform: central crop of size/(size+32) of the shorter
    side, bicubic resize to ``size``; uint8 ``[size, size, 3]``."""
    h, w = image.shape[:2]
    crop = int(size / (size + 32) * min(h, w))
    top, left = (h - crop + 1) // 2, (w - crop + 1) // 2
    im = Image.fromarray(image[top : top + crop, left : left + crop])
    return np.asarray(im.resize((size, size), Image.BICUBIC))


@pytest.fixture(scope="module")
def imagenet_model():
    model = E.create(1000, rngs=nnx.Rngs(0), pretrained=True)
    model.eval()
    return model


def test_registered_with_its_preprocessing():
    spec = models.get("efficientnet_lite0")
    assert spec.input_size == 224
    assert spec.feature_dim == 1280
    assert spec.pretrained
    assert spec.mean == pytest.approx((127 / 255,) * 3, abs=1e-3)
    assert spec.std == pytest.approx((128 / 255,) * 3, abs=1e-3)
    assert "efficientnet_lite0" in models.names()


def test_import_registers_without_reading_weights():
    code = (
        "from jupyter_imgclass import models\n"
        "spec = models.get('efficientnet_lite0')\n"
        "from jupyter_imgclass.models import efficientnet_lite0 as E\n"
        "import sys\n"
        "assert E.imagenet_state_dict.cache_info().currsize == 0\n"
        "assert 'torch' not in sys.modules\n"
        "print(spec.name)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "efficientnet_lite0"


def test_structure_and_parameter_count():
    model = nnx.eval_shape(lambda: E.EfficientNetLite0(1000, rngs=nnx.Rngs(0)))
    params = nnx.state(model, nnx.Param)
    count = sum(int(np.prod(v.get_value().shape)) for _, v in nnx.to_flat_state(params))
    assert count == 4_652_008  # Lite0: 4.65M with the 1000-way classifier
    assert count - (1280 * 1000 + 1000) == 3_371_008  # the backbone
    sd = E.imagenet_state_dict()
    stats = ("running_mean", "running_var", "num_batches_tracked")
    assert count == sum(v.size for k, v in sd.items() if not k.endswith(stats))
    assert len(model.blocks) == 16
    strided = [i for i, b in enumerate(model.blocks) if b.depthwise.stride == 2]
    assert strided == [1, 3, 5, 11]
    assert model.stem.out_features == 32 and model.conv_head.out_features == 1280
    assert all(
        bn.epsilon == 1e-3 for _, bn in nnx.iter_modules(model) if isinstance(bn, nnx.BatchNorm)
    )
    assert isinstance(model.head, nnx.Linear)


def test_weights_map_from_pytorch_layout(imagenet_model):
    sd = E.imagenet_state_dict()
    np.testing.assert_array_equal(
        imagenet_model.stem.kernel[...], sd["_conv_stem.weight"].transpose(2, 3, 1, 0)
    )
    np.testing.assert_array_equal(
        imagenet_model.blocks[3].depthwise.kernel[...][1, 2],
        sd["_blocks.3._depthwise_conv.weight"][:, 0, 1, 2],
    )
    np.testing.assert_array_equal(imagenet_model.head.kernel[...], sd["_fc.weight"].T)
    np.testing.assert_array_equal(
        imagenet_model.blocks[15].bn2.var[...], sd["_blocks.15._bn2.running_var"]
    )


def test_imagenet_predictions_on_real_photos(imagenet_model):
    spec = models.get("efficientnet_lite0")
    batch = np.stack([eval_transform(skdata.chelsea()), eval_transform(skdata.coffee())])
    logits = nnx.jit(lambda m, x: m(x))(imagenet_model, normalise(batch, spec.mean, spec.std))
    probs = np.asarray(jax.nn.softmax(logits, axis=-1))
    assert probs.shape == (2, 1000)
    top5 = np.argsort(-probs, axis=1)[:, :5]
    named = [
        [(int(i), IMAGENET_LABELS.get(int(i), "?"), round(float(p[i]), 3)) for i in t]
        for p, t in zip(probs, top5, strict=True)
    ]
    cat, coffee = top5
    assert cat[0] in CATS, named[0]
    assert len(CATS & set(cat.tolist())) >= 2, named[0]
    assert coffee[0] in COFFEE, named[1]
    assert probs[1, 967] > 0.5, named[1]  # espresso, confidently


def test_fresh_head_features_and_cached_weights(imagenet_model):
    hits = E.imagenet_state_dict.cache_info().hits
    model = models.get("efficientnet_lite0").create(5, rngs=nnx.Rngs(1))
    assert E.imagenet_state_dict.cache_info().hits > hits  # read once per process
    assert E.imagenet_state_dict() is E.imagenet_state_dict()
    assert isinstance(model.head, nnx.Linear) and model.head.kernel.shape == (1280, 5)
    assert model.dropout.rate == 0.2
    assert E.create(2, rngs=nnx.Rngs(2), dropout=0.3).dropout.rate == 0.3  # train.py passes it
    np.testing.assert_array_equal(model.bn1.mean[...], imagenet_model.bn1.mean[...])
    model.eval()
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 64, 64, 3), np.float32))

    @nnx.jit
    def both(m, x):
        return m.features(x), m(x)

    feats, logits = both(model, x)
    assert feats.shape == (2, 1280) and logits.shape == (2, 5)
    assert np.isfinite(np.asarray(logits)).all()
    np.testing.assert_allclose(
        np.asarray(logits), np.asarray(model.head(feats)), rtol=1e-5, atol=1e-5
    )

    # The whole network gives the same features with either depthwise formulation.
    assert set_depthwise_impl(model, "grouped") == 16
    grouped = nnx.jit(lambda m, x: m.features(x))(model, x)
    np.testing.assert_allclose(np.asarray(grouped), np.asarray(feats), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "k, stride, h, w", [(3, 1, 9, 9), (3, 2, 8, 11), (5, 1, 7, 6), (5, 2, 13, 10)]
)
def test_shifted_depthwise_equals_grouped_conv(k, stride, h, w):
    rng = np.random.default_rng(k * 10 + stride)
    x = jnp.asarray(rng.standard_normal((2, h, w, 6), np.float32))
    kernel = jnp.asarray(rng.standard_normal((k, k, 6), np.float32))
    shifted = jax.jit(depthwise_shifted, static_argnums=2)(x, kernel, stride)
    grouped = jax.jit(depthwise_grouped, static_argnums=2)(x, kernel, stride)
    assert shifted.shape == grouped.shape == (2, -(-h // stride), -(-w // stride), 6)
    np.testing.assert_allclose(np.asarray(shifted), np.asarray(grouped), atol=1e-4, rtol=1e-4)


def test_same_padding_is_tensorflow_style():
    assert same_pads(224, 3, 2) == (0, 1)  # the extra row goes bottom/right
    assert same_pads(224, 5, 1) == (2, 2)
    assert same_pads(7, 5, 2) == (2, 2)


def test_depthwise_layer_impl_choice():
    layer = DepthwiseConv(4, 3, 2, rngs=nnx.Rngs(0))
    x = jnp.ones((1, 5, 5, 4))
    out = {
        impl: np.asarray(layer(x))
        for impl in ("auto", "shifted", "grouped")
        if set_depthwise_impl(layer, impl)
    }
    np.testing.assert_allclose(out["shifted"], out["grouped"], atol=1e-5)
    np.testing.assert_allclose(out["auto"], out["shifted"], atol=1e-5)
    with pytest.raises(ImgClassError, match="depthwise impl 'fast'"):
        set_depthwise_impl(layer, "fast")


def test_create_without_weights_is_seeded_and_concrete():
    a = E.create(3, rngs=nnx.Rngs(7), pretrained=False)
    b = E.create(3, rngs=nnx.Rngs(7), pretrained=False)
    c = E.create(3, rngs=nnx.Rngs(8), pretrained=False)
    leaves = [v.get_value() for _, v in nnx.to_flat_state(nnx.state(a, nnx.Param))]
    assert not any(isinstance(v, jax.ShapeDtypeStruct) for v in leaves)
    np.testing.assert_array_equal(
        a.blocks[4].depthwise.kernel[...], b.blocks[4].depthwise.kernel[...]
    )
    assert not np.array_equal(a.stem.kernel[...], c.stem.kernel[...])
    fan_in = 1152  # lecun-normal: std 1/sqrt(fan_in) for the last projection
    std = float(np.std(np.asarray(a.blocks[15].project_conv.kernel[...])))
    assert std == pytest.approx(1 / np.sqrt(fan_in), rel=0.05)
    np.testing.assert_array_equal(a.bn1.var[...], np.ones(1280, np.float32))
    # Inside a trace (train.py builds structures with nnx.eval_shape) it stays abstract.
    abstract = nnx.eval_shape(lambda: E.create(3, rngs=nnx.Rngs(0), pretrained=False))
    assert isinstance(abstract.stem.kernel.get_value(), jax.ShapeDtypeStruct)
