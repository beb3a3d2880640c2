"""REST prediction service: a drop-in for the hosted Custom Vision prediction API.

``create_app(model)`` builds a FastAPI app (a factory: nothing happens at import, a
bundle path is loaded in the app's lifespan). Routes, as the hosted service and its SDK
(``azure-cognitiveservices-vision-customvision``) call them, with ``{P}`` = ``Prediction``
or ``prediction`` and ``{v}`` = ``v3.0`` or ``v3.1``:

* ``POST /customvision/{v}/{P}/{projectId}/classify/iterations/{name}/image`` -- the image
  as the raw body (``application/octet-stream`` or ``image/*``) or as the ``imageData``
  part of a ``multipart/form-data`` form (with or without a filename). Answers::

      {"id": "...", "project": "<projectId>", "projectName": "...", "iteration": "<name>",
       "created": "<UTC ISO>", "predictions": [{"probability": 0.97, "tagId": "<GUID>",
       "tagName": "apple", "tagType": "Regular", "threshold": 0.5, "aboveThreshold": true},
       ...]}

  with every tag, highest probability first (``threshold`` / ``aboveThreshold`` only when
  the model has thresholds; hosted clients ignore them). ``.../image/nostore`` is the same
  without calling ``log_callback``.
* ``POST .../url`` and ``.../url/nostore`` -- body ``{"url": "https://..."}``: off unless
  ``allow_urls`` lists prefixes; URLs are compared in normal form and refused when
  normalising would change them; every redirect is checked again; one total deadline per
  fetch, in a pool of their own; the same size and pixel limits as uploads.
* ``POST /classify/iterations/{name}/image[/nostore]`` -- the short routes (no project id).
* ``POST .../classify/iterations/{name}/images[/nostore]`` (short and hosted roots) -- the
  batch route (``batch``): several ``imageData`` parts or JSON ``{"images": [base64...]}``,
  run on the model as one batch, one entry per image in order.
* ``GET /health`` -- ``{"status": "ok", "project_id": ..., ...}``; ``/healthz`` (liveness),
  ``/readyz`` (503 until warmed up), ``/metrics`` (Prometheus, ``observe``); ``/docs``,
  ``/openapi.json``.

``create_app(None, resolve=..., routers=[...])`` serves many models instead: the hosted
routes find theirs with ``resolve(projectId, publishedName)`` (each with a micro-batcher of
its own) and more route sets join under the same guards; the project layer's workspace
(``project.training_api.workspace_options``: every project's published iterations and the
Training API) plugs in there, without this package importing it.

Every bad request gets a 4xx JSON body ``{"code": ..., "message": ...}`` with the hosted
API's code names where one fits: 401/403 for a missing/wrong ``Prediction-Key`` (when a key
is set), 404 ``NotFoundProject`` / ``NotFoundIteration``, 413 ``BadRequestImageSizeBytes``
for a body over ``max_body_bytes`` (the body is read and dropped first, up to
``drain_limit_bytes``, so that clients which send before they read get the answer rather
than a reset) or ``BadRequestImageDimensions`` for an image over ``max_pixels``, 400
``BadRequestImageStream`` / ``BadRequestImageFormat`` / ``BadRequestImageUrl``, 415 for a
content type that is not an image, bytes or a form.

What a hostile client meets (``Safety`` in the README): header and body read timeouts
and a connection cap below the descriptor limit (``guard``); a request without a valid key
is answered after at most 64 KiB of its body; one pixel rule and a shared decode memory
(``data.images``); a foreign ``Origin`` or unknown ``Host`` is refused before the body is
read (``browsers``); 500 answers carry an incident id, never the exception's text.

The package follows FastAPI's idioms: ``app`` (the factory, an ``APIRouter`` for the
routes, ``app.state`` for the model and the batcher), ``deps`` (``Security(APIKeyHeader)``
for the key, dependencies for the bounded body and the model lookup), ``batch``,
``health``, ``observe`` (metrics and the JSON access log), ``body``, ``urls``,
``browsers``, ``guard``, ``model`` and ``server`` (the handle and uvicorn's settings).

Concurrent requests are micro-batched: a request waits at most ``batch_window_s``
(5 ms) for others, up to ``max_batch`` (32) run as one batch on the model in a single
worker thread, so the event loop never blocks on JAX.

Example::

    from jupyter_imgclass.publish.serve import serve_in_background

    with serve_in_background("out/fruit-model") as server:
        httpx.post(f"{server.url}/classify/iterations/fruit-v1/image",
                   content=open("apple.jpg", "rb").read(),
                   headers={"Content-Type": "application/octet-stream"}).json()
"""

from __future__ import annotations

from .app import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_PIXELS, create_app
from .guard import GuardLimits
from .model import Servable
from .server import KEY_ENV, ServerHandle, read_key, route_urls, serve_forever, serve_in_background

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_PIXELS",
    "KEY_ENV",
    "GuardLimits",
    "Servable",
    "ServerHandle",
    "create_app",
    "read_key",
    "route_urls",
    "serve_forever",
    "serve_in_background",
]
