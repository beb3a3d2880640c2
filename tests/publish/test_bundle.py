"""Model bundles: round trip, refusal of damaged bundles, loading elsewhere, ONNX parity."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest

from jupyter_imgclass import models
from jupyter_imgclass.errors import BundleError
from jupyter_imgclass.publish.bundle import export_bundle, load_model, read_metadata

TAGS = [
    {"id": "7", "name": "circle"},
    {"id": "8", "name": "square"},
    {"id": "9", "name": "ünïcode tag"},
]
METRICS = {
    "overall": {"precision": 0.9, "recall": 0.8, "average_precision": 0.85, "count": 12},
    "per_tag": {t["name"]: {"precision": 0.9, "recall": 0.8, "count": 4} for t in TAGS},
}


def small_cnn_weights(num_classes: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded random small_cnn weights, flat as training.fit returns them."""
    from flax import nnx

    from jupyter_imgclass.models.weights import model_to_weights

    spec = models.get("small_cnn")
    module = spec.create(num_classes, rngs=nnx.Rngs(seed), pretrained=False)
    return model_to_weights(module)


def held_out_images(n: int, size: int, seed: int = 42) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
    return base


@pytest.fixture(scope="module")
def weights():
    return small_cnn_weights(len(TAGS))


@pytest.fixture(scope="module")
def predictor(weights):
    from jupyter_imgclass.predict import Predictor

    return Predictor("small_cnn", [t["name"] for t in TAGS], "multiclass", weights)


def export(path, weights, **overrides):
    options = dict(
        model_name="small_cnn",
        tags=TAGS,
        kind="multiclass",
        weights=weights,
        preprocessing=models.get("small_cnn").to_json(),
        thresholds={"circle": 0.4},
        metrics=METRICS,
        published_name="shapes-v2",
        project_name="shapes",
        iteration_number=2,
    )
    options.update(overrides)
    return export_bundle(path, **options)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, weights):
    return export(tmp_path_factory.mktemp("bundles") / "shapes", weights)


def fresh_copy(bundle, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(bundle, target)
    return target


def rewrite_meta(path, change):
    meta = json.loads((path / "model.json").read_text())
    change(meta)
    (path / "model.json").write_text(json.dumps(meta))


# ---------------------------------------------------------------------------- round trip


def test_round_trip_predicts_like_the_in_memory_predictor(bundle, predictor):
    model = load_model(bundle)
    size = models.get("small_cnn").input_size
    images = held_out_images(5, size)
    diff = np.abs(model.predict_arrays(images) - predictor.predict_arrays(images)).max()
    assert diff <= 1e-6
    assert model.tags == [t["name"] for t in TAGS]
    assert model.tag_ids == ["7", "8", "9"]
    assert model.published_name == "shapes-v2" and model.kind == "multiclass"
    assert model.metadata["metrics"] == METRICS
    first = model.predict([images[0]])[0]
    assert [p.tag for p in first] == [p.tag for p in predictor.predict([images[0]])[0]]


def test_bundle_files_and_metadata(bundle):
    assert sorted(p.name for p in bundle.iterdir()) == [
        "README.md",
        "model.json",
        "weights.safetensors",
    ]
    meta = read_metadata(bundle)
    weights_file = bundle / "weights.safetensors"
    assert (
        meta["files"]["weights.safetensors"]["sha256"]
        == hashlib.sha256(weights_file.read_bytes()).hexdigest()
    )
    assert meta["network"] == "small_cnn" and meta["tags"] == TAGS
    assert meta["preprocessing"] == models.get("small_cnn").to_json()
    assert meta["thresholds"] == {"circle": 0.4}
    assert {"jupyter_imgclass", "jax", "flax", "numpy", "safetensors"} <= set(meta["versions"])
    assert meta["iteration_number"] == 2 and meta["project_name"] == "shapes"
    # safetensors: an 8-byte header length, then a JSON header; no pickle anywhere
    raw = weights_file.read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_len])
    assert header["__metadata__"]["network"] == "small_cnn"
    readme = (bundle / "README.md").read_text()
    assert "ünïcode tag" in readme and "load_model" in readme and "0.900" in readme


def test_re_export_needs_overwrite_and_strangers_are_refused(tmp_path, weights):
    target = export(tmp_path / "b", weights, project_id="5f0c3c1e-0000-4000-8000-000000000001")
    assert load_model(target).project_id == "5f0c3c1e-0000-4000-8000-000000000001"
    with pytest.raises(BundleError, match="overwrite=True"):
        export(target, weights, published_name="again")
    assert load_model(target).published_name != "again"  # the bundle there is untouched
    export(target, weights, published_name="again", overwrite=True)
    assert load_model(target).published_name == "again"
    other = tmp_path / "holiday-photos"
    other.mkdir()
    (other / "me.jpg").write_bytes(b"x")
    with pytest.raises(BundleError, match="not empty"):
        export(other, weights)
    with pytest.raises(BundleError, match="unique"):
        export(tmp_path / "c", weights, tags=[{"id": 1, "name": "a"}, {"id": 2, "name": "a"}])
    with pytest.raises(BundleError, match="kind"):
        export(tmp_path / "d", weights, kind="regression")


