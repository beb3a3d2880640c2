"""``import_customvision`` against a stand-in of the hosted service's Training API.

The stand-in is two stdlib HTTP servers on 127.0.0.1: the API (the JSON routes, the key
checked, some images on its own origin) and a "blob storage" on another port, which is a
different origin, as the hosted service's signed image URLs are. It lets a test do what
the hosted service does and our own server never would: images on a foreign host, an
image that is gone, a slow image to kill the import at. The round trip through our own
Training API is in the serve tests.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from helpers import png_bytes

import jupyter_imgclass as ic
from jupyter_imgclass.errors import ImgClassError
from jupyter_imgclass.project.customvision import SOURCE_PREFIX, STATE_FILE

KEY = "training-secret"
API = "/customvision/v3.3/Training/projects/"


class Hosted:
    """A hosted project: tags, images (tagged, untagged), where each image's bytes live."""

    def __init__(self, kind="Multiclass", domain="Classification"):
        self.id = str(uuid.uuid4())
        self.about = {
            "id": self.id,
            "name": "Trees from Azure",
            "settings": {"classificationType": kind, "domainType": domain},
        }
        self.tags: list[dict] = []
        self.images: list[dict] = []
        self.files: dict[str, bytes] = {}
        self.seen_keys: list[tuple[str, str | None]] = []  # (server, Training-Key) per image
        self.served = 0
        self.slow_after: int | None = None  # images served before each one is slowed

    def tag(self, name, negative=False):
        tag = {"id": str(uuid.uuid4()), "name": name, "type": "Negative" if negative else "Regular"}
        tag["imageCount"] = 0
        self.tags.append(tag)
        return tag

    def image(self, data: bytes, tags=(), where="blob"):
        image_id = str(uuid.uuid4())
        self.files[image_id] = data
        self.images.append({"id": image_id, "tags": [t["id"] for t in tags], "where": where})
        for t in tags:
            t["imageCount"] += 1
        return image_id

    def listing(self, tagged: bool, base: dict) -> list[dict]:
        return [
            {
                "id": im["id"],
                "width": 24,
                "height": 16,
                "originalImageUri": f"{base[im['where']]}/images/{im['id']}?sig=secret",
                "tags": [{"tagId": t, "tagName": "?"} for t in im["tags"]],
            }
            for im in self.images
            if bool(im["tags"]) == tagged
        ]


def _handler(hosted: Hosted, base: dict, server_name: str):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def _send(self, status: int, body: bytes, ctype="application/json"):
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, value):
            self._send(status, json.dumps(value).encode())

        def do_GET(self):  # noqa: N802 (the stdlib's name)
            url = urllib.parse.urlsplit(self.path)
            query = dict(urllib.parse.parse_qsl(url.query))
            if url.path.startswith("/images/"):
                hosted.seen_keys.append((server_name, self.headers.get("Training-Key")))
                hosted.served += 1
                if hosted.slow_after is not None and hosted.served > hosted.slow_after:
                    time.sleep(0.2)
                data = hosted.files.get(url.path.rsplit("/", 1)[1])
                return (
                    self._send(404, b"gone") if data is None else self._send(200, data, "image/png")
                )
            if server_name != "api" or not url.path.startswith(API):
                return self._json(404, {"code": "NotFound", "message": "no such route"})
            if self.headers.get("Training-Key") != KEY:
                return self._json(401, {"code": "Unauthorized", "message": "Access denied"})
            rest = url.path[len(API) :].split("/")
            if rest[0] != hosted.id:
                return self._json(404, {"code": "BadRequestProjectUnknown", "message": "?"})
            if rest[1:] == []:
                return self._json(200, hosted.about)
            if rest[1:] == ["tags"]:
                return self._json(200, hosted.tags)
            if rest[1:2] == ["images"] and rest[2:] in (["tagged"], ["untagged"]):
                items = hosted.listing(rest[2] == "tagged", base)
                take, skip = min(int(query.get("take", 50)), 256), int(query.get("skip", 0))
                return self._json(200, items[skip : skip + take])
            return self._json(404, {"code": "NotFound", "message": "no such route"})

    return Handler


@pytest.fixture
def hosted():
    """``(Hosted, api_url)``: the API and the blob origin, serving until the test ends."""
    project = Hosted()
    base: dict[str, str] = {}
    servers = []
    for name in ("api", "blob"):
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(project, base, name))
        base[name] = f"http://127.0.0.1:{server.server_address[1]}"
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    yield project, base["api"]
    for server in servers:
        server.shutdown()
        server.server_close()


def _fill(hosted: Hosted, per_tag=140, untagged=6):
    """Two regular tags and a Negative one, 2 x ``per_tag`` + 10 tagged images (more than
    a page of 256), ``untagged`` untagged; a third of the images on the API's origin."""
    hemlock, cherry = hosted.tag("Hemlock"), hosted.tag("Japanese Cherry")
    negative = hosted.tag("Negative", negative=True)
    k = 0
    groups = [(hemlock, (30, 160, 40), per_tag), (cherry, (230, 150, 190), per_tag)]
    for tag, colour, count in [*groups, (negative, (90, 90, 90), 10)]:
        for _ in range(count):
            hosted.image(png_bytes(colour, seed=k), [tag], "api" if k % 3 == 0 else "blob")
            k += 1
    for _ in range(untagged):
        hosted.image(png_bytes((20, 20, 200), seed=k))
        k += 1


