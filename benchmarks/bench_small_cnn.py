"""small_cnn on Fashion-MNIST: Flax (jupyter_imgclass.training) against the same net in PyTorch.

Prints training images/s of both (alternating A B A B in one run: this machine's speed
drifts about 2x), their ratio, test accuracy after each epoch and the minutes of
training each framework took to reach 91% and 92% (the engine's clock counts its
per-epoch scoring of the test set, PyTorch's does not), cold and cached compile time of
the first step, and single-image predict latency p50/p99.

    .venv/bin/python benchmarks/bench_small_cnn.py                 # full run (minutes)
    .venv/bin/python benchmarks/bench_small_cnn.py --quick         # a short check
    .venv/bin/python benchmarks/bench_small_cnn.py --devices 1     # one XLA CPU device
    .venv/bin/python benchmarks/bench_small_cnn.py --minutes 3 10  # the 3- and 10-minute runs

The PyTorch peer needs torch (never a dependency of the package):
``.venv/bin/pip install torch==2.13.0``; without it the peer is skipped.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small subsets, one short epoch")
    ap.add_argument("--devices", type=int, default=2, help="XLA host devices (data parallel)")
    ap.add_argument("--batch", type=int, default=128, help="throughput runs")
    ap.add_argument(
        "--minutes",
        type=float,
        nargs="+",
        default=[3.0],
        help="Flax accuracy runs (time budgets)",
    )
    ap.add_argument(
        "--augment",
        action="store_true",
        help="augment in the accuracy runs (10 minutes: 91.15%% with, 93.55%% without)",
    )
    ap.add_argument("--accuracy-batch", type=int, default=64, help="Flax accuracy runs")
    ap.add_argument("--learning-rate", type=float, default=3e-3, help="Flax accuracy runs")
    ap.add_argument("--peer-epochs", type=int, default=3, help="PyTorch accuracy run (0: skip)")
    ap.add_argument("--rounds", type=int, default=2, help="alternating throughput rounds")
    ap.add_argument("--steps", type=int, default=40, help="train steps per throughput round")
    ap.add_argument("--precision", default="auto", help="TrainConfig.precision of the Flax runs")
    ap.add_argument("--skip", default="", help="comma list: throughput,accuracy,compile,latency")
    return ap.parse_args()


ARGS = parse() if __name__ == "__main__" else None
if ARGS is not None and ARGS.devices > 1:
    # Must be set before JAX starts; one XLA CPU device does not use the second core well.
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={ARGS.devices}"
    )

import numpy as np  # noqa: E402


def load():
    from jupyter_imgclass import datasets

    tr = datasets.fashion_mnist(split="train", rgb=True)
    te = datasets.fashion_mnist(split="test", rgb=True)
    return (tr.images, tr.labels.astype(np.int32)), (te.images, te.labels.astype(np.int32))


def flax_throughput(images, labels, batch: int, steps: int, augment) -> float:
    from jupyter_imgclass import training

    n = batch * steps
    config = training.TrainConfig(
        model="small_cnn", epochs=1, batch_size=batch, augment=augment, num_classes=10,
        precision=ARGS.precision,
    )  # fmt: skip
    sub = {"image": images[:n], "label": labels[:n]}
    val = {"image": images[:8], "label": labels[:8]}
    result = training.fit(config, sub, val)
    PRECISION[0] = result.extra["precision"]
    return result.images_per_s


PRECISION = ["?"]  # what the last Flax run computed in (FitResult.extra)


def throughput(args, train_set) -> None:
    import torch_peer

    images, labels = train_set
    steps = 10 if args.quick else args.steps
    rng = np.random.default_rng(0)
    peer = torch_peer.Peer() if torch_peer.available() else None
    if peer is None:
        print("PyTorch peer skipped: torch is not installed (pip install torch==2.13.0)")
    flax_figs, flax_aug, torch_figs = [], [], []
    flax_throughput(images, labels, args.batch, 2, False)  # compile outside the timing
    if peer is not None:
        peer.train_steps(images, labels, args.batch, 2, rng)
    for r in range(args.rounds):
        flax_figs.append(flax_throughput(images, labels, args.batch, steps, False))
        if peer is not None:
            torch_figs.append(peer.train_steps(images, labels, args.batch, steps, rng))
        flax_aug.append(flax_throughput(images, labels, args.batch, steps, True))
        line = f"round {r + 1}: flax {flax_figs[-1]:.0f} img/s, flax+augment {flax_aug[-1]:.0f}"
        if torch_figs:
            line += f", torch {torch_figs[-1]:.0f}, ratio {flax_figs[-1] / torch_figs[-1]:.2f}x"
        print(line, flush=True)
    f, fa = float(np.median(flax_figs)), float(np.median(flax_aug))
    print(f"TRAINING THROUGHPUT (batch {args.batch}, {args.devices} XLA device(s), "
          f"flax in {PRECISION[0]}):")  # fmt: skip
    print(f"  flax  {f:.0f} img/s (with on-device augmentation {fa:.0f})")
    if torch_figs:
        t = float(np.median(torch_figs))
        print(f"  torch {t:.0f} img/s (2 threads)")
        print(f"  ratio flax/torch {f / t:.2f}x (augmented {fa / t:.2f}x)")


GOALS = (0.91, 0.92)


def accuracy(args, train_set, test_set) -> None:
    from jupyter_imgclass import training

    images, labels = train_set
    timages, tlabels = test_set
    if args.quick:
        images, labels = images[:6000], labels[:6000]
        timages, tlabels = timages[:2000], tlabels[:2000]

    reached: dict[str, dict[float, float]] = {"flax": {}, "torch": {}}

    def mark(who: str, accuracy: float, seconds: float) -> None:
        for goal in GOALS:
            if accuracy >= goal and goal not in reached[who]:
                reached[who][goal] = seconds

    def show(e):
        if e.get("event") == "epoch":
            mark("flax", e["val_accuracy"], e["elapsed_s"])
            print(
                f"  flax epoch {e['epoch']}: test accuracy {e['val_accuracy']:.4f} "
                f"after {e['elapsed_s']:.0f} s of training",
                flush=True,
            )

    for minutes in [0.5] if args.quick else args.minutes:
        augment = args.augment
        config = training.TrainConfig(
            model="small_cnn",
            time_limit_s=minutes * 60,
            batch_size=args.accuracy_batch,
            learning_rate=args.learning_rate,
            augment=augment,
            num_classes=10,
            precision=args.precision,
        )
        print(
            f"FLAX ACCURACY RUN ({minutes:g} min, batch {args.accuracy_batch}, "
            f"lr {args.learning_rate:g}, augmentation {'on' if augment else 'off'}):"
        )
        result = training.fit(
            config,
            {"image": images, "label": labels},
            {"image": timages, "label": tlabels},
            on_event=show,
        )
        best = max(h["val_accuracy"] for h in result.history)
        print(
            f"  test accuracy {best:.4f} within {minutes:g} min "
            f"(target {'0.935 in 10' if minutes >= 10 else '0.92 in 3'} min); "
            f"{result.images_per_s:.0f} img/s; compile {result.compile_s:.2f} s; "
            f"{result.extra['precision']}",
            flush=True,
        )
    import torch_peer

    if args.peer_epochs and torch_peer.available():
        peer = torch_peer.Peer()
        rng = np.random.default_rng(0)
        clock = 0.0
        epochs = 1 if args.quick else args.peer_epochs
        print(f"TORCH ACCURACY RUN ({epochs} epochs, batch {args.accuracy_batch}):")
        for ep in range(epochs):
            ips = peer.epoch(images, labels, args.accuracy_batch, rng)
            clock += len(images) / ips
            score = peer.accuracy(timages, tlabels)
            mark("torch", score, clock)
            print(
                f"  torch epoch {ep + 1}: test accuracy {score:.4f} "
                f"after {clock:.0f} s ({ips:.0f} img/s)",
                flush=True,
            )
    print("TIME TO ACCURACY (minutes of training to reach each test accuracy):")
    for who, times in reached.items():
        cells = [
            f"{goal:.0%} at {times[goal] / 60:.1f} min"
            if goal in times
            else f"{goal:.0%} not reached"
            for goal in GOALS
        ]
        print(f"  {who:<5} " + ", ".join(cells), flush=True)


COMPILE_CHILD = """
import sys, numpy as np
from jupyter_imgclass import training
rng = np.random.default_rng(0)
x = rng.integers(0, 255, (512, 28, 28, 3), dtype=np.uint8)
y = rng.integers(0, 10, 512).astype(np.int32)
config = training.TrainConfig(model="small_cnn", epochs=1, batch_size=int(sys.argv[1]))
r = training.fit(config, {"image": x, "label": y}, {"image": x[:64], "label": y[:64]})
print("COMPILE", r.compile_s)
"""


def compile_times(args) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "IMGCLASS_JAX_CACHE": cache}
        out = []
        for _ in range(2):
            t0 = time.perf_counter()
            p = subprocess.run(
                [sys.executable, "-c", COMPILE_CHILD, str(args.batch)],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            wall = time.perf_counter() - t0
            c = float(
                next(ln for ln in p.stdout.splitlines() if ln.startswith("COMPILE")).split()[1]
            )
            out.append((c, wall))
    print("FIRST TRAIN STEP COMPILE (fresh process):")
    print(f"  cold   {out[0][0]:.2f} s (process wall {out[0][1]:.1f} s)")
    print(f"  cached {out[1][0]:.2f} s (process wall {out[1][1]:.1f} s)")


def latency(args, test_set) -> None:
    from flax import nnx

    from jupyter_imgclass import models
    from jupyter_imgclass.models.weights import model_to_weights
    from jupyter_imgclass.predict import Predictor

    weights = model_to_weights(models.get("small_cnn").create(10, rngs=nnx.Rngs(0)))
    pred = Predictor("small_cnn", [str(i) for i in range(10)], "multiclass", weights)
    images = test_set[0]
    pred.predict_arrays(images[:1])
    times = []
    for i in range(100 if args.quick else 500):
        t0 = time.perf_counter()
        pred.predict_arrays(images[i : i + 1])
        times.append(time.perf_counter() - t0)
    ms = np.array(times) * 1000
    big = images[:1024]
    pred.predict_arrays(big)
    t0 = time.perf_counter()
    pred.predict_arrays(big)
    bulk = len(big) / (time.perf_counter() - t0)
    print("PREDICT:")
    print(f"  single image p50 {np.percentile(ms, 50):.2f} ms, p99 {np.percentile(ms, 99):.2f} ms")
    print(f"  batched (64 per call) {bulk:.0f} img/s")


def main() -> None:
    args = ARGS
    import jax

    from jupyter_imgclass.platform import cpu_kernels, runtime

    runtime.prepare()  # before jax.devices(): one CPU device per core, as training asks
    print(
        f"jax {jax.__version__}, devices {jax.devices()}, "
        f"malloc {runtime.allocator()}, "
        f"glibc tuning {'on' if runtime.applied else 'off'}; "
        f"CPU kernels: {cpu_kernels.status()}"
    )
    skip = set(filter(None, args.skip.split(",")))
    train_set, test_set = load()
    if "throughput" not in skip:
        throughput(args, train_set)
    if "compile" not in skip:
        compile_times(args)
    if "latency" not in skip:
        latency(args, test_set)
    if "accuracy" not in skip:
        accuracy(args, train_set, test_set)


if __name__ == "__main__":
    main()
