"""Where a training step's time goes, per XLA operation (XLA:CPU's own profiler).

Runs ``training.fit`` for a few steps under ``jax.profiler`` (one XLA device, so each
operation's time is its own), dumps the compiled HLO, and prints, for the train step's
module, the time per step of every fused operation with what it computes (its main
instructions and output shape), largest first, beside the step's wall time.

Usage::

    .venv/bin/python benchmarks/profile_step.py                       # small_cnn, batch 128
    .venv/bin/python benchmarks/profile_step.py --model efficientnet_lite0 --batch 32
    .venv/bin/python benchmarks/profile_step.py --flags='<more XLA_FLAGS>'  # an A/B of a flag
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import subprocess
import sys
import tempfile

MAIN_OPS = ("convolution", "dot", "reduce-window", "reduce", "select-and-scatter",
            "custom-call", "scatter", "gather", "transpose", "copy", "pad", "concatenate",
            "slice", "reverse", "broadcast")  # fmt: skip
"""Instructions that name a fusion, in this order: a fusion is filed under the first one it
holds (a convolution with a broadcast bias is a convolution); one with none of them is
``elementwise``."""


def child(args) -> None:
    import jax
    import numpy as np

    from jupyter_imgclass import training

    rng = np.random.default_rng(0)
    n = args.batch * (args.steps + 1)
    x = rng.integers(0, 256, (n, args.size, args.size, 3), dtype=np.uint8)
    y = rng.integers(0, 10, n).astype(np.int32)
    cfg = training.TrainConfig(
        model=args.model, epochs=1, batch_size=args.batch, augment=False, num_classes=10,
        pretrained=args.model != "small_cnn", input_size=args.size,
    )  # fmt: skip
    val = {"image": x[:2], "label": y[:2]}
    training.fit(cfg, {"image": x[: 2 * args.batch], "label": y[: 2 * args.batch]}, val)  # warm
    options = jax.profiler.ProfileOptions()
    options.python_tracer_level = 0  # Python frames would crowd out XLA's own events
    jax.profiler.start_trace(args.trace, create_perfetto_trace=True, profiler_options=options)
    r = training.fit(cfg, {"image": x, "label": y}, val)
    jax.profiler.stop_trace()
    print("RESULT " + json.dumps({"images_per_s": r.images_per_s, "steps": r.extra["steps"]}))


def fusions_of(path: str) -> dict[str, str]:
    """``{instruction name: 'main ops -> shape'}`` of one optimised HLO module."""
    text = open(path).read()
    comps: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        head = re.match(r"^(?:ENTRY )?%?([\w.\-]+) \(", line)
        if head and line.rstrip().endswith("{"):
            current = head.group(1)
            comps[current] = []
        elif current is not None:
            comps[current].append(line)
    out = {}
    for lines in comps.values():
        for line in lines:
            m = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = (\S+) (\w[\w\-]*)\(", line)
            if not m:
                continue
            name, shape, op = m.groups()
            called = re.search(r"calls=%?([\w.\-]+)", line)
            inner = comps.get(called.group(1), []) if called else []
            kinds = collections.Counter(
                k for k in (re.search(r" = \S+ (\w[\w\-]*)\(", x) for x in inner) if k
                for k in [k.group(1)] if k in MAIN_OPS
            )  # fmt: skip
            ranked = sorted(kinds.items(), key=lambda kv: MAIN_OPS.index(kv[0]))[:4]
            what = ", ".join(f"{k}x{v}" if v > 1 else k for k, v in ranked)
            out[name] = f"{what or ('elementwise' if called else op)} -> {shape}"
    return out


def step_module(dump: str, durations: collections.Counter) -> tuple[dict[str, str], str]:
    """The dumped module whose operations account for most of the traced time (the
    train step's): its fusions (:func:`fusions_of`) and its text."""
    best, best_time, best_path = {}, -1, ""
    for path in glob.glob(f"{dump}/*after_optimizations.txt"):
        what = fusions_of(path)
        covered = sum(d for name, d in durations.items() if name in what)
        if covered > best_time:
            best, best_time, best_path = what, covered, path
    return best, open(best_path).read() if best_path else ""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="small_cnn")
    ap.add_argument("--size", type=int, default=None)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--flags", default="", help="extra XLA_FLAGS")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--trace", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.size is None:
        args.size = 28 if args.model == "small_cnn" else 224
    if args.child:
        child(args)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        trace, dump = f"{tmp}/trace", f"{tmp}/dump"
        flags = f"--xla_dump_to={dump} --xla_dump_hlo_as_text {args.flags}".strip()
        env = {**os.environ, "IMGCLASS_CPU_DEVICES": "1", "XLA_FLAGS": flags}
        cmd = [sys.executable, __file__, "--child", "--trace", trace, "--model", args.model,
               "--size", str(args.size), "--batch", str(args.batch),
               "--steps", str(args.steps)]  # fmt: skip
        out = subprocess.run(cmd, env=env, capture_output=True, text=True)
        lines = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
        if not lines:
            print(out.stderr[-3000:])
            return 1
        result = json.loads(lines[-1][7:])
        files = glob.glob(f"{trace}/**/perfetto_trace.json.gz", recursive=True)
        events = json.load(gzip.open(files[-1]))
        events = events["traceEvents"] if isinstance(events, dict) else events
        every: collections.Counter = collections.Counter()
        for e in events:
            if e.get("ph") == "X":
                every[e["name"]] += e.get("dur", 0)
        what, text = step_module(dump, every)
        total = collections.Counter({k: v for k, v in every.items() if k in what})
    steps = result["steps"]
    step_ms = args.batch / result["images_per_s"] * 1000
    ops_ms = sum(total.values()) / 1000 / steps
    print(f"{args.model}, {args.size} px, batch {args.batch}, 1 XLA device, {steps} steps"
          f"{', XLA_FLAGS ' + args.flags if args.flags else ''}")  # fmt: skip
    print(f"step {step_ms:.1f} ms ({result['images_per_s']:.0f} images/s); "
          f"XLA operations {ops_ms:.1f} ms per step\n")  # fmt: skip
    print(f"{'ms/step':>8} {'share':>6}  operation: what it computes -> output")
    for name, dur in total.most_common(args.top):
        ms = dur / 1000 / steps
        print(f"{ms:8.2f} {ms / ops_ms:6.1%}  {name}: {what[name]}")
    dilated = re.findall(r"convolution\(.*lhs_dilate=([\dx]+)", text)
    print(f"\nconvolutions with input dilation (lhs_dilate, XLA's slow path): {len(dilated)}"
          f"{' ' + ', '.join(sorted(set(dilated))) if dilated else ''}")  # fmt: skip
    kinds: collections.Counter = collections.Counter()
    for name, dur in total.items():
        kinds[what[name].split(" -> ")[0].split(",")[0].split("x")[0] or "other"] += dur
    print("\nby main instruction:")
    for kind, dur in kinds.most_common():
        print(f"{dur / 1000 / steps:8.2f} {dur / 1000 / steps / ops_ms:6.1%}  {kind}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
