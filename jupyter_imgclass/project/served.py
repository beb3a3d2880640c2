"""Images the REST service answered, kept in the project for review.

Each image sent to a storing route (not ``/nostore``) is written once, content-addressed,
under ``<project>/served/<sha256[:2]>/<sha256>.<format>``, and its answer is appended to
the project's prediction log with that path. The folder is bounded two ways, like the
hosted service's stored predictions (kept 30 days there): files older than
``retention_days`` (by their last serving) and, beyond ``quota_bytes``, the oldest files go
first. The quota holds on every write (a running total: room is made before a file is
written), not only at the periodic prune. A pruned file's log rows stay, without a path;
log rows older than the retention go too.
"""

from __future__ import annotations

import hashlib
import io
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_QUOTA_BYTES", "DEFAULT_RETENTION_DAYS", "ServedImages"]

DEFAULT_QUOTA_BYTES = 1 << 30
DEFAULT_RETENTION_DAYS = 30.0
PRUNE_EVERY_S = 30.0
"""Pruning scans the folder; it runs at most this often (and at start)."""
FOLDER = "served"


class ServedImages:
    """Keeps served images of one project (see the module docstring).

    Args:
        root: the project folder.
        store: the project's ``ImageStore`` (for the prediction log).
        quota_bytes: the most the kept files may take.
        retention_days: how long a file is kept after it was last served.
    """

    def __init__(
        self,
        root: Path,
        store: Any,
        *,
        quota_bytes: int = DEFAULT_QUOTA_BYTES,
        retention_days: float = DEFAULT_RETENTION_DAYS,
    ):
        from ..errors import ProjectError

        if not isinstance(quota_bytes, int) or quota_bytes < 0:
            raise ProjectError(f"quota_bytes {quota_bytes!r}: must be a whole number >= 0")
        if not isinstance(retention_days, int | float) or not retention_days > 0:
            raise ProjectError(f"retention_days {retention_days!r}: must be a positive number")
        self.root = Path(root)
        self.folder = self.root / FOLDER
        self.store = store
        self.quota_bytes = quota_bytes
        self.retention_s = float(retention_days) * 86400.0
        self._lock = threading.Lock()
        self._last_prune = 0.0
        self._files: OrderedDict[Path, int] | None = None  # oldest first: path -> bytes
        self._bytes = 0

    def _index(self) -> OrderedDict[Path, int]:
        """The kept files, oldest serving first, read from disk once (under the lock)."""
        if self._files is None:
            found = []
            for p in self.folder.glob("*/*"):
                if p.is_file() and not p.name.startswith("."):
                    info = p.stat()
                    found.append((info.st_mtime, p, info.st_size))
            found.sort()
            self._files = OrderedDict((p, size) for _, p, size in found)
            self._bytes = sum(self._files.values())
        return self._files

    def _make_room(self, need: int) -> list[str]:
        """Removes the oldest files until ``need`` more bytes fit the quota (under the lock)."""
        files, removed = self._index(), []
        while files and self._bytes + need > self.quota_bytes:
            path, size = files.popitem(last=False)
            path.unlink(missing_ok=True)
            self._bytes -= size
            removed.append(path.relative_to(self.root).as_posix())
        return removed

    def keep(self, body: bytes, iteration: str, predictions: list) -> str | None:
        """Writes the image (once per content) and logs the answer; returns the path kept,
        relative to the project, or None when the quota leaves no room for it."""
        from ..data.integrity import atomic_write

        digest = hashlib.sha256(body).hexdigest()
        relative, removed = None, []
        if len(body) <= self.quota_bytes:
            path = self.folder / digest[:2] / f"{digest}.{_extension(body)}"
            with self._lock:
                files = self._index()
                if path in files:
                    path.touch()  # served again: its retention starts anew
                    files.move_to_end(path)
                else:
                    removed = self._make_room(len(body))
                    path.parent.mkdir(parents=True, exist_ok=True)
                    atomic_write(path, body)
                    files[path] = len(body)
                    self._bytes += len(body)
            relative = path.relative_to(self.root).as_posix()
        self.store.forget_served_paths(removed)
        self.store.log_prediction(
            iteration=iteration, image_sha256=digest, image_path=relative, predictions=predictions
        )
        if time.monotonic() - self._last_prune >= PRUNE_EVERY_S:
            self.prune()
        return relative

    def prune(self, now: float | None = None) -> list[str]:
        """Removes files past their retention, then the oldest ones beyond the quota, and
        log rows past the retention; returns the paths removed (relative to the project)."""
        now = time.time() if now is None else now
        with self._lock:
            self._last_prune = time.monotonic()
            self._files = None  # read the folder afresh: files may have been removed by hand
            files, removed = self._index(), []
            for path in list(files):
                try:
                    expired = now - path.stat().st_mtime > self.retention_s
                except FileNotFoundError:
                    expired = True
                if expired:
                    self._bytes -= files.pop(path)
                    path.unlink(missing_ok=True)
                    removed.append(path.relative_to(self.root).as_posix())
            removed += self._make_room(0)
        self.store.forget_served_paths(removed)
        self.store.prune_prediction_log(now - self.retention_s)
        return removed

    def usage(self) -> dict:
        """``{"files", "bytes", "quota_bytes", "retention_days"}`` of the kept images."""
        sizes = [p.stat().st_size for p in self.folder.glob("*/*") if p.is_file()]
        return {
            "files": len(sizes),
            "bytes": sum(sizes),
            "quota_bytes": self.quota_bytes,
            "retention_days": self.retention_s / 86400.0,
        }


