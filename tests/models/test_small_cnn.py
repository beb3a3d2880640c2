"""small_cnn: shapes, parameter count, input size, registry entry."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jupyter_imgclass import models
from jupyter_imgclass.errors import ImgClassError
from jupyter_imgclass.models.weights import model_to_weights, weights_to_model


def _param_count(module) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(module, nnx.Param)))


def test_registered_with_its_preprocessing():
    spec = models.get("small_cnn")
    assert spec.input_size == 28 and spec.feature_dim == 128 and not spec.pretrained
    assert spec.to_json()["input_size"] == 28


def test_shapes_and_parameter_count():
    model = models.get("small_cnn").create(10, rngs=nnx.Rngs(0))
    model.eval()
    x = np.zeros((3, 28, 28, 3), np.float32)
    assert model(x).shape == (3, 10)
    assert model.features(x).shape == (3, 128)
    assert model.head.in_features == 128 and model.head.out_features == 10
    convs = 3 * 3 * (3 * 32 + 32 * 32 + 32 * 64 + 64 * 64)  # no conv bias: BatchNorm follows
    batchnorm = 2 * (32 + 32 + 64 + 64)
    dense = 7 * 7 * 64 * 128 + 128 + 128 * 10 + 10
    assert _param_count(model) == convs + batchnorm + dense == 468_586


def test_input_size_is_a_parameter_and_read_back_from_the_weights():
    spec = models.get("small_cnn")
    model = spec.create(4, rngs=nnx.Rngs(1), input_size=64)
    weights = model_to_weights(model)
    assert weights["dense1.kernel"].shape == (16 * 16 * 64, 128)
    again = weights_to_model(spec, 4, weights)
    assert again.input_size == 64
    x = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype(np.float32)
    model.eval()
    np.testing.assert_array_equal(np.asarray(again(x)), np.asarray(model(x)))


def test_bad_input_size_is_refused():
    with pytest.raises(ImgClassError, match="multiple of 4"):
        models.get("small_cnn").create(3, rngs=nnx.Rngs(0), input_size=30)


def test_flat_weight_names():
    weights = model_to_weights(models.get("small_cnn").create(3, rngs=nnx.Rngs(0)))
    assert {
        "conv1.kernel",
        "bn1.mean",
        "bn1.var",
        "bn1.scale",
        "dense1.kernel",
        "head.bias",
    } <= set(weights)
    assert not any("rngs" in k for k in weights)
    assert all(isinstance(v, np.ndarray) for v in weights.values())


@pytest.mark.parametrize(("k", "h", "w"), [(3, 10, 10), (3, 6, 9), (1, 5, 4), (5, 7, 8), (2, 6, 6)])
def test_patch_convolution_and_its_gradients_equal_xla(k, h, w):
    from jupyter_imgclass.models.layers import conv_same, xla_conv_same

    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, h, w, 5)).astype(np.float32)
    kernel = rng.normal(size=(k, k, 5, 7)).astype(np.float32)
    target = rng.normal(size=(4, h, w, 7)).astype(np.float32)

    def loss(conv):
        return lambda x, kernel: ((conv(x, kernel) - target) ** 2).sum()

    ref = jax.grad(loss(xla_conv_same), argnums=(0, 1))(x, kernel)
    got = jax.jit(jax.grad(loss(conv_same), argnums=(0, 1)))(x, kernel)
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(got[1], ref[1], rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(conv_same(x, kernel), xla_conv_same(x, kernel), rtol=1e-5, atol=1e-5)
    # bfloat16 operands, float32 accumulation: float32 outputs within the operands' rounding
    bf = jax.jit(lambda x, kernel: conv_same(x, kernel, jnp.bfloat16))
    y = bf(x, kernel)
    assert y.dtype == jnp.float32
    ref_y = xla_conv_same(x, kernel)
    assert float(jnp.linalg.norm(y - ref_y) / jnp.linalg.norm(ref_y)) < 1e-2
    got = jax.grad(lambda x, kernel: ((conv_same(x, kernel, jnp.bfloat16) - target) ** 2).sum(),
                   argnums=(0, 1))(x, kernel)  # fmt: skip
    for g, r in zip(got, ref, strict=True):
        assert g.dtype == jnp.float32
        assert float(jnp.linalg.norm(g - r) / jnp.linalg.norm(r)) < 1e-2


def test_a_network_with_xla_convolutions_trains_to_the_same_numbers():
    x = np.random.default_rng(1).normal(size=(8, 28, 28, 3)).astype(np.float32)
    grads = []
    for conv in ("patches", "xla"):
        model = models.get("small_cnn").factory(3, rngs=nnx.Rngs(0), dropout=0.0, conv=conv)
        model.train()
        grads.append(nnx.grad(lambda m: (m(x) ** 2).mean())(model))
    a, b = (jax.tree.leaves(g) for g in grads)
    for u, v in zip(a, b, strict=True):
        np.testing.assert_allclose(u, v, rtol=2e-3, atol=1e-5)
    with pytest.raises(ImgClassError, match="conv 'fast'"):
        models.get("small_cnn").factory(3, rngs=nnx.Rngs(0), conv="fast")


def test_train_and_eval_modes_compute_the_same_forward():
    model = models.get("small_cnn").factory(3, rngs=nnx.Rngs(0), dropout=0.0)
    x = np.random.default_rng(1).normal(size=(2, 28, 28, 3)).astype(np.float32)
    model.eval()
    assert all(c.deterministic for c in (model.conv1, model.conv4))
    a = model.features(x)
    model.train()
    assert not model.conv1.deterministic and not model.deterministic  # reshape pooling
    model.set_attributes(use_running_average=True)  # same statistics, training conv path
    np.testing.assert_allclose(model.features(x), a, rtol=1e-5, atol=1e-5)


def test_reshape_pooling_equals_window_pooling_with_an_elementwise_gradient():
    from jupyter_imgclass.models.small_cnn import max_pool_2x2

    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 8, 6, 4)).astype(np.float32)
    x[0, 0, 0, 0] = x[0, 1, 1, 0] = 9.0  # a tie inside one window
    window = nnx.max_pool(x, (2, 2), strides=(2, 2))
    np.testing.assert_array_equal(max_pool_2x2(x), window)
    g = jax.grad(lambda v: (max_pool_2x2(v) * np.arange(1.0, 1 + window.size).reshape(
        window.shape)).sum())(x)  # fmt: skip
    ref = jax.grad(lambda v: (nnx.max_pool(v, (2, 2), strides=(2, 2)) * np.arange(
        1.0, 1 + window.size).reshape(window.shape)).sum())(x)  # fmt: skip
    # each window's gradient lands on its maximum (split between tied maxima)
    np.testing.assert_allclose(g.reshape(3, 4, 2, 3, 2, 4).sum(axis=(2, 4)),
                               ref.reshape(3, 4, 2, 3, 2, 4).sum(axis=(2, 4)))  # fmt: skip
    untied = np.ones_like(x, bool)
    untied[0, :2, :2, 0] = False
    np.testing.assert_allclose(g[untied], ref[untied])
    assert g[0, 0, 0, 0] == g[0, 1, 1, 0] == ref[0, :2, :2, 0].sum() / 2
    with_window = models.get("small_cnn").factory(3, rngs=nnx.Rngs(0), pool="window")
    with_reshape = models.get("small_cnn").factory(3, rngs=nnx.Rngs(0))
    images = rng.normal(size=(2, 28, 28, 3)).astype(np.float32)
    np.testing.assert_allclose(with_reshape.features(images), with_window.features(images),
                               rtol=1e-6)  # fmt: skip
