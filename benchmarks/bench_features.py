"""Feature-extraction speed of efficientnet_lite0: shifted multiply-add vs grouped depthwise.

Runs both formulations of the depthwise convolution side by side (A B A B ...) in the same
process, at 224 and 160 px, batch 32, jitted, after a warm-up, and prints a numpy matmul
reference so the machine's current state is visible (these CPUs switch between states
about 2x apart; compare only figures from the same run).

Usage:
    .venv/bin/python benchmarks/bench_features.py [--sizes 224 160] [--rounds 3]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jupyter_imgclass.models import efficientnet_lite0
from jupyter_imgclass.models.layers import set_depthwise_impl


def matmul_gflops(n: int = 1024, repeats: int = 10) -> float:
    """GFLOP/s of a float32 ``n x n`` numpy matmul (best of ``repeats``)."""
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    a @ a
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def make_feature_fn(model: nnx.Module, impl: str):
    """A jitted ``x -> model.features(x)`` with every depthwise layer set to ``impl``."""
    set_depthwise_impl(model, impl)
    graphdef, state = nnx.split(model)  # split outside the jitted function (BatchNorm)

    @jax.jit
    def features(state, x):
        return nnx.merge(graphdef, state).features(x)

    return lambda x: features(state, x)


def images_per_second(fn, x, repeats: int) -> float:
    """Best-of-``repeats`` throughput of ``fn`` on the batch ``x``."""
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn(x).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return x.shape[0] / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 160])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="A B alternations per size")
    parser.add_argument("--repeats", type=int, default=2, help="timed batches per round")
    args = parser.parse_args()

    print(f"jax {jax.__version__} backend={jax.default_backend()} devices={jax.devices()}")
    t = time.perf_counter()
    model = efficientnet_lite0.create(1000, rngs=nnx.Rngs(0), pretrained=True)
    model.eval()
    print(f"model created with ImageNet weights in {time.perf_counter() - t:.2f} s")
    print(f"numpy matmul reference: {matmul_gflops():.0f} GFLOP/s (before)")
    impls = ("shifted", "grouped")
    for size in args.sizes:
        x = jnp.asarray(
            np.random.default_rng(0).standard_normal((args.batch, size, size, 3), np.float32)
        )
        fns = {}
        for impl in impls:
            fns[impl] = make_feature_fn(model, impl)
            t = time.perf_counter()
            out = fns[impl](x).block_until_ready()  # compile + warm-up
            print(f"{size}px {impl:8s} compile+first batch {time.perf_counter() - t:.1f} s")
        diff = float(jnp.max(jnp.abs(fns["shifted"](x) - fns["grouped"](x))))
        results: dict[str, list[float]] = {impl: [] for impl in impls}
        for _ in range(args.rounds):
            for impl in impls:
                results[impl].append(images_per_second(fns[impl], x, args.repeats))
        line = "  ".join(
            f"{impl} {max(v):6.1f} img/s (rounds: {', '.join(f'{r:.1f}' for r in v)})"
            for impl, v in results.items()
        )
        ratio = max(results["shifted"]) / max(results["grouped"])
        print(f"{size}px batch {args.batch} features {out.shape}: {line}  ratio {ratio:.2f}x")
        print(f"{size}px max |shifted - grouped| = {diff:.2e}")
    print(f"numpy matmul reference: {matmul_gflops():.0f} GFLOP/s (after)")


if __name__ == "__main__":
    main()