@pytest.mark.parametrize("killed_at", ["written", "swapping"])
def test_a_killed_overwrite_leaves_the_old_bundle_loadable(tmp_path, weights, killed_at):
    """kill -9 in the middle of ``export(overwrite=True)``: before, the bundle lost its
    model.json and the next overwrite was refused ("folder is not empty")."""
    target = export(tmp_path / "b", weights, published_name="old")
    script = f"""
import os, signal, sys
sys.path.insert(0, {os.path.dirname(__file__)!r})
import jupyter_imgclass.data.integrity as integrity
import jupyter_imgclass.publish.bundle as bundle
from test_bundle import export, small_cnn_weights
point = {killed_at!r}
if point == "written":  # every new file written, nothing swapped
    bundle.swap_in = lambda staging, final: os.kill(os.getpid(), signal.SIGKILL)
else:  # between the two renames of a system without an atomic exchange
    integrity._exchange = lambda a, b: False
    real = os.replace
    def replace(src, dst):
        real(src, dst)
        if ".old-" in str(dst):
            os.kill(os.getpid(), signal.SIGKILL)
    integrity.os.replace = replace
export({str(target)!r}, small_cnn_weights(3, seed=1), published_name="new", overwrite=True)
"""
    done = subprocess.run([sys.executable, "-c", script], timeout=300)
    assert done.returncode == -9
    if killed_at == "written":
        assert load_model(target).published_name == "old"
    export(target, weights, published_name="newer", overwrite=True)
    assert load_model(target).published_name == "newer"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"], "staging folders left behind"


def test_overwrite_works_on_the_remains_of_an_interrupted_bundle(tmp_path, weights):
    target = export(tmp_path / "b", weights)
    (target / "model.json").unlink()  # what an older interrupted overwrite left
    with pytest.raises(BundleError, match="not empty"):
        export(target, weights)
    export(target, weights, published_name="fixed", overwrite=True)
    assert load_model(target).published_name == "fixed"


# ---------------------------------------------------------------------------- damaged bundles


def _flip_byte(path):
    f = path / "weights.safetensors"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x01
    f.write_bytes(bytes(data))


def _truncate(path):
    f = path / "weights.safetensors"
    f.write_bytes(f.read_bytes()[:-100])


def _bad_json(path):
    (path / "model.json").write_text('{"format": "jupyter_imgclass.bundle", ')


def _swap_weights(path):
    # Consistent hash, wrong content: one tensor missing.
    from safetensors.numpy import load_file, save_file

    f = path / "weights.safetensors"
    tensors = load_file(str(f))
    tensors.pop(sorted(tensors)[0])
    save_file(tensors, str(f))

    def fix(meta):
        meta["files"]["weights.safetensors"] = {
            "sha256": hashlib.sha256(f.read_bytes()).hexdigest(),
            "bytes": f.stat().st_size,
        }

    rewrite_meta(path, fix)


@pytest.mark.parametrize(
    "damage, message",
    [
        (_flip_byte, "sha256 does not match"),
        (_truncate, "truncated"),
        (lambda p: (p / "weights.safetensors").unlink(), "missing"),
        (lambda p: (p / "model.json").unlink(), "model.json is missing"),
        (_bad_json, "not valid JSON"),
        (lambda p: rewrite_meta(p, lambda m: m.update(network="resnet9000")), "unknown network"),
        (lambda p: rewrite_meta(p, lambda m: m.pop("tags")), "missing keys"),
        (lambda p: rewrite_meta(p, lambda m: m.update(format_version=99)), "newer"),
        (lambda p: rewrite_meta(p, lambda m: m.update(format="zip")), "format"),
        (
            lambda p: rewrite_meta(p, lambda m: m["preprocessing"].update(mean=[0.1, 0.1, 0.1])),
            "does not match network",
        ),
        (lambda p: rewrite_meta(p, lambda m: m.update(tags=[{"id": 1}])), "bad tags"),
        (lambda p: rewrite_meta(p, lambda m: m.update(tags=TAGS[:2])), "do not fit"),
        (_swap_weights, "do not fit"),
        (lambda p: (p / "model.json").write_text("[1, 2]"), "JSON object"),
        (
            lambda p: rewrite_meta(p, lambda m: m["preprocessing"].update(resize="stretch")),
            "preprocessing resize 'stretch' is not one of squash, pad, crop",
        ),
    ],
    ids=[
        "flipped-byte",
        "truncated",
        "no-weights",
        "no-model-json",
        "bad-json",
        "unknown-network",
        "missing-key",
        "newer-format",
        "other-format",
        "other-preprocessing",
        "bad-tags",
        "tag-count",
        "missing-tensor",
        "json-array",
        "unknown-resize",
    ],
)
def test_damaged_bundles_are_refused(bundle, tmp_path, damage, message):
    copy = fresh_copy(bundle, tmp_path)
    damage(copy)
    with pytest.raises(BundleError, match=message):
        load_model(copy)


