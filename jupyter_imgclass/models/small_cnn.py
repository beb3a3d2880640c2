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
    the batch as its feature dimension) about 10x slower than the forward pass. Written
    as ``patches^T @ dy`` (the k*k shifted copies of the input side by side) it runs
    at matrix-multiply speed. The forward pass and the input gradient stay XLA
    convolutions. Same numbers up to float rounding (tested).
    """
    return _conv(x, w)


def _conv_fwd(x, w):
    return _conv(x, w), (x, w)


def _conv_bwd(res, dy):
    x, w = res
    k, _, cin, cout = w.shape
    n, h, wd, _ = x.shape
    dx = _conv(dy, jnp.flip(w, (0, 1)).transpose(0, 1, 3, 2))
    p = k // 2
    xp = jnp.pad(x, ((0, 0), (p, k - 1 - p), (p, k - 1 - p), (0, 0)))
    patches = jnp.concatenate(
        [xp[:, i : i + h, j : j + wd, :] for i in range(k) for j in range(k)], axis=-1
    )
    # The barrier keeps XLA from fusing the copies into the product (a slow loop nest).
    patches = lax.optimization_barrier(patches)
    rows = n * h * wd
    groups = 16 if rows % 16 == 0 else 1  # a batch of products parallelises better
    dw = jnp.einsum(
        "gri,gro->io",
        patches.reshape(groups, rows // groups, k * k * cin),
        dy.reshape(groups, rows // groups, cout),
    )
    return dx, dw.reshape(k, k, cin, cout).astype(w.dtype)


conv_same_matmul_grad.defvjp(_conv_fwd, _conv_bwd)


class Conv(nnx.Module):
    """k×k stride-1 "SAME" convolution without bias, kernel ``[k, k, in, out]``.

    In training mode (``deterministic=False``, set by ``model.train()``) the gradient
    goes through :func:`conv_same_matmul_grad`; in eval mode it is a plain XLA
    convolution (what ONNX export and prediction trace).
    """

    def __init__(self, cin: int, cout: int, k: int = 3, *, grad: str = "matmul", rngs: nnx.Rngs):
        init = nnx.initializers.lecun_normal()
        self.kernel = nnx.Param(init(rngs.params(), (k, k, cin, cout), jnp.float32))
        self.grad = grad
        self.deterministic = False

    def __call__(self, x: jax.Array) -> jax.Array:
        if not self.deterministic and self.grad == "matmul":
            return conv_same_matmul_grad(x, self.kernel[...])
        return _conv(x, self.kernel[...])


class SmallCNN(nnx.Module):
    """``features(x)`` is the 128-d dense output (after ReLU); ``head`` classifies it.

    Args:
        num_classes: outputs of ``head``.
        input_size: square input side; must be a multiple of 4 (two 2×2 poolings).
        dropout: dropout rate before ``head`` (0 disables it).
        conv_grad: ``"matmul"`` (fast weight gradients on CPU) or ``"xla"``.
        rngs: parameter and dropout randomness.
    """

    def __init__(
        self,
        num_classes: int = 10,
        *,
        input_size: int = 28,
        dropout: float = 0.2,
        conv_grad: str = "matmul",
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

    def features(self, x: jax.Array) -> jax.Array:
        """``[N, S, S, 3]`` normalised images -> ``[N, 128]`` features."""
        x = nnx.relu(self.bn1(self.conv1(x)))
        x = nnx.relu(self.bn2(self.conv2(x)))
        x = nnx.max_pool(x, (2, 2), strides=(2, 2))
        x = nnx.relu(self.bn3(self.conv3(x)))
        x = nnx.relu(self.bn4(self.conv4(x)))
        x = nnx.max_pool(x, (2, 2), strides=(2, 2))
        x = jnp.reshape(x, (x.shape[0], -1))
        return nnx.relu(self.dense1(x))

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.head(self.dropout(self.features(x)))


def small_cnn(
    num_classes: int,
    *,
    rngs: nnx.Rngs,
    pretrained: bool = False,
    input_size: int = 28,
    dropout: float = 0.2,
    conv_grad: str = "matmul",
) -> SmallCNN:
    """Creates a :class:`SmallCNN` (there are no pretrained weights; ``pretrained`` is ignored)."""
    del pretrained
    return SmallCNN(
        num_classes, input_size=input_size, dropout=dropout, conv_grad=conv_grad, rngs=rngs
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
