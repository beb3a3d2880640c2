"""A project of the hosted Custom Vision service, brought here: ``import_customvision``.

It reads the hosted Training API (v3.3, plain HTTP with ``urllib``: the SDK is archived,
so nothing here depends on it) as a migrating team's own scripts would:

1. ``GET /projects/{id}``: the name and the classification type (multiclass or
   multilabel; an object-detection project is refused, this package classifies);
2. ``GET /projects/{id}/tags``: the tags, the Negative one kept as negative;
3. ``GET /projects/{id}/images/tagged`` and ``/images/untagged``, 256 a page (``take`` /
   ``skip``), and each image's ``originalImageUri`` downloaded once.

The folder it writes is an ordinary project. Each image's record keeps the hosted image id
as its source (``customvision:<image id>``), and ``customvision.json`` in the project keeps
the endpoint, the hosted project id and each tag's hosted id; tags and images keep their
hosted GUIDs as their own (``ImageStore.guids``), so prediction answers carry the ``tagId``
an app already knows. Running it again resumes: an
image whose hosted id is already in the store is not fetched again, so a run killed at any
point and run again ends with the same images, none twice. An image that fails (download,
decoding, size) is listed with its reason and the rest proceed.

The training key goes only to the endpoint's own origin: an ``originalImageUri`` on
another host (the hosted service's blob storage, with its own signature) is fetched
without it.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.integrity import atomic_write
from ..errors import ImgClassError
from .project import Project

API = "customvision/v3.3/Training"
"""The hosted Training API's version and path this import reads."""
PAGE = 256
"""Images a page (the hosted API's largest ``take``)."""
TIMEOUT_S = 60.0
"""Seconds a request may take, connect and read."""
MAX_IMAGE_BYTES = 64 * 1024 * 1024
"""The largest image file fetched (the hosted service stores at most 6 MB)."""
MAX_JSON_BYTES = 64 * 1024 * 1024
"""The largest JSON answer read."""
SOURCE_PREFIX = "customvision:"
"""An imported image's ``source``: this and the hosted image id."""
STATE_FILE = "customvision.json"
"""Where the project keeps what it was imported from."""
TRAINING_KEY_ENV = "IMGCLASS_TRAINING_KEY"
"""Where the command line finds the training key when no key file is named."""
KINDS = {"multiclass": "multiclass", "multilabel": "multilabel"}
"""The hosted ``classificationType`` (lower case) and the project's kind."""


