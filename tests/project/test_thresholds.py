"""Per-tag thresholds that travel: chosen on the cross-validated predictions, saved with
the iteration, carried into the bundle, the ONNX metadata, the endpoint and ``predict``."""

from __future__ import annotations

import json
import math

import httpx
import numpy as np
import pytest
from test_training import COLOURS, _colour_images

import jupyter_imgclass as ic
from jupyter_imgclass.errors import ImgClassError
from jupyter_imgclass.evaluate import best_f1_thresholds, compute_metrics, passing


def _f1(metrics, tag) -> float:
    m = metrics["per_tag"][tag]
    p, r = m["precision"], m["recall"]
    return 2 * p * r / (p + r) if p + r else 0.0


@pytest.mark.parametrize("kind", ["multiclass", "multilabel"])
def test_best_f1_thresholds_beat_every_other_candidate(kind):
    rng = np.random.default_rng(4)
    tags = ["a", "b", "c"]
    for _ in range(5):
        n = 40
        probs = rng.dirichlet([1, 1, 1], n) if kind == "multiclass" else rng.random((n, 3))
        truth = rng.integers(0, 3, n) if kind == "multiclass" else rng.integers(0, 2, (n, 3))
        best = best_f1_thresholds(truth, probs, tags, kind)
        at_best = compute_metrics(truth, probs, tags, kind, per_tag_thresholds=best)
        for j, tag in enumerate(tags):
            for t in np.unique(np.r_[probs[:, j], 0.0, 0.5, 1.0]):
                other = compute_metrics(truth, probs, tags, kind, per_tag_thresholds={tag: t})
                assert _f1(at_best, tag) >= _f1(other, tag) - 1e-9, (tag, t)


def test_passing_is_the_rule_the_metrics_count_by():
    rng = np.random.default_rng(5)
    probs = rng.dirichlet([1, 1, 1], 30)
    thr = [0.3, 0.5, 0.7]
    truth = rng.integers(0, 3, 30)
    m = compute_metrics(truth, probs, ["a", "b", "c"], "multiclass", per_tag_thresholds=dict(
        zip("abc", thr, strict=True)
    ))  # fmt: skip
    predicted = passing(probs, thr, "multiclass")
    assert predicted.sum(axis=1).max() <= 1
    for j, tag in enumerate("abc"):
        tp = int((predicted[:, j] & (truth == j)).sum())
        assert math.isclose(m["per_tag"][tag]["precision"], tp / max(predicted[:, j].sum(), 1))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    p = ic.Project.create(tmp_path_factory.mktemp("thr") / "colours")
    for k, (tag, colour) in enumerate(COLOURS.items()):
        p.add_images(_colour_images(colour, 8, seed=k), tags=[tag])
    it = p.train(budget="quick", model="efficientnet_lite0").wait(timeout=600)
    yield p, it
    p.close()


def test_thresholds_are_saved_and_survive_a_reopen(trained):
    p, it = trained
    assert it.thresholds == dict.fromkeys(it.classes, it.threshold)
    best = it.set_thresholds("best_f1")
    assert best == it.best_f1_thresholds() == it.thresholds
    chosen = it.set_thresholds({"red": 0.25})
    assert chosen["red"] == 0.25 and chosen["blue"] == best["blue"]
    record = json.loads((it.folder / "iteration.json").read_text())
    assert record["thresholds"] == chosen
    again = ic.Project.open(p.path)
    assert again.iteration(it.number).thresholds == chosen
    again.close()
    shown = it.evaluate(0.5, per_tag=chosen)
    assert shown["per_tag"]["red"]["threshold"] == 0.25


@pytest.mark.parametrize(
    "bad, word",
    [
        ({"purple": 0.5}, "no such tag"),
        ({"red": 1.5}, "[0, 1]"),
        ({"red": -0.1}, "[0, 1]"),
        ({"red": float("nan")}, "[0, 1]"),
        ({"red": "high"}, "[0, 1]"),
        ({"red": None}, "[0, 1]"),
        ("best", "best_f1"),
        (2, "[0, 1]"),
    ],
)
def test_bad_thresholds_are_refused_and_nothing_changes(trained, bad, word):
    _, it = trained
    before = it.thresholds
    with pytest.raises(ImgClassError, match=word.replace("[", r"\[").replace("]", r"\]")):
        it.set_thresholds(bad)
    assert it.thresholds == before


def test_thresholds_travel_to_bundle_onnx_endpoint_and_predict(trained, tmp_path):
    import onnx

    _, it = trained
    chosen = it.set_thresholds({"red": 0.99, "green": 0.01, "blue": 0.5})
    it = trained[0].iteration(it.number)  # a fresh object reads what was saved
    bundle_dir = it.export(tmp_path / "bundle", onnx=True)
    meta = json.loads((bundle_dir / "model.json").read_text())
    assert meta["thresholds"] == chosen
    props = {p.key: p.value for p in onnx.load(str(bundle_dir / "model.onnx")).metadata_props}
    assert json.loads(props["thresholds"]) == chosen
    assert json.loads(props["tags"]) == it.classes
    red = _colour_images(COLOURS["red"], 1, seed=77)[0]
    green = _colour_images(COLOURS["green"], 1, seed=78)[0]
    model = ic.load_model(bundle_dir)
    for image, expected in ((red, "red"), (green, "green")):
        top = model.predict(image)[0]
        assert top.tag == expected
        assert top.above_threshold == (top.probability >= chosen[expected])
        assert it.predict(image)[0] == top  # the iteration applies the same thresholds
    with it.serve() as srv:
        r = httpx.post(
            srv.routes["image"],
            content=_png(green),
            headers={"Content-Type": "application/octet-stream"},
            timeout=60,
        )
    assert r.status_code == 200, r.text
    preds = {p["tagName"]: p for p in r.json()["predictions"]}
    assert {t: preds[t]["threshold"] for t in preds} == chosen
    assert preds["green"]["aboveThreshold"] is True  # 0.01: passes
    assert not preds["red"]["aboveThreshold"]


def _png(array) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG")
    return buf.getvalue()
