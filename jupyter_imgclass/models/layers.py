"""Layers shared by the networks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

from ..errors import ImgClassError


def same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "SAME" padding (more on the bottom/right), as XLA's ``"SAME"``."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def depthwise_shifted(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    """Depthwise k×k convolution as k² strided slices times per-channel weights.

    On XLA's CPU backend a grouped convolution with one group per channel is several times
    slower than this formulation; the numbers are the same (tested).

    Args:
        x: ``[N, H, W, C]``.
        kernel: ``[k, k, C]``.
        stride: spatial stride.
    """
    k = kernel.shape[0]
    n, h, w, c = x.shape
    ph, pw = same_pads(h, k, stride), same_pads(w, k, stride)
    xp = jnp.pad(x, ((0, 0), ph, pw, (0, 0)))
    out_h, out_w = -(-h // stride), -(-w // stride)
    acc = None
    for i in range(k):
        for j in range(k):
            patch = lax.slice(
                xp,
                (0, i, j, 0),
                (n, i + (out_h - 1) * stride + 1, j + (out_w - 1) * stride + 1, c),
                (1, stride, stride, 1),
            )
            term = patch * kernel[i, j]
            acc = term if acc is None else acc + term
    return acc


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


DEPTHWISE_IMPLS = ("auto", "shifted", "grouped")


class DepthwiseConv(nnx.Module):
    """Depthwise k×k convolution without bias; picks the fast formulation per backend.

    ``impl``: ``"auto"`` (shifted multiply-adds on CPU, grouped convolution elsewhere),
    ``"shifted"`` or ``"grouped"``.
    """

    def __init__(self, channels: int, kernel_size: int, stride: int, *, rngs: nnx.Rngs):
        init = jax.nn.initializers.variance_scaling(2.0, "fan_out", "normal")
        self.kernel = nnx.Param(init(rngs.params(), (kernel_size, kernel_size, channels)))
        self.stride = stride
        self.impl = "auto"

    def __call__(self, x: jax.Array) -> jax.Array:
        impl = self.impl
        if impl == "auto":
            impl = "shifted" if jax.default_backend() == "cpu" else "grouped"
        fn = depthwise_shifted if impl == "shifted" else depthwise_grouped
        return fn(x, self.kernel[...], self.stride)


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


def relu6(x: jax.Array) -> jax.Array:
    """``min(max(x, 0), 6)``, the activation of the mobile networks."""
    return jnp.clip(x, 0.0, 6.0)