def _cli(*args, key: str | None = KEY):
    env = {k: v for k, v in os.environ.items() if k != "IMGCLASS_TRAINING_KEY"}
    return subprocess.Popen(
        [sys.executable, "-m", "jupyter_imgclass.cli", "import-customvision", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env if key is None else {**env, "IMGCLASS_TRAINING_KEY": key},
    )


def test_a_hosted_project_arrives_whole_and_the_key_stays_on_its_origin(hosted, tmp_path):
    project, api = hosted
    _fill(project)
    report = ic.import_customvision(api, KEY, project.id, tmp_path / "trees")
    assert report.complete, report
    want = {"Hemlock": 140, "Japanese Cherry": 140, "Negative": 10, "untagged": 6}
    assert report.counts == report.hosted_counts == want
    assert len(report.added) == 296 and not report.failed and not report.duplicates
    with ic.Project.open(tmp_path / "trees") as p:
        assert p.name == "Trees from Azure" and p.kind == "multiclass"
        assert p.id == project.id  # an app's projectId stays valid
        assert p.negative_tag == "Negative"
        assert p.counts() == want
        sources = {r.source for r in p.images}
        assert sources == {SOURCE_PREFIX + im["id"] for im in project.images}
        by_source = {r.source: r for r in p.images}
        for im in project.images[:20]:  # the bytes are the hosted ones
            assert by_source[SOURCE_PREFIX + im["id"]].path.read_bytes() == project.files[im["id"]]
        # the hosted GUIDs are the tags' and images' own: answers carry the known tagId
        assert p.tag_guids() == {t["name"]: t["id"] for t in project.tags}
        guids = p.store.guids("images")
        assert {guids[r.id] for r in p.images} == {im["id"] for im in project.images}
    state = json.loads((tmp_path / "trees" / STATE_FILE).read_text())
    assert state["project_id"] == project.id
    assert {n: t["id"] for n, t in state["tags"].items()} == {
        t["name"]: t["id"] for t in project.tags
    }
    # the key went with every request to the API's origin and never to the blob's
    assert {k for s, k in project.seen_keys if s == "api"} == {KEY}
    assert {k for s, k in project.seen_keys if s == "blob"} == {None}
    assert len(project.seen_keys) == 296  # each image fetched once

    # the endpoint as pasted from the docs, with the API's path: the same project
    again = ic.import_customvision(
        f"{api}/customvision/v3.3/Training/", KEY, project.id, tmp_path / "trees"
    )
    assert again.complete and not again.added and len(again.already) == 296
    assert len(project.seen_keys) == 296  # nothing fetched twice


def test_broken_images_are_listed_with_reasons_and_the_rest_arrive(hosted, tmp_path):
    project, api = hosted
    _fill(project, per_tag=5, untagged=2)
    gone = project.image(png_bytes((1, 2, 3), seed=999), [project.tags[0]])
    del project.files[gone]
    garbage = project.image(b"this is not an image", [project.tags[1]])
    stray = project.image(png_bytes((4, 5, 6), seed=998))
    project.images[-1]["tags"] = [str(uuid.uuid4())]  # a tag the project does not list
    copy = project.image(project.files[project.images[0]["id"]], [project.tags[0]])
    out = _cli("--endpoint", api, "--project-id", project.id, "--out", tmp_path / "p", "--json")
    stdout, stderr = out.communicate(timeout=120)
    assert out.returncode == 1, stderr  # not complete
    report = json.loads(stdout)
    failed = {f["hosted_id"]: f["reason"] for f in report["failed"]}
    assert set(failed) == {gone, garbage, stray}
    assert "HTTP 404" in failed[gone] and "sig=" not in failed[gone]  # no signature shown
    assert "tag id" in failed[stray]
    assert report["duplicates"][0]["hosted_id"] == copy
    assert report["counts"] == {"Hemlock": 5, "Japanese Cherry": 5, "Negative": 10, "untagged": 2}
    assert report["hosted_counts"]["Hemlock"] == 7 and not report["complete"]


def test_killed_anywhere_and_run_again_it_ends_with_the_same_images_none_twice(hosted, tmp_path):
    project, api = hosted
    _fill(project, per_tag=60, untagged=4)
    project.slow_after = 40
    args = ("--endpoint", api, "--project-id", project.id, "--out", tmp_path / "p")
    for stop_at in (45, 80):  # two kills at different points, then a whole run
        run = _cli(*args)
        deadline = time.monotonic() + 120
        while project.served < stop_at and time.monotonic() < deadline:
            time.sleep(0.02)
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=30)
        assert run.returncode == -signal.SIGKILL
    project.slow_after = None
    run = _cli(*args, "--json")
    stdout, stderr = run.communicate(timeout=120)
    assert run.returncode == 0, stderr
    report = json.loads(stdout)
    assert report["complete"] and report["already"] >= 40
    assert report["counts"] == {"Hemlock": 60, "Japanese Cherry": 60, "Negative": 10, "untagged": 4}
    with ic.Project.open(tmp_path / "p") as p:
        sources = [r.source for r in p.images]
        assert len(sources) == len(set(sources)) == 134


