"""Prediction: a loaded network that turns images into sorted tag probabilities.

Examples:
    >>> predictor = Predictor("small_cnn", ["cat", "dog"], "multiclass", weights)  # doctest: +SKIP
    >>> predictor.predict("new.jpg")[0]                                           # doctest: +SKIP
    [Prediction(tag='cat', probability=0.93), Prediction(tag='dog', probability=0.07)]
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from PIL import Image

from . import models
from .data.images import load_rgb
from .jax_setup import enable_compilation_cache

# Batches are padded up to one of these sizes so that a handful of programs are compiled.
# 32 is the REST server's largest micro-batch (serve.py), which would otherwise pad to 64.
BUCKETS = (1, 4, 16, 32, 64)


class Prediction(NamedTuple):
    """One tag and its probability."""

    tag: str
    probability: float

    def __repr__(self) -> str:
        return f"Prediction({self.tag!r}, {self.probability:.4f})"


class Predictor:
    """A network ready to predict (weights loaded once, forward pass jit-compiled).

    Args:
        model_name: registry name of the network.
        tags: output order of the classifier.
        kind: ``"multiclass"`` (softmax) or ``"multilabel"`` (sigmoid).
        weights: flat ``{name: array}`` dict (as saved in ``weights.safetensors``).
        thresholds: optional per-tag thresholds (informative; predictions list every tag).
        input_size: square input side the network was trained at.
    """

    def __init__(
        self,
        model_name: str,
        tags: Sequence[str],
        kind: str,
        weights: dict[str, np.ndarray],
        thresholds: dict[str, float] | None = None,
        input_size: int | None = None,
    ):
        from .train import weights_to_model

        enable_compilation_cache()
        self.spec = models.get(model_name)
        self.model_name = model_name
        self.tags = list(tags)
        self.kind = kind
        self.thresholds = dict(thresholds or {})
        self.input_size = int(input_size or self.spec.input_size)
        model = weights_to_model(self.spec, len(self.tags), weights, input_size=self.input_size)
        model.eval()
        graphdef, self._state = nnx.split(model)
        mean = jnp.asarray(self.spec.mean, jnp.float32)
        std = jnp.asarray(self.spec.std, jnp.float32)
        multiclass = kind == "multiclass"

        @jax.jit
        def forward(state, x):
            logits = nnx.merge(graphdef, state)((x.astype(jnp.float32) / 255.0 - mean) / std)
            return jax.nn.softmax(logits, -1) if multiclass else jax.nn.sigmoid(logits)

        self._forward = forward
        self._lock = threading.Lock()

    def prepare(self, item: Any) -> np.ndarray:
        """One input (path, bytes, PIL image, array) as uint8 ``[S, S, 3]``."""
        if (
            isinstance(item, np.ndarray)
            and item.shape == (self.input_size, self.input_size, 3)
            and item.dtype == np.uint8
        ):
            return item
        return load_rgb(item, self.input_size)

    def predict_arrays(self, images: np.ndarray) -> np.ndarray:
        """Probabilities ``[N, T]`` for uint8 images ``[N, H, W, 3]`` (resized when needed)."""
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"images: need [N, H, W, 3], got shape {images.shape}")
        if images.shape[1:3] != (self.input_size, self.input_size):
            images = np.stack(
                [
                    np.asarray(
                        Image.fromarray(im.astype(np.uint8)).resize(
                            (self.input_size, self.input_size), Image.Resampling.BILINEAR
                        )
                    )
                    for im in images
                ]
            )
        images = images.astype(np.uint8)
        out = []
        biggest = BUCKETS[-1]
        for start in range(0, len(images), biggest):
            chunk = images[start : start + biggest]
            size = next(b for b in BUCKETS if b >= len(chunk))
            pad = size - len(chunk)
            if pad:
                chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), np.uint8)])
            with self._lock:
                probs = np.asarray(self._forward(self._state, chunk))
            out.append(probs[: size - pad])
        if not out:
            return np.zeros((0, len(self.tags)), np.float32)
        return np.concatenate(out).astype(np.float32)

    def predict(self, items: Any) -> list[list[Prediction]]:
        """Sorted predictions for one item or a list of items (one list per item)."""
        if not isinstance(items, list | tuple):
            items = [items]
        arrays = (
            np.stack([self.prepare(it) for it in items])
            if items
            else np.zeros((0, self.input_size, self.input_size, 3), np.uint8)
        )
        probs = self.predict_arrays(arrays)
        return [self.to_predictions(row) for row in probs]

    def to_predictions(self, row: np.ndarray) -> list[Prediction]:
        """A probability row as ``Prediction`` objects, highest first."""
        order = np.argsort(-row, kind="stable")
        return [Prediction(self.tags[i], float(row[i])) for i in order]

    def __repr__(self) -> str:
        return f"Predictor({self.model_name!r}, tags={self.tags}, kind={self.kind!r})"
