"""The hosted Custom Vision Training API, the subset automation uses, as a FastAPI
``APIRouter`` over a :class:`~jupyter_imgclass.project.workspace.Workspace`.

Served by ``jupyter-imgclass serve --workspace DIR --training-key-file F`` under
``/customvision/v3.3/Training/`` and the SDK's own ``/customvision/v3.4-preview/training/``
(either casing), with header ``Training-Key``:

* ``GET /domains``, ``GET /domains/{id}`` -- the one classification domain made here.
* projects: ``GET|POST /projects``, ``GET|DELETE /projects/{id}`` (a deleted project's
  folder is moved into the workspace's ``.deleted/``, never erased).
* tags: ``GET|POST /projects/{id}/tags``, ``GET|DELETE .../tags/{tagId}`` (Regular, Negative).
* images: ``POST .../images/files`` (the SDK's ``ImageFileCreateBatch``), ``POST
  .../images`` (form ``imageData``), ``POST .../images/urls`` (the prediction routes'
  ``--allow-url`` list), ``GET .../images``, ``.../images/tagged``, ``.../images/untagged``,
  ``.../images/id`` (paging: ``take``, ``skip``, ``orderBy``) and their ``/count``,
  ``DELETE .../images``, ``POST|DELETE .../images/tags``.
* ``POST .../train`` (returns at once; the iteration goes Training -> Completed or
  Failed), ``GET .../iterations``, ``GET .../iterations/{id}``, ``GET
  .../iterations/{id}/performance?threshold=``, ``POST|DELETE .../iterations/{id}/publish``
  (what the prediction routes then serve by published name), ``POST
  .../quicktest/image`` and ``.../quicktest/url``.

Everything else (object detection, other domains, exports, suggestions) answers 400
``BadRequestNotSupported`` saying so; a missing or wrong key 401 ``Unauthorized``.
"""

from __future__ import annotations

import hmac
import json
import os
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response, Security
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader
from starlette.concurrency import run_in_threadpool

from ..errors import ImgClassError
from ..publish.serve.body import image_to_array, read_body
from ..publish.serve.deps import uploaded_image, url_image
from ..publish.serve.errors import RequestError
from ..publish.serve.model import ModelInfo, prediction
from . import hosted, training_images
from .customvision import TRAINING_KEY_ENV  # one name for the key, importing or serving
from .training_service import OBJECT_DETECTION_DOMAINS, TrainingService, check_guid
from .workspace import Workspace

__all__ = ["TRAINING_KEY_ENV", "TRAINING_PREFIXES", "training_routes", "workspace_options"]

TRAINING_PREFIXES = tuple(
    f"/customvision/{version}/{casing}"
    for version in ("v3.3", "v3.4-preview")
    for casing in ("Training", "training")
)
"""Where the Training API answers (the SDK calls ``v3.4-preview/training``)."""
UPLOAD_BYTES = 64 << 20
"""The largest body of one upload batch (64 images of about 700 kB in base64)."""
JSON_BYTES = 1 << 20
"""The largest body of a JSON request that carries no image."""
P = "/projects/{project_id}"

training_key = APIKeyHeader(
    name="Training-Key", auto_error=False, description="the key set with --training-key-file"
)


def _ids(value: str | None) -> list[str]:
    """A comma-separated id list of a query (``tagIds=a,b``)."""
    return [v for v in (value or "").split(",") if v.strip()]


async def _json_body(request: Request, limit: int) -> Any:
    settings = request.app.state.settings
    raw = await read_body(request, limit, settings.drain_limit_bytes)
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        raise RequestError(400, "BadRequest", "the body is not JSON") from None


def _image_filter(
    tag_ids: str | None = Query(None, alias="tagIds"),
    tagging_status: str | None = Query(None, alias="taggingStatus"),
) -> tuple[list[str], str | None]:
    """Which images a listing or count means: tag GUIDs, and All, Tagged or Untagged."""
    if tagging_status not in (None, "All", "Tagged", "Untagged"):
        raise RequestError(
            400, "BadRequestInvalid", f"taggingStatus {tagging_status!r}: All, Tagged or Untagged"
        )
    return _ids(tag_ids), tagging_status


