"""The hosted Custom Vision Training API over a workspace, as automation calls it: the
real SDK (``CustomVisionTrainingClient``, ``CustomVisionPredictionClient``) against a
real uvicorn server on 127.0.0.1, every call's broken variants, and the workspace's
projects as ordinary project folders."""

from __future__ import annotations

import http.server
import threading
import time
import uuid

import httpx
import pytest
from azure.cognitiveservices.vision.customvision.prediction import CustomVisionPredictionClient
from azure.cognitiveservices.vision.customvision.training import CustomVisionTrainingClient
from azure.cognitiveservices.vision.customvision.training.models import (
    CustomVisionErrorException,
    ImageFileCreateBatch,
    ImageFileCreateEntry,
    ImageTagCreateEntry,
    ImageUrlCreateBatch,
    ImageUrlCreateEntry,
)
from helpers import png_bytes
from msrest.authentication import ApiKeyCredentials

import jupyter_imgclass as ic
from jupyter_imgclass.project.training_api import workspace_options
from jupyter_imgclass.publish.serve import serve_in_background

TRAINING_KEY = "training-secret"
PREDICTION_KEY = "prediction-secret"
SDK_BASE = "/customvision/v3.4-preview/training"
RED, BLUE = (220, 30, 30), (30, 40, 220)


class _Files(http.server.BaseHTTPRequestHandler):
    """Images to fetch by URL: one inside the allowed prefix, one outside, a text file."""

    def do_GET(self):  # noqa: N802 (http.server's name)
        found = {
            "/ok/red.png": ("image/png", png_bytes(RED, seed=500)),
            "/ok/notes.txt": ("text/plain", b"not an image"),
            "/other/red.png": ("image/png", png_bytes(RED, seed=501)),
        }.get(self.path)
        status, (ctype, body) = (200, found) if found else (404, ("text/plain", b"no"))
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def files():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture(scope="module")
def server(tmp_path_factory, files):
    """A workspace server: the Training API with a key, prediction with another, images
    by URL under ``{files}/ok/``."""
    folder = tmp_path_factory.mktemp("workspace")
    options = workspace_options(
        folder, training_key=TRAINING_KEY, train_options={"model": "efficientnet_lite0"}
    )
    with serve_in_background(
        None, key=PREDICTION_KEY, allow_urls=[f"{files}/ok/"], **options
    ) as handle:
        handle.folder = folder
        yield handle


@pytest.fixture(scope="module")
def trainer(server) -> CustomVisionTrainingClient:
    credentials = ApiKeyCredentials(in_headers={"Training-key": TRAINING_KEY})
    return CustomVisionTrainingClient(server.url, credentials)


def code_of(call, *args, **kwargs) -> tuple[int, str]:
    """The HTTP status and hosted code name of a call the SDK raises for."""
    with pytest.raises(CustomVisionErrorException) as caught:
        call(*args, **kwargs)
    return caught.value.response.status_code, caught.value.error.code


def entries(colour, tag_ids, n: int, seed: int = 0) -> list[ImageFileCreateEntry]:
    return [
        ImageFileCreateEntry(
            name=f"{seed + i}.png", contents=png_bytes(colour, seed=seed + i), tag_ids=tag_ids
        )
        for i in range(n)
    ]


def test_projects_create_list_get_delete(trainer, server):
    project = trainer.create_project("Fruit & veg", description="first one")
    assert str(uuid.UUID(project.id)) == project.id
    assert project.name == "Fruit & veg" and project.description == "first one"
    assert project.settings.classification_type == "Multiclass"
    assert project.settings.domain_id == trainer.get_domains()[0].id
    multilabel = trainer.create_project("labels", classification_type="Multilabel")
    assert multilabel.settings.classification_type == "Multilabel"
    assert {p.id for p in trainer.get_projects()} >= {project.id, multilabel.id}
    assert trainer.get_project(project.id).name == "Fruit & veg"
    # an ordinary project folder, named after the project
    opened = ic.Project.open(server.folder / "Fruit-veg", readonly=True)
    assert opened.id == project.id and opened.kind == "multiclass"
    opened.close()

    trainer.delete_project(multilabel.id)
    assert multilabel.id not in {p.id for p in trainer.get_projects()}
    assert code_of(trainer.get_project, multilabel.id) == (404, "NotFoundProject")
    assert list((server.folder / ".deleted").iterdir())  # moved aside, never erased


