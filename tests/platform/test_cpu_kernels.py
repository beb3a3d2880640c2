"""The hand-written CPU kernels (``platform.cpu_kernels``): the same numbers as XLA's
formulation, sharded or not, and a clean fallback when they cannot be built."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jupyter_imgclass.models.layers import (
    _depthwise_kernel_grad,
    conv_same,
    depthwise_shifted,
    same_pads,
    xla_conv_same,
)
from jupyter_imgclass.platform import cpu_kernels
from jupyter_imgclass.training.config import product_dtype

needs_compiler = pytest.mark.skipif(
    cpu_kernels.compiler() is None, reason="no C++ compiler on this machine"
)


@needs_compiler
def test_kernels_build_where_a_compiler_is_found():
    assert cpu_kernels.available(), cpu_kernels.status()
    assert "built with" in cpu_kernels.status()


# odd sizes, both strides, C not a multiple of the vector width, one image, an image
# smaller than the kernel
CASES = [(3, 1, 9, 9, 4, 2), (3, 2, 10, 7, 20, 3), (5, 2, 11, 12, 33, 2), (5, 1, 8, 8, 16, 1),
         (3, 2, 7, 7, 5, 4), (5, 1, 3, 4, 7, 2), (3, 2, 1, 1, 3, 2)]  # fmt: skip


@needs_compiler
@pytest.mark.parametrize(("k", "stride", "h", "w", "c", "n"), CASES)
def test_depthwise_kernel_gradient_equals_xla_formulation(k, stride, h, w, c, n):
    rng = np.random.default_rng(k + 10 * stride + h + c)
    x = jnp.asarray(rng.standard_normal((n, h, w, c), np.float32))
    oh, ow = -(-h // stride), -(-w // stride)
    dy = jnp.asarray(rng.standard_normal((n, oh, ow, c), np.float32))
    pads = (same_pads(h, k, stride)[0], same_pads(w, k, stride)[0])
    ref = np.asarray(_depthwise_kernel_grad(x, dy, k, stride))
    eager = np.asarray(cpu_kernels.depthwise_kernel_grad(x, dy, k, stride, pads))
    jitted = np.asarray(jax.jit(
        lambda a, b: cpu_kernels.depthwise_kernel_grad(a, b, k, stride, pads))(x, dy))  # fmt: skip
    assert eager.shape == (k, k, c)
    np.testing.assert_allclose(eager, ref, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(jitted, eager)


@needs_compiler
def test_layer_gradient_is_the_same_with_and_without_the_kernel(monkeypatch):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((3, 12, 11, 24), np.float32))
    kernel = jnp.asarray(rng.standard_normal((5, 5, 24), np.float32))

    def grads():
        loss = lambda a, b: (depthwise_shifted(a, b, 2) ** 2).sum()  # noqa: E731
        return jax.jit(jax.grad(loss, (0, 1)))(x, kernel)

    assert cpu_kernels.available()
    with_kernel = grads()
    monkeypatch.setattr(cpu_kernels, "_state", {"ok": False, "reason": "test"})
    without = grads()
    for a, b in zip(with_kernel, without, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-3)


def _patches(x: np.ndarray, k: int) -> np.ndarray:
    """The patch matrix in numpy: [N, H, W, k*k*C], column (i*k + j)*C + c."""
    n, h, w, c = x.shape
    p = k // 2
    xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    return np.concatenate([xp[:, i : i + h, j : j + w] for i in range(k) for j in range(k)], -1)


# k 1/3/5, odd sizes, 3 channels, one image, an image smaller than the kernel
IM2COL = [(3, 2, 9, 9, 4), (1, 3, 5, 4, 6), (5, 2, 7, 8, 3), (3, 1, 1, 1, 5), (5, 3, 3, 2, 16)]


@needs_compiler
@pytest.mark.parametrize(("k", "n", "h", "w", "c"), IM2COL)
@pytest.mark.parametrize(
    ("src", "dst"),
    [
        ("float32", "float32"),
        ("float32", "bfloat16"),
        ("bfloat16", "bfloat16"),
        ("bfloat16", "float32"),
    ],
)
def test_im2col_equals_the_shifted_windows(k, n, h, w, c, src, dst):
    rng = np.random.default_rng(k + h + c)
    x = jnp.asarray(rng.standard_normal((n, h, w, c), np.float32), src)
    ref = np.asarray(jnp.asarray(_patches(np.asarray(x.astype(jnp.float32)), k)).astype(dst))
    rows = cpu_kernels.im2col(x, k, dst)
    cols = jax.jit(lambda a: cpu_kernels.im2col(a, k, dst, transposed=True))(x)
    assert rows.shape == (n, h, w, k * k * c) and rows.dtype == jnp.dtype(dst)
    assert cols.shape == (k * k * c, n * h * w) and cols.dtype == jnp.dtype(dst)
    np.testing.assert_array_equal(np.asarray(rows), ref)
    np.testing.assert_array_equal(np.asarray(cols), ref.reshape(-1, k * k * c).T)


@needs_compiler
def test_im2col_rounds_to_bfloat16_as_xla_does():
    """Round to nearest even, halfway cases, overflow to infinity, NaN kept NaN."""
    one = np.float32(1.0).view(np.uint32)
    special = np.array([one + 0x8000, one + 0x18000, one + 0x7FFF, one + 0x8001,
                        np.float32(3.4e38).view(np.uint32), 0x7F800001, 0xFF800000],
                       np.uint32).view(np.float32)  # fmt: skip
    x = np.concatenate([special, np.random.default_rng(0).standard_normal(57, np.float32)])
    x = jnp.asarray(x.reshape(1, 1, 64, 1))
    got = np.asarray(cpu_kernels.im2col(x, 1, jnp.bfloat16)).astype(np.float32).ravel()
    ref = np.asarray(x.astype(jnp.bfloat16)).astype(np.float32).ravel()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    keep = ~np.isnan(ref)
    np.testing.assert_array_equal(got[keep], ref[keep])


needs_amx = pytest.mark.skipif(
    cpu_kernels.compiler() is None or not cpu_kernels.amx(), reason="no AMX tiles on this CPU"
)


@needs_amx
@pytest.mark.parametrize(
    ("n", "h", "w", "c", "o", "k"),
    # a row shorter than the 16-pixel tile, two overlapping runs, several 64-output
    # groups with a partial one, 1x1 and 5x5, a 1x1 image
    [
        (2, 5, 7, 32, 16, 3),
        (3, 28, 28, 32, 32, 3),
        (2, 14, 14, 64, 64, 3),
        (1, 9, 40, 64, 80, 5),
        (2, 3, 16, 96, 48, 1),
        (1, 1, 1, 32, 16, 3),
    ],  # fmt: skip
)
def test_amx_convolution_equals_xla_on_bfloat16_operands(n, h, w, c, o, k):
    rng = np.random.default_rng(n + h + c + o)
    x = jnp.asarray(rng.standard_normal((n, h, w, c), np.float32)).astype(jnp.bfloat16)
    kernel = jnp.asarray(rng.standard_normal((k, k, c, o), np.float32)).astype(jnp.bfloat16)
    x, kernel = x.astype(jnp.float32), kernel.astype(jnp.float32)  # exact in bfloat16
    ref = jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", precision="highest",
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"))  # fmt: skip
    got = jax.jit(cpu_kernels.conv_amx)(x, kernel)
    assert got.shape == (n, h, w, o) and got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-5, atol=1e-4)


@needs_amx
@pytest.mark.parametrize(
    ("n", "h", "w", "c", "o", "k"),
    # odd sizes, more images than groups, 1x1 and 5x5 kernels, a 1x1 image
    [
        (2, 5, 7, 32, 32, 3),
        (3, 28, 28, 32, 32, 3),
        (2, 14, 14, 32, 64, 3),
        (1, 9, 40, 64, 96, 5),
        (9, 3, 16, 96, 32, 1),
        (1, 1, 1, 32, 32, 3),
    ],  # fmt: skip
)
def test_amx_kernel_gradient_equals_xla_on_bfloat16_operands(n, h, w, c, o, k):
    rng = np.random.default_rng(n + h + c + o)
    x = jnp.asarray(rng.standard_normal((n, h, w, c), np.float32)).astype(jnp.bfloat16)
    dy = jnp.asarray(rng.standard_normal((n, h, w, o), np.float32)).astype(jnp.bfloat16)
    conv = lambda b: xla_conv_same(x.astype(jnp.float32), b)  # noqa: E731
    zero = jnp.zeros((k, k, c, o), jnp.float32)
    with jax.default_matmul_precision("highest"):
        ref = jax.vjp(conv, zero)[1](dy.astype(jnp.float32))[0]
    got = jax.jit(cpu_kernels.conv_amx_kernel_grad, static_argnums=2)(x, dy, k)
    assert got.shape == (k, k, c, o) and got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-5, atol=1e-3)
    # float32 inputs are rounded to the same bfloat16 operands: the same sums
    wide = cpu_kernels.conv_amx_kernel_grad(x.astype(jnp.float32), dy.astype(jnp.float32), k)
    np.testing.assert_array_equal(np.asarray(wide), np.asarray(got))


def test_bf16_products_reads_the_cpus_flags():
    flags = set(cpu_kernels._cpu_id().split())
    assert cpu_kernels.bf16_products() is bool(flags & {"amx_bf16", "avx512_bf16"})


SHARDED = """
import json, numpy as np, jax, jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from jupyter_imgclass.platform import cpu_kernels
from jupyter_imgclass.models.layers import _depthwise_kernel_grad
assert cpu_kernels.available(), cpu_kernels.status()
mesh = Mesh(np.asarray(jax.devices()), ("batch",))
rng = np.random.default_rng(1)
x = jnp.asarray(rng.standard_normal((8, 15, 15, 40), np.float32))
dy = jnp.asarray(rng.standard_normal((8, 8, 8, 40), np.float32))
put = lambda a: jax.device_put(a, NamedSharding(mesh, P("batch")))
f = jax.jit(lambda a, b: cpu_kernels.depthwise_kernel_grad(a * 2.0, b, 5, 2, (2, 2)))
got = f(put(x), put(dy))
hlo = f.lower(put(x), put(dy)).compile().as_text()
ref = _depthwise_kernel_grad(x * 2.0, dy, 5, 2)  # same_pads(15, 5, 2) = (2, 2)
print(json.dumps({"devices": len(jax.devices()), "err": float(jnp.max(jnp.abs(got - ref))),
                  "scale": float(jnp.max(jnp.abs(ref))), "all_gather": "all-gather" in hlo,
                  "all_reduce": "all-reduce" in hlo}))
