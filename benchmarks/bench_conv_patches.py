"""small_cnn's four convolutions at batch 128, one layer at a time, forward pass plus both
gradients: XLA's convolution (``layers.xla_conv_same``) against ``layers.conv_same``'s
formulations: three matrix products over ``cpu_kernels.im2col``'s patch matrices with
float32 and with bfloat16 operands, and the AMX-tile kernels (``cpu_kernels.conv_amx``,
``conv_amx_kernel_grad``; bfloat16 operands, where the CPU has AMX and the channels fit,
else the bfloat16 patches again), beside PyTorch's ``conv2d`` on the same shapes (float32,
channels-last, 2 threads). Jitted, best of 5, in one process; first the matrix-product
speed that decides it (2048², float32 against bfloat16 operands).

Usage::

    .venv/bin/python benchmarks/bench_conv_patches.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_depthwise_grad import best_ms  # noqa: E402

SHAPES = [(128, 28, 3, 32), (128, 28, 32, 32), (128, 14, 32, 64), (128, 14, 64, 64)]
"""``(N, H=W, C in, C out)``, 3×3 kernels: small_cnn at 28 px."""


def torch_ms(n, h, cin, cout, repeats: int = 5) -> float | None:
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(2)
    x = torch.randn(n, cin, h, h).to(memory_format=torch.channels_last).requires_grad_(cin > 3)
    w = torch.randn(cout, cin, 3, 3, requires_grad=True)
    g = torch.randn(n, cout, h, h).to(memory_format=torch.channels_last)

    def once():
        y = torch.nn.functional.conv2d(x, w, padding=1)
        y.backward(g)

    once()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        once()
        best = min(best, time.perf_counter() - started)
    return best * 1000


def main() -> int:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax import lax

    from jupyter_imgclass.models.layers import conv_same, xla_conv_same
    from jupyter_imgclass.platform import cpu_kernels, runtime

    runtime.prepare()  # the devices and malloc a training has

    if not cpu_kernels.available():
        print(f"the C++ kernels are off: {cpu_kernels.status()}")
        return 1
    print(f"jax {jax.__version__}, devices {len(jax.devices())}; {cpu_kernels.status()}; "
          f"bfloat16 in hardware: {cpu_kernels.bf16_products()}")  # fmt: skip
    a = jnp.ones((2048, 2048), jnp.float32)
    for dtype in (jnp.float32, jnp.bfloat16):
        mm = jax.jit(lambda a, b: lax.dot(a, b, preferred_element_type=jnp.float32))
        ms = best_ms(mm, a.astype(dtype), a.astype(dtype))
        print(f"2048² product, {jnp.dtype(dtype).name} operands: {2 * 2048**3 / ms / 1e6:.0f} "
              "GFLOP/s")  # fmt: skip

    rng = np.random.default_rng(0)
    names = ("xla", "patches f32", "patches bf16", "amx bf16")
    amx = cpu_kernels.amx()
    total = dict.fromkeys((*names, "torch"), 0.0)
    for n, h, cin, cout in SHAPES:
        x = jnp.asarray(rng.standard_normal((n, h, h, cin), np.float32))
        w = jnp.asarray(rng.standard_normal((3, 3, cin, cout), np.float32) * 0.1)
        g = jnp.asarray(rng.standard_normal((n, h, h, cout), np.float32))
        bf16 = lambda a, b: conv_same(a, b, jnp.bfloat16)  # noqa: E731
        convs = (xla_conv_same, conv_same, bf16, bf16)
        line, ref = [], None
        for name, conv in zip(names, convs, strict=True):
            cpu_kernels._state["amx"] = amx and name == "amx bf16"  # traced below, per variant

            def step(x, w, g, conv=conv):
                y, vjp = jax.vjp(conv, x, w)
                return (y, *vjp(g))

            f = jax.jit(step) if cin > 3 else jax.jit(lambda x, w, g, s=step: s(x, w, g)[::2])
            out = f(x, w, g)
            ref = out if ref is None else ref
            err = max(float(jnp.linalg.norm(o - r) / jnp.linalg.norm(r))
                      for o, r in zip(out, ref, strict=True))  # fmt: skip
            ms = best_ms(f, x, w, g)
            total[name] += ms
            line.append(f"{name} {ms:5.1f} ms" + (f" (rel. diff. {err:.0e})" if err else ""))
        cpu_kernels._state["amx"] = amx
        t = torch_ms(n, h, cin, cout)
        if t is not None:
            total["torch"] += t
            line.append(f"torch {t:5.1f} ms")
        print(f"[{n},{h},{h},{cin}->{cout}]: " + ", ".join(line), flush=True)
    print("total (forward + gradients; the first layer without its input gradient): "
          + ", ".join(f"{k} {v:.1f} ms" for k, v in total.items() if v))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
