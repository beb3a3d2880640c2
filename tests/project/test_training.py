"""Training through the Project: background runs, iterations on disk, reopen, stop, CLI."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading

import numpy as np
import pytest
from PIL import Image

import jupyter_imgclass as ic
from jupyter_imgclass.data.images import describe_resize
from jupyter_imgclass.data.labelled import stratified_split

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


def _colour_images(colour, n, seed, size=32):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        arr = np.empty((size, size, 3), np.int16)
        arr[:] = colour
        arr += rng.integers(-40, 40, arr.shape)
        out.append(np.clip(arr, 0, 255).astype(np.uint8))
    return out


@pytest.fixture
def colour_project(tmp_path):
    p = ic.Project.create(tmp_path / "colours")
    for k, (tag, colour) in enumerate(COLOURS.items()):
        p.add_images(_colour_images(colour, 8, seed=k), tags=[tag])
    yield p
    p.close()


def test_split_is_stratified_seeded_and_disjoint():
    labels = np.array([0] * 10 + [1] * 5 + [2] * 2)
    a_train, a_val = stratified_split(labels, "multiclass", seed=3)
    b_train, b_val = stratified_split(labels, "multiclass", seed=3)
    assert a_val.tolist() == b_val.tolist()
    assert not set(a_train) & set(a_val)
    assert sorted(np.bincount(labels[a_val]).tolist()) == [1, 1, 2]


def test_training_refused_with_clear_reasons(tmp_path, make_png):
    p = ic.Project.create(tmp_path / "p")
    p.add_images([make_png((1, 1, 1), seed=i) for i in range(4)], tags=["only"])
    with pytest.raises(ic.TrainingError, match="at least 2 tags"):
        p.train()
    p.add_images([make_png((9, 9, 9), seed=99)], tags=["lonely"])
    with pytest.raises(ic.TrainingError, match="'lonely' \\(1\\)"):
        p.train()
    with pytest.raises(ic.ImgClassError, match="budget"):
        p.train(budget="turbo")
    with pytest.raises(ic.ImgClassError, match="unknown model"):
        p.train(model="resnet9000")
    p.close()


def test_quick_training_saves_an_iteration_that_predicts_and_reloads(colour_project, tmp_path):
    events = []
    run = colour_project.train(budget="quick", model="efficientnet_lite0", seed=1)
    run.on_event(events.append)
    it = run.wait(timeout=600)
    assert run.status == "done" and it is not None and it.number == 1
    assert it.classes == ["blue", "green", "red"]
    assert (it.folder / "weights.safetensors").is_file()
    assert (it.folder / "iteration.json").is_file()
    overall = it.metrics["overall"]
    assert overall["accuracy"] >= 0.8  # colours are easy even with a frozen backbone
    assert set(it.metrics["per_tag"]) == {"blue", "green", "red"}
    # Every label trains the final head; every image is scored out of fold.
    labelled = [im.id for im in colour_project.images]
    assert sorted(it.record.train_image_ids) == sorted(it.val_image_ids) == labelled
    assert overall["count"] == 24
    assert it.evaluation == {"method": "cross-validation", "folds": 5, "images": 24}
    assert it.evaluation_text() == "cross-validated over 24 images (5 folds)"
    assert it.record.head_input == "l2" and it.record.head_c > 0
    preds = it.predict(_colour_images(COLOURS["red"], 1, seed=50)[0])
    assert preds[0].tag == "red"
    assert [p.probability for p in preds] == sorted((p.probability for p in preds), reverse=True)
    assert abs(sum(p.probability for p in preds) - 1) < 1e-4
    # Features are cached: the second run extracts nothing.
    run2 = colour_project.train(budget="quick", model="efficientnet_lite0", seed=1)
    it2 = run2.wait(timeout=600)
    assert it2.number == 2
    assert not any(e.get("phase") == "extracting features" for e in run2.events)
    assert it2.metrics == it.metrics  # same seed, same cached features: same result

    root = colour_project.path
    colour_project.close()
    again = ic.Project.open(root)
    assert [i.number for i in again.iterations] == [1, 2]
    reloaded = again.iteration(1)
    assert reloaded.metrics == it.metrics
    image = _colour_images(COLOURS["blue"], 1, seed=77)[0]
    a = reloaded.predict(image)
    assert a[0].tag == "blue"
    again.close()


def test_threshold_changes_metrics_and_top_losses_name_images(colour_project):
    it = colour_project.train(budget="quick", model="efficientnet_lite0").wait(timeout=600)
    low, high = it.evaluate(0.0), it.evaluate(0.99)
    assert low["overall"]["recall"] >= high["overall"]["recall"]
    losses = it.top_losses(3)
    assert len(losses) == 3 and all(x["image_id"] in it.val_image_ids for x in losses)
    assert losses[0]["loss"] >= losses[-1]["loss"]
    df = it.to_dataframe()
    assert {"precision", "recall", "average_precision"} <= set(df.columns)


def test_stop_keeps_best_weights_as_a_stopped_iteration(colour_project):
    started = threading.Event()
    run = colour_project.train(budget="advanced", model="small_cnn", epochs=500, seed=0)
    run.on_event(lambda e: started.set() if e.get("event") == "epoch" else None)
    assert started.wait(timeout=300), "no epoch finished"
    run.stop()
    it = run.wait(timeout=120)
    assert run.status == "stopped" and it.status == "stopped"
    assert len(it.history) < 500
    assert it in colour_project.iterations or it.number in [
        i.number for i in colour_project.iterations
    ]
    assert it.predict(_colour_images(COLOURS["green"], 1, seed=3)[0])


def test_multilabel_training(tmp_path):
    p = ic.Project.create(tmp_path / "ml", kind="multilabel")
    rng = np.random.default_rng(0)
    for i in range(24):
        left, right = bool(i % 2), bool((i // 2) % 2)
        arr = rng.integers(0, 30, (32, 32, 3)).astype(np.uint8)
        if left:
            arr[:, :16, 0] = 230
        if right:
            arr[:, 16:, 2] = 230
        tags = [t for t, on in (("left_red", left), ("right_blue", right)) if on]
        p.add_images([arr], tags=[tags] if tags else None)
    p.create_negative_tag()
    for im in p.images:
        if not im.tags:
            p.set_tags(im.id, ["Negative"])
    it = p.train(budget="quick", model="efficientnet_lite0").wait(timeout=600)
    assert it.kind == "multilabel" and it.classes == ["left_red", "right_blue"]
    assert (
        "subset_accuracy" in it.metrics["overall"] or "average_precision" in it.metrics["overall"]
    )
    preds = it.predict(np.zeros((32, 32, 3), np.uint8))
    assert {x.tag for x in preds} == {"left_red", "right_blue"}
    p.close()


def test_cli_train_and_predict_json(tmp_path, colour_folder):
    proj = tmp_path / "cli-proj"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "jupyter_imgclass.cli",
            "train",
            str(colour_folder),
            "--project",
            str(proj),
            "--model",
            "efficientnet_lite0",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    payload = json.loads(out.stdout)
    assert payload["iteration"] == 1 and payload["import"]["added"] == 18
    assert payload["import"]["rejected"] == []
    assert "overall" in payload["metrics"]
    assert out.stderr  # progress went to stderr

    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    red = sorted((colour_folder / "red").glob("*.png"))[0]
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "jupyter_imgclass.cli",
            "predict",
            str(proj),
            str(red),
            str(bad),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert lines[0]["path"] == str(red) and lines[0]["predictions"][0]["tagName"] == "red"
    probs = [p["probability"] for p in lines[0]["predictions"]]
    assert probs == sorted(probs, reverse=True)
    assert lines[1]["path"] == str(bad) and "not an image" in lines[1]["error"]

    out = subprocess.run(
        [sys.executable, "-m", "jupyter_imgclass.cli", "predict", str(tmp_path / "nope"), str(red)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (
        out.returncode == 2
        and "not a jupyter_imgclass project" in out.stderr
        or "no such folder" in out.stderr
    )


def _fit(accuracy, loss, epoch=1):
    from jupyter_imgclass.training import FitResult

    history = [{"epoch": epoch, "val_accuracy": accuracy, "val_loss": loss}]
    return FitResult(weights={}, history=history, best_epoch=epoch, val_probabilities=None,
                     stopped=False)  # fmt: skip


@pytest.mark.parametrize(
    ("new", "old", "expected"),
    [
        ((0.90, 0.30), (0.85, 0.40), True),  # better on both
        ((0.90, 0.45), (0.85, 0.40), False),  # one more image right, but a worse loss
        ((0.85, 0.20), (0.85, 0.40), False),  # same accuracy: keep the starting point
        ((0.80, 0.20), (0.85, 0.40), False),
    ],
)
def test_fine_tuning_replaces_the_head_only_on_consistent_evidence(new, old, expected):
    from jupyter_imgclass.training.recipes import improves as _improves

    assert _improves(_fit(*new), _fit(*old), "multiclass") is expected


KILLED_TRAINER = """
import sys, threading
import numpy as np
import jupyter_imgclass as ic
project = ic.Project.open(sys.argv[1])
epoch = threading.Event()
run = project.train(budget="advanced", model="small_cnn", epochs=500, input_size=16)
run.on_event(lambda e: epoch.set() if e.get("event") == "epoch" else None)
epoch.wait(300)
print("training", flush=True)
run.wait()
"""


def test_kernel_killed_during_training_leaves_a_failed_iteration_and_the_project_usable(
    colour_project,
):
    """``kill -9`` mid-training: reopening marks the row failed; nothing half-saved shows."""
    root = colour_project.root
    colour_project.close()
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_TRAINER, str(root)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline().strip() == "training"
        # While the trainer lives, another process's open leaves its row alone.
        with ic.Project.open(root) as other:
            assert [r["status"] for r in other.store.iterations()] == ["training"]
        child.kill()  # SIGKILL: no finally blocks, no cleanup
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
    with ic.Project.open(root) as project:
        assert [(r["number"], r["status"]) for r in project.store.iterations()] == [(1, "failed")]
        assert project.iterations == []
        assert not list((root / "iterations").glob(".tmp-*"))
        it = project.train(budget="quick", model="small_cnn", input_size=16).wait()
        assert it.number == 2 and it.status == "done"
        assert (it.folder / "iteration.json").is_file() and (
            it.folder / "weights.safetensors"
        ).is_file()


def test_a_second_training_at_once_is_refused_with_a_clear_message(colour_project):
    """Two trainings at once ended in ``IntegrityError: UNIQUE constraint failed``."""
    root = colour_project.root
    first = colour_project.train(budget="advanced", model="small_cnn", epochs=500, input_size=16)
    with pytest.raises(ic.TrainingError, match="another training of this project is running"):
        colour_project.train(budget="quick", model="small_cnn", input_size=16)
    other = subprocess.run(
        [sys.executable, "-c", "import sys, jupyter_imgclass as ic\n"
         "p = ic.Project.open(sys.argv[1])\n"
         "p.train(budget='quick', model='small_cnn', input_size=16)",
         str(root)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert other.returncode != 0 and "another training of this project" in other.stderr
    first.stop()
    first.wait(timeout=300)
    again = colour_project.train(budget="quick", model="small_cnn", input_size=16)
    assert again.wait(timeout=300).number == 2


KILLED_SAVER = """
import os, signal, sys
import jupyter_imgclass as ic
from jupyter_imgclass.data import store
def killed(self, *args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)  # the folder is in place, the row not yet updated
store.ImageStore.complete_iteration = killed
project = ic.Project.open(sys.argv[1])
project.train(budget="quick", model="small_cnn", input_size=16).wait()
"""


def test_a_kill_between_the_folder_rename_and_the_row_keeps_the_iteration(colour_project):
    root = colour_project.root
    colour_project.close()
    (root / "iterations" / ".7.lock").write_text("")  # what older versions left per run
    done = subprocess.run([sys.executable, "-c", KILLED_SAVER, str(root)], timeout=600)
    assert done.returncode == -9
    with ic.Project.open(root) as project:
        assert [(it.number, it.status) for it in project.iterations] == [(1, "done")]
        assert project.iteration(1).metrics["overall"]["count"] == 24
        assert project.iteration(1).predict(_colour_images(COLOURS["red"], 1, seed=5)[0])
        assert sorted(p.name for p in (root / "iterations").iterdir()) == [".training.lock", "1"]


def test_a_missing_or_damaged_image_file_is_skipped_with_a_warning(colour_project):
    """One missing file made ``train()`` and ``check()`` fail for the whole project."""
    images = colour_project.images
    gone, damaged = images[0], images[9]
    gone.path.unlink()
    damaged.path.write_bytes(b"not an image any more")
    run = colour_project.train(budget="quick", model="small_cnn", input_size=16)
    it = run.wait(timeout=600)
    assert it.status == "done" and it.metrics["overall"]["count"] == 22
    skipped = [w for w in run.warnings if "skipped" in w]
    assert len(skipped) == 2
    assert f"image {gone.id} ({gone.path}) skipped: no such file" in skipped
    assert any(f"image {damaged.id}" in w and "not" in w for w in skipped)
    report = colour_project.check()
    assert [i for i, _ in report.unreadable] == [gone.id, damaged.id]
    assert "2 unreadable image(s)" in report.summary()


def test_a_save_that_fails_leaves_no_folder_and_a_failed_row(colour_project):
    # A plain file where the iteration's folder must go: the rename into place fails.
    blocker = colour_project.root / "iterations" / "1"
    blocker.write_text("not a folder")
    run = colour_project.train(budget="quick", model="small_cnn", input_size=16)
    with pytest.raises(ic.TrainingError, match="iterations/1"):
        run.wait()
    assert [r["status"] for r in colour_project.store.iterations()] == ["failed"]
    assert sorted(p.name for p in blocker.parent.iterdir()) == [".training.lock", "1"]
    assert blocker.read_text() == "not a folder"
    assert colour_project.iterations == []


def test_advanced_on_a_pretrained_network_keeps_to_its_minutes(colour_project):
    """The top is fine-tuned over the head's folds and replaces the head only when its
    cross-validated figures win; either way the run ends within its time budget, its
    metrics rest on every image, and it says what it kept."""
    import time

    started = time.perf_counter()
    run = colour_project.train(budget="advanced", model="efficientnet_lite0", minutes=0.75, seed=0)
    it = run.wait(timeout=600)
    assert time.perf_counter() - started <= 0.75 * 60 + 15
    assert it.status == "done"
    assert it.evaluation["method"] == "cross-validation" and it.evaluation["images"] == 24
    if "fine-tuned" in it.evaluation.get("note", ""):
        assert it.evaluation["folds"] >= 2 and not run.warnings
    else:  # the head was kept, and the user is told: in the warnings and in the report
        assert any("kept the transfer-learned head" in w for w in run.warnings)
        assert it.record.warnings == run.warnings
        assert it.evaluation_text().endswith("kept the transfer-learned head")
    assert it.predict(_colour_images(COLOURS["green"], 1, seed=90)[0])[0].tag == "green"


def test_suggest_works_before_a_model_and_with_every_strategy(colour_project):
    from jupyter_imgclass.active import STRATEGIES

    p = colour_project
    for k, colour in enumerate(COLOURS.values()):
        p.add_images(_colour_images(colour, 4, seed=60 + k))  # 12 untagged
    untagged = {im.id for im in p.images if not im.tags}
    before = p.suggest(3)  # no iteration yet: coverage of the backbone's features
    assert len({im.id for im in before}) == 3 and {im.id for im in before} <= untagged
    p.train(budget="quick", seed=0).wait()
    for strategy in STRATEGIES:
        picked = [im.id for im in p.suggest(5, strategy=strategy, seed=1)]
        assert len(set(picked)) == 5 and set(picked) <= untagged, strategy
    assert [im.id for im in p.suggest(5, strategy="random", seed=1)] == [
        im.id for im in p.suggest(5, strategy="random", seed=1)
    ]
    assert len(p.suggest(50)) == 12 and p.suggest(0) == []
    # The quick head on cached features answers as the whole network does on the images.
    it = p.iterations[-1]
    ids = sorted(untagged)
    expected = {i: it.predict(p.array(i, it.input_size))[0].tag for i in ids}
    assert p.guesses(ids) == expected and p.guesses(ids, iteration=it) == expected
    from jupyter_imgclass.project.suggestions import predicted

    arrays = np.stack([p.array(i, it.input_size) for i in ids])
    on_features = predicted(p, it, ids)  # the Predictor's head on the cached features
    np.testing.assert_allclose(on_features, it.predictor.predict_arrays(arrays), atol=2e-4)
    with pytest.raises(ic.ImgClassError, match="strategy 'best'"):
        p.suggest(3, strategy="best")


def test_old_spellings_say_where_they_went_and_names_stay_unique(colour_project):
    p = colour_project
    with pytest.raises(
        AttributeError, match=r"Project.labeller is gone: use ic.labeller\(project\)"
    ):
        p.labeller()
    with pytest.raises(AttributeError, match="'Project' object has no attribute 'nothing'"):
        p.nothing  # noqa: B018
    with pytest.raises(ic.TrainingError, match=r"show=: .* call ic.monitor\(run\)"):
        p.train(show=False)
    run = p.train("quick", model="efficientnet_lite0", name="first-model")
    with pytest.raises(AttributeError, match=r"TrainingRun.monitor is gone: use ic.monitor"):
        run.monitor()
    it = run.wait(timeout=600)
    with pytest.raises(AttributeError, match=r"Iteration.config is gone: use iteration.record"):
        it.config  # noqa: B018
    with pytest.raises(AttributeError, match=r"Iteration.report is gone: use ic.report"):
        it.report()
    with pytest.raises(ic.TrainingError, match="name 'first-model': iteration 1 has it already"):
        p.train("quick", name="first-model")
    for helper, wrong in ((ic.monitor, it), (ic.report, p), (ic.labeller, it), (ic.tester, run)):
        with pytest.raises(ic.ImgClassError, match=rf"ic.{helper.__name__}\(...\): expected"):
            helper(wrong)
    assert ic.TrainOptions(minutes=1).time_limit_s == 60


def test_quick_asked_to_choose_the_backbone_chooses_and_says_why(colour_project):
    from jupyter_imgclass.training.recipes import BACKBONES

    it = colour_project.train("quick", model="choose", seed=0).wait(timeout=900)
    choice = it.record.backbone_choice
    assert set(choice["candidates"]) == set(BACKBONES) and choice["by"] == "cv_log_loss"
    losses = {name: c["cv_log_loss"] for name, c in choice["candidates"].items()}
    assert it.model == choice["chosen"] == min(losses, key=losses.get)
    assert it.input_size == ic.models.get(it.model).input_size
    assert it.choice_text().startswith(f"{it.model}, the lowest cross-validated log-loss of ")
    # The store's row, the record and a reopened project agree on the network.
    with ic.Project.open(colour_project.path) as again:
        same = again.iteration(it.number)
        assert same.model == it.model and same.record.backbone_choice == choice
        assert same.predict(_colour_images(COLOURS["green"], 1, seed=70)[0])[0].tag == "green"
    # Suggestions read the chosen backbone's cached features: nothing new is extracted.
    assert colour_project.guesses([colour_project.images[0].id]) != {}


def _wide(colour, seed: int) -> np.ndarray:
    """A 96x32 image: ``colour`` in the middle third, grey on both sides (pad and squash
    differ on it)."""
    arr = np.full((32, 96, 3), 128, np.uint8)
    arr[:, 32:64] = _colour_images(colour, 1, seed=seed)[0]
    return arr


def test_the_resize_mode_travels_with_the_model_to_bundle_onnx_and_endpoint(tmp_path):
    """Training, the iteration, the bundle, its ONNX description and the endpoint all make
    a wide image square the same way (pad, asked for), so they give the same answer."""
    import httpx

    from jupyter_imgclass.data.images import load_rgb
    from jupyter_imgclass.publish.onnx import onnx_predict

    p = ic.Project.create(tmp_path / "wide")
    for k, (tag, colour) in enumerate(COLOURS.items()):
        p.add_images([_wide(colour, 10 * k + j) for j in range(6)], tags=[tag])
    assert ic.TrainOptions().resize == "squash"
    it = p.train(model="efficientnet_lite0", resize="pad").wait(timeout=600)
    assert it.resize == "pad" and it.record.preprocessing["resize"] == "pad"
    assert it.input_text() == describe_resize(224, "pad")
    assert "centred on white (aspect ratio kept)" in it.input_text()
    # the cache holds the padded arrays and features it trained on
    assert (p.path / "cache" / "features" / "efficientnet_lite0-224-pad").is_dir()
    probe = _wide(COLOURS["green"], 99)
    data = io.BytesIO()
    Image.fromarray(probe).save(data, "PNG")
    body = data.getvalue()
    want = it.predictor.predict_arrays(load_rgb(body, 224, resize="pad")[None])[0]
    squashed = it.predictor.predict_arrays(load_rgb(body, 224, resize="squash")[None])[0]
    assert not np.allclose(want, squashed, atol=1e-4)  # the mode makes a difference here
    got = {x.tag: x.probability for x in it.predict(body)}
    np.testing.assert_allclose([got[t] for t in it.classes], want, atol=1e-5)

    folder = it.export(tmp_path / "bundle", onnx=True)
    model = ic.load_model(folder)
    assert model.resize == "pad"
    meta = json.loads((folder / "model.json").read_text())
    assert meta["preprocessing"]["resize"] == meta["onnx"]["input"]["resize"] == "pad"
    assert (
        "224x224 pixels, scaled to fit and centred on white" in (folder / "README.md").read_text()
    )
    from_bundle = {x.tag: x.probability for x in model.predict(body)}
    np.testing.assert_allclose([from_bundle[t] for t in it.classes], want, atol=1e-5)
    onnx_probs = onnx_predict(folder / "model.onnx", load_rgb(body, 224, resize="pad")[None])
    np.testing.assert_allclose(onnx_probs[0], want, atol=1e-3)

    with it.serve() as srv:
        r = httpx.post(
            srv.routes["image nostore"],
            content=body,
            headers={"Content-Type": "application/octet-stream"},
            timeout=60,
        )
    assert r.status_code == 200, r.text
    served = {x["tagName"]: x["probability"] for x in r.json()["predictions"]}
    np.testing.assert_allclose([served[t] for t in it.classes], want, atol=1e-4)

    # squash, the default, is recorded as such
    old = p.train(model="efficientnet_lite0").wait(timeout=600)
    assert old.resize == "squash"
    np.testing.assert_allclose(
        old.predictor.predict_arrays(load_rgb(body, 224)[None])[0],
        [x.probability for x in sorted(old.predict(body), key=lambda x: it.classes.index(x.tag))],
        atol=1e-5,
    )
    with pytest.raises(ic.TrainingError, match="resize 'stretch': choose one of squash, pad"):
        p.train(resize="stretch")
    p.close()


def test_quick_puts_untagged_images_to_work_and_says_so(tmp_path):
    """Untagged images (one of them with its file gone) reach the quick head through
    label spreading; the report says whether they were used and why; ``unlabelled=False``
    leaves them out."""
    p = ic.Project.create(tmp_path / "pool")
    for k, (tag, colour) in enumerate(COLOURS.items()):
        p.add_images(_colour_images(colour, 3, seed=k), tags=[tag])
        p.add_images(_colour_images(colour, 12, seed=100 + k))  # untagged
    untagged = p.filter_images("untagged")
    assert len(untagged) == 36
    untagged[0].path.unlink()  # skipped, not an error
    it = p.train(model="efficientnet_lite0").wait(timeout=600)
    used = it.evaluation["unlabelled"]
    assert used["images"] == 35
    assert set(used["cv_log_loss"]) == {"without", "with"}
    assert used["used"] == (used["cv_log_loss"]["with"] < used["cv_log_loss"]["without"])
    assert it.unlabelled_text() == used["reason"]
    assert ("35 untagged images used" if used["used"] else "not used") in it.unlabelled_text()
    assert it.metrics["overall"]["count"] == 9  # only tagged images are scored
    assert "untagged images:" in ic.report(it)._static_text()
    off = p.train(model="efficientnet_lite0", unlabelled=False).wait(timeout=600)
    assert "unlabelled" not in off.evaluation and off.unlabelled_text() == ""
    with pytest.raises(ic.TrainingError, match="unlabelled 'no': must be True or False"):
        p.train(unlabelled="no")
    p.close()
