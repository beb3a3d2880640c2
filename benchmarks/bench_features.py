"""Feature-extraction speed: depthwise formulations, or the EfficientNet-Lite variants.

Default: efficientnet_lite0 with both formulations of the depthwise convolution side by
side (A B A B ...) in the same process, at 224 and 160 px, batch 32, jitted, after a
warm-up. With ``--variants``: the named networks (default depthwise formulation), each at
its native input size, alternating (A B C A B C ...) in the same process. Both print a
numpy matmul reference so the machine's current state is visible (these CPUs switch
between states about 2x apart; compare only figures from the same run).

With ``--devices``: one CPU device vs the batch split over all of them.

Usage:
    .venv/bin/python benchmarks/bench_features.py [--sizes 224 160] [--rounds 3]
    .venv/bin/python benchmarks/bench_features.py --devices
    .venv/bin/python benchmarks/bench_features.py --variants \
        efficientnet_lite0 efficientnet_lite1 efficientnet_lite2
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jupyter_imgclass import models
from jupyter_imgclass.models.layers import set_depthwise_impl
from jupyter_imgclass.platform import runtime


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


def random_batch(batch: int, size: int) -> jax.Array:
    """A seeded float32 ``[batch, size, size, 3]`` normal batch."""
    return jnp.asarray(np.random.default_rng(0).standard_normal((batch, size, size, 3), np.float32))


def pretrained(name: str) -> nnx.Module:
    """``name`` with its ImageNet weights, in eval mode (prints how long that took)."""
    t = time.perf_counter()
    model = models.get(name).create(1000, rngs=nnx.Rngs(0), pretrained=True)
    model.eval()
    print(f"{name} created with ImageNet weights in {time.perf_counter() - t:.2f} s")
    return model


def compare_variants(names: list[str], batch: int, rounds: int, repeats: int) -> None:
    """Images/s of ``features`` for each network at its native size, alternating."""
    fns, inputs = {}, {}
    for name in names:
        size = models.get(name).input_size
        inputs[name] = random_batch(batch, size)
        fns[name] = make_feature_fn(pretrained(name), "auto")
        t = time.perf_counter()
        fns[name](inputs[name]).block_until_ready()  # compile + warm-up
        print(f"{name} {size}px compile+first batch {time.perf_counter() - t:.1f} s")
    results: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(rounds):
        for name in names:
            results[name].append(images_per_second(fns[name], inputs[name], repeats))
    base = max(results[names[0]])
    for name, v in results.items():
        size = models.get(name).input_size
        print(
            f"{name} {size}px batch {batch}: {max(v):6.1f} img/s "
            f"(rounds: {', '.join(f'{r:.1f}' for r in v)}; {base / max(v):.2f}x the time of "
            f"{names[0]})"
        )


def compare_impls(sizes: list[int], batch: int, rounds: int, repeats: int) -> None:
    """Images/s of efficientnet_lite0's features with each depthwise formulation, alternating."""
    model = pretrained("efficientnet_lite0")
    impls = ("shifted", "grouped")
    for size in sizes:
        x = random_batch(batch, size)
        fns = {}
        for impl in impls:
            fns[impl] = make_feature_fn(model, impl)
            t = time.perf_counter()
            out = fns[impl](x).block_until_ready()  # compile + warm-up
            print(f"{size}px {impl:8s} compile+first batch {time.perf_counter() - t:.1f} s")
        diff = float(jnp.max(jnp.abs(fns["shifted"](x) - fns["grouped"](x))))
        results: dict[str, list[float]] = {impl: [] for impl in impls}
        for _ in range(rounds):
            for impl in impls:
                results[impl].append(images_per_second(fns[impl], x, repeats))
        line = "  ".join(
            f"{impl} {max(v):6.1f} img/s (rounds: {', '.join(f'{r:.1f}' for r in v)})"
            for impl, v in results.items()
        )
        ratio = max(results["shifted"]) / max(results["grouped"])
        print(f"{size}px batch {batch} features {out.shape}: {line}  ratio {ratio:.2f}x")
        print(f"{size}px max |shifted - grouped| = {diff:.2e}")


def compare_devices(batch: int, rounds: int, repeats: int) -> None:
    """Images/s of efficientnet_lite0's features on one CPU device vs the batch split over
    every device (the package asks for one CPU device per core; ``platform.runtime``)."""
    from jupyter_imgclass.models.apply import batch_sharding

    devices = jax.local_devices()
    sharding = batch_sharding(batch)
    if sharding is None:
        print(f"{len(devices)} device(s): nothing to split a batch of {batch} over")
        return
    fn = make_feature_fn(pretrained("efficientnet_lite0"), "auto")
    x = np.asarray(random_batch(batch, 224))
    inputs = {
        "1 device": jax.device_put(x, devices[0]),
        f"{len(devices)} devices": jax.device_put(x, sharding),
    }
    for name, xi in inputs.items():
        t = time.perf_counter()
        fn(xi).block_until_ready()
        print(f"{name}: compile+first batch {time.perf_counter() - t:.1f} s")
    results: dict[str, list[float]] = {name: [] for name in inputs}
    for _ in range(rounds):
        for name, xi in inputs.items():
            results[name].append(images_per_second(fn, xi, repeats))
    base = max(results["1 device"])
    for name, v in results.items():
        print(
            f"efficientnet_lite0 224px batch {batch}, {name}: {max(v):6.1f} img/s "
            f"(rounds: {', '.join(f'{r:.1f}' for r in v)}; {max(v) / base:.2f}x one device)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 160])
    parser.add_argument(
        "--variants", nargs="+", metavar="MODEL", help="compare these networks instead"
    )
    parser.add_argument(
        "--devices", action="store_true", help="one CPU device vs the batch split over all"
    )
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="alternations (per size)")
    parser.add_argument("--repeats", type=int, default=2, help="timed batches per round")
    args = parser.parse_args()

    runtime.prepare()  # one CPU device per core, before the first computation
    print(f"jax {jax.__version__} backend={jax.default_backend()} devices={jax.devices()}")
    print(f"numpy matmul reference: {matmul_gflops():.0f} GFLOP/s (before)")
    if args.devices:
        compare_devices(args.batch, args.rounds, args.repeats)
    elif args.variants:
        compare_variants(args.variants, args.batch, args.rounds, args.repeats)
    else:
        compare_impls(args.sizes, args.batch, args.rounds, args.repeats)
    print(f"numpy matmul reference: {matmul_gflops():.0f} GFLOP/s (after)")


if __name__ == "__main__":
    main()