def test_project_broken_requests(trainer):
    assert code_of(trainer.get_project, str(uuid.uuid4())) == (404, "NotFoundProject")
    assert code_of(trainer.get_project, "not-a-guid") == (400, "BadRequestInvalidIds")
    assert code_of(trainer.create_project, " ") == (400, "BadRequestProjectName")
    trainer.create_project("twice")
    assert code_of(trainer.create_project, "TWICE") == (400, "BadRequestProjectNameNotUnique")
    assert code_of(trainer.create_project, "x", classification_type="Multiway") == (
        400,
        "BadRequestProjectUnknownClassification",
    )
    detection = "da2e3a8a-40a5-4171-82f4-58522f70fbc1"  # the hosted General (object detection)
    assert code_of(trainer.create_project, "boxes", domain_id=detection) == (
        400,
        "BadRequestUnsupportedDomain",
    )
    assert code_of(trainer.create_project, "x", domain_id=str(uuid.uuid4())) == (
        400,
        "BadRequestProjectUnknownDomain",
    )
    assert code_of(trainer.create_project, "x", target_export_platforms=["CoreML"]) == (
        400,
        "BadRequestProjectUnsupportedExportPlatform",
    )


def test_the_key_is_required(server, trainer):
    for headers in ({}, {"Training-Key": "wrong"}, {"Prediction-Key": TRAINING_KEY}):
        r = httpx.get(f"{server.url}{SDK_BASE}/projects", headers=headers, timeout=30)
        assert r.status_code == 401
        assert r.json()["code"] == "Unauthorized"
    wrong = CustomVisionTrainingClient(
        server.url, ApiKeyCredentials(in_headers={"Training-key": "nope"})
    )
    assert code_of(wrong.get_projects) == (401, "Unauthorized")
    # the hosted v3.3 route answers too
    r = httpx.get(
        f"{server.url}/customvision/v3.3/Training/projects",
        headers={"Training-Key": TRAINING_KEY},
        timeout=30,
    )
    assert r.status_code == 200 and isinstance(r.json(), list)


def test_tags_create_list_delete(trainer):
    project = trainer.create_project("tags")
    apple = trainer.create_tag(project.id, "apple")
    none = trainer.create_tag(project.id, "Nothing", type="Negative")
    assert str(uuid.UUID(apple.id)) == apple.id and apple.type == "Regular"
    assert none.type == "Negative" and apple.image_count == 0
    assert {t.name for t in trainer.get_tags(project.id)} == {"apple", "Nothing"}
    assert trainer.get_tag(project.id, apple.id).name == "apple"
    assert code_of(trainer.create_tag, project.id, "APPLE") == (400, "BadRequestTagNameNotUnique")
    assert code_of(trainer.create_tag, project.id, "never", type="Negative") == (
        400,
        "BadRequestMultipleNegativeTag",
    )
    assert code_of(trainer.create_tag, project.id, "x", type="GeneralProduct") == (
        400,
        "BadRequestTagType",
    )
    assert code_of(trainer.create_tag, project.id, "") == (400, "BadRequestTagName")
    trainer.delete_tag(project.id, none.id)
    assert code_of(trainer.get_tag, project.id, none.id) == (404, "NotFoundTag")
    assert code_of(trainer.delete_tag, project.id, str(uuid.uuid4())) == (404, "NotFoundTag")
    assert [t.name for t in trainer.get_tags(project.id)] == ["apple"]


