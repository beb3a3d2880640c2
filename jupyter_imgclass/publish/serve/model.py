"""What the service serves: the :class:`Servable` protocol, the model's facts as the
routes need them, the micro-batcher, and the hosted API's answer."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import logging
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ...evaluate import passing

__all__ = ["MicroBatcher", "ModelInfo", "Servable", "call_logger", "prediction"]

log = logging.getLogger(__name__)


@runtime_checkable
class Servable(Protocol):
    """What the service needs of a model: a loaded bundle and an Iteration are both one.

    Attributes:
        tags: tag names in output order.
        tag_ids: the matching ids the answers carry (``tagId``).
        kind: ``"multiclass"`` or ``"multilabel"``.
        input_size: the square side images are resized to.
        resize: how they become that square (``"squash"``, ``"pad"`` or ``"crop"``);
            optional, ``"squash"`` when a model does not say.
        published_name: the iteration name the route answers to.
        project_name: the ``project`` field of answers.
    """

    tags: Any
    tag_ids: Any
    kind: str
    input_size: int
    published_name: str | None
    project_name: str | None

    def predict_arrays(self, images: np.ndarray) -> np.ndarray:
        """Probabilities ``[N, T]`` for a uint8 ``[N, S, S, 3]`` batch."""
        ...


class MicroBatcher:
    """Gathers concurrent single-image requests into batches for one worker thread."""

    def __init__(
        self, predict: Callable[[np.ndarray], np.ndarray], window_s: float, max_batch: int
    ):
        self._predict = predict
        self._window_s = window_s
        self._max_batch = max_batch
        self._queue: asyncio.Queue[tuple[np.ndarray, asyncio.Future]] = asyncio.Queue()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="imgclass-predict")
        self._task: asyncio.Task | None = None
        self.batches = 0
        self.images = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._executor.shutdown(wait=True)

    async def submit(self, image: np.ndarray) -> np.ndarray:
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((image, future))
        return await future

    async def run(self, images: np.ndarray, count: bool = True) -> np.ndarray:
        """Probabilities for ``images`` ``[N, S, S, 3]`` run as one batch on the same worker
        thread, after what is queued there (a batch request; the warm-up with ``count``
        False)."""
        loop = asyncio.get_running_loop()
        probs = await loop.run_in_executor(self._executor, self._run_batch, images)
        if count:
            self.batches += 1
            self.images += len(images)
        return probs

    def _run_batch(self, images: list[np.ndarray] | np.ndarray) -> np.ndarray:
        # Predictor.predict_arrays pads to a few bucket sizes itself (few jit shapes).
        return np.asarray(self._predict(np.stack(images)))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self._window_s
            while len(batch) < self._max_batch:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break
            live = [(image, fut) for image, fut in batch if not fut.done()]
            if not live:
                continue
            try:
                probs = await loop.run_in_executor(
                    self._executor, self._run_batch, [image for image, _ in live]
                )
            except Exception as exc:  # reported to each waiting request, loop goes on
                for _, fut in live:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            self.batches += 1
            self.images += len(live)
            for (_, fut), row in zip(live, probs, strict=True):
                if not fut.done():
                    fut.set_result(row)


class ModelInfo:
    """What the routes need to know about a model, read once."""

    def __init__(
        self,
        model: Any,
        published_name: str | None,
        project_name: str | None,
        project_id: str | None,
    ):
        self.model = model
        self.tags: list[str] = [str(t) for t in model.tags]
        self.tag_ids: list[str] = [
            str(t) for t in (getattr(model, "tag_ids", None) or range(len(self.tags)))
        ]
        self.tag_types: list[str] = [
            str(t) for t in (getattr(model, "tag_types", None) or ["Regular"] * len(self.tags))
        ]
        self.kind = getattr(model, "kind", "multiclass")
        self.model_name = getattr(model, "model_name", None)
        self.input_size = int(model.input_size)
        from ...data.images import DEFAULT_RESIZE, check_resize

        self.resize = check_resize(getattr(model, "resize", DEFAULT_RESIZE), "model resize")
        self.published_name = published_name or getattr(model, "published_name", None) or "default"
        self.project_name = project_name or getattr(model, "project_name", None) or ""
        known = project_id or getattr(model, "project_id", None)
        if not known:  # a bundle from before project ids: stable across restarts
            known = str(uuid.uuid5(uuid.NAMESPACE_URL, f"jupyter-imgclass:{self.project_name}"))
        self.project_id = str(known).lower()
        self.thresholds = _thresholds(model, self.tags)
        self.batcher: MicroBatcher | None = None
        """The micro-batcher its predictions run in (set by the app)."""


def _thresholds(model: Any, tags: list[str]) -> list[float] | None:
    """One threshold per tag from the model's ``thresholds`` (dict or number) or
    ``threshold``; None when it has neither."""
    given = getattr(model, "thresholds", None)
    if given is None:
        given = getattr(model, "threshold", None)
    if isinstance(given, int | float) and not isinstance(given, bool):
        return [float(given)] * len(tags)
    if isinstance(given, dict):
        default = float(given.get("*", 0.5))
        return [float(given.get(t, default)) for t in tags]
    return None


def prediction(info: ModelInfo, probs: np.ndarray) -> dict:
    """The hosted API's ``ImagePrediction``: every tag, highest probability first; the
    tag's threshold and whether it passes (``evaluate.passing``) ride along (hosted
    clients ignore them)."""
    order = np.argsort(-probs, kind="stable")
    passes = passing(probs, info.thresholds, info.kind) if info.thresholds is not None else None
    predictions = []
    for j in order:
        record = {
            "probability": float(probs[j]),
            "tagId": info.tag_ids[j],
            "tagName": info.tags[j],
            "tagType": info.tag_types[j],
        }
        if info.thresholds is not None:
            record["threshold"] = info.thresholds[j]
            record["aboveThreshold"] = bool(passes[j])
        predictions.append(record)
    return {
        "id": str(uuid.uuid4()),
        "project": info.project_id,
        "projectName": info.project_name,
        "iteration": info.published_name,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds"),
        "predictions": predictions,
    }


def call_logger(callback: Callable[[bytes, dict], Any], body: bytes, result: dict) -> None:
    try:
        callback(body, result)
    except Exception:  # the client already has its answer; the log must not break serving
        log.exception("prediction log callback failed")
