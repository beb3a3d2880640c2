"""Scaling out: images/s over devices and processes, peak memory against project size,
cache build time, bfloat16 against float32, and the same figures on an accelerator.

Every figure comes from a fresh child process (JAX fixes its devices when it starts), all
in one command, printed beside its peer in the same run:

- ``throughput``: ``training.fit`` images/s of small_cnn (28 px, global batch 128) on 1, 2
  and 4 forced CPU devices (``IMGCLASS_CPU_DEVICES``), and 2 processes x 1 device on
  loopback (``jax.distributed``, gloo) beside 1 process x 2 devices; the PyTorch peer at
  2 threads on the same machine in the same command when torch is installed.
- ``memory``: a generated project of 10,000 and 100,000 images (28 px): import and array
  cache build time per 1,000 images, then peak RSS of a child that trains small_cnn
  (``budget="advanced"``, 20 s) streaming from the cache, beside a child that first holds
  every array in memory (what training did before).
- ``precision``: small_cnn images/s in float32 and bfloat16 on this backend.
- ``loader``: images/s of reading random batches of 128 from the array cache of a
  generated project: ``CachedRows`` alone and with the one-thread prefetch that
  ``training.fit`` uses, beside Grain (``grain``, benchmark-only install) reading the same
  rows with 1 and 4 threads, and beside small_cnn's training step (what a loader must
  keep up with).
- ``accelerator``: backend, device, images/s and peak device memory of small_cnn and
  EfficientNet-Lite0/1/2 (random initial weights: the speed is the same) in float32 and
  bfloat16 -- the same command reports GPU figures where JAX sees one.

Usage::

    .venv/bin/python benchmarks/scaling.py                        # every CPU part
    .venv/bin/python benchmarks/scaling.py --parts throughput precision
    .venv/bin/python benchmarks/scaling.py --parts memory --sizes 10000 100000
    python3 benchmarks/scaling.py --parts accelerator             # on a GPU machine
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent


# ----------------------------------------------------------------------------- children
def _fit_child(opts: dict) -> dict:
    """One ``training.fit`` on random images; its images/s and memory."""
    import numpy as np

    from jupyter_imgclass.platform import runtime

    processes = runtime.start_processes(
        opts.get("coordinator"), opts.get("num_processes"), opts.get("process_id")
    )
    import jax

    from jupyter_imgclass import training

    size, batch, steps = opts["size"], opts["batch"], opts["steps"]
    rng = np.random.default_rng(0)
    n = batch * steps
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, n).astype(np.int32)
    config = training.TrainConfig(
        model=opts["model"],
        num_classes=10,
        input_size=size,
        epochs=opts.get("epochs", 2),
        batch_size=batch,
        pretrained=False,
        augment=False,
        precision=opts.get("precision", "float32"),
    )
    val = {"image": images[:batch], "label": labels[:batch]}
    result = training.fit(config, {"image": images, "label": labels}, val)
    device = jax.local_devices()[0]
    try:
        stats = device.memory_stats()
    except Exception:  # not every backend keeps them
        stats = None
    return {
        "images_per_s": result.images_per_s,
        "compile_s": result.compile_s,
        "devices": len(jax.devices()),
        "processes": processes,
        "backend": jax.default_backend(),
        "device": getattr(device, "device_kind", str(device)),
        "peak_device_bytes": (stats or {}).get("peak_bytes_in_use"),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "loss": [round(h["loss"], 6) for h in result.history],
        "precision": result.extra.get("precision"),
    }


def _train_child(opts: dict) -> dict:
    """Trains small_cnn on a generated project; peak RSS, streaming or all in memory."""
    import numpy as np

    import jupyter_imgclass as ic

    project = ic.Project.open(opts["project"])
    held = None
    if opts["in_memory"]:  # what training did before: every array held at once
        records = project.images
        held = project.cache.arrays([(im.sha256, im.path) for im in records], 28)
    started = time.perf_counter()
    run = project.train(budget="advanced", model="small_cnn", minutes=opts["minutes"], epochs=1)
    it = run.wait()
    out = {
        "seconds": round(time.perf_counter() - started, 1),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "images_per_s": (it.record.fit or {}).get("images_per_s"),
        "held_mb": 0 if held is None else round(np.asarray(held).nbytes / 2**20, 1),
    }
    project.close()
    return out


def _torch_child(opts: dict) -> dict:
    import numpy as np

    sys.path.insert(0, str(HERE))
    import torch_peer

    rng = np.random.default_rng(0)
    n = opts["batch"] * opts["steps"]
    images = rng.integers(0, 256, (n, 28, 28, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, n)
    peer = torch_peer.Peer(threads=opts["threads"])
    peer.train_steps(images, labels, opts["batch"], 3, rng)  # warm-up
    started = time.perf_counter()
    peer.train_steps(images, labels, opts["batch"], opts["steps"], rng)
    return {"images_per_s": round(n / (time.perf_counter() - started), 1)}


CHILDREN = {"fit": _fit_child, "train": _train_child, "torch": _torch_child}


def child_main(kind: str, opts: str) -> int:
    out = CHILDREN[kind](json.loads(opts))
    sys.stdout.flush()
    print("RESULT " + json.dumps(out), flush=True)
    return 0


# ------------------------------------------------------------------------------ driver
def spawn(kind: str, opts: dict, env: dict | None = None) -> subprocess.Popen:
    cmd = [sys.executable, __file__, "--child", kind, json.dumps(opts)]
    return subprocess.Popen(
        cmd,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def result(proc: subprocess.Popen, timeout: float = 1800) -> dict:
    out, err = proc.communicate(timeout=timeout)
    for line in out.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"child failed (rc {proc.returncode}):\n{err[-3000:]}")


def run_child(kind: str, opts: dict, env: dict | None = None) -> dict:
    return result(spawn(kind, opts, env))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torch_available() -> bool:
    sys.path.insert(0, str(HERE))
    import torch_peer

    return torch_peer.available()


def part_throughput(args) -> None:
    print("\n## throughput: small_cnn training, 28 px, global batch 128 (images/s)")
    base = {"model": "small_cnn", "size": 28, "batch": 128, "steps": args.steps}
    rows = []
    for _ in range(args.rounds):  # alternating rounds: this machine's speed drifts
        for devices in (1, 2, 4):
            r = run_child("fit", base, {"IMGCLASS_CPU_DEVICES": str(devices)})
            rows.append((f"1 process x {devices} device(s)", r))
        port = free_port()
        procs = [
            spawn(
                "fit",
                {
                    **base,
                    "coordinator": f"127.0.0.1:{port}",
                    "num_processes": 2,
                    "process_id": i,
                },
                {"IMGCLASS_CPU_DEVICES": "1"},
            )
            for i in range(2)
        ]
        outs = [result(p) for p in procs]
        rows.append(("2 processes x 1 device (loopback)", outs[0]))
        same = outs[0]["loss"] == outs[1]["loss"]
        rows[-1][1]["note"] = f"both processes' losses equal: {same}"
        if torch_available():
            rows.append(("PyTorch peer, 2 threads", run_child("torch", {**base, "threads": 2})))
    for label, r in rows:
        extra = f"  loss {r['loss']}" if "loss" in r else ""
        note = f"  ({r['note']})" if "note" in r else ""
        print(f"{label:<36}{r['images_per_s']:>9.1f}{extra}{note}", flush=True)


def part_precision(args) -> None:
    print("\n## precision: small_cnn training, 28 px, batch 128, this backend (images/s)")
    base = {"model": "small_cnn", "size": 28, "batch": 128, "steps": args.steps}
    for _ in range(args.rounds):
        for precision in ("float32", "bfloat16"):
            r = run_child("fit", {**base, "precision": precision})
            print(
                f"{precision:<10}{r['images_per_s']:>9.1f}  ({r['backend']}, "
                f"{r['devices']} device(s))",
                flush=True,
            )


def make_project(path: Path, n: int) -> dict:
    """A project of ``n`` generated 28 px images in 10 tags; import and cache times."""
    import numpy as np

    import jupyter_imgclass as ic

    project = ic.Project.create(path)
    rng = np.random.default_rng(n)
    chunk = 5000
    started = time.perf_counter()
    for start in range(0, n, chunk):
        k = min(chunk, n - start)
        images = rng.integers(0, 256, (k, 28, 28, 3), dtype=np.uint8)
        tags = [[f"t{int(j)}"] for j in rng.integers(0, 10, k)]
        project.add_images(list(images), tags=tags)
    imported = time.perf_counter() - started
    started = time.perf_counter()
    project.cache.rows([(im.sha256, im.path) for im in project.images], 28)
    cached = time.perf_counter() - started
    project.close()
    return {"import_s_per_1000": imported / n * 1000, "cache_s_per_1000": cached / n * 1000}


def part_memory(args) -> None:
    print("\n## memory: training small_cnn on a generated project (28 px), peak RSS")
    print(
        f"{'images':>8}{'import s/1k':>13}{'cache s/1k':>12}{'streaming MB':>14}"
        f"{'all in memory MB':>18}{'arrays held MB':>16}"
    )
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        for n in args.sizes:
            path = Path(tmp) / f"p{n}"
            times = make_project(path, n)
            opts = {"project": str(path), "minutes": args.minutes}
            # a first, unreported run fills the compilation cache: compiling takes memory
            # too, and only the first child would pay it
            run_child("train", {**opts, "in_memory": False, "minutes": 0.05})
            stream = run_child("train", {**opts, "in_memory": False})
            held = run_child("train", {**opts, "in_memory": True})
            print(
                f"{n:>8}{times['import_s_per_1000']:>13.2f}{times['cache_s_per_1000']:>12.2f}"
                f"{stream['peak_rss_mb']:>14.0f}{held['peak_rss_mb']:>18.0f}"
                f"{held['held_mb']:>16.0f}",
                flush=True,
            )


def part_accelerator(args) -> None:
    # No JAX in this process: on a GPU it would take the device memory the children need.
    print("\n## accelerator: training images/s and peak memory per network and precision")
    print(f"{'model':<20}{'px':>5}{'batch':>7}{'precision':>11}{'images/s':>10}"
          f"{'compile s':>11}{'peak device MB':>16}{'peak RSS MB':>13}")  # fmt: skip
    cases = [
        ("small_cnn", 28, args.accel_batch * 8, ("float32", "bfloat16")),
        ("efficientnet_lite0", 224, args.accel_batch, ("float32", "bfloat16")),
        ("efficientnet_lite1", 240, args.accel_batch, ("float32",)),
        ("efficientnet_lite2", 260, args.accel_batch, ("float32", "bfloat16")),
    ]
    for model, size, batch, precisions in cases:
        if args.models and model not in args.models:
            continue
        for precision in precisions:
            opts = {"model": model, "size": size, "batch": batch, "steps": args.accel_steps,
                    "precision": precision, "epochs": 2}  # fmt: skip
            try:
                r = run_child("fit", opts)
            except RuntimeError as exc:
                print(f"{model:<20} {precision}: failed: {str(exc)[-400:]}", flush=True)
                continue
            dev = r["peak_device_bytes"]
            dev_mb = f"{dev / 2**20:.0f}" if dev else "-"
            print(
                f"{model:<20}{size:>5}{batch:>7}{precision:>11}{r['images_per_s']:>10.1f}"
                f"{r['compile_s']:>11.1f}{dev_mb:>16}{r['peak_rss_mb']:>13.0f}  "
                f"({r['device']})",
                flush=True,
            )


def part_loader(args) -> None:
    import concurrent.futures

    import numpy as np

    print("\n## loader: random batches of 128 rows (28 px) from the array cache (images/s)")
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        import jupyter_imgclass as ic

        make_project(Path(tmp) / "p", args.loader_images)
        project = ic.Project.open(Path(tmp) / "p")
        items = [(im.sha256, im.path) for im in project.images]
        view = project.cache.rows(items, 28)
        rng = np.random.default_rng(0)
        batches = [rng.choice(len(view), 128, replace=False) for _ in range(args.loader_batches)]
        n = 128 * len(batches)

        def timed(label: str, fn) -> None:
            started = time.perf_counter()
            fn()
            print(f"{label:<44}{n / (time.perf_counter() - started):>10.0f}", flush=True)

        def plain() -> None:
            for idx in batches:
                view[idx]

        def prefetched() -> None:
            pool = concurrent.futures.ThreadPoolExecutor(1)
            pending = pool.submit(view.__getitem__, batches[0])
            for b in range(1, len(batches) + 1):
                pending.result()
                if b < len(batches):
                    pending = pool.submit(view.__getitem__, batches[b])
            pool.shutdown()

        timed("CachedRows, one batch at a time", plain)
        timed("CachedRows + one-thread prefetch (fit's)", prefetched)
        try:
            import grain
        except ImportError:
            print("grain not installed (benchmark-only: .venv/bin/pip install grain)")
        else:
            flat = np.concatenate(batches)
            for threads in (1, 4):

                def with_grain(threads=threads) -> None:
                    ds = (
                        grain.MapDataset.source(flat)
                        .map(lambda i: view[int(i)])
                        .batch(128)
                        .to_iter_dataset(
                            grain.ReadOptions(num_threads=threads, prefetch_buffer_size=256)
                        )
                    )
                    for _ in ds:
                        pass

                timed(f"Grain {grain.__version__ if hasattr(grain, '__version__') else ''}"
                      f" MapDataset, {threads} read thread(s)", with_grain)  # fmt: skip
        project.close()
    r = run_child("fit", {"model": "small_cnn", "size": 28, "batch": 128, "steps": 20})
    print(f"{'small_cnn training step (what it feeds)':<44}{r['images_per_s']:>10.0f}")


PARTS = {
    "throughput": part_throughput,
    "precision": part_precision,
    "memory": part_memory,
    "accelerator": part_accelerator,
    "loader": part_loader,
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--parts", nargs="+", default=["throughput", "precision", "memory"],
                    choices=list(PARTS))  # fmt: skip
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds")
    ap.add_argument("--steps", type=int, default=40, help="steps per epoch (throughput)")
    ap.add_argument("--accel-steps", type=int, default=30, help="steps per epoch (accelerator)")
    ap.add_argument("--accel-batch", type=int, default=128, help="EfficientNet batch (x8 small)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--minutes", type=float, default=0.33, help="training time (memory)")
    ap.add_argument("--work", default=None, help="folder for the generated projects")
    ap.add_argument("--models", nargs="+", default=None, help="accelerator: only these")
    ap.add_argument("--loader-images", type=int, default=20_000)
    ap.add_argument("--loader-batches", type=int, default=100)
    args = ap.parse_args(argv)
    if args.child:
        return child_main(*args.child)
    started = time.perf_counter()
    for part in args.parts:
        PARTS[part](args)
    print(f"\n({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