def training_routes(service: TrainingService, key: str | None) -> APIRouter:
    """The Training API's routes over ``service``; every one needs ``Training-Key: key``
    (all answer 401 when ``key`` is None: the API is off)."""

    async def require_training_key(given: str | None = Security(training_key)) -> None:
        if key is None:
            raise RequestError(
                401,
                "Unauthorized",
                "the Training API is off on this server; start it with --training-key-file",
            )
        if given is None or not hmac.compare_digest(given.encode(), key.encode()):
            raise RequestError(
                401, "Unauthorized", "Access denied: missing or wrong Training-Key header"
            )

    router = APIRouter(dependencies=[Security(require_training_key)], tags=["training"])

    def route(path: str, method: str = "GET", status: int = 200) -> Callable:
        def register(endpoint: Callable) -> Callable:
            router.add_api_route(
                path, endpoint, methods=[method], status_code=status, response_model=None
            )
            return endpoint

        return register

    # ------------------------------------------------------------------ domains, projects
    @route("/domains")
    def get_domains() -> list:
        return [hosted.domain_json()]

    @route("/domains/{domain_id}")
    def get_domain(domain_id: str) -> dict:
        if check_guid(domain_id, "domain id") != hosted.GENERAL_DOMAIN:
            raise RequestError(404, "NotFoundDomain", f"no domain {domain_id} here")
        return hosted.domain_json()

    @route("/projects")
    def get_projects() -> list:
        return [hosted.project_json(p) for p in service.workspace.projects()]

    @route("/projects", "POST")
    def create_project(
        name: str | None = None,
        description: str | None = None,
        domain_id: str | None = Query(None, alias="domainId"),
        classification_type: str | None = Query(None, alias="classificationType"),
        platforms: str | None = Query(None, alias="targetExportPlatforms"),
    ) -> dict:
        if domain_id is not None and check_guid(domain_id, "domainId") != hosted.GENERAL_DOMAIN:
            detection = str(domain_id).lower() in OBJECT_DETECTION_DOMAINS
            raise RequestError(
                400,
                "BadRequestUnsupportedDomain" if detection else "BadRequestProjectUnknownDomain",
                f"domain {domain_id}: "
                + ("object detection is not made here; " if detection else "")
                + f"this server trains classifiers in domain {hosted.GENERAL_DOMAIN} (General)",
            )
        kind = hosted.CLASSIFICATION_TYPES.get(classification_type or "Multiclass")
        if kind is None:
            raise RequestError(
                400,
                "BadRequestProjectUnknownClassification",
                f"classificationType {classification_type!r}: Multiclass or Multilabel",
            )
        if _ids(platforms):
            raise RequestError(
                400,
                "BadRequestProjectUnsupportedExportPlatform",
                "exports for other platforms are not made here; `jupyter-imgclass export "
                "--onnx` writes a bundle and an ONNX model",
            )
        return hosted.project_json(service.create_project(name, description, kind))

    @route(P)
    def get_project(project_id: str) -> dict:
        return hosted.project_json(service.project(project_id))

    @route(P, "DELETE", 204)
    def delete_project(project_id: str) -> Response:
        service.workspace.delete_project(service.project(project_id))
        return Response(status_code=204)

    # ------------------------------------------------------------------ tags
    @route(f"{P}/tags")
    def get_tags(project_id: str) -> list:
        return service.tags(service.project(project_id))

    @route(f"{P}/tags", "POST")
    def create_tag(
        project_id: str,
        name: str | None = None,
        description: str | None = None,
        type: str | None = None,  # noqa: A002 (the hosted query's name)
    ) -> dict:
        return service.create_tag(service.project(project_id), name, type or "Regular")

    @route(f"{P}/tags/{{tag_id}}")
    def get_tag(project_id: str, tag_id: str) -> dict:
        project = service.project(project_id)
        name = service.tag_name(project, tag_id)
        return next(t for t in service.tags(project) if t["name"] == name)

    @route(f"{P}/tags/{{tag_id}}", "DELETE", 204)
    def delete_tag(project_id: str, tag_id: str) -> Response:
        project = service.project(project_id)
        project.delete_tag(service.tag_name(project, tag_id))
        return Response(status_code=204)

    # ------------------------------------------------------------------ images
    @route(f"{P}/images/files", "POST")
    async def create_images_from_files(request: Request, project_id: str) -> JSONResponse:
        project = await run_in_threadpool(service.project, project_id)
        entries = training_images.entries_of(await _json_body(request, UPLOAD_BYTES))
        items = [
            (str(e.get("name") or f"image {k}"), training_images.file_contents(e), e["tagIds"])
            for k, e in enumerate(entries)
        ]
        return await _added(request, project, items)

    @route(f"{P}/images", "POST")
    async def create_images_from_data(
        request: Request,
        project_id: str,
        tag_ids: str | None = Query(None, alias="tagIds"),
        data: bytes = Depends(uploaded_image),  # noqa: B008
    ) -> JSONResponse:
        project = await run_in_threadpool(service.project, project_id)
        return await _added(request, project, [("imageData", data, _ids(tag_ids))])

    @route(f"{P}/images/urls", "POST")
    async def create_images_from_urls(request: Request, project_id: str) -> JSONResponse:
        project = await run_in_threadpool(service.project, project_id)
        entries = training_images.entries_of(await _json_body(request, JSON_BYTES))
        _require_urls(request)
        items = []
        for entry in entries:
            url = str(entry.get("url") or "")
            try:
                data: bytes | str = await request.app.state.fetcher.fetch(url)
            except RequestError:
                data = "ErrorSource"
            items.append((url, data, entry["tagIds"]))
        return await _added(request, project, items)

    async def _added(request: Request, project, items) -> JSONResponse:
        limit = request.app.state.settings.max_body_bytes
        base = _project_url(request, project.id)
        summary, status = await run_in_threadpool(
            training_images.add_images, service, project, items, limit, base
        )
        return JSONResponse(summary, status_code=status)

    def listing(status: str) -> Callable:
        def get_images(
            request: Request,
            project_id: str,
            chosen: tuple = Depends(_image_filter),  # noqa: B008 (FastAPI's idiom)
            order_by: str | None = Query(None, alias="orderBy"),
            take: int | None = None,
            skip: int | None = None,
        ) -> list:
            project = service.project(project_id)
            tags, which = chosen
            return training_images.list_images(
                service,
                project,
                which or status,
                tags,
                order_by,
                take,
                skip,
                _project_url(request, project_id),
            )

        return get_images

    def counting(status: str) -> Callable:
        def get_image_count(
            project_id: str,
            chosen: tuple = Depends(_image_filter),  # noqa: B008
        ) -> int:
            tags, which = chosen
            project = service.project(project_id)
            return training_images.count_images(service, project, which or status, tags)

        return get_image_count

    for tail, status in (("", "All"), ("/tagged", "Tagged"), ("/untagged", "Untagged")):
        route(f"{P}/images{tail}")(listing(status))
        route(f"{P}/images{tail}/count")(counting(status))

    @route(f"{P}/images/id")
    def get_images_by_ids(
        request: Request, project_id: str, image_ids: str | None = Query(None, alias="imageIds")
    ) -> list:
        project = service.project(project_id)
        ids = service.image_ids(project, _ids(image_ids))
        base = _project_url(request, project_id)
        return [training_images.image_json(project, i, base) for i in ids]

    @route(f"{P}/images/{{image_id}}/original")
    def get_image_original(project_id: str, image_id: str) -> Response:
        """The stored file, byte for byte (what ``originalImageUri`` points at)."""
        project = service.project(project_id)
        (row_id,) = service.image_ids(project, [image_id])
        record = project.image(row_id)
        try:
            data = record.path.read_bytes()
        except OSError:
            raise RequestError(
                404, "NotFoundImage", f"image {image_id}: its file is missing"
            ) from None
        return Response(data, media_type=_MEDIA_TYPES.get(record.format or "", "image/*"))

    @route(f"{P}/images/{{image_id}}/thumbnail")
    def get_image_thumbnail(project_id: str, image_id: str) -> Response:
        """A JPEG thumbnail (what ``thumbnailUri`` points at)."""
        project = service.project(project_id)
        (row_id,) = service.image_ids(project, [image_id])
        try:
            return Response(project.thumbnail(row_id), media_type="image/jpeg")
        except (OSError, ImgClassError):
            raise RequestError(
                404, "NotFoundImage", f"image {image_id}: its file is missing"
            ) from None

    @route(f"{P}/images", "DELETE", 204)
    def delete_images(
        project_id: str,
        image_ids: str | None = Query(None, alias="imageIds"),
        all_images: bool = Query(False, alias="allImages"),
    ) -> Response:
        project = service.project(project_id)
        training_images.delete_images(service, project, _ids(image_ids), all_images)
        return Response(status_code=204)

    @route(f"{P}/images/tags", "POST")
    async def create_image_tags(request: Request, project_id: str) -> dict:
        project = await run_in_threadpool(service.project, project_id)
        body = await _json_body(request, JSON_BYTES)
        return await run_in_threadpool(training_images.tag_images, service, project, body)

    @route(f"{P}/images/tags", "DELETE", 204)
    def delete_image_tags(
        project_id: str,
        image_ids: str | None = Query(None, alias="imageIds"),
        tag_ids: str | None = Query(None, alias="tagIds"),
    ) -> Response:
        project = service.project(project_id)
        training_images.untag_images(service, project, _ids(image_ids), _ids(tag_ids))
        return Response(status_code=204)

    # ------------------------------------------------------------------ iterations
    @route(f"{P}/train", "POST")
    def train_project(
        project_id: str,
        training_type: str | None = Query(None, alias="trainingType"),
        hours: int | None = Query(None, alias="reservedBudgetInHours"),
    ) -> dict:
        return service.train(service.project(project_id), training_type, hours)

    @route(f"{P}/iterations")
    def get_iterations(project_id: str) -> list:
        return service.iterations(service.project(project_id))

    @route(f"{P}/iterations/{{iteration_id}}")
    def get_iteration(project_id: str, iteration_id: str) -> dict:
        return service.iteration(service.project(project_id), iteration_id)

    @route(f"{P}/iterations/{{iteration_id}}/performance")
    def get_iteration_performance(
        project_id: str, iteration_id: str, threshold: float | None = None
    ) -> dict:
        return service.performance(service.project(project_id), iteration_id, threshold)

    @route(f"{P}/iterations/{{iteration_id}}/publish", "POST")
    def publish_iteration(
        project_id: str,
        iteration_id: str,
        publish_name: str = Query("", alias="publishName"),
        prediction_id: str = Query("", alias="predictionId"),
        overwrite: bool = False,
    ) -> bool:
        project = service.project(project_id)
        service.publish(project, iteration_id, publish_name, prediction_id, overwrite)
        return True

    @route(f"{P}/iterations/{{iteration_id}}/publish", "DELETE", 204)
    def unpublish_iteration(project_id: str, iteration_id: str) -> Response:
        service.unpublish(service.project(project_id), iteration_id)
        return Response(status_code=204)

    # ------------------------------------------------------------------ quick test
    def quick_test(read: Callable) -> Callable:
        async def endpoint(
            request: Request,
            project_id: str,
            iteration_id: str | None = Query(None, alias="iterationId"),
            data: bytes = Depends(read),  # noqa: B008 (FastAPI's idiom)
        ) -> dict:
            return await _quick_test(request, project_id, iteration_id, data)

        return endpoint

    # the prediction routes' readers: the same bounds, form parsing and URL allow-list
    route(f"{P}/quicktest/image", "POST")(quick_test(uploaded_image))
    route(f"{P}/quicktest/url", "POST")(quick_test(url_image))

    async def _quick_test(request: Request, project_id, iteration_id, data: bytes) -> dict:
        project = await run_in_threadpool(service.project, project_id)
        iteration = await run_in_threadpool(service.trained, project, iteration_id)
        info = ModelInfo(iteration, None, None, project.id)
        max_pixels = request.app.state.settings.max_pixels
        image = await run_in_threadpool(
            image_to_array, data, info.input_size, info.resize, max_pixels
        )
        probs = await run_in_threadpool(iteration.predict_arrays, image[None])
        result = prediction(info, probs[0])
        guids = await run_in_threadpool(project.store.guids, "iterations")
        return {**result, "iteration": guids[iteration.number]}

    # ------------------------------------------------------------------ the rest
    @router.api_route("/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    def not_supported(rest: str, request: Request) -> None:
        what = {
            "export": "exports are not made here (`jupyter-imgclass export` writes a bundle "
            "and ONNX)",
            "region": "object detection is not made here",
            "suggest": "suggested tags and regions are not made here (Project.suggest in a "
            "notebook)",
        }
        reason = next((v for k, v in what.items() if k in rest.lower()), None)
        raise RequestError(
            400,
            "BadRequestNotSupported",
            f"{request.method} /{rest}: "
            + (reason or "not part of the Training API subset this server answers")
            + "; see the README's 'Training API' section",
        )

    return router


_MEDIA_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif", "BMP": "image/bmp",
                "WEBP": "image/webp", "TIFF": "image/tiff"}  # fmt: skip