"""


@needs_compiler
def test_batch_sharded_kernel_sums_each_devices_images():
    """Over two devices each runs the kernel on its half of the batch and the partial
    sums are all-reduced; no device gathers the other's images."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    out = subprocess.run([sys.executable, "-c", SHARDED], env=env, capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["devices"] == 2
    assert r["err"] <= 1e-5 * r["scale"]
    assert r["all_reduce"] and not r["all_gather"]


SHARDED_CONV = """
import json, numpy as np, jax, jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from jupyter_imgclass.platform import cpu_kernels
from jupyter_imgclass.models.layers import conv_same
assert cpu_kernels.available(), cpu_kernels.status()
mesh = Mesh(np.asarray(jax.devices()), ("batch",))
rng = np.random.default_rng(1)
c, o, products = (32, 32, jnp.bfloat16) if cpu_kernels.amx() else (6, 5, None)
x = jnp.asarray(rng.standard_normal((8, 9, 7, c), np.float32))
w = jnp.asarray(rng.standard_normal((3, 3, c, o), np.float32))
loss = lambda a, b: (jnp.tanh(conv_same(a * 2.0, b, products)) ** 2).sum()
f = jax.jit(jax.grad(loss, (0, 1)))
put = lambda a: jax.device_put(a, NamedSharding(mesh, P("batch")))
rep = lambda a: jax.device_put(a, NamedSharding(mesh, P()))
got = f(put(x), rep(w))
hlo = f.lower(put(x), rep(w)).compile().as_text()
ref = jax.jit(jax.grad(loss, (0, 1)), device=jax.devices()[0])(x, w)
got, ref = [np.asarray(a) for a in got], [np.asarray(b) for b in ref]
err = max(float(np.max(np.abs(a - b)) / np.max(np.abs(b))) for a, b in zip(got, ref))
print(json.dumps({"devices": len(jax.devices()), "err": err, "all_gather": "all-gather" in hlo,
                  "all_reduce": "all-reduce" in hlo,
                  "calls": hlo.count("imgclass_im2col") + hlo.count("imgclass_amx_conv")}))
"""


