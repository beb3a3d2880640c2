"""The hosted Custom Vision Training API's JSON for a project's things: ``Project``,
``Tag``, ``Image``, ``Iteration`` and ``IterationPerformance``, camelCase as its SDK
(``azure-cognitiveservices-vision-customvision``) reads them, with the GUIDs the project
stores (``ImageStore.guids``).

Examples:
    >>> hosted_time(0)
    '1970-01-01T00:00:00.000Z'
    >>> CLASSIFICATION_TYPES["Multilabel"]
    'multilabel'
"""

from __future__ import annotations

import datetime as _dt
import math
from typing import Any

from .project import DB_NAME, Project

__all__ = [
    "CLASSIFICATION_TYPES",
    "GENERAL_DOMAIN",
    "ITERATION_STATUS",
    "domain_json",
    "hosted_time",
    "image_json",
    "iteration_json",
    "performance_json",
    "project_json",
    "tag_json",
]

GENERAL_DOMAIN = "ee85a74c-405e-4adc-bb47-ffa8ca0c9f31"
"""The hosted "General" classification domain: the one kind of project made here."""
CLASSIFICATION_TYPES = {"Multiclass": "multiclass", "Multilabel": "multilabel"}
"""The hosted ``classificationType`` of each project kind."""
ITERATION_STATUS = {
    "training": "Training",
    "done": "Completed",
    "stopped": "Completed",
    "failed": "Failed",
}
"""An iteration row's status as the hosted API says it."""


def hosted_time(seconds: float | None) -> str | None:
    """A UNIX time as the hosted API writes times (UTC, milliseconds, ``Z``)."""
    if seconds is None:
        return None
    moment = _dt.datetime.fromtimestamp(float(seconds), _dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def domain_json() -> dict:
    """The one domain projects here are made in."""
    return {
        "id": GENERAL_DOMAIN,
        "name": "General",
        "type": "Classification",
        "exportable": False,
        "enabled": True,
        "exportableplatforms": [],
        "modelInformation": {
            "description": "A frozen ImageNet backbone (EfficientNet-Lite) and a logistic "
            "regression head, cross-validated (jupyter_imgclass's quick budget)",
        },
    }


def project_json(project: Project) -> dict:
    """A project as the hosted ``Project``."""
    store = project.store
    created = float(store.meta("created_at") or (project.path / DB_NAME).stat().st_ctime)
    changed = max(
        (project.path / name).stat().st_mtime
        for name in (DB_NAME, f"{DB_NAME}-wal")
        if (project.path / name).exists()
    )
    kinds = {v: k for k, v in CLASSIFICATION_TYPES.items()}
    return {
        "id": project.id,
        "name": project.name,
        "description": store.meta("description") or "",
        "settings": {
            "domainId": GENERAL_DOMAIN,
            "classificationType": kinds[project.kind],
            "targetExportPlatforms": [],
            "useNegativeSet": project.negative_tag is not None,
            "detectionParameters": None,
            "imageProcessingSettings": None,
            "exportModelContainerUri": None,
            "notificationEmailAddress": None,
        },
        "created": hosted_time(created),
        "lastModified": hosted_time(changed),
        "thumbnailUri": None,
        "drModeEnabled": False,
        "status": "Succeeded",
    }


def tag_json(guid: str, name: str, negative: bool, count: int) -> dict:
    """A tag as the hosted ``Tag``."""
    return {
        "id": guid,
        "name": name,
        "description": "",
        "type": "Negative" if negative else "Regular",
        "imageCount": int(count),
    }


def image_json(row: Any, guid: str, tag_guids: dict[str, str], base: str | None = None) -> dict:
    """A stored image (``ImageStore`` row) as the hosted ``Image``. With ``base`` (the
    project's URL on the Training API) its URIs are this server's routes for the stored
    file (``originalImageUri``, also ``resizedImageUri``) and a thumbnail, which need the
    ``Training-Key`` as every route of the API does; without it they are null."""
    created = hosted_time(row.added_at)
    image = None if base is None else f"{base}/images/{guid}"
    return {
        "id": guid,
        "created": created,
        "width": row.width,
        "height": row.height,
        "resizedImageUri": image and f"{image}/original",
        "thumbnailUri": image and f"{image}/thumbnail",
        "originalImageUri": image and f"{image}/original",
        "tags": [
            {"tagId": tag_guids[name], "tagName": name, "created": created}
            for name in row.tags
            if name in tag_guids
        ],
        "regions": None,
        "metadata": None,
    }


def iteration_json(project: Project, row: dict, guid: str) -> dict:
    """An iteration row (``ImageStore.iterations``) as the hosted ``Iteration``."""
    config = row.get("config") or {}
    kinds = {v: k for k, v in CLASSIFICATION_TYPES.items()}
    finished = row.get("finished_at")
    trained = finished if row.get("status") in ("done", "stopped") else None
    minutes = 0 if finished is None else math.ceil((finished - row["created_at"]) / 60)
    return {
        "id": guid,
        "name": row["name"],
        "status": ITERATION_STATUS.get(row.get("status"), "Failed"),
        "created": hosted_time(row["created_at"]),
        "lastModified": hosted_time(finished or row["created_at"]),
        "trainedAt": hosted_time(trained),
        "projectId": project.id,
        "exportable": False,
        "exportableTo": [],
        "domainId": GENERAL_DOMAIN,
        "classificationType": kinds.get(config.get("kind", project.kind)),
        "trainingType": "Advanced" if row.get("budget") == "advanced" else "Regular",
        "reservedBudgetInHours": 0,
        "trainingTimeInMinutes": minutes,
        "publishName": config.get("publish_name"),
        "originalPublishResourceId": config.get("prediction_resource_id"),
        "customBaseModelInfo": None,
        "trainingErrorDetails": None,
    }


def pending_iteration_json(project: Project, guid: str, number: int, status: str) -> dict:
    """A run whose iteration row is not written yet (it is reading its images);
    ``status`` as a row says it (``"training"``, ``"failed"``)."""
    now = _dt.datetime.now(_dt.UTC).timestamp()
    row = {"name": f"Iteration{number}", "status": status, "created_at": now, "budget": "quick"}
    return iteration_json(project, row, guid)


def performance_json(metrics: dict, tag_guids: dict[str, str]) -> dict:
    """Cross-validated metrics (``Iteration.evaluate``) as the hosted
    ``IterationPerformance``; the standard deviations are 0 (one set of out-of-fold
    predictions, not one figure per fold)."""

    def figures(values: dict) -> dict:
        return {
            "precision": float(values["precision"]),
            "precisionStdDeviation": 0.0,
            "recall": float(values["recall"]),
            "recallStdDeviation": 0.0,
            "averagePrecision": float(values["average_precision"]),
        }

    per_tag = [
        {"id": tag_guids.get(name), "name": name, **figures(values)}
        for name, values in metrics["per_tag"].items()
    ]
    return {"perTagPerformance": per_tag, **figures(metrics["overall"])}
