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

import jax.numpy as jnp
import numpy as np

from . import models
from .data.images import DEFAULT_RESIZE, check_resize, load_rgb, resize_square
from .evaluate import passing
from .models.apply import apply_fn, eval_split, probabilities, run_batched
from .models.layers import head_input
from .models.weights import weights_to_model
from .vocabulary import DEFAULT_THRESHOLD

PREDICT_BATCH = 64
"""Largest batch run at once; smaller calls pad to ``models.apply.BUCKETS`` (the REST
server's micro-batches of up to 32 pad to 32, not 64)."""


class Prediction(NamedTuple):
    """One tag, its probability, and whether it reaches the tag's threshold (None when
    the model has no thresholds). In a multiclass model only the most probable tag can
    pass, as the metrics count it."""

    tag: str
    probability: float
    above_threshold: bool | None = None

    def __repr__(self) -> str:
        mark = "" if self.above_threshold is None else (" ✓" if self.above_threshold else "")
        return f"Prediction({self.tag!r}, {self.probability:.4f}{mark})"


class Predictor:
    """A network ready to predict (weights loaded once, forward pass jit-compiled).

    Args:
        model_name: registry name of the network.
        tags: output order of the classifier.
        kind: ``"multiclass"`` (softmax) or ``"multilabel"`` (sigmoid).
        weights: flat ``{name: array}`` dict (as saved in ``weights.safetensors``).
        thresholds: optional ``{tag: threshold}``; each ``Prediction`` then says whether
            it passes (predictions still list every tag).
        input_size: square input side the network was trained at.
        head_input: what the network's head sees (``"raw"``, or ``"l2"`` for the quick
            budget's logistic-regression head).
    """

    def __init__(
        self,
        model_name: str,
        tags: Sequence[str],
        kind: str,
        weights: dict[str, np.ndarray],
        thresholds: dict[str, float] | None = None,
        input_size: int | None = None,
        head_input: str = "raw",
        resize: str = DEFAULT_RESIZE,
    ):
        self.spec = models.get(model_name)
        self.model_name = model_name
        self.tags = list(tags)
        self.kind = kind
        self.thresholds = dict(thresholds or {})
        self.input_size = int(input_size or self.spec.input_size)
        self.resize = check_resize(resize)
        model = weights_to_model(
            self.spec, len(self.tags), weights, input_size=self.input_size, head_input=head_input
        )
        self.head_input = head_input
        self._model = model
        graphdef, self._state = eval_split(model)
        self._forward = apply_fn(
            graphdef, tuple(self.spec.mean), tuple(self.spec.std), "probabilities", kind
        )
        self._lock = threading.Lock()

    def prepare(self, item: Any) -> np.ndarray:
        """One input (path, bytes, PIL image, array) as uint8 ``[S, S, 3]``."""
        if (
            isinstance(item, np.ndarray)
            and item.shape == (self.input_size, self.input_size, 3)
            and item.dtype == np.uint8
        ):
            return item
        return load_rgb(item, self.input_size, resize=self.resize)

    def predict_arrays(self, images: np.ndarray) -> np.ndarray:
        """Probabilities ``[N, T]`` for uint8 images ``[N, H, W, 3]`` (resized when needed)."""
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"images: need [N, H, W, 3], got shape {images.shape}")
        if images.shape[1:3] != (self.input_size, self.input_size):
            images = np.stack([resize_square(im, self.input_size, self.resize) for im in images])
        if not len(images):
            return np.zeros((0, len(self.tags)), np.float32)
        with self._lock:
            probs = run_batched(self._forward, self._state, images.astype(np.uint8), PREDICT_BATCH)
        return probs.astype(np.float32)

    def predict_features(self, features: np.ndarray) -> np.ndarray:
        """Probabilities ``[N, T]`` from the backbone's pooled features ``[N, D]`` (what
        ``model.features(x)`` returns): the head alone, as the network applies it after
        its backbone. The answer equals :meth:`predict_arrays`'s when the features come
        from the same backbone weights (a quick-budget iteration's frozen pretrained one)."""
        x = head_input(jnp.asarray(features, jnp.float32), self.head_input)
        with self._lock:
            logits = self._model.head(x)
        return np.asarray(probabilities(logits, self.kind), np.float32)

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
        if not self.thresholds:
            return [Prediction(self.tags[i], float(row[i])) for i in order]
        passes = passing(
            row, [self.thresholds.get(t, DEFAULT_THRESHOLD) for t in self.tags], self.kind
        )
        return [Prediction(self.tags[i], float(row[i]), bool(passes[i])) for i in order]

    def __repr__(self) -> str:
        return f"Predictor({self.model_name!r}, tags={self.tags}, kind={self.kind!r})"
