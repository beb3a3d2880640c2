"""What the service tells its operator: Prometheus metrics in a registry of the app's own
(``prometheus_client``), and one JSON access-log line per request, both from one ASGI
middleware (:class:`RequestObserver`) that sees every answer, refusals included."""

from __future__ import annotations

import datetime as _dt
import json
import logging
import sys
import time
from typing import Any, TextIO

from prometheus_client import CollectorRegistry, Counter, Histogram, Info
from prometheus_client.core import CounterMetricFamily

__all__ = ["ACCESS_LOGGER", "RequestObserver", "ServiceMetrics", "log_access_to"]

ACCESS_LOGGER = "jupyter_imgclass.access"
"""The logger the JSON access lines go to (``serve --access-log json`` prints it)."""
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Seconds; a single small image answers in milliseconds, a batch of 64 large ones in seconds."""
METHODS = frozenset({"GET", "POST", "HEAD", "OPTIONS", "PUT", "DELETE", "PATCH"})
"""Methods labelled as themselves; any other is ``other`` (a client cannot grow the labels)."""
ERROR_BODY_BYTES = 4096
"""How much of an error answer is read for its ``code``."""
CLIENT_GONE = 499
"""The status recorded when the client left before an answer started (nginx's number)."""


class ServiceMetrics:
    """The service's Prometheus metrics, in a ``CollectorRegistry`` of their own (so two
    apps in one process never share or clash).

    ``imgclass_requests_total{route,method,status}``,
    ``imgclass_request_duration_seconds{route}`` (a histogram),
    ``imgclass_errors_total{code}`` (error answers and the error entries of batches, by the
    hosted API's code name), ``imgclass_images_predicted_total`` and
    ``imgclass_model_batches_total`` (what ran on the model) and
    ``imgclass_model_info{project,project_id,iteration,network,kind}``.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "imgclass_requests",
            "HTTP requests answered, by route template, method and status code",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "imgclass_request_duration_seconds",
            "Time from a request's arrival to the end of its answer, by route template",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.errors = Counter(
            "imgclass_errors",
            "Error answers and error entries of batch answers, by the hosted API's code name",
            ["code"],
            registry=self.registry,
        )
        self.model = Info(
            "imgclass_model", "The served model and where it comes from", registry=self.registry
        )
        self._batcher: Any = None
        self.registry.register(_BatcherCollector(self))

    def describe(self, info: Any, batcher: Any) -> None:
        """Sets the model info and the batcher whose counts are exposed (at each start)."""
        self.model.info(
            {
                "project": info.project_name,
                "project_id": info.project_id,
                "iteration": info.published_name,
                "network": str(info.model_name or ""),
                "kind": info.kind,
            }
        )
        self._batcher = batcher

    def count_error(self, code: str) -> None:
        self.errors.labels(code=code).inc()

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        method = method if method in METHODS else "other"
        self.requests.labels(route=route, method=method, status=str(status)).inc()
        self.latency.labels(route=route).observe(seconds)

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


class _BatcherCollector:
    """The micro-batcher's own counts (one copy: the batcher counts, this reads)."""

    def __init__(self, metrics: ServiceMetrics):
        self._metrics = metrics

    def collect(self):
        batcher = self._metrics._batcher
        images = CounterMetricFamily(
            "imgclass_images_predicted", "Images run through the model (single and batch routes)"
        )
        batches = CounterMetricFamily("imgclass_model_batches", "Batches run on the model")
        images.add_metric([], batcher.images if batcher is not None else 0)
        batches.add_metric([], batcher.batches if batcher is not None else 0)
        yield images
        yield batches


class RequestObserver:
    """Pure ASGI middleware: times every request, records it in ``metrics`` (when given)
    and writes one JSON line to :data:`ACCESS_LOGGER` (when ``access_log``).

    The line holds ``time`` (UTC), ``client`` (address), ``method``, ``path`` (never the
    query string), ``status``, ``duration_ms``, ``bytes`` (of the answer's body) and, for an
    error answer, its ``code``. Headers are never logged, so neither is the key.
    """

    def __init__(self, app, metrics: ServiceMetrics | None = None, access_log: bool = False):
        self.app = app
        self.metrics = metrics
        self.access_log = access_log
        self.log = logging.getLogger(ACCESS_LOGGER)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        seen: dict[str, Any] = {"status": None, "bytes": 0, "error": b"", "code": None}

        async def observed_send(message) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
            elif message["type"] == "http.response.body":
                body = message.get("body", b"")
                seen["bytes"] += len(body)
                if seen["status"] and seen["status"] >= 400:
                    seen["error"] = (seen["error"] + body)[:ERROR_BODY_BYTES]
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        except Exception:
            if seen["status"] is None:  # Starlette's outermost handler answers the 500
                seen["status"], seen["code"] = 500, "InternalServerError"
            raise
        finally:
            self._record(scope, seen, time.perf_counter() - start)

    def _record(self, scope, seen: dict, seconds: float) -> None:
        status = seen["status"] or CLIENT_GONE
        code = seen["code"] or _error_code(seen["error"])
        route = getattr(scope.get("route"), "path", None) or "unmatched"
        if self.metrics is not None:
            self.metrics.observe(route, scope.get("method", ""), status, seconds)
            if code:
                self.metrics.count_error(code)
        if self.access_log:
            client = scope.get("client")
            line = {
                "time": _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds"),
                "client": client[0] if client else None,
                "method": scope.get("method", "")[:16],
                "path": scope.get("path", "")[:2000],
                "status": status,
                "duration_ms": round(1000 * seconds, 2),
                "bytes": seen["bytes"],
            }
            if code:
                line["code"] = code
            self.log.info(json.dumps(line, separators=(",", ":")))


def _error_code(body: bytes) -> str | None:
    if not body:
        return None
    try:
        code = json.loads(body).get("code")
    except (ValueError, AttributeError):
        return None
    return code[:64] if isinstance(code, str) else None


def log_access_to(stream: TextIO | None = None) -> None:
    """Prints the JSON access lines on ``stream`` (stdout), one per line, once per process."""
    logger = logging.getLogger(ACCESS_LOGGER)
    if any(getattr(h, "imgclass_access", False) for h in logger.handlers):
        return
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.imgclass_access = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
