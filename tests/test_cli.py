"""The shell path of publishing: `jupyter-imgclass export` and `serve`, as processes."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import httpx
import numpy as np
import pytest
from helpers import run_cli
from PIL import Image

import jupyter_imgclass as ic

COLOURS = {"red": (220, 30, 30), "blue": (30, 40, 220)}


def _png(colour, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    arr = np.clip(np.array(colour) + rng.integers(-30, 30, (28, 28, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def trained_project(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli") / "proj"
    p = ic.Project.create(root)
    for k, (tag, colour) in enumerate(COLOURS.items()):
        p.add_images([_png(colour, 10 * k + i) for i in range(8)], tags=[tag])
    p.train(budget="advanced", model="small_cnn", epochs=2).wait(timeout=300)
    p.close()
    return root


_cli = run_cli


def test_cli_export_writes_a_bundle_that_predicts_like_the_iteration(trained_project, tmp_path):
    out = _cli("export", trained_project, "--out", tmp_path / "bundle", "--onnx")
    assert out.returncode == 0, out.stderr
    bundle = tmp_path / "bundle"
    names = {p.name for p in bundle.iterdir()}
    assert {"weights.safetensors", "model.json", "README.md"} <= names
    assert any(n.endswith(".onnx") for n in names)
    meta = json.loads((bundle / "model.json").read_text())
    assert meta["published_name"] == "Iteration1"
    model = ic.load_model(bundle)
    p = ic.Project.open(trained_project)
    image = _png(COLOURS["red"], 999)
    a = np.array([x.probability for x in p.iteration().predict(image)])
    b = np.array([x.probability for x in model.predict(image)])
    assert np.abs(a - b).max() <= 1e-6
    p.close()
    bad = _cli("export", trained_project, "--out", tmp_path / "b2", "--iteration", "7")
    assert bad.returncode == 2 and "iteration 7" in bad.stderr
    again = _cli("export", trained_project, "--out", bundle)
    assert again.returncode == 2 and "--overwrite" in again.stderr
    assert json.loads((bundle / "model.json").read_text())["onnx"]  # untouched
    assert _cli("export", trained_project, "--out", bundle, "--overwrite").returncode == 0
    assert "onnx" not in json.loads((bundle / "model.json").read_text())


def test_cli_serve_answers_and_refuses_bad_requests(trained_project, cli_server):
    url = cli_server([trained_project, "--key", "s3cret"]).url
    route = url + "/classify/iterations/Iteration1/image"
    ok = httpx.post(
        route,
        content=_png(COLOURS["blue"], 5),
        headers={"Prediction-Key": "s3cret", "Content-Type": "application/octet-stream"},
    )
    assert ok.status_code == 200
    body = ok.json()
    assert body["iteration"] == "Iteration1" and body["predictions"][0]["tagName"] == "blue"
    assert httpx.post(route, content=b"x").status_code == 401
    garbage = httpx.post(
        route,
        content=b"\x89PNG garbage",
        headers={"Prediction-Key": "s3cret", "Content-Type": "application/octet-stream"},
    )
    assert garbage.status_code == 400 and "message" in garbage.json()
    assert httpx.get(url + "/health").status_code == 200  # still serving


def test_cli_serve_warns_without_a_key_and_answers_to_a_given_project_id(
    trained_project, cli_server
):
    pid = "0f8fad5b-d9cb-469f-a165-70867728950e"
    server = cli_server([trained_project, "--project-id", pid.upper()])
    assert "warning: serving without a key" in server.output
    assert f"/customvision/v3.0/Prediction/{pid}/classify/iterations/Iteration1/image" in (
        server.output
    )
    assert httpx.get(server.url + "/health").json()["project_id"] == pid
    r = httpx.post(
        f"{server.url}/customvision/v3.1/prediction/{pid}/classify/iterations/Iteration1/image",
        content=_png(COLOURS["red"], 6),
        headers={"Content-Type": "application/octet-stream"},
    )
    assert r.status_code == 200 and r.json()["predictions"][0]["tagName"] == "red"
    bad = _cli("serve", trained_project, "--project-id", "not-a-uuid")
    assert bad.returncode == 2 and "--project-id 'not-a-uuid'" in bad.stderr


def test_cli_serve_answers_to_the_published_name_an_existing_app_calls(trained_project, cli_server):
    pid = "0f8fad5b-d9cb-469f-a165-70867728950e"
    server = cli_server([trained_project, "--project-id", pid, "--published-name", "classifyModel"])
    root = f"{server.url}/customvision/v3.0/Prediction/{pid}/classify/iterations"
    assert f"{root}/classifyModel/image" in server.output
    body = {"content": _png(COLOURS["blue"], 7), "headers": {"Content-Type": "image/png"}}
    r = httpx.post(f"{root}/classifyModel/image", **body)
    assert r.status_code == 200 and r.json()["iteration"] == "classifyModel"
    assert r.json()["predictions"][0]["tagName"] == "blue"
    missing = httpx.post(f"{root}/Iteration1/image", **body)
    assert missing.status_code == 404 and missing.json()["code"] == "NotFoundIteration"
    bad = _cli("serve", trained_project, "--published-name", "a/b")
    assert bad.returncode == 2 and "--published-name 'a/b'" in bad.stderr


def test_cli_demo_and_export_print_json_and_help_is_plain(tmp_path, trained_project):
    import os

    demo = _cli(
        "demo", "--project", tmp_path / "demo", "--per-class", "6", "--json", "--quiet",
        "--serve-seconds", "0",
    )  # fmt: skip
    assert demo.returncode == 0, demo.stderr
    record = json.loads(demo.stdout)
    assert record["status"] == "done" and record["metrics"]["overall"]["count"] == 60
    assert record["import"]["added"] == 60 and record["project_id"]
    assert record["backbone_choice"] is None and record["model"] == "efficientnet_lite0"
    out = _cli("export", trained_project, "--out", tmp_path / "bundle", "--json")
    assert out.returncode == 0, out.stderr
    exported = json.loads(out.stdout)
    assert exported["bundle"] == str(tmp_path / "bundle") and exported["onnx"] is False
    assert exported["published_name"] == "Iteration1" and "weights.safetensors" in exported["files"]
    colour = {**os.environ, "FORCE_COLOR": "1", "PY_COLORS": "1"}
    for args in (["--help"], ["serve", "--help"], ["demo", "--help"]):
        shown = subprocess.run(
            [sys.executable, "-m", "jupyter_imgclass.cli", *args],
            capture_output=True, text=True, env=colour, timeout=60,
        )  # fmt: skip
        assert shown.returncode == 0 and "usage: jupyter-imgclass" in shown.stdout
        assert "\x1b" not in shown.stdout  # plain text, even where colour is asked for


def test_cli_demo_prints_the_report_and_serves_for_its_seconds(tmp_path, make_png):
    """The quick-start path headless: import, train, the report, then a live endpoint."""
    import urllib.request

    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter_imgclass.cli", "demo", "--project", str(tmp_path / "d"),
         "--per-class", "6", "--port", "0", "--serve-seconds", "15", "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        lines = []
        while not any(line.startswith("serving ") for line in lines):
            line = proc.stdout.readline()
            assert line, (lines, proc.stderr.read())
            lines.append(line)
        text = "".join(lines)
        assert "cross-validated over 60 images" in text and "precision" in text
        assert all(f"\n{digit} " in text for digit in "0123456789")  # a row per tag
        url = lines[-1].split(" at ", 1)[1].strip()
        request = urllib.request.Request(
            url, data=make_png((220, 30, 30)), headers={"Content-Type": "application/octet-stream"}
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            body = json.loads(answer.read())
        assert len(body["predictions"]) == 10 and body["iteration"] == "Iteration1"
        assert proc.wait(timeout=60) == 0  # it stops by itself after its seconds
    finally:
        proc.kill()


def test_cli_train_arguments_are_the_train_options_checked_before_the_import(tmp_path):
    import dataclasses

    from jupyter_imgclass.cli import build_parser
    from jupyter_imgclass.training.options import TrainOptions

    train = build_parser()._subparsers._group_actions[0].choices["train"]
    flags = {a.dest: a for a in train._actions}
    for field in dataclasses.fields(TrainOptions):  # every option, with help and choices
        assert field.name in flags and flags[field.name].help, field.name
    assert flags["model"].choices == ["choose", *ic.models.names()]
    assert flags["budget"].choices == ["quick", "advanced"]

    folder = tmp_path / "photos"
    (folder / "a").mkdir(parents=True)
    (folder / "a" / "x.png").write_bytes(_png((200, 0, 0), 1))
    for bad, says in (
        (["--model", "resnet"], "invalid choice: 'resnet'"),
        (["--model", "Choose"], "invalid choice: 'Choose'"),
        (["--epochs", "0"], "epochs 0: must be a whole number"),
        (["--learning-rate", "-1"], "learning_rate -1.0: must be a positive number"),
        (["--input-size", "9"], "input_size 9: must be a whole number from 16"),
    ):
        project = tmp_path / f"p{len(says)}"
        done = _cli("train", str(folder), "--project", str(project), *bad, timeout=60)
        assert done.returncode != 0 and says in done.stderr, (bad, done.stderr)
        assert not project.exists(), bad  # refused before anything was imported


def test_cli_predict_reads_a_bundle_or_a_project_and_writes_csv_and_jsonl(
    trained_project, tmp_path
):
    import csv
    import shutil

    root = tmp_path / "proj"
    shutil.copytree(trained_project, root)
    with ic.Project.open(root) as p:
        it = p.iteration()
        it.set_thresholds({"red": 0.3, "blue": 0.9})
        it.export(tmp_path / "bundle")
        images = tmp_path / "images"
        (images / "more").mkdir(parents=True)
        names = []
        for k, colour in enumerate(["red", "red", "blue", "red", "blue"]):
            path = images / ("more" if k == 4 else "") / f"{k}-{colour}.png"
            path.write_bytes(_png(COLOURS[colour], 500 + k))
            names.append(path)
        (images / "2-broken.png").write_bytes(b"not an image at all")
        (images / "README.md").write_text("not an image, and not counted as one")
        want = {str(n): {x.tag: x.probability for x in it.predict(n.read_bytes())} for n in names}

    out = _cli("predict", tmp_path / "bundle", images, "--json")
    assert out.returncode == 0, out.stderr
    assert "thresholds blue 0.90, red 0.30" in out.stderr and "bundle" in out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(lines) == 6
    broken = [x for x in lines if "error" in x]
    assert len(broken) == 1 and broken[0]["path"].endswith("2-broken.png")
    for line in lines:
        if "error" in line:
            continue
        got = {x["tagName"]: x for x in line["predictions"]}
        for tag, probability in want[line["path"]].items():
            assert abs(got[tag]["probability"] - probability) <= 1e-5
        assert got["red"]["threshold"] == 0.3 and got["blue"]["threshold"] == 0.9
        assert got["red"]["aboveThreshold"] == (got["red"]["probability"] >= 0.3)

    jsonl = tmp_path / "answers.jsonl"
    out = _cli("predict", root, images, "--iteration", "Iteration1", "--output", jsonl, "--strict")
    assert out.returncode == 1 and "6 images (1 failed) written" in out.stderr  # --strict
    assert out.stdout == ""
    assert [json.loads(x) for x in jsonl.read_text().splitlines()] == lines

    table = tmp_path / "answers.csv"
    out = _cli("predict", root, *names, "--output", table)
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(table.open()))
    assert [r["path"] for r in rows] == [str(n) for n in names]
    for row in rows:
        probs = {t: float(row[t]) for t in ("red", "blue")}
        assert row["tag"] == max(probs, key=probs.get) and row["error"] == ""
        assert abs(probs["red"] - want[row["path"]]["red"]) <= 1e-5
        threshold = 0.3 if row["tag"] == "red" else 0.9
        assert float(row["threshold"]) == threshold
        assert row["aboveThreshold"] == str(float(row["probability"]) >= threshold).lower()

    for args, reason in [
        ((root, images, "--output", tmp_path / "answers.txt"), "--output"),
        ((tmp_path / "bundle", images, "--iteration", "1"), "is a bundle"),
        ((root, images, "--iteration", "Iteration9"), "not found"),
    ]:
        out = _cli("predict", *args)
        assert out.returncode == 2 and reason in out.stderr, out.stderr
    assert not (tmp_path / "answers.txt").exists()
