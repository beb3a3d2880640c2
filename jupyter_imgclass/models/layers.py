"""Layers shared by the networks.

- :class:`DepthwiseConv`: depthwise k×k convolution with TF "same" padding and two
  formulations that give the same numbers: ``"shifted"`` (k² strided slices times
  per-channel weights; ≈4.7× faster for EfficientNet-Lite0 on XLA's CPU backend) and
  ``"grouped"`` (``lax.conv_general_dilated`` with ``feature_group_count=C``, the native
  path on GPUs and what ONNX export uses). ``"auto"`` picks by ``jax.default_backend()``.
  The shifted form's kernel gradient runs in a C++ kernel on the CPU where one can be
  built (``platform.cpu_kernels``; fine-tuning Lite0 1.4x faster).
- :func:`conv_same`: stride-1 "SAME" k×k convolution for training; on the CPU, where the
  kernels are built, three matrix products over patch matrices
  (``platform.cpu_kernels``), with bfloat16 or float32 operands and float32 accumulation.
- :func:`same_pads`: TensorFlow "SAME" padding amounts.
- :func:`materialise`: fills an ``nnx.eval_shape`` model with seeded numpy initial values.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax

from ..errors import ImgClassError
from ..platform import cpu_kernels

_DN = ("NHWC", "HWIO", "NHWC")


def xla_conv_same(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """XLA's stride-1 "SAME" convolution, ``x [N, H, W, C]``, ``kernel [k, k, C, O]``."""
    return lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=_DN)


def conv_same(x: jax.Array, kernel: jax.Array, products=None) -> jax.Array:
    """Stride-1 "SAME" convolution (odd k) whose forward pass, input gradient and weight
    gradient are matrix products over patch matrices on the CPU.

    XLA:CPU's convolutions and their gradients ran small_cnn's four layers (batch 128) in
    245 ms; as ``patches @ W``, ``patches(dy) @ flip(W)ᵀ`` and ``patchesᵀ @ dy`` with the
    patches built by ``platform.cpu_kernels.im2col``, 155 ms in float32 and 82 ms with
    bfloat16 operands (``benchmarks/bench_conv_patches.py``). ``products``: the operands'
    dtype (``jnp.bfloat16``, or None: the input's); the products accumulate in float32 and
    the outputs come back in the input's dtype. Off the CPU, without the kernels, or for
    an even k: XLA's convolution (the same values up to the operands' rounding).
    """
    k = kernel.shape[0]
    if not cpu_kernels.available() or k % 2 == 0 or kernel.shape[1] != k:
        return xla_conv_same(x, kernel)
    return _conv_patches(x, kernel, jnp.dtype(products or x.dtype).name)


def _mm(a: jax.Array, b: jax.Array) -> jax.Array:
    return lax.dot_general(a, b, (((1,), (0,)), ((), ())), preferred_element_type=jnp.float32)


def _amx_fits(products, c: int, o: int) -> bool:
    """The AMX convolution takes it: bfloat16 operands, C a multiple of 32, O of 16."""
    return products == "bfloat16" and c % 32 == 0 and o % 16 == 0 and cpu_kernels.amx()


def _patches_forward(x, kernel, products):
    n, h, w, c = x.shape
    k, o = kernel.shape[0], kernel.shape[-1]
    if _amx_fits(products, c, o):
        return cpu_kernels.conv_amx(x, kernel).astype(x.dtype)
    p = cpu_kernels.im2col(x, k, products).reshape(n * h * w, k * k * c)
    return _mm(p, kernel.astype(products).reshape(k * k * c, o)).reshape(n, h, w, o).astype(x.dtype)


