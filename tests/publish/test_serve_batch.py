"""The batch route (many images, one request, one model batch) on a real uvicorn server
on 127.0.0.1, driven by httpx: answers in order, each image under the single upload's
rules, a broken image answered by its own entry, the request bounded as a whole."""

from __future__ import annotations

import base64
import io
import threading

import httpx
import numpy as np
import pytest
from helpers import image_bytes, small_cnn_bundle
from PIL import Image

from jupyter_imgclass.publish.bundle import load_model
from jupyter_imgclass.publish.serve import serve_in_background

TAGS = ["cat", "dog", "fox"]
KEY = "batch-key-" + "9" * 20
NAME = "pets-v1"
PROJECT_ID = "0b9bd7a4-7c1e-4d49-9c55-0b1ab3d2e6f7"
MAX_BODY = 100_000
MAX_PIXELS = 1_000_000
MAX_IMAGES = 8
MAX_BATCH_BYTES = 400_000
BATCH = f"/classify/iterations/{NAME}/images"
HOSTED = f"/customvision/v3.0/Prediction/{PROJECT_ID}/classify/iterations/{NAME}/images"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    bundle = small_cnn_bundle(
        tmp_path_factory.mktemp("batch") / "pets",
        TAGS,
        published_name=NAME,
        project_name="pets",
        project_id=PROJECT_ID,
    )
    return load_model(bundle)


@pytest.fixture(scope="module")
def logged():
    return {"calls": [], "lock": threading.Condition()}


@pytest.fixture(scope="module")
def server(model, logged):
    def log_callback(body: bytes, result: dict) -> None:
        with logged["lock"]:
            logged["calls"].append((body, result))
            logged["lock"].notify_all()

    with serve_in_background(
        model,
        key=KEY,
        max_body_bytes=MAX_BODY,
        max_pixels=MAX_PIXELS,
        max_batch_images=MAX_IMAGES,
        max_batch_bytes=MAX_BATCH_BYTES,
        log_callback=log_callback,
    ) as handle:
        yield handle


@pytest.fixture()
def client(server):
    with httpx.Client(base_url=server.url, timeout=60, headers={"Prediction-Key": KEY}) as c:
        yield c


def form(*images: bytes) -> list:
    return [("imageData", (f"{i}.png", data, "image/png")) for i, data in enumerate(images)]


def probabilities(entry: dict) -> dict[str, float]:
    return {p["tagName"]: p["probability"] for p in entry["predictions"]}


def expected(model, data: bytes) -> dict[str, float]:
    return {p.tag: p.probability for p in model.predict(data)}


def assert_close(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    assert max(abs(got[t] - want[t]) for t in want) <= 1e-5


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"code", "message"} and body["code"] == code, body


def noisy_png(side: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def flat_png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (10, 200, 90)).save(buf, "PNG")
    return buf.getvalue()


# ---------------------------------------------------------------------------- good batches


def test_a_multipart_batch_is_answered_in_order_by_one_model_batch(client, model):
    images = [image_bytes(100 + i, fmt="PNG" if i % 2 else "JPEG") for i in range(6)]
    before = client.get("/health").json()
    r = client.post(BATCH, files=form(*images))
    after = client.get("/health").json()
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["images"] == 6 and body["errors"] == 0 and body["iteration"] == NAME
    assert body["project"] == PROJECT_ID
    assert len(body["results"]) == 6
    for entry, data in zip(body["results"], images, strict=True):
        assert {"id", "project", "iteration", "created", "predictions"} <= set(entry)
        assert_close(probabilities(entry), expected(model, data))
    # the six images ran on the model together, not one by one
    assert after["batches"] - before["batches"] == 1
    assert after["images"] - before["images"] == 6


def test_a_json_batch_of_base64_images_and_a_data_url(client, model):
    a, b = image_bytes(201), image_bytes(202, fmt="JPEG")
    payload = {
        "images": [
            base64.b64encode(a).decode(),
            "data:image/jpeg;base64," + base64.b64encode(b).decode(),
        ]
    }
    r = client.post(BATCH, json=payload)
    assert r.status_code == 200, r.text
    first, second = r.json()["results"]
    assert_close(probabilities(first), expected(model, a))
    assert_close(probabilities(second), expected(model, b))


def test_the_hosted_batch_route_keeps_answered_images_and_nostore_keeps_none(client, model, logged):
    images = [image_bytes(300 + i) for i in range(3)]
    with logged["lock"]:
        logged["calls"].clear()
    r = client.post(HOSTED + "/nostore", files=form(*images))
    assert r.status_code == 200, r.text
    r = client.post(HOSTED, files=form(images[0], b"not an image", images[2]))
    assert r.status_code == 200, r.text
    with logged["lock"]:  # the log runs after the answer: wait for it, bounded
        logged["lock"].wait_for(lambda: len(logged["calls"]) >= 2, timeout=30)
        kept = [body for body, _ in logged["calls"]]
    assert kept == [images[0], images[2]]
    wrong_project = HOSTED.replace(PROJECT_ID, "11111111-2222-3333-4444-555555555555")
    assert_error(client.post(wrong_project, files=form(images[0])), 404, "NotFoundProject")


