"""Served images kept for review: content-addressed under ``served/``, bounded by a
quota and a retention period, never for ``/nostore`` routes."""

from __future__ import annotations

import hashlib
import os
import time

import httpx
import pytest
from helpers import image_bytes, small_cnn_iteration

from jupyter_imgclass.errors import ProjectError
from jupyter_imgclass.project import Project
from jupyter_imgclass.project.served import ServedImages


@pytest.fixture
def project(tmp_path):
    with Project.create(tmp_path / "proj") as p:
        for tag in ("red", "green"):
            p.create_tag(tag)
        yield p


def test_served_images_are_kept_once_and_nostore_ones_never(project):
    iteration = small_cnn_iteration(project)
    a, b, c = image_bytes(31), image_bytes(32), image_bytes(33)
    with iteration.serve() as srv:
        answers = []
        for body, route in ((a, "image"), (a, "image"), (b, "image"), (c, "image nostore")):
            r = httpx.post(
                srv.routes[route],
                content=body,
                headers={"Content-Type": "application/octet-stream"},
                timeout=60,
            )
            assert r.status_code == 200, r.text
            answers.append(r.json())
        deadline = time.monotonic() + 30  # the log is written after each answer is sent
        while len(project.store.prediction_log()) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    kept = project.served_images()
    assert len(kept) == 3  # a twice, b once; c went to /nostore
    assert all("image_path" not in k and k["path"].is_absolute() for k in kept)
    assert [k["predictions"] for k in kept] == [x["predictions"] for x in answers[2::-1]]
    assert kept[0]["path"].read_bytes() == b and kept[1]["path"].read_bytes() == a
    assert kept[1]["path"] == kept[2]["path"]  # content-addressed: one file for a
    assert kept[1]["path"].suffix == ".png" and kept[1]["path"].parent.parent.name == "served"
    files = sorted((project.path / "served").glob("*/*"))
    assert len(files) == 2


def test_quota_and_retention_prune_oldest_first_and_keep_the_log(project):
    images = [image_bytes(40 + k, size=(60, 60)) for k in range(4)]
    size = max(len(x) for x in images)
    served = ServedImages(project.path, project.store, quota_bytes=int(size * 2.5))
    paths = []
    for k, body in enumerate(images):
        paths.append(served.keep(body, "Iteration1", [{"tagName": "red", "probability": 0.9}]))
        os.utime(project.path / paths[-1], (1000.0 + k, 1000.0 + k))  # a clear order
        served.prune(now=1010.0)
    left = {k["image_sha256"] for k in project.served_images()}
    assert len(left) == 2 and served.usage()["bytes"] <= served.quota_bytes
    log = project.store.prediction_log()
    assert len(log) == 4 and [row["image_path"] for row in log[:2]] == [None, None]
    assert [row["image_path"] for row in log[2:]] == paths[2:]
    # Half a second past 30 days for the third image, half a second short for the fourth.
    assert served.prune(now=1002.5 + 30 * 86400) == [paths[2]]
    assert served.prune(now=time.time() + 31 * 86400) == [paths[3]]
    # the log keeps the images' retention: 31 days on, its rows are gone too
    assert project.served_images() == [] and project.store.prediction_log() == []
    too_big = ServedImages(project.path, project.store, quota_bytes=10)
    assert too_big.keep(images[0], "Iteration1", []) is None  # logged, not kept
    assert project.store.prediction_log()[-1]["image_path"] is None


def test_the_quota_holds_on_every_write_not_only_at_the_prune(project):
    """The probe: --keep-quota-mb 100 ended at 634 MB between two 30-second prunes."""
    images = [image_bytes(300 + k, size=(64, 64)) for k in range(60)]
    quota = 5 * max(len(x) for x in images)
    served = ServedImages(project.path, project.store, quota_bytes=quota)
    biggest = 0
    for body in images:  # one burst, well inside one prune period
        served.keep(body, "Iteration1", [{"tagName": "red", "probability": 0.5}])
        biggest = max(biggest, served.usage()["bytes"])
    assert biggest <= quota, f"{biggest} bytes kept against a quota of {quota}"
    kept = project.served_images()
    assert 4 <= len(kept) <= 5 and kept[0]["image_sha256"] == hashlib.sha256(images[-1]).hexdigest()
    assert len(project.store.prediction_log()) == 60


def test_review_queue_reads_a_bounded_window_of_a_long_log(project):
    with project.store.transaction() as cur:
        cur.executemany(
            "INSERT INTO predictions_log(created_at, iteration, image_sha256, image_path, "
            "predictions_json) VALUES (?, 'Iteration1', ?, NULL, '[]')",
            [(time.time(), f"{k:064x}") for k in range(20_000)],
        )
    plan = project.store._query(
        "EXPLAIN QUERY PLAN SELECT * FROM predictions_log INDEXED BY predictions_log_by_path "
        "WHERE image_path IS NOT NULL ORDER BY id DESC LIMIT 10"
    )  # the query prediction_log(kept_only=True) runs
    assert any("predictions_log_by_path" in str(tuple(r)) for r in plan)
    served = ServedImages(project.path, project.store)
    served.keep(
        image_bytes(7, size=(30, 30)), "Iteration1", [{"tagName": "red", "probability": 0.6}]
    )
    assert len(project.served_images()) == 1 and len(project.review_queue()) == 1


@pytest.mark.parametrize(
    "options, word",
    [({"quota_bytes": -1}, "quota_bytes"), ({"quota_bytes": 1.5}, "quota_bytes"),
     ({"retention_days": 0}, "retention_days"), ({"retention_days": "30"}, "retention_days")],
)  # fmt: skip
def test_bad_keep_settings_are_refused(project, options, word):
    with pytest.raises(ProjectError, match=word):
        ServedImages(project.path, project.store, **options)
