"""Scaling out: data-parallel training over forced CPU devices and over processes on
loopback (``jax.distributed`` with gloo), as processes a user would start."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import jupyter_imgclass as ic
from jupyter_imgclass.errors import TrainingError
from jupyter_imgclass.platform import runtime

FIT_SNIPPET = """
import json, sys, numpy as np
from jupyter_imgclass import training
rng = np.random.default_rng(0)
x = rng.integers(0, 256, (192, 28, 28, 3), dtype=np.uint8)
y = (x[..., 0].mean(axis=(1, 2)) > 127).astype(np.int32)
config = training.TrainConfig(model="small_cnn", epochs=2, batch_size=64, augment=("shift",),
                              precision=sys.argv[1])
r = training.fit(config, {"image": x[:160], "label": y[:160]}, {"image": x[160:], "label": y[160:]})
print(json.dumps({"loss": [h["loss"] for h in r.history],
                  "val_loss": [h["val_loss"] for h in r.history],
                  "devices": r.extra["devices"], "batch": r.extra["batch_size"]}))
"""


def _env(devices: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["IMGCLASS_CPU_DEVICES"] = str(devices)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(("precision", "rtol"), [("float32", 1e-3), ("auto", 1e-2)])
def test_forced_cpu_devices_train_like_one_device(precision, rtol):
    """The same global batch split over 1, 2 or 4 devices gives the same curves (the mesh
    changes where the work runs, not what is computed; XLA's reduction order differs).
    With bfloat16 products ("auto" on a CPU that has them) an order difference of one
    float32 ulp can round an operand to the next bfloat16 value, hence the wider margin."""
    runs = {}
    for devices in (1, 4):
        out = subprocess.run(
            [sys.executable, "-c", FIT_SNIPPET, precision],
            env=_env(devices),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        runs[devices] = json.loads(out.stdout.strip().splitlines()[-1])
    assert runs[1]["devices"] == 1 and runs[4]["devices"] == 4
    assert runs[1]["batch"] == runs[4]["batch"] == 64
    for key in ("loss", "val_loss"):
        np.testing.assert_allclose(runs[4][key], runs[1][key], rtol=rtol)


@pytest.fixture(scope="module")
def digit_folder(tmp_path_factory) -> Path:
    from sklearn.datasets import load_digits

    raw = load_digits()
    root = tmp_path_factory.mktemp("digits") / "data"
    for tag in range(3):
        (root / str(tag)).mkdir(parents=True)
        for j, im in enumerate(raw.images[raw.target == tag][:24]):
            pixels = (im * 16).clip(0, 255).astype(np.uint8)
            Image.fromarray(pixels).resize((28, 28)).save(root / str(tag) / f"{j}.png")
    return root


def _train_cmd(data: Path, project: Path, *extra) -> list[str]:
    return [
        sys.executable, "-m", "jupyter_imgclass.cli", "train", str(data),
        "--project", str(project), "--model", "small_cnn", "--budget", "advanced",
        "--epochs", "2", "--batch-size", "32", "--json", "--quiet", *map(str, extra),
    ]  # fmt: skip


def test_two_processes_on_loopback_train_like_one_process(digit_folder, tmp_path):
    """``train --coordinator --num-processes --process-id`` run twice on one machine: the
    two processes train one model over both their devices (gloo collectives), process 0
    writes one iteration, each prints one JSON object naming it, with ``processes`` and
    ``devices``; the loss curve equals that of one process with the same global batch on
    two devices."""
    one = subprocess.run(
        _train_cmd(digit_folder, tmp_path / "one"),
        env=_env(2),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert one.returncode == 0, one.stderr[-2000:]
    single = json.loads(one.stdout)
    assert (single["processes"], single["devices"], single["batch_size"]) == (1, 2, 32)

    port = _free_port()
    procs = [
        subprocess.Popen(
            _train_cmd(
                digit_folder,
                tmp_path / "two",
                "--coordinator",
                f"127.0.0.1:{port}",
                "--num-processes",
                2,
                "--process-id",
                i,
            ),
            env=_env(1),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for i in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-2000:]
    # stdout holds the JSON alone (gloo's own lines go to stderr)
    records = [json.loads(out) for out, _ in outs]
    assert [r["process_id"] for r in records] == [0, 1]
    for r in records:
        assert (r["processes"], r["devices"], r["batch_size"]) == (2, 2, 32)
        assert r["iteration"] == 1 and r["status"] == "done"
        assert r["metrics"] == records[0]["metrics"]
    assert records[0]["import"]["added"] == 72 and records[1]["import"] is None

    with ic.Project.open(tmp_path / "two") as spread, ic.Project.open(tmp_path / "one") as alone:
        assert [it.number for it in spread.iterations] == [1]
        a, b = alone.iteration(1).record, spread.iteration(1).record
        assert b.fit["processes"] == 2 and a.fit["processes"] == 1
        for key in ("loss", "val_loss"):
            np.testing.assert_allclose(
                [h[key] for h in b.history], [h[key] for h in a.history], rtol=1e-4
            )


def test_a_killed_process_ends_the_other_with_the_reason_in_bounded_time(digit_folder, tmp_path):
    """kill -9 of process 1 mid-training: process 0 does not hang at a collective; it
    stops with the reason (the peer's connection closed) and exit status 2."""
    import signal
    import time

    port = _free_port()
    cmd = [
        *_train_cmd(digit_folder, tmp_path / "p", "--coordinator", f"127.0.0.1:{port}"),
        "--num-processes", "2", "--epochs", "400",
    ]  # fmt: skip
    cmd.remove("--quiet")  # process 0 reports its epochs on stderr
    procs = [
        subprocess.Popen(
            [*cmd, "--process-id", str(i)],
            env=_env(1),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    try:
        lines = []
        for line in procs[0].stderr:  # bounded: the run has 400 epochs and ends by itself
            lines.append(line)
            if line.startswith("epoch 1/"):
                break
        assert any(x.startswith("epoch 1/") for x in lines), "".join(lines)[-2000:]
        procs[1].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        _, err = procs[0].communicate(timeout=300)
        waited = time.monotonic() - killed
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert procs[0].returncode == 2, err[-3000:]
    assert "jupyter-imgclass: error: training run 1 failed" in err
    assert waited < 120, f"process 0 took {waited:.0f} s to notice"


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        (("127.0.0.1:1234", None, None), "give all three"),
        ((None, 2, 0), "give all three"),
        (("127.0.0.1", 2, 0), "HOST:PORT"),
        (("127.0.0.1:http", 2, 0), "HOST:PORT"),
        (("127.0.0.1:0", 2, 0), "HOST:PORT"),
        (("127.0.0.1:70000", 2, 0), "HOST:PORT"),
        ((":1234", 2, 0), "HOST:PORT"),
        (("127.0.0.1:1234", 0, 0), "num_processes 0"),
        (("127.0.0.1:1234", 2.0, 0), "num_processes 2.0"),
        (("127.0.0.1:1234", True, 0), "num_processes True"),
        (("127.0.0.1:1234", 2, 2), "process_id 2: must be 0 to 1"),
        (("127.0.0.1:1234", 2, -1), "process_id -1"),
        (("127.0.0.1:1234", 2, "0"), "process_id '0'"),
    ],
)
def test_bad_process_options_name_the_option_and_the_reason(values, reason):
    with pytest.raises(ValueError, match=reason):
        runtime.check_processes(*values)


def test_one_process_needs_no_options():
    assert runtime.check_processes(None, None, None) is None
    assert runtime.check_processes(None, 1, None) is None
    assert runtime.check_processes("127.0.0.1:1", 1, 0) is None
    assert runtime.check_processes("h:1", 2, 1) == ("h:1", 2, 1)


def test_project_train_refuses_bad_process_options_at_once(tmp_path):
    p = ic.Project.create(tmp_path / "p")
    p.add_images([np.full((16, 16, 3), v, np.uint8) for v in range(0, 200, 40)], tags=["a"])
    p.add_images([np.full((16, 16, 3), v, np.uint8) for v in range(1, 200, 40)], tags=["b"])
    with pytest.raises(TrainingError, match="coordinator 'nowhere'"):
        p.train(coordinator="nowhere", num_processes=2, process_id=0)
    assert p.iterations == [] and p.runs == []
    p.close()


def test_cli_refuses_bad_process_options(digit_folder, tmp_path):
    out = subprocess.run(
        _train_cmd(digit_folder, tmp_path / "p", "--num-processes", 2, "--process-id", 0),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode != 0 and out.stdout == ""
    assert "give all three" in out.stderr and not (tmp_path / "p").exists()