@needs_compiler
def test_batch_sharded_patch_convolution_builds_each_devices_patches():
    """Over two devices each builds the patches of its own images; the weight gradient's
    partial products are all-reduced; nothing is gathered."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    out = subprocess.run([sys.executable, "-c", SHARDED_CONV], env=env, capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["devices"] == 2 and r["calls"] >= 3  # forward, dy's patches, transposed
    assert r["err"] <= 1e-5
    assert r["all_reduce"] and not r["all_gather"]


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({"IMGCLASS_CPU_KERNELS": "0"}, "IMGCLASS_CPU_KERNELS=0"),
        ({"CXX": "/nonexistent/c++"}, "no C++ compiler"),
        ({"CXX": "false"}, "build failed"),
    ],  # fmt: skip
)
def test_kernels_off_say_why_and_training_falls_back(monkeypatch, tmp_path, env, reason):
    """Switched off, no compiler, or a compiler that fails: ``available()`` is False with
    the reason, and the layer's gradient still comes (from XLA's formulation)."""
    monkeypatch.setattr(cpu_kernels, "_state", {})
    monkeypatch.setenv("IMGCLASS_KERNEL_CACHE", str(tmp_path / "kernels"))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert cpu_kernels.available() is False
    assert reason in cpu_kernels.status()
    x = jnp.ones((1, 5, 5, 3), jnp.float32)
    dk = jax.grad(lambda b: depthwise_shifted(x, b, 1).sum())(jnp.ones((3, 3, 3), jnp.float32))
    # every tap of a 5x5 image of ones under "same" padding sees 20 of the 25 positions
    # (16 for a corner tap, 20 for an edge, 25 for the centre)
    np.testing.assert_allclose(np.asarray(dk[:, :, 0]), [[16, 20, 16], [20, 25, 20], [16, 20, 16]])
    w = jnp.ones((3, 3, 3, 2), jnp.float32)
    dw = jax.grad(lambda b: conv_same(x, b, jnp.bfloat16).sum())(w)  # XLA's convolution
    np.testing.assert_array_equal(np.asarray(dw), np.asarray(
        jax.grad(lambda b: xla_conv_same(x, b).sum())(w)))  # fmt: skip
    assert not list((tmp_path / "kernels").glob("*.so"))


def test_nothing_is_built_off_the_cpu_backend(monkeypatch, tmp_path):
    """On a GPU (or TPU) host the kernels are never compiled: ``available()`` is False
    without calling the compiler, and the training dtype is chosen without them."""
    monkeypatch.setattr(cpu_kernels, "_state", {})
    monkeypatch.setenv("IMGCLASS_KERNEL_CACHE", str(tmp_path / "kernels"))
    monkeypatch.setattr(cpu_kernels.jax, "default_backend", lambda: "gpu")
    monkeypatch.setattr(cpu_kernels, "compiler", lambda: pytest.fail("a compiler was asked for"))
    assert product_dtype("auto", "gpu") is None
    assert "ok" not in cpu_kernels._state  # not even looked at
    assert cpu_kernels.available() is False
    assert "backend is gpu" in cpu_kernels.status()
    assert not (tmp_path / "kernels").exists()


def test_the_training_dtype_readies_the_kernels_before_the_first_step(monkeypatch, tmp_path):
    """``fit`` asks ``product_dtype`` before its timed first step; on the CPU that call
    builds (or loads) the kernels, so tracing the step finds them decided."""
    monkeypatch.setattr(cpu_kernels, "_state", {})
    monkeypatch.setenv("IMGCLASS_KERNEL_CACHE", str(tmp_path / "kernels"))
    monkeypatch.setenv("CXX", "false")  # a build that fails at once: the decision is what counts
    assert product_dtype("float32", "cpu") is None
    assert cpu_kernels._state["ok"] is False and "build failed" in cpu_kernels._state["reason"]
