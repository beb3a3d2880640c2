"""The Training API's images: uploads (a batch of files, one form image, or URLs under
the prediction routes' allow-list), listings with paging and counts, deletion, tagging
and untagging, each as the hosted API answers it. Every function takes the
:class:`TrainingService` and a project; what fails for one image of a batch is that
image's ``status``, the rest of the batch proceeds."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from ..errors import ImgClassError, TagError
from ..publish.serve.errors import RequestError
from . import hosted
from .project import Project
from .training_service import TrainingService

__all__ = [
    "MAX_BATCH",
    "add_images",
    "count_images",
    "delete_images",
    "list_images",
    "tag_images",
    "untag_images",
]

MAX_BATCH = 64
"""The most images in one upload batch (the hosted API's limit)."""
MAX_TAKE = 256
OK_STATUSES = ("OK", "OKDuplicate")


def entries_of(body: Any, key: str = "images") -> list[dict]:
    """The entries of an ``Image*CreateBatch`` body, each with the batch's tags merged in."""
    if not isinstance(body, dict) or not isinstance(body.get(key), list):
        raise RequestError(400, "BadRequestImageBatch", f'the body must be JSON {{"{key}": [...]}}')
    entries = body[key]
    if not entries:
        raise RequestError(400, "BadRequestImageBatch", "the batch holds no images")
    if len(entries) > MAX_BATCH:
        raise RequestError(
            400,
            "BadRequestExceededBatchSize",
            f"{len(entries)} images in one batch; send at most {MAX_BATCH} a batch",
        )
    shared = list(body.get("tagIds") or [])
    out = []
    for entry in entries:
        entry = entry if isinstance(entry, dict) else {}
        out.append(
            {**entry, "tagIds": list(dict.fromkeys([*(entry.get("tagIds") or []), *shared]))}
        )
    return out


def file_contents(entry: dict) -> bytes | str:
    """An ``ImageFileCreateEntry``'s bytes (base64 in JSON), or the status saying why not."""
    try:
        return base64.b64decode(entry.get("contents") or "", validate=True) or "ErrorImageFormat"
    except (binascii.Error, ValueError, TypeError):
        return "ErrorImageFormat"


def add_images(
    service: TrainingService,
    project: Project,
    items: list[tuple[str, bytes | str, list[str]]],
    max_bytes: int,
    base: str | None = None,
) -> tuple[dict, int]:
    """Adds ``(source, bytes or failed status, tag GUIDs)`` one by one; the hosted
    ``ImageCreateSummary`` and its HTTP status (207 when some image failed). ``base``:
    the project's URL, for the images' URIs (:func:`hosted.image_json`)."""
    names = {guid: name for name, guid in project.tag_guids().items()}
    results = []
    for source, data, tag_ids in items:
        image, status = None, data if isinstance(data, str) else None
        tags = [names.get(str(t).lower()) for t in tag_ids]
        if status is None and None in tags:
            status = "ErrorInvalidTag"
        elif status is None and len(data) > max_bytes:
            status = "ErrorImageSize"
        if status is None:
            image, status = _add_one(project, source, data, tags, base)
        results.append({"sourceUrl": source, "status": status, "image": image})
    ok = all(r["status"] in OK_STATUSES for r in results)
    return {"isBatchSuccessful": ok, "images": results}, 200 if ok else 207


def _add_one(project: Project, source: str, data: bytes, tags: list[str], base: str | None):
    try:
        report = project.add_images([data], tags=[tags], names=[source])
    except TagError:
        return None, "ErrorTagLimitExceed"
    if report.added:
        return image_json(project, report.added[0], base), "OK"
    if report.duplicates:
        return image_json(project, report.duplicates[0][1], base), "OKDuplicate"
    reason = report.rejected[0][1] if report.rejected else ""
    if "negative" in reason:
        return None, "ErrorNegativeAndRegularTagOnSameImage"
    if "tag" in reason:
        return None, "ErrorTagLimitExceed"
    return None, "ErrorImageDimensions" if "pixels" in reason else "ErrorImageFormat"


def image_json(project: Project, image_id: int, base: str | None = None) -> dict:
    row = project.store.image(image_id)
    guid = project.store.guids("images")[image_id]
    return hosted.image_json(row, guid, project.tag_guids(), base)


def _matching(service: TrainingService, project: Project, status: str, tag_ids: list[str]) -> list:
    wanted = {service.tag_name(project, t) for t in tag_ids}
    rows = project.store.images()
    if status == "Tagged":
        rows = [r for r in rows if r.tags]
    elif status == "Untagged":
        rows = [r for r in rows if not r.tags]
    if wanted:
        rows = [r for r in rows if wanted & set(r.tags)]
    return rows


def list_images(
    service: TrainingService,
    project: Project,
    status: str,
    tag_ids: list[str],
    order_by: str | None,
    take: int | None,
    skip: int | None,
    base: str | None = None,
) -> list[dict]:
    """One page of images (``Newest`` first unless ``Oldest``) as hosted ``Image``s
    (``base``: the project's URL, for their URIs)."""
    take = 50 if take is None else take
    skip = skip or 0
    if not 0 <= take <= MAX_TAKE or skip < 0:
        raise RequestError(
            400, "BadRequestInvalid", f"take {take}, skip {skip}: take 0-{MAX_TAKE}, skip >= 0"
        )
    if order_by not in (None, "Newest", "Oldest"):
        raise RequestError(400, "BadRequestInvalid", f"orderBy {order_by!r}: Newest or Oldest")
    rows = _matching(service, project, status, tag_ids)
    if order_by != "Oldest":
        rows.reverse()
    guids = project.store.guids("images")
    tag_guids = project.tag_guids()
    return [hosted.image_json(r, guids[r.id], tag_guids, base) for r in rows[skip : skip + take]]


def count_images(
    service: TrainingService, project: Project, status: str, tag_ids: list[str]
) -> int:
    return len(_matching(service, project, status, tag_ids))


def delete_images(
    service: TrainingService, project: Project, image_ids: list[str], all_images: bool
) -> None:
    if all_images:
        project.remove_images(project.image_ids())
        return
    if not image_ids:
        raise RequestError(400, "BadRequestInvalidIds", "name imageIds, or allImages=true")
    project.remove_images(service.image_ids(project, image_ids))


def tag_images(service: TrainingService, project: Project, body: Any) -> dict:
    """``ImageTagCreateBatch`` -> ``ImageTagCreateSummary``: each pair created, already
    there (duplicated), or breaking the project's rule (exceeded)."""
    pairs = body.get("tags") if isinstance(body, dict) else None
    if not isinstance(pairs, list) or not pairs:
        raise RequestError(
            400, "BadRequestImageTags", 'the body must be JSON {"tags": [{"imageId", "tagId"}]}'
        )
    summary: dict[str, list] = {"created": [], "duplicated": [], "exceeded": []}
    for pair in pairs:
        pair = pair if isinstance(pair, dict) else {}
        (image,) = service.image_ids(project, [str(pair.get("imageId"))])
        name = service.tag_name(project, str(pair.get("tagId")))
        entry = {"imageId": str(pair["imageId"]).lower(), "tagId": str(pair["tagId"]).lower()}
        have = list(project.store.image(image).tags)
        if name in have:
            summary["duplicated"].append(entry)
            continue
        try:
            project.set_tags(image, [*have, name])
        except (TagError, ImgClassError):
            summary["exceeded"].append(entry)
            continue
        summary["created"].append(entry)
    return summary


def untag_images(
    service: TrainingService, project: Project, image_ids: list[str], tag_ids: list[str]
) -> None:
    if not image_ids or not tag_ids:
        raise RequestError(400, "BadRequestInvalidIds", "name both imageIds and tagIds")
    images = service.image_ids(project, image_ids)
    names = {service.tag_name(project, t) for t in tag_ids}
    for image in images:
        have = list(project.store.image(image).tags)
        if names & set(have):
            project.set_tags(image, [t for t in have if t not in names])
