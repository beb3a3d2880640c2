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

FEATURES = 128
# PyTorch's BatchNorm momentum 0.1: short trainings on small data need fresh statistics.
BN_MOMENTUM = 0.9


class SmallCNN(nnx.Module):
    """``features(x)`` is the 128-d dense output (after ReLU); ``head`` classifies it.

    Args:
        num_classes: outputs of ``head``.
        input_size: square input side; must be a multiple of 4 (two 2×2 poolings).
        dropout: dropout rate before ``head`` (0 disables it).
        rngs: parameter and dropout randomness.
    """

    def __init__(
        self, num_classes: int = 10, *, input_size: int = 28, dropout: float = 0.2, rngs: nnx.Rngs
    ):
        if input_size < 4 or input_size % 4:
            raise ImgClassError(f"small_cnn: input_size {input_size} must be a multiple of 4")
        self.input_size = input_size

        def conv(cin: int, cout: int) -> nnx.Conv:
            return nnx.Conv(cin, cout, (3, 3), padding="SAME", use_bias=False, rngs=rngs)

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
) -> SmallCNN:
    """Creates a :class:`SmallCNN` (there are no pretrained weights; ``pretrained`` is ignored)."""
    del pretrained
    return SmallCNN(num_classes, input_size=input_size, dropout=dropout, rngs=rngs)


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