# ---------------------------------------------------------------------------- broken images


def test_a_broken_image_in_the_middle_gets_its_own_error_and_the_rest_are_answered(client, model):
    a, c = image_bytes(401), image_bytes(403)
    r = client.post(BATCH, files=form(a, b"\x89PNG\r\n\x1a\n truncated garbage", c))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["images"] == 3 and body["errors"] == 1
    first, broken, third = body["results"]
    assert broken["status"] == 400 and broken["code"] == "BadRequestImageFormat"
    assert broken["message"].startswith("image 2:")
    assert "predictions" not in broken
    assert_close(probabilities(first), expected(model, a))
    assert_close(probabilities(third), expected(model, c))


def test_each_image_is_held_to_the_single_uploads_size_and_pixel_limits(client):
    big = noisy_png(200)  # about 120 kB: over the 100 kB per image, under the batch bound
    assert MAX_BODY < len(big) < MAX_BATCH_BYTES
    huge = flat_png(1200, 1000)  # 1.2 MP in a few kB: over the pixel limit
    ok = image_bytes(501)
    r = client.post(BATCH, files=form(big, ok, huge))
    assert r.status_code == 200, r.text
    sizes, fine, pixels = r.json()["results"]
    assert (sizes["status"], sizes["code"]) == (413, "BadRequestImageSizeBytes")
    assert (pixels["status"], pixels["code"]) == (413, "BadRequestImageDimensions")
    assert "predictions" in fine
    # the same images sent alone get the same answers
    single = f"/classify/iterations/{NAME}/image"
    headers = {"Content-Type": "application/octet-stream"}
    assert_error(client.post(single, content=big, headers=headers), 413, sizes["code"])
    assert_error(client.post(single, content=huge, headers=headers), 413, pixels["code"])


def test_a_json_entry_that_is_not_base64_is_its_own_error(client):
    r = client.post(BATCH, json={"images": [base64.b64encode(image_bytes(601)).decode(), 7]})
    assert r.status_code == 200, r.text
    fine, bad = r.json()["results"]
    assert "predictions" in fine
    assert (bad["status"], bad["code"]) == (400, "BadRequestImageStream")


# ---------------------------------------------------------------------------- bounds


def test_too_many_images_are_refused_before_any_decoding(client, server):
    before = client.get("/health").json()["images"]
    r = client.post(BATCH, files=form(*[image_bytes(700 + i) for i in range(MAX_IMAGES + 1)]))
    assert_error(r, 400, "BadRequestImageBatch")
    assert f"at most {MAX_IMAGES}" in r.json()["message"]
    assert client.get("/health").json()["images"] == before
    many = {"images": [base64.b64encode(image_bytes(1)).decode()] * (MAX_IMAGES + 1)}
    assert_error(client.post(BATCH, json=many), 400, "BadRequestImageBatch")


def test_a_batch_over_its_total_bytes_is_a_413(client):
    parts = [noisy_png(150, seed=i) for i in range(6)]  # about 68 kB each, 400 kB in all
    assert all(len(p) < MAX_BODY for p in parts) and sum(map(len, parts)) > MAX_BATCH_BYTES
    assert_error(client.post(BATCH, files=form(*parts)), 413, "BadRequestImageSizeBytes")
    # the connection was closed after the 413; the next request is answered
    assert client.post(BATCH, files=form(image_bytes(1))).status_code == 200


def test_an_empty_batch_is_a_400(client):
    assert_error(client.post(BATCH, json={"images": []}), 400, "BadRequestImageBatch")
    text_only = client.post(BATCH, data={"note": "no image here"}, files={"x": (None, "")})
    assert_error(text_only, 400, "BadRequestImageBatch")
    assert_error(client.post(BATCH, json={"pictures": []}), 400, "BadRequestImageBatch")
    raw = client.post(BATCH, content=image_bytes(1), headers={"Content-Type": "image/png"})
    assert_error(raw, 415, "UnsupportedMediaType")


def test_the_batch_route_needs_the_key(server):
    images = form(image_bytes(801), image_bytes(802))
    with httpx.Client(base_url=server.url, timeout=60) as anonymous:
        assert_error(anonymous.post(BATCH, files=images), 401, "Unauthorized")
        wrong = anonymous.post(BATCH, files=images, headers={"Prediction-Key": "wrong"})
        assert_error(wrong, 403, "Forbidden")
        hosted = anonymous.post(HOSTED, files=images, headers={"Prediction-Key": "wrong"})
        assert_error(hosted, 403, "Forbidden")