def test_wrong_key_unknown_project_detection_and_a_foreign_folder_are_refused(hosted, tmp_path):
    project, api = hosted
    _fill(project, per_tag=2, untagged=0)
    with pytest.raises(ImgClassError, match="HTTP 401 Unauthorized"):
        ic.import_customvision(api, "wrong", project.id, tmp_path / "a")
    with pytest.raises(ImgClassError, match="HTTP 404"):
        ic.import_customvision(api, KEY, str(uuid.uuid4()), tmp_path / "a")
    with pytest.raises(ImgClassError, match="not an http"):
        ic.import_customvision("ftp://example", KEY, project.id, tmp_path / "a")
    assert not (tmp_path / "a").exists()  # nothing made before the hosted project answered
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ImgClassError, match="not empty"):
        ic.import_customvision(api, KEY, project.id, tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    project.about["settings"]["domainType"] = "ObjectDetection"
    with pytest.raises(ImgClassError, match="object detection"):
        ic.import_customvision(api, KEY, project.id, tmp_path / "b")
    project.about["settings"] = {"classificationType": "Multilabel"}
    report = ic.import_customvision(api, KEY, project.id, tmp_path / "c")
    assert report.kind == "multilabel" and report.complete
    no_key = _cli("--endpoint", api, "--project-id", project.id, "--out", tmp_path / "d", key=None)
    _, stderr = no_key.communicate(timeout=60)
    assert no_key.returncode == 2 and "training key" in stderr


def test_round_trip_through_our_own_training_api_with_a_kill_on_the_way(tmp_path):
    """A 1,000-image, 12-tag workspace project (a Negative tag and untagged images among
    them) served by our Training API arrives with the same per-tag counts, the same
    bytes and the same GUIDs, after an import killed half way and run again."""
    from jupyter_imgclass.project.training_api import workspace_options
    from jupyter_imgclass.publish.serve import serve_in_background

    source = ic.Project.create(tmp_path / "ws" / "source", name="Round trip")
    source.create_negative_tag("Negative")
    k = 0
    for t in range(11):
        colour = (20 * t, 255 - 20 * t, (90 * t) % 256)
        source.add_images([png_bytes(colour, seed=(k := k + 1)) for _ in range(80)], [f"tag {t}"])
    source.add_images([png_bytes((99, 99, 99), seed=(k := k + 1)) for _ in range(60)], ["Negative"])
    source.add_images([png_bytes((1, 1, 1), seed=(k := k + 1)) for _ in range(60)])
    want = source.counts()
    assert sum(want.values()) == 1000 and len(source.tags) == 12
    image_guids = source.store.guids("images")
    guids = {r.sha256: image_guids[r.id] for r in source.images}
    tag_guids = source.tag_guids()
    project_id = source.id
    source.close()

    options = workspace_options(tmp_path / "ws", training_key=KEY)
    with serve_in_background(None, **options) as server:
        args = ("--endpoint", server.url, "--project-id", project_id, "--out", tmp_path / "out")
        run = _cli(*args)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and run.poll() is None:
            stored = tmp_path / "out" / "images"
            if stored.is_dir() and sum(1 for _ in stored.rglob("*.png")) >= 300:
                break
            time.sleep(0.05)
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=30)
        assert run.returncode == -signal.SIGKILL, "the import ended before it could be killed"
        run = _cli(*args, "--json")
        stdout, stderr = run.communicate(timeout=300)
        listing = f"{server.url}/customvision/v3.3/Training/projects/{project_id}/images/tagged"
        first = httpx.get(listing, params={"take": 1}, headers={"Training-Key": KEY}).json()[0]
        uri = first["originalImageUri"]
        data = httpx.get(uri, headers={"Training-Key": KEY}).content
        assert guids[hashlib.sha256(data).hexdigest()] == first["id"]  # the stored bytes
        assert httpx.get(uri).status_code == 401  # the key guards the files too
    assert run.returncode == 0, stderr
    report = json.loads(stdout)
    assert report["complete"] and report["already"] >= 300 and not report["failed"]
    assert report["counts"] == report["hosted_counts"] == want
    with ic.Project.open(tmp_path / "out") as p:
        assert p.name == "Round trip" and p.negative_tag == "Negative" and p.id == project_id
        assert len(p.images) == 1000
        mine = p.store.guids("images")
        assert {r.sha256: mine[r.id] for r in p.images} == guids  # same pictures, same ids
        assert p.tag_guids() == tag_guids