def test_upload_a_batch_with_a_broken_image(trainer):
    project = trainer.create_project("uploads")
    red = trainer.create_tag(project.id, "red")
    batch = entries(RED, [red.id], 3)
    batch.insert(1, ImageFileCreateEntry(name="notes.txt", contents=b"not an image"))
    batch.append(ImageFileCreateEntry(name="again.png", contents=png_bytes(RED, seed=0)))
    batch.append(
        ImageFileCreateEntry(
            name="t.png", contents=png_bytes(RED, seed=9), tag_ids=[str(uuid.uuid4())]
        )
    )
    summary = trainer.create_images_from_files(project.id, ImageFileCreateBatch(images=batch))
    assert not summary.is_batch_successful
    statuses = [(i.source_url, i.status) for i in summary.images]
    assert statuses == [
        ("0.png", "OK"),
        ("notes.txt", "ErrorImageFormat"),
        ("1.png", "OK"),
        ("2.png", "OK"),
        ("again.png", "OKDuplicate"),
        ("t.png", "ErrorInvalidTag"),
    ]
    first = summary.images[0].image
    assert str(uuid.UUID(first.id)) == first.id and first.width == 24
    assert [(t.tag_id, t.tag_name) for t in first.tags] == [(red.id, "red")]
    assert summary.images[4].image.id == first.id  # the duplicate names the stored image
    assert trainer.get_tag(project.id, red.id).image_count == 3

    assert code_of(
        trainer.create_images_from_files, project.id, ImageFileCreateBatch(images=[])
    ) == (
        400,
        "BadRequestImageBatch",
    )
    too_many = ImageFileCreateBatch(images=entries(RED, [], 65))
    assert code_of(trainer.create_images_from_files, project.id, too_many) == (
        400,
        "BadRequestExceededBatchSize",
    )
    assert code_of(
        trainer.create_images_from_files, str(uuid.uuid4()), ImageFileCreateBatch(images=batch)
    ) == (404, "NotFoundProject")


def train_and_wait(trainer, project_id, **kwargs):
    """``train_project``, then ``get_iteration`` until it leaves Training (as the
    quickstart polls; bounded)."""
    iteration = trainer.train_project(project_id, **kwargs)
    assert iteration.status == "Training"  # it returns at once
    deadline = time.monotonic() + 300
    while iteration.status == "Training":
        assert time.monotonic() < deadline, "training did not finish in 300 s"
        time.sleep(0.2)
        iteration = trainer.get_iteration(project_id, iteration.id)
    return iteration


def test_microsoft_quickstart_runs_unchanged(server, trainer):
    """Microsoft's image-classification quickstart, but for the endpoint and keys."""
    publish_iteration_name = "classifyModel"
    prediction_resource_id = "/subscriptions/x/resourceGroups/y/providers/z/accounts/pred"
    predictor = CustomVisionPredictionClient(
        server.url, ApiKeyCredentials(in_headers={"Prediction-key": PREDICTION_KEY})
    )

    project = trainer.create_project(str(uuid.uuid4()))
    hemlock_tag = trainer.create_tag(project.id, "Hemlock")
    cherry_tag = trainer.create_tag(project.id, "Japanese Cherry")
    image_list = entries(RED, [hemlock_tag.id], 6) + entries(BLUE, [cherry_tag.id], 6, seed=50)
    upload_result = trainer.create_images_from_files(
        project.id, ImageFileCreateBatch(images=image_list)
    )
    assert upload_result.is_batch_successful

    iteration = train_and_wait(trainer, project.id)
    assert iteration.status == "Completed", iteration.status
    assert iteration.training_type == "Regular" and iteration.trained_at is not None
    trainer.publish_iteration(
        project.id, iteration.id, publish_iteration_name, prediction_resource_id
    )

    results = predictor.classify_image(project.id, publish_iteration_name, png_bytes(RED, seed=99))
    top = results.predictions[0]
    assert (top.tag_name, top.tag_id) == ("Hemlock", hemlock_tag.id)
    assert {p.tag_id for p in results.predictions} == {hemlock_tag.id, cherry_tag.id}
    published = trainer.get_iteration(project.id, iteration.id)
    assert published.publish_name == publish_iteration_name
    assert published.original_publish_resource_id == prediction_resource_id


@pytest.fixture(scope="module")
def trained(server, trainer):
    """A project with two tags of 6 images each and one Completed iteration."""
    project = trainer.create_project("colours")
    red = trainer.create_tag(project.id, "red")
    blue = trainer.create_tag(project.id, "blue")
    batch = entries(RED, [red.id], 6, seed=200) + entries(BLUE, [blue.id], 6, seed=300)
    trainer.create_images_from_files(project.id, ImageFileCreateBatch(images=batch))
    iteration = train_and_wait(trainer, project.id)
    assert iteration.status == "Completed"
    return {"project": project, "red": red, "blue": blue, "iteration": iteration}