def _project_url(request: Request, project_id: str) -> str:
    """The project's absolute URL under the API prefix this request came through."""
    path = request.url.path
    prefix = path[: path.lower().index("/projects/")] if "/projects/" in path.lower() else path
    return f"{str(request.base_url).rstrip('/')}{prefix.rstrip('/')}/projects/{project_id}"


def _require_urls(request: Request) -> None:
    if not request.app.state.settings.allowed_urls:
        raise RequestError(
            400,
            "BadRequestImageUrl",
            "images by URL are off on this server; start it with --allow-url PREFIX",
        )


def workspace_options(
    workspace: Workspace | str | os.PathLike,
    *,
    training_key: str | None = None,
    train_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The :func:`~jupyter_imgclass.publish.serve.create_app` options that serve a
    workspace: the prediction routes of every project's published iterations (by project
    GUID and published name, ``resolve``) and the Training API (``routers``).

    Args:
        workspace: a :class:`Workspace` or its folder.
        training_key: the ``Training-Key`` (None: the Training API answers 401).
        train_options: keywords every ``train_project`` passes to ``Project.train``.

    Examples:
        >>> from jupyter_imgclass.publish.serve import serve_in_background
        >>> options = workspace_options("projects/", training_key="secret")  # doctest: +SKIP
        >>> server = serve_in_background(None, **options)  # doctest: +SKIP
    """
    if not isinstance(workspace, Workspace):
        workspace = Workspace(workspace)
    service = TrainingService(workspace, train_options)
    router = training_routes(service, training_key)
    return {
        "resolve": service.published,
        "routers": [(prefix, router) for prefix in TRAINING_PREFIXES],
    }
