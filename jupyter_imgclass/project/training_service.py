"""What the Training API does to a workspace, without HTTP: lookups by GUID (a
:class:`~jupyter_imgclass.publish.serve.errors.RequestError` with the hosted code name
when one fails), training in the background, publishing, and the published iterations the
prediction routes serve. ``training_api`` puts it on routes."""

from __future__ import annotations

import threading
import uuid
from typing import Any

from ..errors import ImgClassError, TagError, TrainingError
from ..publish.serve.errors import RequestError
from ..vocabulary import check_publish_name
from . import hosted
from .project import Project
from .workspace import Workspace

__all__ = ["OBJECT_DETECTION_DOMAINS", "TrainingService", "check_guid"]

OBJECT_DETECTION_DOMAINS = {
    "da2e3a8a-40a5-4171-82f4-58522f70fbc1",  # General (object detection)
    "a27d5ca5-bb19-49d8-a70a-fec086c47f5b",  # Logo
    "1d8ffafe-ec40-4fb2-8f90-72b3b6cecea4",  # Products on shelves
    "a1db07ca-a19a-4830-bae8-e004a42dc863",  # General (compact, object detection)
}
"""The hosted object-detection domains: refused by name (detection is not made here)."""
TRAINED = ("done", "stopped")


def check_guid(value: str, what: str) -> str:
    """``value`` in the hosted API's lower-case GUID form, or a 400 naming it."""
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise RequestError(400, "BadRequestInvalidIds", f"{what} {value!r} is not a GUID") from None


