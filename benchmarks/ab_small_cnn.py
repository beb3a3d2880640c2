"""A/B of the levers on small_cnn's CPU training step, in alternating rounds of fresh
processes (XLA flags take effect only when JAX starts), beside the PyTorch peer.

Each variant trains small_cnn with ``training.fit`` on random 28 px images for
``--steps`` steps (after a compiling one) and reports images/s; every round runs every
variant once, in the same order, so the machine's drift (about 2x here) falls on all.

Usage::

    .venv/bin/python benchmarks/ab_small_cnn.py                        # every variant
    .venv/bin/python benchmarks/ab_small_cnn.py --variants window reshape torch
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

YNN = "--xla_cpu_experimental_ynn_fusion_type="
LIB = "/usr/lib/x86_64-linux-gnu/"
JEMALLOC = {
    "LD_PRELOAD": LIB + "libjemalloc.so.2",
    "IMGCLASS_MALLOC_TUNING": "0",
}  # Debian libjemalloc2
TCMALLOC = {"LD_PRELOAD": LIB + "libtcmalloc_minimal.so.4", "IMGCLASS_MALLOC_TUNING": "0"}
# name: (model options, TrainConfig options, environment). The model's defaults: reshape
# pooling, patch convolutions (layers.conv_same) with bfloat16 products where the CPU has
# them (TrainConfig.precision "auto").
VARIANTS = {
    "window": ({"pool": "window"}, {}, {}),
    "reshape": ({"pool": "reshape"}, {}, {}),
    "reshape+xla-conv": ({"pool": "reshape", "conv": "xla"}, {}, {}),
    "window+xla-conv": ({"pool": "window", "conv": "xla"}, {}, {}),
    "reshape+f32-products": ({}, {"precision": "float32"}, {}),
    "reshape+xla-conv 1 device": ({"conv": "xla"}, {}, {"IMGCLASS_CPU_DEVICES": "1"}),
    "reshape+bf16": ({"pool": "reshape"}, {"precision": "bfloat16"}, {}),
    "reshape+ynn-reduce": ({}, {}, {"XLA_FLAGS": YNN + "-reduce"}),
    "reshape+ynn+eltwise": ({}, {}, {"XLA_FLAGS": YNN + "+eltwise"}),
    "reshape+ynn-conv": ({}, {}, {"XLA_FLAGS": YNN + "-individual_convolution"}),
    "reshape 1 device": ({}, {}, {"IMGCLASS_CPU_DEVICES": "1"}),
    "reshape batch 64": ({}, {"batch_size": 64}, {}),
    "reshape batch 256": ({}, {"batch_size": 256}, {}),
    "reshape glibc untuned": ({}, {}, {"IMGCLASS_MALLOC_TUNING": "0"}),
    "reshape+jemalloc": ({}, {}, JEMALLOC),
    "reshape+tcmalloc": ({}, {}, TCMALLOC),
    "torch": (None, {}, {}),
    "torch+jemalloc": (None, {}, JEMALLOC),
    "torch+tcmalloc": (None, {}, TCMALLOC),
}  # fmt: skip


def child(spec: str) -> None:
    import numpy as np

    opts = json.loads(spec)
    rng = np.random.default_rng(0)
    batch = opts["config"].get("batch_size", 128)
    n = batch * (opts["steps"] + 1)
    x = rng.integers(0, 256, (n, 28, 28, 3), dtype=np.uint8)
    y = rng.integers(0, 10, n).astype(np.int32)
    if opts["model"] is None:
        sys.path.insert(0, str(HERE))
        import torch_peer

        peer = torch_peer.Peer(threads=2)
        peer.train_steps(x, y, batch, 2, rng)
        ips = peer.train_steps(x, y, batch, opts["steps"], rng)
    else:
        from flax import nnx

        from jupyter_imgclass import training
        from jupyter_imgclass.models.small_cnn import small_cnn
        from jupyter_imgclass.platform import runtime

        runtime.prepare()  # the factory is called directly, before fit's models.get
        model = small_cnn(10, rngs=nnx.Rngs(0), **opts["model"])
        cfg = training.TrainConfig(
            model="small_cnn", epochs=1, augment=False, num_classes=10,
            **{"batch_size": 128, **opts["config"]},
        )  # fmt: skip
        r = training.fit(cfg, {"image": x, "label": y}, {"image": x[:8], "label": y[:8]},
                         model=model)  # fmt: skip
        ips = r.images_per_s
    print("RESULT " + json.dumps({"images_per_s": ips}), flush=True)


def run(name: str, steps: int) -> float:
    model, config, env = VARIANTS[name]
    spec = json.dumps({"model": model, "config": config, "steps": steps})
    out = subprocess.run(
        [sys.executable, __file__, "--child", spec],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])["images_per_s"]
    raise RuntimeError(f"{name} failed:\n{out.stderr[-2000:]}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child)
        return 0
    figures: dict[str, list[float]] = {v: [] for v in args.variants}
    for r in range(args.rounds):
        for name in args.variants:
            figures[name].append(run(name, args.steps))
        print(f"round {r + 1}: " + ", ".join(f"{n} {f[-1]:.0f}" for n, f in figures.items()),
              flush=True)  # fmt: skip
    base = figures.get("window") or next(iter(figures.values()))
    torch = figures.get("torch")
    print(f"\n{'variant':<24}{'images/s (each round)':>28}{'vs window':>11}{'vs torch':>10}")
    for name, f in figures.items():
        rel = [a / b for a, b in zip(f, base, strict=True)]
        vs_t = [a / b for a, b in zip(f, torch, strict=True)] if torch else []
        print(f"{name:<24}{' / '.join(f'{v:.0f}' for v in f):>28}"
              f"{sum(rel) / len(rel):>10.2f}x"
              f"{(sum(vs_t) / len(vs_t)) if vs_t else float('nan'):>9.2f}x")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