def test_iterations_and_their_performance(trainer, trained, server):
    project, iteration = trained["project"], trained["iteration"]
    assert [i.id for i in trainer.get_iterations(project.id)] == [iteration.id]
    got = trainer.get_iteration(project.id, iteration.id)
    assert (got.name, got.project_id, got.classification_type) == (
        "Iteration1",
        project.id,
        "Multiclass",
    )
    assert got.publish_name is None and got.exportable is False
    performance = trainer.get_iteration_performance(project.id, iteration.id)
    by_name = {t.name: t for t in performance.per_tag_performance}
    assert set(by_name) == {"red", "blue"}
    assert by_name["red"].id == trained["red"].id
    # the project's own cross-validated figures (Iteration.evaluate), as fractions
    it = ic.Project.open(server.folder / "colours", readonly=True).iteration(1)
    expected = it.evaluate(it.threshold, per_tag=it.thresholds)
    assert performance.precision == pytest.approx(expected["overall"]["precision"])
    assert by_name["red"].recall == pytest.approx(expected["per_tag"]["red"]["recall"])
    assert by_name["red"].average_precision == pytest.approx(
        expected["per_tag"]["red"]["average_precision"]
    )
    # the threshold is honoured: at 1.0 nothing passes, so recall is 0
    strict = trainer.get_iteration_performance(project.id, iteration.id, threshold=1.0)
    assert strict.recall == 0.0
    assert strict.average_precision == pytest.approx(performance.average_precision)
    assert code_of(trainer.get_iteration_performance, project.id, iteration.id, 1.5) == (
        400,
        "BadRequestInvalid",
    )


def test_iteration_broken_requests(trainer, trained):
    project = trained["project"]
    assert code_of(trainer.get_iteration, project.id, str(uuid.uuid4())) == (
        404,
        "NotFoundIteration",
    )
    assert code_of(trainer.get_iteration, project.id, "7") == (400, "BadRequestInvalidIds")
    assert code_of(trainer.get_iterations, str(uuid.uuid4())) == (404, "NotFoundProject")
    lonely = trainer.create_project("too few")
    tag = trainer.create_tag(lonely.id, "only")
    trainer.create_images_from_files(
        lonely.id, ImageFileCreateBatch(images=entries(RED, [tag.id], 2))
    )
    assert code_of(trainer.train_project, lonely.id) == (
        400,
        "BadRequestTrainingValidationFailed",
    )
    assert code_of(trainer.train_project, lonely.id, training_type="Huge") == (
        400,
        "BadRequestInvalid",
    )


def test_publish_several_and_unpublish(server, trainer, trained):
    project, first = trained["project"], trained["iteration"]
    predictor = CustomVisionPredictionClient(
        server.url, ApiKeyCredentials(in_headers={"Prediction-key": PREDICTION_KEY})
    )
    image = png_bytes(BLUE, seed=123)
    trainer.publish_iteration(project.id, first.id, "one", "resource")
    second = train_and_wait(trainer, project.id)
    assert second.status == "Completed" and second.name == "Iteration2"
    assert code_of(trainer.publish_iteration, project.id, second.id, "one", "resource") == (
        400,
        "BadRequestInvalidPublishName",
    )
    trainer.publish_iteration(project.id, second.id, "two", "resource")
    for name in ("one", "two"):  # both published at once, as in the hosted service
        answer = predictor.classify_image(project.id, name, image)
        assert answer.predictions[0].tag_id == trained["blue"].id
        assert answer.iteration == name and answer.project == project.id
    trainer.unpublish_iteration(project.id, first.id)
    with pytest.raises(Exception) as caught:
        predictor.classify_image(project.id, "one", image)
    assert caught.value.response.status_code == 404
    assert caught.value.error.code == "NotFoundIteration"
    assert code_of(trainer.unpublish_iteration, project.id, first.id) == (
        400,
        "BadRequestIterationNotPublished",
    )
    assert code_of(trainer.publish_iteration, project.id, first.id, "", "resource") == (
        400,
        "BadRequestInvalidPublishName",
    )
    # overwrite moves a name to another iteration
    trainer.publish_iteration(project.id, first.id, "two", "resource", overwrite=True)
    assert trainer.get_iteration(project.id, second.id).publish_name is None
    assert trainer.get_iteration(project.id, first.id).publish_name == "two"
    with pytest.raises(Exception) as caught:
        predictor.classify_image(str(uuid.uuid4()), "two", image)
    assert caught.value.error.code == "NotFoundProject"