def _patches_backward(x, kernel, dy, products):
    n, h, w, c = x.shape
    k, o = kernel.shape[0], kernel.shape[-1]
    # Input gradient: the correlation of dy with the flipped kernel, its in/out swapped.
    flipped = jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2).astype(products)
    if _amx_fits(products, o, c):
        dx = cpu_kernels.conv_amx(dy, flipped)
    else:
        dx = _mm(cpu_kernels.im2col(dy, k, products).reshape(n * h * w, k * k * o),
                 flipped.reshape(k * k * o, c))  # fmt: skip
    # Weight gradient: on AMX tiles, or the transposed patches (built as such: XLA
    # transposing the row-major ones inside the product ran 10x slower) times dy.
    if _amx_fits(products, c, o) and c % 32 == 0 and o % 32 == 0:
        dk = cpu_kernels.conv_amx_kernel_grad(x, dy, k)
    else:
        dk = _mm(cpu_kernels.im2col(x, k, products, transposed=True),
                 dy.reshape(n * h * w, o).astype(products))  # fmt: skip
    return dx.reshape(n, h, w, c).astype(x.dtype), dk.reshape(kernel.shape).astype(kernel.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv_patches(x, kernel, products):
    return _conv_patches_fwd(x, kernel, products)[0]


def _conv_patches_fwd(x, kernel, products):
    y = lax.platform_dependent(
        x, kernel,
        cpu=functools.partial(_patches_forward, products=products),
        default=xla_conv_same,
    )  # fmt: skip
    return y, (x, kernel)


def _xla_conv_vjp(x, kernel, dy):
    return jax.vjp(xla_conv_same, x, kernel)[1](dy)


def _conv_patches_bwd(products, res, dy):
    x, kernel = res
    return lax.platform_dependent(
        x, kernel, dy,
        cpu=functools.partial(_patches_backward, products=products),
        default=_xla_conv_vjp,
    )  # fmt: skip


_conv_patches.defvjp(_conv_patches_fwd, _conv_patches_bwd)


def same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "SAME" padding (more on the bottom/right), as XLA's ``"SAME"``."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def in_dtype(dtype, *arrays: jax.Array) -> tuple[jax.Array, ...]:
    """``arrays`` cast to a layer's compute ``dtype`` (as is when it is None): the one
    rule of the layers that take ``dtype`` (``TrainConfig.precision``)."""
    return arrays if dtype is None else tuple(a.astype(dtype) for a in arrays)


def depthwise_shifted(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    """Depthwise k×k convolution as k² strided slices times per-channel weights.

    On XLA's CPU backend a grouped convolution with one group per channel is several times
    slower than this formulation; the numbers are the same (tested). Its gradient is
    written out (:func:`_depthwise_bwd`): differentiating the slices gives k² full-size
    pads per layer, which made EfficientNet-Lite0's backward pass 10x its forward.

    Args:
        x: ``[N, H, W, C]``.
        kernel: ``[k, k, C]``.
        stride: spatial stride.
    """
    return _depthwise(x, kernel, stride)


def _depthwise_forward(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    k = kernel.shape[0]
    n, h, w, c = x.shape
    ph, pw = same_pads(h, k, stride), same_pads(w, k, stride)
    xp = jnp.pad(x, ((0, 0), ph, pw, (0, 0)))
    out_h, out_w = -(-h // stride), -(-w // stride)
    acc = None
    for i in range(k):
        for j in range(k):
            term = _window(xp, i, j, out_h, out_w, stride) * kernel[i, j]
            acc = term if acc is None else acc + term
    return acc


def _window(xp: jax.Array, i: int, j: int, out_h: int, out_w: int, stride: int) -> jax.Array:
    """The ``(i, j)`` tap of every output position: a strided slice of the padded input."""
    n, _, _, c = xp.shape
    return lax.slice(
        xp,
        (0, i, j, 0),
        (n, i + (out_h - 1) * stride + 1, j + (out_w - 1) * stride + 1, c),
        (1, stride, stride, 1),
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _depthwise(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    return _depthwise_forward(x, kernel, stride)


def _depthwise_fwd(x, kernel, stride):
    return _depthwise_forward(x, kernel, stride), (x, kernel)


def _depthwise_bwd(stride, res, dy):
    """Input gradient: ``dy`` spread back to the stride (interior zeros), padded, and
    correlated with the flipped kernel (k² slices, as the forward); kernel gradient: on the
    CPU ``platform.cpu_kernels``' one pass over ``x`` and ``dy`` where it is built, else
    :func:`_depthwise_kernel_grad` (the same numbers)."""
    x, kernel = res
    k = kernel.shape[0]
    n, h, w, c = x.shape
    # Materialise dy once: fused into each of the k² slices below, its producers (the
    # batch norm and activation gradients) were recomputed k² times.
    dy = lax.optimization_barrier(dy)
    (plh, phh), (plw, phw) = same_pads(h, k, stride), same_pads(w, k, stride)
    zero = jnp.zeros((), dy.dtype)
    dyp = lax.pad(
        dy,
        zero,
        ((0, 0, 0), (k - 1 - plh, k - 1 - phh, stride - 1), (k - 1 - plw, k - 1 - phw, stride - 1),
         (0, 0, 0)),
    )  # fmt: skip
    dx = None
    for i in range(k):
        for j in range(k):
            term = lax.slice(dyp, (0, i, j, 0), (n, i + h, j + w, c)) * kernel[k - 1 - i, k - 1 - j]
            dx = term if dx is None else dx + term
    if cpu_kernels.available():
        dk = lax.platform_dependent(
            x, dy,
            cpu=lambda x, dy: cpu_kernels.depthwise_kernel_grad(x, dy, k, stride, (plh, plw)),
            default=lambda x, dy: _depthwise_kernel_grad(x, dy, k, stride),
        )  # fmt: skip
    else:
        dk = _depthwise_kernel_grad(x, dy, k, stride)
    return dx.astype(x.dtype), dk.astype(kernel.dtype)


_depthwise.defvjp(_depthwise_fwd, _depthwise_bwd)


def _depthwise_kernel_grad(x: jax.Array, dy: jax.Array, k: int, stride: int) -> jax.Array:
    """``dk [k, k, C]`` in XLA's operations: k² multiply-reduces of the padded input's
    windows with ``dy`` (on the CPU ``platform.cpu_kernels`` does it 4.7-9x faster)."""
    n, h, w, c = x.shape
    (plh, phh), (plw, phw) = same_pads(h, k, stride), same_pads(w, k, stride)
    out_h, out_w = dy.shape[1], dy.shape[2]
    xp = lax.optimization_barrier(jnp.pad(x, ((0, 0), (plh, phh), (plw, phw), (0, 0))))
    return jnp.stack(
        [
            jnp.sum(_window(xp, i, j, out_h, out_w, stride) * dy, axis=(0, 1, 2))
            for i in range(k)
            for j in range(k)
        ]
    ).reshape(k, k, c)


def depthwise_grouped(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    """The same depthwise convolution through XLA's grouped convolution (fast on GPUs)."""
    c = x.shape[-1]
    return lax.conv_general_dilated(
        x,
        kernel[:, :, None, :],
        (stride, stride),
        "SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=c,
    )


@jax.custom_vjp
def pointwise(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """``x [..., Cin]`` times ``kernel [Cin, Cout]`` over the channels (a 1x1 convolution),
    whose kernel gradient transposes the smaller of ``x`` and ``dy``."""
    return lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())))


def _pointwise_fwd(x, kernel):
    return pointwise(x, kernel), (x, kernel)


def _pointwise_bwd(res, dy):
    """Left to itself, XLA:CPU computes the kernel gradient as ``dy^T x`` after copying
    ``dy`` into a transposed layout, whichever side is larger (a ``[96, 401408]`` copy of
    355 ms for Lite0's first expansion). Here the side with fewer channels is transposed,
    behind a barrier so that the product sees it materialised."""
    x, kernel = res
    dx = lax.dot_general(dy, kernel, (((dy.ndim - 1,), (1,)), ((), ())))
    x2, dy2 = x.reshape(-1, x.shape[-1]), dy.reshape(-1, dy.shape[-1])
    if x2.shape[1] <= dy2.shape[1]:
        dk = lax.optimization_barrier(x2.T) @ dy2
    else:
        dk = (lax.optimization_barrier(dy2.T) @ x2).T
    return dx.astype(x.dtype), dk.astype(kernel.dtype)


pointwise.defvjp(_pointwise_fwd, _pointwise_bwd)


class Conv(nnx.Conv):
    """``nnx.Conv`` whose 1x1, stride-1 case trains as a matrix product.

    XLA's CPU backend differentiates a 1x1 convolution slowly: for ``[32, 112, 112, 16]``
    into 96 channels the weight gradient took 379 ms and the input gradient 198 ms, the
    same products written as a ``dot`` 59 and 68 ms (forward 8 against 6 ms). In training
    mode (``deterministic=False``, set by ``model.train()``) such a convolution is that
    ``dot`` over the channels; in eval mode (prediction, export) it stays a convolution.
    Same parameters, same values.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.deterministic = False

    def __call__(self, x: jax.Array) -> jax.Array:
        strides = self.strides if isinstance(self.strides, tuple | list) else (self.strides,) * 2
        if self.deterministic or tuple(self.kernel_size) != (1, 1) or tuple(strides) != (1, 1):
            return super().__call__(x)
        kernel = self.kernel[...][0, 0]
        x, kernel = in_dtype(self.dtype, x, kernel)
        y = pointwise(x, kernel)
        if self.bias is not None:
            y = y + self.bias[...]
        return y


DEPTHWISE_IMPLS = ("auto", "shifted", "grouped")


class DepthwiseConv(nnx.Module):
    """Depthwise k×k convolution without bias; picks the fast formulation per backend.

    ``impl``: ``"auto"`` (shifted multiply-adds on CPU, grouped convolution elsewhere),
    ``"shifted"`` or ``"grouped"``.
    """

    def __init__(self, channels: int, kernel_size: int, stride: int, *, rngs: nnx.Rngs):
        # He-normal over the k*k taps each output channel sees (TF's depthwise init).
        std = np.sqrt(2.0 / kernel_size**2)
        shape = (kernel_size, kernel_size, channels)
        self.kernel = nnx.Param(std * jax.random.normal(rngs.params(), shape))
        self.stride = stride
        self.impl = "auto"
        self.dtype = None  # the computation's dtype (None: the input's), as nnx.Conv's

    def __call__(self, x: jax.Array) -> jax.Array:
        impl = self.impl
        if impl == "auto":
            impl = "shifted" if jax.default_backend() == "cpu" else "grouped"
        fn = depthwise_shifted if impl == "shifted" else depthwise_grouped
        kernel = self.kernel[...]
        x, kernel = in_dtype(self.dtype, x, kernel)
        return fn(x, kernel, self.stride)


def set_depthwise_impl(model: nnx.Module, impl: str) -> int:
    """Sets ``impl`` (``"auto"``, ``"shifted"``, ``"grouped"``) on every depthwise layer.

    Returns:
        How many layers were switched. The choice is static (part of the graph
        definition), so a jitted function recompiles for the new formulation.

    Examples:
        >>> from flax import nnx
        >>> layer = DepthwiseConv(8, 3, 1, rngs=nnx.Rngs(0))
        >>> set_depthwise_impl(layer, "grouped")
        1
    """
    if impl not in DEPTHWISE_IMPLS:
        raise ImgClassError(f"depthwise impl {impl!r}: choose one of {', '.join(DEPTHWISE_IMPLS)}")
    count = 0
    for _, module in nnx.iter_modules(model):
        if isinstance(module, DepthwiseConv):
            module.impl = impl
            count += 1
    return count


_TRUNC_STD = 0.87962566103423978  # standard deviation of a unit normal truncated to [-2, 2]


def _truncated_normal(rng: np.random.Generator, shape: tuple, std: float) -> np.ndarray:
    """Normal in [-2, 2] standard deviations, rescaled to ``std`` (as jax's lecun_normal)."""
    z = rng.standard_normal(shape)
    bad = np.abs(z) > 2
    while bad.any():
        z[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(z) > 2
    return (z * (std / _TRUNC_STD)).astype(np.float32)


def materialise(model: nnx.Module, rngs: nnx.Rngs) -> nnx.Module:
    """Gives every still-abstract variable of an ``nnx.eval_shape`` model a value, in place.

    Uses numpy with a seed drawn from ``rngs`` and the layers' usual initialisers (conv and
    dense kernels lecun-normal, biases 0, batch-norm scale 1 / shift 0 / mean 0 / var 1,
    depthwise He-normal); dropout layers get fresh streams from ``rngs``. Eagerly running
    JAX's initialisers for a few hundred variables took 40 s on the busy 2-core CPU (one
    compilation per shape); numpy draws the 4.6M values of EfficientNet-Lite0 in ~0.1 s.
    Under a trace (``nnx.eval_shape``, ``jit``) it draws with ``jax.random`` instead.

    Returns:
        ``model``, now concrete.

    Raises:
        ImgClassError: for an abstract variable of a layer type it does not know.
    """
    key = rngs.params()
    if isinstance(key, jax.core.Tracer):
        # Under eval_shape / jit the JAX initialisers cost nothing: draw with them.
        counter = iter(range(1 << 30))

        def normal(shape: tuple, std: float, truncated: bool) -> jax.Array:
            k = jax.random.fold_in(key, next(counter))
            if truncated:
                return jax.random.truncated_normal(k, -2.0, 2.0, shape) * (std / _TRUNC_STD)
            return jax.random.normal(k, shape) * std
    else:
        rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())

        def normal(shape: tuple, std: float, truncated: bool) -> np.ndarray:
            if truncated:
                return _truncated_normal(rng, shape, std)
            return rng.standard_normal(shape) * std

    ones = {"scale", "var"}
    for _, module in nnx.iter_modules(model):
        if isinstance(module, nnx.Dropout) and isinstance(module.rngs, nnx.RngStream):
            if isinstance(module.rngs.key.get_value(), jax.ShapeDtypeStruct):
                module.rngs = rngs[module.rng_collection].fork()
            continue
        for name, var in vars(module).items():
            if not isinstance(var, nnx.Variable):
                continue
            value = var.get_value()
            if not isinstance(value, jax.ShapeDtypeStruct):
                continue
            shape = tuple(value.shape)
            if isinstance(module, DepthwiseConv):
                new = normal(shape, np.sqrt(2.0 / shape[0] ** 2), truncated=False)
            elif isinstance(module, nnx.Conv | nnx.Linear) and name == "kernel":
                new = normal(shape, 1.0 / np.sqrt(np.prod(shape[:-1])), truncated=True)
            elif isinstance(module, nnx.Conv | nnx.Linear | nnx.BatchNorm):
                new = jnp.ones(shape) if name in ones else jnp.zeros(shape)
            else:
                raise ImgClassError(f"cannot initialise {type(module).__name__}.{name}")
            var.set_value(jnp.asarray(new, dtype=value.dtype))
    return model


HEAD_INPUTS = ("raw", "l2")
"""What a network's head sees: its pooled features as they are, or scaled to unit length."""


def l2_normalise(x: jax.Array) -> jax.Array:
    """Rows of ``[N, D]`` scaled to unit length (a zero row stays zero); numpy in, JAX out."""
    x = jnp.asarray(x, jnp.float32)
    # The floor before the root: a zero row has a finite gradient (0 * inf is NaN).
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), 1e-24))


def head_input(features: jax.Array, mode: str) -> jax.Array:
    """The head's input: ``features`` (``"raw"``) or :func:`l2_normalise` of them (``"l2"``)."""
    return l2_normalise(features) if mode == "l2" else features


def relu6(x: jax.Array) -> jax.Array:
    """``min(max(x, 0), 6)``, the activation of the mobile networks."""
    return jnp.clip(x, 0.0, 6.0)