@dataclass
class CustomVisionImport:
    """What :func:`import_customvision` did.

    Attributes:
        project: the project folder.
        name: the hosted project's name (the project's name here).
        kind: ``"multiclass"`` or ``"multilabel"``.
        hosted_counts: images per tag in the hosted project (its ``imageCount``), and
            ``"untagged"``: what was there to bring.
        counts: images per tag in the project after the import, and ``"untagged"``
            (``Project.counts``).
        added: hosted image ids stored by this run.
        already: hosted image ids found in the project from an earlier run (not fetched).
        duplicates: ``(hosted image id, the project's image id)``: the same picture as an
            image already here, kept once.
        failed: ``(hosted image id, reason)``: not brought, the rest proceeded.
    """

    project: Path
    name: str
    kind: str
    hosted_counts: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    added: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    duplicates: list[tuple[str, int]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Every hosted image is here (none failed, per-tag counts equal)."""
        return not self.failed and self.counts == self.hosted_counts

    def summary(self) -> str:
        text = (
            f"{self.name!r} ({self.kind}) into {self.project}: {len(self.added)} images "
            f"added, {len(self.already)} already here, {len(self.duplicates)} duplicate(s), "
            f"{len(self.failed)} failed"
        )
        return text + ("" if self.complete else "; per-tag counts differ from the hosted ones")

    def to_json(self) -> dict[str, Any]:
        return {
            "project": str(self.project),
            "name": self.name,
            "kind": self.kind,
            "complete": self.complete,
            "hosted_counts": self.hosted_counts,
            "counts": self.counts,
            "added": len(self.added),
            "already": len(self.already),
            "duplicates": [{"hosted_id": h, "image_id": i} for h, i in self.duplicates],
            "failed": [{"hosted_id": h, "reason": r} for h, r in self.failed],
        }

    def __repr__(self) -> str:
        lines = [self.summary()]
        for tag in sorted(set(self.hosted_counts) | set(self.counts)):
            lines.append(
                f"  {tag}: {self.counts.get(tag, 0)} here, {self.hosted_counts.get(tag, 0)} hosted"
            )
        lines += [f"  failed {h}: {r}" for h, r in self.failed[:20]]
        if len(self.failed) > 20:
            lines.append(f"  ... and {len(self.failed) - 20} more failed (see .failed)")
        return "\n".join(lines)


class _Hosted:
    """The hosted Training API of one project: JSON and image bytes over ``urllib``."""

    def __init__(self, endpoint: str, key: str, project_id: str, timeout: float):
        parsed = urllib.parse.urlsplit(endpoint.strip())
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ImgClassError(f"endpoint {endpoint!r}: not an http(s) URL")
        self.origin = (parsed.scheme, parsed.netloc.lower())
        # a URL pasted from the portal or the docs may carry the API's path: the resource
        # is what comes before it
        root = parsed.path.split("/customvision/", 1)[0].rstrip("/")
        self.base = f"{parsed.scheme}://{parsed.netloc}{root}/{API}/projects/{project_id}"
        self.endpoint = endpoint
        self.key = key
        self.timeout = timeout

    def _get(self, url: str, limit: int, *, keyed: bool = True) -> bytes:
        headers = {"Training-Key": self.key} if keyed else {}
        request = urllib.request.Request(url, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                data = answer.read(limit + 1)
        except urllib.error.HTTPError as exc:
            raise ImgClassError(f"{_shown(url)}: HTTP {exc.code} {_hosted_error(exc)}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ImgClassError(f"{_shown(url)}: {reason}") from None
        if len(data) > limit:
            raise ImgClassError(f"{_shown(url)}: more than {limit} bytes")
        return data

    def json(self, path: str = "", **query: Any) -> Any:
        url = self.base + path + (f"?{urllib.parse.urlencode(query)}" if query else "")
        data = self._get(url, MAX_JSON_BYTES)
        try:
            return json.loads(data)
        except ValueError:
            raise ImgClassError(f"{_shown(url)}: the answer is not JSON") from None

    def pages(self, path: str):
        """Every item of a paged list (``take`` / ``skip``)."""
        skip = 0
        while True:
            page = self.json(path, take=PAGE, skip=skip)
            if not isinstance(page, list):
                raise ImgClassError(f"{path}: expected a list of images, got {type(page).__name__}")
            yield from page
            if len(page) < PAGE:
                return
            skip += len(page)

    def image(self, url: str) -> bytes:
        """An image's bytes; the key only to the endpoint's own origin."""
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https"):
            raise ImgClassError(f"originalImageUri {url!r}: not an http(s) URL")
        same = (parsed.scheme, parsed.netloc.lower()) == self.origin
        return self._get(url, MAX_IMAGE_BYTES, keyed=same)


def _shown(url: str) -> str:
    """``url`` without its query (a blob URL's signature stays out of reports)."""
    return url.split("?", 1)[0]


def _hosted_error(exc: urllib.error.HTTPError) -> str:
    """The hosted ``{"code", "message"}`` of an error answer, when it has one."""
    try:
        body = json.loads(exc.read(65536) or b"{}")
        return f"{body.get('code', '')}: {body.get('message', '')}".strip(": ")
    except (ValueError, OSError, AttributeError):
        return str(exc.reason)


def _state(root: Path) -> dict[str, Any] | None:
    path = root / STATE_FILE
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (ValueError, OSError) as exc:
        raise ImgClassError(f"{path}: unreadable ({exc})") from None


def _open_target(out: Path, project_id: str, name: str, kind: str) -> Project:
    """The project to import into: a new one, or the one an earlier run of the same
    import left (resumed)."""
    if out.exists() and any(out.iterdir()):
        state = _state(out)
        if state is None or state.get("project_id") != project_id:
            raise ImgClassError(
                f"--out {out}: not empty and not an import of hosted project {project_id}; "
                "name a new folder"
            )
        project = Project.open(out)
        if project.kind != kind:
            project.close()
            raise ImgClassError(f"--out {out}: a {project.kind} project, the hosted one is {kind}")
        return project
    try:  # the hosted id, so that an app's projectId stays valid
        kept = str(uuid.UUID(project_id))
    except ValueError:
        kept = None
    return Project.create(out, kind, name=name, project_id=kept)


def import_customvision(
    endpoint: str,
    training_key: str,
    project_id: str,
    out: str | os.PathLike[str],
    *,
    timeout: float = TIMEOUT_S,
    on_progress: Callable[[int, int], None] | None = None,
) -> CustomVisionImport:
    """Brings a hosted Custom Vision project (its images, tags, the Negative tag and the
    untagged images) into a new project folder, or resumes an earlier run into it.

    Args:
        endpoint: the resource's endpoint, ``https://<resource>.cognitiveservices.azure.com``
            (or any server that answers the Training API, such as ``jupyter-imgclass serve``).
        training_key: the resource's training key (sent as ``Training-Key``).
        project_id: the hosted project's id.
        out: the project folder to create (or the one an earlier run of this import made).
        timeout: seconds each request may take.
        on_progress: ``on_progress(done, total)`` after each image.

    Returns:
        A :class:`CustomVisionImport` report; ``.complete`` says whether every image came.

    Raises:
        ImgClassError: the endpoint, key or project id is refused, the project is not a
            classification project, or ``out`` holds something else.
    """
    key = (training_key or "").strip()
    if not key:
        raise ImgClassError("training key: empty")
    project_id = str(project_id).strip()
    if not project_id or "/" in project_id or "?" in project_id:
        raise ImgClassError(f"project id {project_id!r}: not a project id")
    hosted = _Hosted(endpoint, key, urllib.parse.quote(project_id), timeout)
    about = hosted.json()
    settings = about.get("settings") or {}
    domain_type = str(settings.get("domainType") or about.get("domainType") or "Classification")
    if domain_type.lower() == "objectdetection":
        raise ImgClassError(
            f"hosted project {about.get('name')!r}: object detection; only classification "
            "projects can be imported"
        )
    kind = KINDS.get(str(settings.get("classificationType") or "Multiclass").lower())
    if kind is None:
        raise ImgClassError(f"classificationType {settings.get('classificationType')!r}: unknown")
    name = str(about.get("name") or project_id)
    tags = hosted.json("/tags")
    out = Path(out).expanduser()
    project = _open_target(out, project_id, name, kind)
    report = CustomVisionImport(project=out, name=name, kind=kind)
    try:
        names = _make_tags(project, tags, report)
        atomic_write(
            out / STATE_FILE,
            json.dumps(
                {
                    "endpoint": endpoint,
                    "project_id": project_id,
                    "name": name,
                    "kind": kind,
                    "tags": {t["name"]: {"id": t["id"], "type": t.get("type")} for t in tags},
                },
                indent=2,
            ).encode(),
        )
        images = [(item, True) for item in hosted.pages("/images/tagged")]
        images += [(item, False) for item in hosted.pages("/images/untagged")]
        report.hosted_counts["untagged"] = sum(not tagged for _, tagged in images)
        done = {
            r.source[len(SOURCE_PREFIX) :]: r.id
            for r in project.images
            if (r.source or "").startswith(SOURCE_PREFIX)
        }
        for k, (item, _) in enumerate(images):
            _bring(project, hosted, item, names, done, report)
            if on_progress is not None:
                on_progress(k + 1, len(images))
        report.counts = project.counts()
    finally:
        project.close()
    return report


def _make_tags(project: Project, tags: Any, report: CustomVisionImport) -> dict[str, str]:
    """The hosted tags made here (``{hosted tag id: name}``), the Negative one as negative."""
    if not isinstance(tags, list):
        raise ImgClassError(f"tags: expected a list, got {type(tags).__name__}")
    names = {}
    have = {t.name.lower(): t for t in project.tags}
    for tag in tags:
        name, negative = str(tag["name"]), tag.get("type") == "Negative"
        names[str(tag["id"])] = name
        report.hosted_counts[name] = int(tag.get("imageCount") or 0)
        if name.lower() not in have:
            if negative:
                project.create_negative_tag(name)
            else:
                project.create_tag(name)
        _keep_hosted_id(project, "tags", project.store.tag(name).id, tag["id"])
    return names


def _keep_hosted_id(project: Project, table: str, row: int, hosted_id: Any) -> None:
    """The hosted GUID becomes the row's own (``ImageStore.guids``: what prediction
    answers and the Training API say), unless the row has one already."""
    try:
        guid = str(uuid.UUID(str(hosted_id)))
    except ValueError:
        return  # not a GUID: the row gets one of its own when first asked
    project.store.set_guid(table, row, guid)


def _bring(project, hosted, item, names, done, report) -> None:
    """One hosted image into the project (or counted as here already / failed)."""
    image_id = str(item.get("id") or "")
    if not image_id:
        report.failed.append(("(no id)", "an image without an id in the list"))
        return
    if image_id in done:  # an earlier run brought it (and may have been killed before
        report.already.append(image_id)  # the GUID was kept)
        _keep_hosted_id(project, "images", done[image_id], image_id)
        return
    try:
        tag_names = [names[str(t["tagId"])] for t in item.get("tags") or []]
    except KeyError as exc:
        report.failed.append((image_id, f"tag id {exc.args[0]} is not among the project's tags"))
        return
    url = item.get("originalImageUri") or item.get("resizedImageUri")
    if not url:
        report.failed.append((image_id, "no originalImageUri"))
        return
    try:
        data = hosted.image(str(url))
    except ImgClassError as exc:
        report.failed.append((image_id, str(exc)))
        return
    result = project.add_images([data], tags=[tag_names], names=[SOURCE_PREFIX + image_id])
    if result.added:
        report.added.append(image_id)
        done[image_id] = result.added[0]
        _keep_hosted_id(project, "images", result.added[0], image_id)
    elif result.duplicates:
        report.duplicates.append((image_id, result.duplicates[0][1]))
    else:
        report.failed.append((image_id, result.rejected[0][1] if result.rejected else "refused"))