def test_a_bundle_from_before_resize_modes_squashes(bundle, tmp_path, predictor):
    """Bundles written before ``preprocessing.resize`` existed were trained on squashed
    images: they load as ``squash`` and predict as they did."""
    assert load_model(bundle).resize == "squash"
    copy = fresh_copy(bundle, tmp_path)
    rewrite_meta(copy, lambda m: m["preprocessing"].pop("resize"))
    model = load_model(copy)
    assert model.resize == "squash"
    wide = np.random.default_rng(3).integers(0, 256, (20, 60, 3), dtype=np.uint8)
    np.testing.assert_allclose(
        model.predict_arrays(wide[None]), predictor.predict_arrays(wide[None]), atol=1e-6
    )


def test_missing_folder(tmp_path):
    with pytest.raises(BundleError, match="no such bundle"):
        load_model(tmp_path / "nowhere")


# ---------------------------------------------------------------------------- elsewhere


def test_bundle_loads_in_a_fresh_process_without_the_project(bundle, tmp_path, predictor):
    copy = fresh_copy(bundle, tmp_path)
    size = models.get("small_cnn").input_size
    images = held_out_images(3, size, seed=9)
    np.save(tmp_path / "images.npy", images)
    code = (
        "import json, sys, numpy as np\n"
        "import jupyter_imgclass as ic\n"
        "from jupyter_imgclass.publish.bundle import load_model\n"
        "m = load_model(sys.argv[1])\n"
        "p = m.predict_arrays(np.load(sys.argv[2]))\n"
        "print(json.dumps({'tags': m.tags, 'probs': p.tolist()}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [sys.executable, "-c", code, str(copy), str(tmp_path / "images.npy")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["tags"] == [t["name"] for t in TAGS]
    assert np.abs(np.array(result["probs"]) - predictor.predict_arrays(images)).max() <= 1e-6


# ---------------------------------------------------------------------------- ONNX


@pytest.mark.parametrize("kind", ["multiclass", "multilabel"])
def test_onnx_matches_the_jax_predictor(tmp_path, weights, kind):
    from jupyter_imgclass.predict import Predictor
    from jupyter_imgclass.publish.onnx import onnx_predict

    path = export(tmp_path / "onnx", weights, kind=kind, onnx=True)
    meta = read_metadata(path)
    assert meta["onnx"]["input"]["name"] == "image"
    assert (
        meta["files"]["model.onnx"]["sha256"]
        == hashlib.sha256((path / "model.onnx").read_bytes()).hexdigest()
    )
    model = load_model(path)  # verifies the ONNX file's hash too
    size = models.get("small_cnn").input_size
    images = held_out_images(6, size, seed=5)
    jax_probs = Predictor("small_cnn", model.tags, kind, weights).predict_arrays(images)
    onnx_probs = onnx_predict(path / "model.onnx", images)
    assert onnx_probs.shape == (6, len(TAGS))
    assert np.abs(onnx_probs - jax_probs).max() <= 1e-4
    single = onnx_predict(path / "model.onnx", images[:1])  # the batch size is free
    assert np.abs(single - jax_probs[:1]).max() <= 1e-4


def test_tampered_onnx_is_refused(tmp_path, weights):
    path = export(tmp_path / "onnx", weights, onnx=True)
    with (path / "model.onnx").open("ab") as f:
        f.write(b"\0")
    with pytest.raises(BundleError, match="model.onnx"):
        load_model(path)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"])
def test_onnx_exports_efficientnet_lite(tmp_path, name):
    from flax import nnx

    from jupyter_imgclass.models.weights import model_to_weights
    from jupyter_imgclass.predict import Predictor
    from jupyter_imgclass.publish.onnx import onnx_predict

    spec = models.get(name)
    module = spec.create(len(TAGS), rngs=nnx.Rngs(1), pretrained=False)
    effnet_weights = model_to_weights(module)
    path = export(
        tmp_path / "effnet",
        effnet_weights,
        model_name=name,
        preprocessing=spec.to_json(),
        onnx=True,
    )
    images = held_out_images(2, spec.input_size, seed=3)
    jax_probs = Predictor(
        name, [t["name"] for t in TAGS], "multiclass", effnet_weights
    ).predict_arrays(images)
    assert np.abs(onnx_predict(path / "model.onnx", images) - jax_probs).max() <= 1e-4