def test_a_project_made_through_the_api_is_an_ordinary_folder(server, trainer, trained):
    project, red = trained["project"], trained["red"]
    folder = server.folder / "colours"
    with ic.Project.open(folder) as opened:  # a notebook opens it while the server runs
        assert opened.id == project.id
        assert opened.tag_guids()["red"] == red.id  # the same GUIDs, stored in the project
        assert opened.counts()["red"] == 6
        opened.create_tag("green")
        image = opened.images[0]
        opened.set_tags(image.id, ["green"])
    tags = {t.name: t for t in trainer.get_tags(project.id)}
    assert tags["green"].image_count == 1 and tags["red"].image_count == 5
    untagged = trainer.get_tagged_images(project.id, tag_ids=[tags["green"].id])
    assert [i.tags[0].tag_name for i in untagged] == ["green"]


def test_quick_test_image(trainer, trained):
    project, iteration = trained["project"], trained["iteration"]
    answer = trainer.quick_test_image(project.id, png_bytes(RED, seed=600))
    assert answer.predictions[0].tag_id == trained["red"].id
    assert answer.iteration == trainer.get_iterations(project.id)[-1].id  # the latest
    chosen = trainer.quick_test_image(
        project.id, png_bytes(BLUE, seed=601), iteration_id=iteration.id
    )
    assert chosen.iteration == iteration.id
    assert chosen.predictions[0].tag_name == "blue"
    assert code_of(trainer.quick_test_image, project.id, b"not an image") == (
        400,
        "BadRequestImageFormat",
    )
    fresh = trainer.create_project("untrained")
    assert code_of(trainer.quick_test_image, fresh.id, png_bytes(RED)) == (
        400,
        "NotFoundProjectDefaultIteration",
    )


def test_images_by_url_under_the_allow_list(trainer, files):
    project = trainer.create_project("by url")
    red = trainer.create_tag(project.id, "red")
    batch = ImageUrlCreateBatch(
        images=[
            ImageUrlCreateEntry(url=f"{files}/ok/red.png"),
            ImageUrlCreateEntry(url=f"{files}/other/red.png"),  # outside the prefix
            ImageUrlCreateEntry(url=f"{files}/ok/notes.txt"),
            ImageUrlCreateEntry(url=f"{files}/ok/missing.png"),
        ],
        tag_ids=[red.id],
    )
    summary = trainer.create_images_from_urls(project.id, batch)
    assert not summary.is_batch_successful
    assert [i.status for i in summary.images] == [
        "OK",
        "ErrorSource",
        "ErrorImageFormat",
        "ErrorSource",
    ]
    assert summary.images[0].source_url == f"{files}/ok/red.png"
    assert summary.images[0].image.tags[0].tag_id == red.id
    assert trainer.get_image_count(project.id) == 1


def test_images_list_page_count_tag_untag_delete(trainer):
    project = trainer.create_project("paging")
    red = trainer.create_tag(project.id, "red")
    blue = trainer.create_tag(project.id, "blue")
    batch = entries(RED, [red.id], 4, seed=700) + entries(BLUE, [], 3, seed=800)
    made = trainer.create_images_from_files(project.id, ImageFileCreateBatch(images=batch))
    ids = [i.image.id for i in made.images]
    single = trainer.create_images_from_data(project.id, png_bytes(BLUE, seed=900), [blue.id])
    assert single.is_batch_successful and single.images[0].image.tags[0].tag_id == blue.id
    assert trainer.get_tagged_image_count(project.id) == 5
    assert trainer.get_untagged_image_count(project.id) == 3
    assert trainer.get_tagged_image_count(project.id, tag_ids=[red.id]) == 4
    assert trainer.get_image_count(project.id, tagging_status="Untagged") == 3
    # paging, newest first unless asked
    newest = trainer.get_tagged_images(project.id, tag_ids=[red.id], take=3)
    assert [i.id for i in newest] == ids[3:0:-1]
    rest = trainer.get_tagged_images(project.id, tag_ids=[red.id], take=3, skip=3)
    assert [i.id for i in rest] == ids[:1]
    oldest = trainer.get_untagged_images(project.id, order_by="Oldest")
    assert [i.id for i in oldest] == ids[4:]
    assert [i.id for i in trainer.get_images_by_ids(project.id, ids[:2])] == ids[:2]
    # tag and untag
    result = trainer.create_image_tags(
        project.id,
        [
            ImageTagCreateEntry(image_id=ids[4], tag_id=blue.id),
            ImageTagCreateEntry(image_id=ids[0], tag_id=red.id),  # has it already
            ImageTagCreateEntry(image_id=ids[1], tag_id=blue.id),  # multiclass: one tag
        ],
    )
    assert [(e.image_id, e.tag_id) for e in result.created] == [(ids[4], blue.id)]
    assert [e.image_id for e in result.duplicated] == [ids[0]]
    assert [e.image_id for e in result.exceeded] == [ids[1]]
    trainer.delete_image_tags(project.id, [ids[0], ids[4]], [red.id, blue.id])
    assert trainer.get_untagged_image_count(project.id) == 4
    # delete
    trainer.delete_images(project.id, image_ids=ids[:2])
    assert trainer.get_image_count(project.id) == 6
    trainer.delete_images(project.id, all_images=True)
    assert trainer.get_image_count(project.id) == 0


