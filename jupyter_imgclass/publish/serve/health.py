"""The routes that need no key: ``/health`` (what is served), the liveness and readiness
probes, and ``/metrics`` for Prometheus.

- ``GET /healthz`` -- liveness: 200 as soon as the process answers HTTP.
- ``GET /readyz`` -- readiness: 503 while the model warms up (or when its warm-up failed,
  or while the server shuts down), 200 once every batch size has run.
- ``GET /metrics`` -- Prometheus' text format (``observe.ServiceMetrics``); open like
  ``/health`` (scrapers send no ``Prediction-Key``): it tells counts, timings and the
  model's ids, which ``/health`` tells too. ``serve --no-metrics`` turns it off.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from .model import MicroBatcher, ModelInfo

__all__ = ["health_routes", "metrics_routes"]

health_routes = APIRouter()


@health_routes.get("/health")
async def health(request: Request) -> dict:
    """Whether the service is up, and which model it serves."""
    info: ModelInfo | None = request.app.state.info
    batcher: MicroBatcher = request.app.state.batcher
    if info is None:  # create_app(resolve=...): many models, found per request
        served = request.app.state.resolved.values()
        return {
            "status": "ok",
            "models": sorted({(i.project_id, i.published_name) for i in served}),
            "url_classification": bool(request.app.state.settings.allowed_urls),
            "batches": sum(i.batcher.batches for i in served),
            "images": sum(i.batcher.images for i in served),
        }
    return {
        "status": "ok",
        "iteration": info.published_name,
        "project": info.project_name,
        "project_id": info.project_id,
        "network": info.model_name,
        "kind": info.kind,
        "tags": info.tags,
        "url_classification": bool(request.app.state.settings.allowed_urls),
        "batches": batcher.batches,
        "images": batcher.images,
    }


@health_routes.get("/healthz")
async def liveness() -> dict:
    """Liveness: the process answers (restart it when this fails)."""
    return {"status": "live"}


@health_routes.get("/readyz", responses={503: {"description": "not ready: warming up"}})
async def readiness(request: Request) -> JSONResponse:
    """Readiness: 200 once the model is loaded and warmed up (send traffic then), else 503
    with the reason."""
    state = getattr(request.app.state, "readiness", "starting")
    if state == "ready":
        return JSONResponse({"status": "ready"})
    return JSONResponse({"status": "not ready", "reason": state}, status_code=503)


metrics_routes = APIRouter()


@metrics_routes.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus metrics: requests, latency, errors by code, images, the model's info."""
    return Response(request.app.state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