def _extension(body: bytes) -> str:
    """The image format's usual extension (``bin`` when Pillow does not know it)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(body)) as im:
            fmt = (im.format or "").lower()
    except Exception:  # the service answered it, so it decoded; be safe anyway
        return "bin"
    return {"jpeg": "jpg", "tiff": "tif"}.get(fmt, fmt or "bin")


# ---------------------------------------------------------------------------- a project's log
REVIEW_LIMIT = 2000
"""The newest logged predictions :func:`served_images` reads (the review queue's window)."""


def prediction_logger(
    project: Any,
    iteration_name: str,
    *,
    keep_images: bool = True,
    quota_bytes: int | None = None,
    retention_days: float | None = None,
):
    """A callback for the REST service that logs each answered prediction in ``project``
    (``Project.prediction_logger``): the image's sha256 and the probabilities, and with
    ``keep_images`` the image itself (:class:`ServedImages`)."""
    store = project.store
    if keep_images:
        served = ServedImages(
            project.root,
            store,
            quota_bytes=DEFAULT_QUOTA_BYTES if quota_bytes is None else quota_bytes,
            retention_days=DEFAULT_RETENTION_DAYS if retention_days is None else retention_days,
        )
        served.prune()

        def keep_prediction(body: bytes, result: dict) -> None:
            served.keep(body, iteration_name, result["predictions"])

        return keep_prediction

    def log_prediction(body: bytes, result: dict) -> None:
        store.log_prediction(
            iteration=iteration_name,
            image_sha256=hashlib.sha256(body).hexdigest(),
            image_path=None,
            predictions=result["predictions"],
        )

    return log_prediction


def served_images(project: Any, limit: int = REVIEW_LIMIT) -> list[dict]:
    """Logged predictions of ``project`` whose image is still kept, newest first
    (``Project.served_images``)."""
    out = []
    for row in reversed(project.store.prediction_log(kept_only=True, limit=limit)):
        relative = row.pop("image_path")
        if relative and (project.root / relative).is_file():
            out.append({**row, "path": project.root / relative})
    return out


def review_queue(project: Any) -> list[dict]:
    """Kept images the endpoint saw that are not in ``project`` yet, most uncertain first
    (``Project.review_queue``)."""
    present = {im.sha256 for im in project.images}
    seen: set[str] = set()
    queue = []
    for entry in served_images(project):  # newest first: the latest answer per image
        sha = entry["image_sha256"]
        if sha in present or sha in seen or not entry["predictions"]:
            continue
        seen.add(sha)
        ranked = sorted(entry["predictions"], key=lambda p: -float(p["probability"]))
        top = float(ranked[0]["probability"])
        runner_up = float(ranked[1]["probability"]) if len(ranked) > 1 else 0.0
        queue.append(
            {**entry, "guess": ranked[0].get("tagName"), "probability": top,
             "margin": top - runner_up}
        )  # fmt: skip
    return sorted(queue, key=lambda e: e["margin"])


def add_review_queue(project: Any) -> list[tuple[int, str | None]]:
    """Adds the :func:`review_queue`'s images to ``project``, untagged; returns
    ``(image_id, served guess)`` in queue order (``Project.add_review_queue``)."""
    queue = review_queue(project)
    if queue:
        project.add_images([e["path"] for e in queue])
    by_sha = {im.sha256: im.id for im in project.images}
    return [(by_sha[e["image_sha256"]], e["guess"]) for e in queue if e["image_sha256"] in by_sha]
