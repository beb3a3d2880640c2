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

from ..errors import ImgClassError
from . import ModelSpec, register
from .layers import conv_same, head_input, in_dtype, xla_conv_same

FEATURES = 128
# PyTorch's BatchNorm momentum 0.1: short trainings on small data need fresh statistics.
BN_MOMENTUM = 0.9


class Conv(nnx.Module):
    """k×k stride-1 "SAME" convolution without bias, kernel ``[k, k, in, out]``.

    ``impl="patches"`` (the default): in training mode (``deterministic=False``, set by
    ``model.train()``) :func:`.layers.conv_same`, which on the CPU runs the forward pass
    and both gradients as matrix products over patch matrices, its operands in
    ``products`` (``jnp.bfloat16`` or None: the computation's dtype; set by the training
    loop from ``TrainConfig.precision``) with float32 accumulation. ``impl="xla"``: XLA's
    convolution and its gradients. In eval mode it is always XLA's convolution (what
    prediction and ONNX export trace). ``benchmarks/ab_small_cnn.py``: 1,126 images/s
    with bfloat16 products against 515 with XLA's gradients (1 device, batch 128).
    """

    def __init__(self, cin: int, cout: int, k: int = 3, *, impl: str = "patches", rngs: nnx.Rngs):
        if impl not in CONV_IMPLS:
            raise ImgClassError(f"small_cnn: conv {impl!r}: choose from {', '.join(CONV_IMPLS)}")
        init = nnx.initializers.lecun_normal()
        self.kernel = nnx.Param(init(rngs.params(), (k, k, cin, cout), jnp.float32))
        self.impl = impl
        self.deterministic = False
        self.dtype = None  # the computation's dtype (None: the input's), as nnx.Conv's
        self.products = None  # the training products' operand dtype (None: the computation's)

    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.kernel[...]
        x, kernel = in_dtype(self.dtype, x, kernel)
        if not self.deterministic and self.impl == "patches":
            return conv_same(x, kernel, self.products)
        return xla_conv_same(x, kernel)


CONV_IMPLS = ("patches", "xla")


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
        conv: ``"patches"`` (training convolutions as matrix products over patch
            matrices on the CPU; see :class:`Conv`) or ``"xla"``.
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
        conv: str = "patches",
        pool: str = "reshape",
        rngs: nnx.Rngs,
    ):
        if input_size < 4 or input_size % 4:
            raise ImgClassError(f"small_cnn: input_size {input_size} must be a multiple of 4")
        self.input_size = input_size

        def conv_layer(cin: int, cout: int) -> Conv:
            return Conv(cin, cout, 3, impl=conv, rngs=rngs)

        def bn(n: int) -> nnx.BatchNorm:
            return nnx.BatchNorm(n, momentum=BN_MOMENTUM, epsilon=1e-5, rngs=rngs)

        self.conv1, self.bn1 = conv_layer(3, 32), bn(32)
        self.conv2, self.bn2 = conv_layer(32, 32), bn(32)
        self.conv3, self.bn3 = conv_layer(32, 64), bn(64)
        self.conv4, self.bn4 = conv_layer(64, 64), bn(64)
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
    conv: str = "patches",
    pool: str = "reshape",
) -> SmallCNN:
    """Creates a :class:`SmallCNN` (there are no pretrained weights; ``pretrained`` is ignored)."""
    del pretrained
    return SmallCNN(
        num_classes,
        input_size=input_size,
        dropout=dropout,
        conv=conv,
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
