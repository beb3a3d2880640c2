"""A small CNN for small images (28 px by default), trained from scratch.

Four 3×3 convolutions with BatchNorm and ReLU (32-32-pool-64-64-pool), a 128-unit dense
layer (the features) and the classifier ``head``. The network of ``shared/PERFORMANCE.md``.

The flattened feature map makes the dense layer's width depend on the input side, so the
input size is a parameter of :func:`small_cnn` (``input_size=64`` for photos);
``train.create_model`` passes ``TrainConfig.input_size`` and ``train.weights_to_model``
reads it back from the shape of ``dense1.kernel``.

Examples:
    >>> from flax import nnx
    >>> from jupyter_imgclass import models
    >>> model = models.get("small_cnn").create(10, rngs=nnx.Rngs(0))
    >>> model.head.out_features
    10
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

from ..errors import ImgClassError
from . import ModelSpec, register
from .layers import head_input, in_dtype

FEATURES = 128
# PyTorch's BatchNorm momentum 0.1: short trainings on small data need fresh statistics.
BN_MOMENTUM = 0.9


_DN = ("NHWC", "HWIO", "NHWC")


def _conv(x: jax.Array, w: jax.Array) -> jax.Array:
    return lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=_DN)


@jax.custom_vjp
def conv_same_matmul_grad(x: jax.Array, w: jax.Array) -> jax.Array:
    """Stride-1 "SAME" convolution whose weight gradient is one big matrix product.

    XLA's CPU backend computes the weight gradient of a convolution (a convolution with
    the batch as its feature dimension) 3-10x slower than the forward pass here (for the
    28x28 32->32 layer at batch 128: 644 ms against 34 ms). Written as ``patches^T @ dy``
    it runs at matrix-multiply speed (70 ms). The forward pass and the input gradient stay
    XLA convolutions. Same numbers up to float rounding (tested).
    """
    return _conv(x, w)


def _conv_fwd(x, w):
    return _conv(x, w), (x, w)


def _weight_grad(x: jax.Array, dy: jax.Array, k: int) -> jax.Array:
    """``dw[i, j, c, o] = sum over n, y, x of xpad[n, y+i, x+j, c] * dy[n, y, x, o]``.

    Both sides are laid out "padded-flat": the zero-padded input as rows of channels, one
    row per padded pixel, so the k*k shifted windows are k*k contiguous row ranges
    (offset ``i * padded_width + j``); ``dy`` is padded to the same grid with zeros, which
    drop the rows that fall outside the image. The shifted ranges side by side are the
    patches ``[rows, k*k*cin]``; the gradient is their transposed product with ``dy``.
    Measured against other layouts (a 4-D concatenation with batched products, the
    transposed patches, one product per shift) on one device at batch 128: fastest over
    the four layers together (149 ms against 184-212 ms); on two devices it ties with the
    4-D concatenation.
    """
    n, h, wd, cin = x.shape
    cout = dy.shape[-1]
    p = k // 2
    hp, wp = h + k - 1, wd + k - 1
    rows = n * hp * wp
    xp = jnp.pad(x, ((0, 0), (p, k - 1 - p), (p, k - 1 - p), (0, 0))).reshape(rows, cin)
    xp = jnp.pad(xp, ((0, (k - 1) * wp + k - 1), (0, 0)))
    patches = jnp.concatenate(
        [lax.slice_in_dim(xp, i * wp + j, i * wp + j + rows) for i in range(k) for j in range(k)],
        axis=1,
    )
    # The barrier keeps XLA from fusing the copies into the product (a slow loop nest).
    patches = lax.optimization_barrier(patches)
    dyp = jnp.pad(dy, ((0, 0), (0, k - 1), (0, k - 1), (0, 0))).reshape(rows, cout)
    dw = lax.dot_general(patches, dyp, (((0,), (0,)), ((), ())), preferred_element_type=jnp.float32)
    return dw.reshape(k, k, cin, cout)


def _conv_bwd(res, dy):
    x, w = res
    k = w.shape[0]
    dx = _conv(dy, jnp.flip(w, (0, 1)).transpose(0, 1, 3, 2))
    return dx, _weight_grad(x, dy, k).astype(w.dtype)


conv_same_matmul_grad.defvjp(_conv_fwd, _conv_bwd)


class Conv(nnx.Module):
    """k×k stride-1 "SAME" convolution without bias, kernel ``[k, k, in, out]``.

    ``grad="xla"`` (the default): XLA's own convolution gradients. ``grad="matmul"``: in
    training mode (``deterministic=False``, set by ``model.train()``) the weight gradient
    goes through :func:`conv_same_matmul_grad`; in eval mode it is a plain XLA
    convolution (what ONNX export and prediction trace). Measured again with jaxlib
    0.10.2 (``benchmarks/ab_small_cnn.py``, alternating rounds): building the patches
    (pads and a concatenation) cost more than the product saved, and XLA's gradient
    trained 1.45-1.46x faster with reshape pooling (674-701 against 467-479 images/s).
    """

    def __init__(self, cin: int, cout: int, k: int = 3, *, grad: str = "xla", rngs: nnx.Rngs):
        init = nnx.initializers.lecun_normal()
        self.kernel = nnx.Param(init(rngs.params(), (k, k, cin, cout), jnp.float32))
        self.grad = grad
        self.deterministic = False
        self.dtype = None  # the computation's dtype (None: the input's), as nnx.Conv's

    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.kernel[...]
        x, kernel = in_dtype(self.dtype, x, kernel)
        if not self.deterministic and self.grad == "matmul":
            return conv_same_matmul_grad(x, kernel)
        return _conv(x, kernel)


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2x2 max pooling, stride 2, of ``[N, H, W, C]`` (even ``H`` and ``W``) as a maximum
    over a reshaped array: the same values as ``nnx.max_pool(x, (2, 2), strides=(2, 2))``,
    and a gradient that is an elementwise mask (shared among tied maxima) instead of
    ``reduce_window``'s select-and-scatter."""
    n, h, w, c = x.shape
    return jnp.max(x.reshape(n, h // 2, 2, w // 2, 2, c), axis=(2, 4))


class SmallCNN(nnx.Module):
    """``features(x)`` is the 128-d dense output (after ReLU); ``head`` classifies it.

    Args:
        num_classes: outputs of ``head``.
        input_size: square input side; must be a multiple of 4 (two 2×2 poolings).
        dropout: dropout rate before ``head`` (0 disables it).
        conv_grad: ``"xla"`` (XLA's gradients; the faster, measured) or ``"matmul"``.
        pool: ``"reshape"`` (training takes the 2x2 maximum over a reshaped array, whose
            gradient is elementwise) or ``"window"`` (``reduce_window``, whose gradient
            XLA:CPU builds from iota, broadcasts and a scatter); prediction and export
            always use the window form (the same values).
        rngs: parameter and dropout randomness.
    """

    def __init__(
        self,
        num_classes: int = 10,
        *,
        input_size: int = 28,
        dropout: float = 0.2,
        conv_grad: str = "xla",
        pool: str = "reshape",
        rngs: nnx.Rngs,
    ):
        if input_size < 4 or input_size % 4:
            raise ImgClassError(f"small_cnn: input_size {input_size} must be a multiple of 4")
        self.input_size = input_size

        def conv(cin: int, cout: int) -> Conv:
            return Conv(cin, cout, 3, grad=conv_grad, rngs=rngs)

        def bn(n: int) -> nnx.BatchNorm:
            return nnx.BatchNorm(n, momentum=BN_MOMENTUM, epsilon=1e-5, rngs=rngs)

        self.conv1, self.bn1 = conv(3, 32), bn(32)
        self.conv2, self.bn2 = conv(32, 32), bn(32)
        self.conv3, self.bn3 = conv(32, 64), bn(64)
        self.conv4, self.bn4 = conv(64, 64), bn(64)
        side = input_size // 4
        self.dense1 = nnx.Linear(side * side * 64, FEATURES, rngs=rngs)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
        self.head = nnx.Linear(FEATURES, num_classes, rngs=rngs)
        self.head_input = "raw"  # or "l2" (see layers.head_input); set by ModelSpec.create
        self.pool = pool
        self.deterministic = False  # set by model.train() / model.eval()

    def _pool(self, x: jax.Array) -> jax.Array:
        if self.deterministic or self.pool == "window":
            return nnx.max_pool(x, (2, 2), strides=(2, 2))
        return max_pool_2x2(x)

    def features(self, x: jax.Array) -> jax.Array:
        """``[N, S, S, 3]`` normalised images -> ``[N, 128]`` features."""
        x = nnx.relu(self.bn1(self.conv1(x)))
        x = nnx.relu(self.bn2(self.conv2(x)))
        x = self._pool(x)
        x = nnx.relu(self.bn3(self.conv3(x)))
        x = nnx.relu(self.bn4(self.conv4(x)))
        x = self._pool(x)
        x = jnp.reshape(x, (x.shape[0], -1))
        return nnx.relu(self.dense1(x))

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.head(self.dropout(head_input(self.features(x), self.head_input)))


def small_cnn(
    num_classes: int,
    *,
    rngs: nnx.Rngs,
    pretrained: bool = False,
    input_size: int = 28,
    dropout: float = 0.2,
    conv_grad: str = "xla",
    pool: str = "reshape",
) -> SmallCNN:
    """Creates a :class:`SmallCNN` (there are no pretrained weights; ``pretrained`` is ignored)."""
    del pretrained
    return SmallCNN(
        num_classes,
        input_size=input_size,
        dropout=dropout,
        conv_grad=conv_grad,
        pool=pool,
        rngs=rngs,
    )


SPEC = register(
    ModelSpec(
        name="small_cnn",
        input_size=28,
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
        pretrained=False,
        feature_dim=FEATURES,
        factory=small_cnn,
        description="4 conv3x3+BN+ReLU, dense 128; from scratch, for small or simple images",
    )
)