def test_image_broken_requests(trainer, server):
    project = trainer.create_project("broken images")
    red = trainer.create_tag(project.id, "red")
    unknown = str(uuid.uuid4())
    assert code_of(trainer.delete_images, project.id, image_ids=[unknown]) == (
        404,
        "NotFoundImage",
    )
    assert code_of(trainer.delete_images, project.id, image_ids=["x1"]) == (
        400,
        "BadRequestInvalidIds",
    )
    assert code_of(trainer.get_tagged_images, project.id, tag_ids=[unknown]) == (
        404,
        "NotFoundTag",
    )
    r = httpx.get(  # the SDK checks take itself; a plain client is answered
        f"{server.url}{SDK_BASE}/projects/{project.id}/images/tagged?take=300",
        headers={"Training-Key": TRAINING_KEY},
        timeout=30,
    )
    assert (r.status_code, r.json()["code"]) == (400, "BadRequestInvalid")
    assert code_of(
        trainer.create_image_tags,
        project.id,
        [ImageTagCreateEntry(image_id=unknown, tag_id=red.id)],
    ) == (404, "NotFoundImage")
    assert code_of(trainer.create_image_tags, project.id, []) == (
        400,
        "BadRequestImageTags",
    )


def test_calls_not_made_here_answer_400_with_the_hosted_code(trainer, trained, server):
    project, iteration = trained["project"], trained["iteration"]
    assert code_of(trainer.export_iteration, project.id, iteration.id, "ONNX") == (
        400,
        "BadRequestNotSupported",
    )
    assert code_of(trainer.get_exports, project.id, iteration.id) == (
        400,
        "BadRequestNotSupported",
    )
    assert code_of(trainer.export_project, project.id) == (400, "BadRequestNotSupported")
    r = httpx.post(
        f"{server.url}{SDK_BASE}/projects/{project.id}/images/regions",
        json={"regions": []},
        headers={"Training-Key": TRAINING_KEY},
        timeout=30,
    )
    assert r.status_code == 400 and r.json()["code"] == "BadRequestNotSupported"
    assert "object detection" in r.json()["message"]


def test_cli_serves_a_workspace(tmp_path, cli_server):
    """``jupyter-imgclass serve --workspace DIR --training-key-file F --key-file F``; a
    project made in a notebook is there, and without a training key the API is off."""
    (tmp_path / "training.key").write_text("from-a-file\n")
    (tmp_path / "prediction.key").write_text("predict\n")
    ic.Project.create(tmp_path / "ws" / "made-in-a-notebook").close()
    server = cli_server(
        [
            "--workspace",
            tmp_path / "ws",
            "--training-key-file",
            tmp_path / "training.key",
            "--key-file",
            tmp_path / "prediction.key",
        ]
    )
    assert f"{SDK_BASE}/projects" in server.output
    client = CustomVisionTrainingClient(
        server.url, ApiKeyCredentials(in_headers={"Training-key": "from-a-file"})
    )
    assert [p.name for p in client.get_projects()] == ["made-in-a-notebook"]
    off = cli_server(["--workspace", tmp_path / "ws"])
    assert "Training API is off" in off.output
    r = httpx.get(f"{off.url}{SDK_BASE}/projects", headers={"Training-Key": ""}, timeout=30)
    assert r.status_code == 401 and "off" in r.json()["message"]