class TrainingService:
    """The Training API's state over a :class:`Workspace`.

    Args:
        workspace: the folder of projects.
        train_options: keywords every ``train_project`` passes to ``Project.train`` (the
            quick budget's ``model``, a ``seed``...); ``budget`` comes from the request.
    """

    def __init__(self, workspace: Workspace, train_options: dict[str, Any] | None = None):
        self.workspace = workspace
        self.train_options = dict(train_options or {})
        self._lock = threading.RLock()
        # project id -> {iteration number: (GUID, run)} until the run has written its row
        self._pending: dict[str, dict[int, tuple[str, Any]]] = {}

    # ------------------------------------------------------------------ lookups
    def project(self, project_id: str) -> Project:
        project = self.workspace.project(check_guid(project_id, "project id"))
        if project is None:
            raise RequestError(404, "NotFoundProject", f"no project {project_id} here")
        return project

    def tag_name(self, project: Project, tag_id: str) -> str:
        wanted = check_guid(tag_id, "tag id")
        for name, guid in project.tag_guids().items():
            if guid == wanted:
                return name
        raise RequestError(404, "NotFoundTag", f"no tag {tag_id} in project {project.id}")

    def image_ids(self, project: Project, image_ids: list[str]) -> list[int]:
        """Row ids of the images with these GUIDs; a 404 naming the first unknown."""
        wanted = [check_guid(i, "image id") for i in image_ids]
        rows = {guid: row for row, guid in project.store.guids("images").items()}
        for guid in wanted:
            if guid not in rows:
                raise RequestError(404, "NotFoundImage", f"no image {guid} in {project.id}")
        return [rows[g] for g in wanted]

    def iterations(self, project: Project) -> list[dict]:
        """Every iteration as the hosted ``Iteration``, oldest first (those still reading
        their images before their row is written, too)."""
        store = project.store
        with self._lock:
            pending = self._pending.get(project.id, {})
            rows = {row["number"]: row for row in store.iterations()}
            for number, (guid, _) in list(pending.items()):
                if number in rows:  # the run wrote its row: it carries the GUID now
                    store.set_guid("iterations", number, guid)
                    del pending[number]
            guids = store.guids("iterations")
            out = [hosted.iteration_json(project, rows[n], guids[n]) for n in sorted(rows)]
            for number, (guid, run) in sorted(pending.items()):
                status = "failed" if run.status == "failed" else "training"
                out.append(hosted.pending_iteration_json(project, guid, number, status))
        return out

    def iteration(self, project: Project, iteration_id: str) -> dict:
        wanted = check_guid(iteration_id, "iteration id")
        for found in self.iterations(project):
            if found["id"] == wanted:
                return found
        raise RequestError(
            404, "NotFoundIteration", f"no iteration {iteration_id} in project {project.id}"
        )

    def trained(self, project: Project, iteration_id: str | None):
        """The :class:`Iteration` (the latest trained one when ``iteration_id`` is None)."""
        if iteration_id is None:
            its = project.iterations
            if not its:
                raise RequestError(
                    400,
                    "NotFoundProjectDefaultIteration",
                    f"project {project.id} has no trained iteration; train_project first",
                )
            return its[-1]
        found = self.iteration(project, iteration_id)
        if found["status"] != "Completed":
            raise RequestError(
                400,
                "BadRequestIterationIsNotTrained",
                f"iteration {iteration_id} is {found['status']}, not Completed",
            )
        return project.iteration(found["name"])

    # ------------------------------------------------------------------ projects, tags
    def create_project(self, name: str | None, description: str | None, kind: str) -> Project:
        name = (name or "").strip()
        if not name or len(name) > 200:
            raise RequestError(
                400, "BadRequestProjectName", "a project needs a name of 1 to 200 characters"
            )
        if any(p.name.casefold() == name.casefold() for p in self.workspace.projects()):
            raise RequestError(
                400, "BadRequestProjectNameNotUnique", f"a project named {name!r} exists"
            )
        project = self.workspace.create_project(name, kind)
        if description:
            project.store.set_meta("description", description)
        return project

    def create_tag(self, project: Project, name: str | None, kind: str) -> dict:
        if kind not in ("Regular", "Negative"):
            raise RequestError(
                400,
                "BadRequestTagType",
                f"tag type {kind!r}: this server makes Regular and Negative tags",
            )
        existing = {t.name.casefold(): t for t in project.tags}
        if (name or "").strip().casefold() in existing:
            raise RequestError(400, "BadRequestTagNameNotUnique", f"tag {name!r} exists")
        if kind == "Negative" and project.negative_tag is not None:
            raise RequestError(
                400,
                "BadRequestMultipleNegativeTag",
                f"the project has a negative tag already ({project.negative_tag!r})",
            )
        try:
            record = project.create_tag(name, negative=kind == "Negative")
        except TagError as exc:
            raise RequestError(400, "BadRequestTagName", str(exc)) from None
        return hosted.tag_json(project.tag_guids()[record.name], record.name, record.is_negative, 0)

    def tags(self, project: Project) -> list[dict]:
        guids = project.tag_guids()
        return [
            hosted.tag_json(guids[t.name], t.name, t.is_negative, t.count) for t in project.tags
        ]

    # ------------------------------------------------------------------ training
    def train(self, project: Project, training_type: str | None, hours: int | None) -> dict:
        """Starts a training in the background; the iteration as it is now (Training)."""
        training_type = training_type or "Regular"
        if training_type not in ("Regular", "Advanced"):
            raise RequestError(
                400, "BadRequestInvalid", f"trainingType {training_type!r}: Regular or Advanced"
            )
        options = dict(self.train_options)
        budget = "quick" if training_type == "Regular" else "advanced"
        if budget == "advanced" and hours:
            options["minutes"] = 60 * hours
        try:
            run = project.train(budget, **options)
        except TrainingError as exc:
            busy = "another training" in str(exc)
            code = (
                "BadRequestTrainingAlreadyInProgress"
                if busy
                else ("BadRequestTrainingValidationFailed")
            )
            raise RequestError(400, code, str(exc)) from None
        guid = str(uuid.uuid4())
        with self._lock:
            self._pending.setdefault(project.id, {})[run.number] = (guid, run)
        return self.iteration(project, guid)

    def performance(self, project: Project, iteration_id: str, threshold: float | None) -> dict:
        """Per-tag precision / recall / AP from the iteration's cross-validated
        predictions, at ``threshold`` (the iteration's own thresholds when None)."""
        iteration = self.trained(project, iteration_id)
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise RequestError(400, "BadRequestInvalid", f"threshold {threshold}: not in [0, 1]")
        try:
            if threshold is None:
                metrics = iteration.evaluate(iteration.threshold, per_tag=iteration.thresholds)
            else:
                metrics = iteration.evaluate(threshold)
        except (ImgClassError, OSError) as exc:
            raise RequestError(404, "NotFoundIterationPerformance", str(exc)) from None
        return hosted.performance_json(metrics, project.tag_guids())

    # ------------------------------------------------------------------ publishing
    def publish(
        self, project: Project, iteration_id: str, name: str, resource: str, overwrite: bool
    ) -> None:
        """Publishes an iteration under ``name`` (what the prediction routes answer to)."""
        iteration = self.trained(project, iteration_id)
        try:
            check_publish_name(name)
        except ImgClassError as exc:
            raise RequestError(400, "BadRequestInvalidPublishName", str(exc)) from None
        store = project.store
        with self._lock:
            for row in store.iterations():
                holder = row["config"].get("publish_name")
                if holder == name and row["number"] != iteration.number:
                    if not overwrite:
                        raise RequestError(
                            400,
                            "BadRequestInvalidPublishName",
                            f"{row['name']} is published as {name!r}; unpublish it or pass "
                            "overwrite=True",
                        )
                    store.update_iteration_config(row["number"], {"publish_name": None})
            store.update_iteration_config(
                iteration.number, {"publish_name": name, "prediction_resource_id": resource}
            )

    def unpublish(self, project: Project, iteration_id: str) -> None:
        found = self.iteration(project, iteration_id)
        if not found["publishName"]:
            raise RequestError(
                400, "BadRequestIterationNotPublished", f"iteration {iteration_id} is not published"
            )
        number = project.iteration(found["name"]).number
        project.store.update_iteration_config(
            number, {"publish_name": None, "prediction_resource_id": None}
        )

    def published(self, project_id: str, name: str):
        """The iteration published as ``name`` in the project (the prediction routes'
        model lookup)."""
        project = self.project(project_id)
        for row in project.store.iterations():
            if row["status"] in TRAINED and row["config"].get("publish_name") == name:
                return project.iteration(row["number"])
        raise RequestError(
            404,
            "NotFoundIteration",
            f"no iteration of project {project.id} is published as {name!r}; "
            "publish_iteration publishes one",
        )
