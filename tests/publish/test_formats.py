"""Export formats beside the weights (ONNX, int8 ONNX, OpenVINO IR) and their agreement
table: each written, listed, loaded and run in its real runtime against the native model."""

from __future__ import annotations

import json
import shutil
import sys
import warnings

import numpy as np
import pytest
from helpers import png_bytes, run_cli, small_cnn_weights

import jupyter_imgclass as ic
from jupyter_imgclass import models
from jupyter_imgclass.errors import BundleError
from jupyter_imgclass.publish import formats
from jupyter_imgclass.publish.bundle import export_bundle, load_model
from jupyter_imgclass.publish.formats import CheckSet, FormatWarning

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}
ALL = ["onnx", "onnx-int8", "openvino"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A project (12 images per colour tag, 6 untagged) with a quick small_cnn iteration."""
    project = ic.Project.create(tmp_path_factory.mktemp("formats") / "colours")
    for k, (tag, colour) in enumerate(COLOURS.items()):
        project.add_images([png_bytes(colour, seed=100 * k + i) for i in range(12)], tags=[tag])
    project.add_images([png_bytes((128, 128, 128), seed=900 + i) for i in range(6)])
    iteration = project.train(budget="quick", model="small_cnn", input_size=16).wait(timeout=600)
    yield iteration
    project.close()


@pytest.fixture(scope="module")
def bundle(trained, tmp_path_factory):
    return trained.export(tmp_path_factory.mktemp("bundle") / "all", formats=ALL)


def meta_of(folder):
    return json.loads((folder / "model.json").read_text())


def test_every_format_is_written_listed_and_checked(bundle, trained):
    meta = meta_of(bundle)
    assert list(meta["formats"]) == ALL
    for name, record in meta["formats"].items():
        assert record["files"] == list(formats.FORMAT_FILES[name])
        for file in record["files"]:
            assert meta["files"][file]["bytes"] == (bundle / file).stat().st_size > 0
    assert meta["check"]["images"] == 42  # every image: 36 tagged and 6 untagged
    assert "36 tagged, 6 untagged" in meta["check"]["description"]
    native = meta["native"]
    assert native["accuracy"] == 1.0  # red, green and blue are easy
    assert native["ms_per_image_batch1"] > 0 and native["ms_per_image_batch32"] > 0

    float_onnx = meta["formats"]["onnx"]["agreement"]
    assert float_onnx["top1_agreement"] == 1.0
    assert float_onnx["max_probability_difference"] < 1e-5
    assert float_onnx["percent_of_float_onnx"] == 100.0
    int8 = meta["formats"]["onnx-int8"]
    assert int8["settings"]["per_channel"] and int8["settings"]["calibration_images"] == 42
    assert int8["agreement"]["percent_of_float_onnx"] <= 30.0
    assert int8["agreement"]["bytes"] <= 0.3 * float_onnx["bytes"]
    assert int8["agreement"]["top1_agreement"] >= formats.AGREEMENT_FLOOR
    assert 0 < int8["agreement"]["max_probability_difference"] < 0.1  # quantized, not equal
    ir = meta["formats"]["openvino"]
    assert ir["settings"]["weights"].startswith("FP16")
    assert ir["agreement"]["max_probability_difference"] < 1e-3
    assert 40 < ir["agreement"]["percent_of_float_onnx"] < 60  # FP16 weights: about half
    for record in meta["formats"].values():
        assert record["agreement"]["accuracy"] == native["accuracy"]
        assert "flag" not in record
    readme = (bundle / "README.md").read_text()
    assert "## Formats: agreement with the native model" in readme
    for name in ALL:
        assert f"| {name} | {', '.join(formats.FORMAT_FILES[name])} |" in readme
    assert f"/classify/iterations/{trained.name}/image" in readme  # unchanged by the table
    # openvino was imported without its usage telemetry (its own stub took its place)
    assert "openvino_telemetry" not in sys.modules
    assert sys.modules["openvino.tools.ovc.telemetry_utils"].tm.__name__.endswith("_stub")


def test_stored_agreement_is_what_the_loaded_formats_give(bundle, trained):
    model = load_model(bundle)
    assert model.formats == ALL
    check = trained.check_set()
    native = trained.predict_arrays(check.images)
    for name in ALL:
        probs = model.runtime(name).predict_arrays(check.images)
        stored = model.metadata["formats"][name]["agreement"]
        assert stored["top1_agreement"] == float((probs.argmax(1) == native.argmax(1)).mean())
        assert stored["max_probability_difference"] == pytest.approx(
            float(np.abs(probs - native).max()), abs=1e-6
        )


def test_loaded_formats_predict_new_images_like_the_iteration(bundle, trained):
    model = load_model(bundle)
    new = np.stack(
        [
            model.prepare(png_bytes(colour, seed=5000 + k))
            for k, colour in enumerate([*COLOURS.values()] * 2)
        ]
    )
    native = trained.predict_arrays(new)
    assert [trained.classes[i] for i in native.argmax(1)] == [*COLOURS] * 2
    for name, tolerance in (("onnx", 1e-5), ("onnx-int8", 0.1), ("openvino", 1e-3)):
        probs = model.runtime(name).predict_arrays(new)
        assert probs.shape == native.shape
        np.testing.assert_allclose(probs, native, atol=tolerance, err_msg=name)
        assert (probs.argmax(1) == native.argmax(1)).all(), name


@pytest.mark.parametrize("file", ["model.int8.onnx", "model.bin", "model.xml"])
def test_a_tampered_format_file_is_refused(bundle, tmp_path, file):
    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy)
    load_model(copy)  # whole: loads
    data = bytearray((copy / file).read_bytes())
    data[len(data) // 2] ^= 0x01  # same size, one bit
    (copy / file).write_bytes(bytes(data))
    with pytest.raises(BundleError, match=rf"{file}: sha256 does not match"):
        load_model(copy)


def test_a_format_file_listed_but_missing_is_refused(bundle, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy)
    (copy / "model.int8.onnx").unlink()
    with pytest.raises(BundleError, match="model.int8.onnx: missing from the bundle"):
        load_model(copy)


def test_unknown_format_is_refused_by_name_before_writing(trained, tmp_path):
    with pytest.raises(BundleError, match=r"export format 'tflite': choose 'onnx', 'onnx-int8'"):
        trained.export(tmp_path / "out", formats=["onnx", "tflite"])
    assert not (tmp_path / "out").exists()
    plain = load_model(trained.export(tmp_path / "plain", onnx=True))  # the old call
    assert plain.formats == ["onnx"]
    with pytest.raises(BundleError, match="exported without format 'openvino'"):
        plain.runtime("openvino")


def test_a_format_below_the_floor_is_written_and_flagged(trained, tmp_path, monkeypatch):
    monkeypatch.setattr(formats, "AGREEMENT_FLOOR", 1.01)  # nothing can reach it
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = trained.export(tmp_path / "flagged", formats=["onnx-int8"])
    flagged = [w for w in caught if issubclass(w.category, FormatWarning)]
    assert {str(w.message).split(":")[0] for w in flagged} == {"onnx", "onnx-int8"}
    meta = meta_of(out)
    assert "below 1.01" in meta["formats"]["onnx-int8"]["flag"]
    assert "| onnx-int8 ⚠ below the floor |" in (out / "README.md").read_text()
    load_model(out).runtime("onnx-int8")  # written and usable


def test_multilabel_accuracy_counts_each_tag_decision(tmp_path):
    from jupyter_imgclass.predict import Predictor

    tags = ["a", "b", "c"]
    weights = small_cnn_weights(len(tags), seed=3)
    size = models.get("small_cnn").input_size
    images = np.random.default_rng(0).integers(0, 256, (10, size, size, 3), dtype=np.uint8)
    labels = np.random.default_rng(1).integers(0, 2, (10, 3)).astype(np.float32)
    labels[7:] = -1  # untagged
    thresholds = np.array([0.5, 0.4, 0.6], np.float32)
    out = export_bundle(
        tmp_path / "ml",
        model_name="small_cnn",
        tags=tags,
        kind="multilabel",
        weights=weights,
        preprocessing=models.get("small_cnn").to_json(),
        formats=["onnx"],
        check=CheckSet(images, labels=labels, thresholds=thresholds),
    )
    probs = Predictor("small_cnn", tags, "multilabel", weights).predict_arrays(images)
    want = float(((probs[:7] >= thresholds) == (labels[:7] > 0.5)).mean())
    meta = meta_of(out)
    assert meta["native"]["accuracy"] == pytest.approx(want)
    assert meta["formats"]["onnx"]["agreement"]["accuracy"] == pytest.approx(want)


def test_a_derived_format_needs_images_to_check_it_on(tmp_path):
    with pytest.raises(BundleError, match="'onnx-int8' needs images to check it on"):
        export_bundle(
            tmp_path / "none",
            model_name="small_cnn",
            tags=["a", "b"],
            kind="multiclass",
            weights=small_cnn_weights(2),
            preprocessing=models.get("small_cnn").to_json(),
            formats=["onnx-int8"],
        )
    assert not (tmp_path / "none").exists()


def test_cli_export_prints_and_returns_the_agreement_table(trained, tmp_path):
    def cli(*args):
        return run_cli(*args, timeout=600)

    root = trained.project.root
    text = cli("export", root, "--out", tmp_path / "t", "--format", "onnx", "openvino")
    assert text.returncode == 0, text.stderr
    assert "| native (JAX) | weights.safetensors |" in text.stdout
    assert "| openvino | model.xml, model.bin | 1.000 |" in text.stdout
    as_json = cli("export", root, "--out", tmp_path / "j", "--format", "onnx-int8", "--json")
    assert as_json.returncode == 0, as_json.stderr
    record = json.loads(as_json.stdout)
    assert set(record["formats"]) == {"onnx", "onnx-int8"}
    assert "model.int8.onnx" in record["files"]
    assert record["formats"]["onnx-int8"]["agreement"]["images"] == record["check"]["images"]
    bad = cli("export", root, "--out", tmp_path / "b", "--format", "tflite")
    assert bad.returncode != 0 and "invalid choice: 'tflite'" in bad.stderr


def test_openvino_missing_is_refused_with_what_to_install(trained, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now fails
    with pytest.raises(BundleError, match=r"needs the openvino package.*pip install"):
        trained.export(tmp_path / "ov", formats=["onnx", "openvino"])
    assert not (tmp_path / "ov").exists()
    out = trained.export(tmp_path / "int8", formats=["onnx-int8"])  # the others still work
    assert load_model(out).formats == ["onnx", "onnx-int8"]
