"""The depthwise convolution's kernel gradient for EfficientNet-Lite0's large layers, one
layer at a time: XLA's formulation (k² multiply-reduces of the padded input's windows
with ``dy``, ``layers._depthwise_kernel_grad``) against the C++ kernel called through
XLA's FFI (``platform.cpu_kernels``), jitted, best of 5, in one process.

Usage::

    .venv/bin/python benchmarks/bench_depthwise_grad.py
"""

from __future__ import annotations

import sys
import time

SHAPES = [(32, 112, 112, 32, 3, 1), (32, 112, 112, 96, 3, 2), (32, 56, 56, 144, 3, 1),
          (32, 56, 56, 144, 5, 2), (32, 28, 28, 240, 5, 1), (32, 14, 14, 480, 3, 1),
          (32, 14, 14, 672, 5, 2)]  # fmt: skip
"""``(N, H, W, C, k, stride)``."""


def best_ms(fn, *args, repeats: int = 5) -> float:
    """The fastest of ``repeats`` calls after a warm one, in ms (``fn`` may return a tuple)."""
    import jax

    jax.block_until_ready(fn(*args))
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - started)
    return best * 1000


def main() -> int:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jupyter_imgclass.models.layers import _depthwise_kernel_grad, same_pads
    from jupyter_imgclass.platform import cpu_kernels, runtime

    runtime.prepare()  # the devices and malloc a training has

    if not cpu_kernels.available():
        print(f"the C++ kernels are off: {cpu_kernels.status()}")
        return 1
    print(f"jax {jax.__version__}, devices {len(jax.devices())}; {cpu_kernels.status()}")
    rng = np.random.default_rng(0)
    total = [0.0, 0.0]
    for n, h, w, c, k, s in SHAPES:
        x = jnp.asarray(rng.standard_normal((n, h, w, c), np.float32))
        dy = jnp.asarray(rng.standard_normal((n, -(-h // s), -(-w // s), c), np.float32))
        pads = (same_pads(h, k, s)[0], same_pads(w, k, s)[0])
        xla = jax.jit(lambda a, b, k=k, s=s: _depthwise_kernel_grad(a, b, k, s))
        ffi = jax.jit(
            lambda a, b, k=k, s=s, p=pads: cpu_kernels.depthwise_kernel_grad(a, b, k, s, p)
        )
        ref, got = xla(x, dy), ffi(x, dy)
        err = float(jnp.max(jnp.abs(got - ref)) / jnp.max(jnp.abs(ref)))
        a, b = best_ms(xla, x, dy), best_ms(ffi, x, dy)
        total[0] += a
        total[1] += b
        print(f"[{n},{h},{w},{c}] k={k} s={s}: xla {a:6.1f} ms, kernel {b:5.1f} ms "
              f"({a / b:.1f}x; relative difference {err:.1e})", flush=True)  # fmt: skip
    print(
        f"total: xla {total[0]:.1f} ms, kernel {total[1]:.1f} ms, ratio {total[0] / total[1]:.1f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
