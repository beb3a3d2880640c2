"""Hand-written CPU kernels, built once per machine and called from XLA through its FFI.

XLA:CPU runs some of a training step's operations far below the machine's memory speed;
for those, a short C++ loop does better. The kernels live in ``kernels/*.cc`` beside this
module (their one thread-pool loop in ``kernels/parallel.h``) and are built once per
machine with the system's C++ compiler (``$CXX``, else ``c++`` / ``g++`` / ``clang++``;
``-O3 -march=native``) into ``~/.cache/jupyter_imgclass/kernels``
(``$IMGCLASS_KERNEL_CACHE``), named by a hash of the source, the compiler, jaxlib's version
and the CPU, and registered as XLA FFI targets for the CPU.

The first :func:`available` builds (or finds) and loads them; ``training.fit`` calls it
through ``training.config.product_dtype`` before its first step, so the build is not
counted in that step's compile time. Only where JAX's default backend is the CPU: on a GPU
or TPU host nothing is built and the layers use XLA's operations.

Where no compiler is found or the build fails, :func:`available` is False (the reason is
in :func:`status`) and the layers keep their pure-XLA formulations, which give the same
numbers. ``IMGCLASS_CPU_KERNELS=0`` switches the kernels off.

Kernels:

- ``imgclass_depthwise_kernel_grad``: the kernel gradient of a depthwise convolution,
  ``dk[i, j, c] = sum over n, y, x of x[n, y*s + i - ph, x*s + j - pw, c] * dy[n, y, x, c]``
  (zero outside the image), every tap from one pass over ``x`` and ``dy``; the images are
  shared among XLA's intra-op threads and summed in image order, so the result does not
  depend on the thread count. XLA's k² multiply-reduces took 53-87 ms per large
  EfficientNet-Lite0 layer against 8-13 ms here (``benchmarks/results-cpu-speed.txt``).
- ``imgclass_im2col``: the patch matrix of a stride-1 "SAME" k×k convolution, row-major
  ``[N, H, W, k*k*C]`` or transposed ``[k*k*C, N*H*W]``, converted to float32 or
  bfloat16 on the way, with the padding implicit. It lets a convolution's forward pass,
  input gradient and weight gradient run as three plain matrix products (``layers.conv_patches``);
  XLA's own concatenation of the k² shifted windows took 34 ms for small_cnn's 28 px
  32-channel layer at batch 128, against 4 ms here.
- ``imgclass_amx_conv``: a stride-1 k×k convolution on Intel AMX tiles (bfloat16
  operands, float32 accumulation) straight from the zero-padded input, with no patch
  matrix, for C a multiple of 32 and O of 16; where the CPU has AMX-BF16 and Linux grants
  the process its tile state (:func:`amx`). small_cnn's 28 px 32-channel layer at batch
  128: 1.6 ms against 9.4 ms as patches times weights.
- ``imgclass_amx_conv_kernel_grad``: the kernel gradient of that convolution on AMX tiles
  (C and O multiples of 32), per image a product per tap over the image's pixels, its
  operands built in a per-thread buffer that stays in L2; the images in fixed groups
  summed in order (the result does not depend on the thread count). The same layer:
  3.6 ms against 12.8 ms as transposed patches times ``dy``.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import NamedSharding, PartitionSpec

from . import runtime

log = logging.getLogger(__name__)

SOURCES = ("depthwise.cc", "im2col.cc", "amx_conv.cc")
HEADERS = ("bf16.h", "parallel.h")
TARGETS = {
    "imgclass_depthwise_kernel_grad": "DepthwiseKernelGrad",
    "imgclass_im2col": "Im2col",
    "imgclass_amx_conv": "AmxConv",
    "imgclass_amx_conv_kernel_grad": "AmxConvKernelGrad",
}
"""FFI target name -> the handler symbol the library exports."""

_lock = threading.Lock()
_state: dict = {}


def cache_dir() -> Path:
    """``$IMGCLASS_KERNEL_CACHE`` or ``~/.cache/jupyter_imgclass/kernels``."""
    env = os.environ.get("IMGCLASS_KERNEL_CACHE", "").strip()
    return Path(env) if env else runtime.cache_home() / "kernels"


def compiler() -> str | None:
    """The C++ compiler to build with: ``$CXX``, else the first of c++, g++, clang++."""
    env = os.environ.get("CXX", "").strip()
    if env:
        return shutil.which(env) or None
    for name in ("c++", "g++", "clang++"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _build(cxx: str) -> Path:
    """Compiles the kernels into the cache (once per source, compiler and jaxlib) and
    returns the library's path; a concurrent build elsewhere is harmless (each writes a
    temporary file and renames it into place)."""
    import jaxlib

    here = Path(__file__).parent / "kernels"
    text = b"".join((here / name).read_bytes() for name in (*SOURCES, *HEADERS))
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout
    # -march=native: a library built for one CPU may not run on another that shares the
    # home folder, so the CPU's model and instruction sets are part of the name.
    key = hashlib.sha256(
        text + version.encode() + jaxlib.__version__.encode() + _cpu_id().encode()
    ).hexdigest()[:16]
    out = cache_dir() / f"imgclass_cpu_{key}.so"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        built = Path(tmp) / out.name
        cmd = [cxx, "-O3", "-march=native", "-fopenmp-simd", "-std=c++17", "-shared", "-fPIC",
               "-w", "-I", jax.ffi.include_dir(), *(str(here / n) for n in SOURCES),
               "-o", str(built)]  # fmt: skip
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{run.stderr[-2000:]}")
        os.replace(built, out)
    return out


def _cpu_id() -> str:
    """The machine type and, on Linux, the first CPU's model name and flags."""
    ident = platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            lines = [ln for ln in f.read().split("\n\n")[0].splitlines()
                     if ln.startswith(("model name", "flags"))]  # fmt: skip
        ident += "\n".join(lines)
    except OSError:
        ident += platform.processor()
    return ident


def bf16_products() -> bool:
    """True where the CPU multiplies bfloat16 matrices in hardware (AMX-BF16 or
    AVX512-BF16, read from ``/proc/cpuinfo``): there a bfloat16 product with float32
    accumulation ran 5.3x faster than a float32 one (1,333 against 253 GFLOP/s, 2048²,
    2 cores with AMX; ``benchmarks/bench_conv_patches.py``). Elsewhere XLA would emulate it."""
    if "bf16" not in _state:
        flags = set(_cpu_id().split())
        _state["bf16"] = bool(flags & {"amx_bf16", "avx512_bf16"})
    return _state["bf16"]


def amx() -> bool:
    """True where :func:`available` and the AMX convolution can run (the CPU has AMX-BF16,
    the library was built for it, and Linux grants this process the tile state)."""
    return available() and _state.get("amx", False)


def available() -> bool:
    """True once the kernels are built and registered (built on the first call, and only
    where JAX's default backend is the CPU)."""
    with _lock:
        if "ok" not in _state:
            _state["ok"], _state["reason"] = _load()
            if not _state["ok"]:
                log.info("CPU kernels off (%s); the layers use XLA's operations", _state["reason"])
        return _state["ok"]


def status() -> str:
    """Why the kernels are on or off, in words (after :func:`available`)."""
    available()
    return _state["reason"]


def _load() -> tuple[bool, str]:
    if os.environ.get("IMGCLASS_CPU_KERNELS", "").strip() == "0":
        return False, "IMGCLASS_CPU_KERNELS=0"
    backend = jax.default_backend()
    if backend != "cpu":  # -march=native code for a host that computes elsewhere: not built
        return False, f"JAX's backend is {backend}, not the CPU"
    cxx = compiler()
    if cxx is None:
        return False, "no C++ compiler found (set CXX or install g++)"
    try:
        path = _build(cxx)
        lib = ctypes.cdll.LoadLibrary(str(path))
        for target, symbol in TARGETS.items():
            capsule = jax.ffi.pycapsule(getattr(lib, symbol))
            jax.ffi.register_ffi_target(target, capsule, platform="cpu")
        _state["amx"] = bool(lib.ImgclassAmxReady())
    except Exception as exc:  # a failed build must never stop training: XLA's path remains
        return False, f"build failed: {exc}"
    return True, f"built with {cxx} into {path}"


def depthwise_kernel_grad(
    x: jax.Array, dy: jax.Array, k: int, stride: int, pads: tuple[int, int]
) -> jax.Array:
    """``dk [k, k, C]`` of a depthwise convolution of ``x [N, H, W, C]`` whose output
    gradient is ``dy [N, OH, OW, C]``; ``pads``: the top and left zero padding. Call only
    where :func:`available` is True, on the CPU.

    Under a batch-sharded ``jit`` (data parallel over several devices) each device runs
    the kernel on its own images and the partial sums are added (``psum``), instead of
    gathering every image onto every device.
    """
    return _depthwise_kernel_grad(
        x.astype(jnp.float32), dy.astype(jnp.float32), k, stride, pads[0], pads[1]
    )


def _depthwise_kernel_grad_local(x, dy, k, stride, pad_h, pad_w):
    call = jax.ffi.ffi_call(
        "imgclass_depthwise_kernel_grad", jax.ShapeDtypeStruct((k, k, x.shape[-1]), jnp.float32)
    )
    return call(x, dy, k=np.int64(k), stride=np.int64(stride), pad_h=np.int64(pad_h),
                pad_w=np.int64(pad_w))  # fmt: skip


_depthwise_kernel_grad = custom_partitioning(
    _depthwise_kernel_grad_local, static_argnums=(2, 3, 4, 5)
)


def _batch_axis(arg_shapes):
    """The mesh axis the first operand's batch (leading) dimension is sharded over, or None."""
    spec = arg_shapes[0].sharding.spec
    return spec[0] if len(spec) else None


def _partition_depthwise(k, stride, pad_h, pad_w, mesh, arg_shapes, result_shape):
    """Each device takes its share of the batch (the images' other axes whole) and the
    partial gradients are summed over the batch's mesh axes; the result is replicated."""
    axis = _batch_axis(arg_shapes)
    batch = NamedSharding(mesh, PartitionSpec(axis))

    def lower(x, dy):
        out = _depthwise_kernel_grad_local(x, dy, k, stride, pad_h, pad_w)
        return jax.lax.psum(out, axis) if axis is not None else out

    return mesh, lower, NamedSharding(mesh, PartitionSpec()), (batch, batch)


_depthwise_kernel_grad.def_partition(
    partition=_partition_depthwise,
    infer_sharding_from_operands=lambda k, s, ph, pw, mesh, args, shape: NamedSharding(
        mesh, PartitionSpec()
    ),
    sharding_rule="n h w c, n a b c -> i j c",
)


def im2col(x: jax.Array, k: int, dtype=jnp.float32, *, transposed: bool = False) -> jax.Array:
    """The patch matrix of a stride-1 "SAME" ``k``×``k`` convolution of ``x [N, H, W, C]``
    (float32 or bfloat16), as ``dtype``: ``[N, H, W, k*k*C]`` with the column
    ``(i*k + j)*C + c`` holding ``x[n, y+i-k//2, x+j-k//2, c]`` (zero outside the image),
    or, ``transposed``, ``[k*k*C, N*H*W]``. Call only where :func:`available` is True, on
    the CPU. Under a batch-sharded ``jit`` each device builds the rows (columns) of its
    own images."""
    return _im2col(x, k, jnp.dtype(dtype).name, transposed)


def _im2col_local(x, k, dtype, transposed):
    n, h, w, c = x.shape
    shape = (k * k * c, n * h * w) if transposed else (n, h, w, k * k * c)
    call = jax.ffi.ffi_call("imgclass_im2col", jax.ShapeDtypeStruct(shape, jnp.dtype(dtype)))
    return call(x, k=np.int64(k), transposed=np.int64(transposed))


def _partition_im2col(k, dtype, transposed, mesh, arg_shapes, result_shape):
    """Each device builds the patches of its share of the batch: rows of the patch
    matrix, or columns of the transposed one (in the batch's order)."""
    axis = _batch_axis(arg_shapes)
    out = PartitionSpec(None, axis) if transposed else PartitionSpec(axis)

    def lower(x):
        return _im2col_local(x, k, dtype, transposed)

    return mesh, lower, NamedSharding(mesh, out), (NamedSharding(mesh, PartitionSpec(axis)),)


# One partitioned function per layout, as a sharding rule is fixed per function.
_im2col_rows = custom_partitioning(_im2col_local, static_argnums=(1, 2, 3))
_im2col_rows.def_partition(
    partition=_partition_im2col,
    sharding_rule="n h w c -> n h w q",
    need_replication_factors=("h", "w", "c", "q"),
)
_im2col_t = custom_partitioning(_im2col_local, static_argnums=(1, 2, 3))
_im2col_t.def_partition(
    partition=_partition_im2col,
    sharding_rule="n h w c -> q (n h w)",
    need_replication_factors=("h", "w", "c", "q"),
)


def _im2col(x, k, dtype, transposed):
    return (_im2col_t if transposed else _im2col_rows)(x, k, dtype, transposed)


def conv_amx(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """Stride-1 "SAME" convolution of ``x [N, H, W, C]`` with ``kernel [k, k, C, O]`` (odd
    k, C a multiple of 32, O of 16) on AMX tiles: both cast to bfloat16, float32
    accumulation, float32 output ``[N, H, W, O]``. Call only where :func:`amx` is True.
    Under a batch-sharded ``jit`` each device convolves its own images."""
    n, h, w, c = x.shape
    k, o = kernel.shape[0], kernel.shape[-1]
    p = k // 2
    # The kernel reads 16-pixel runs: rows narrower than 16 get zero columns to read.
    xp = jnp.pad(x.astype(jnp.bfloat16), ((0, 0), (p, p), (p, p + max(0, 16 - w)), (0, 0)))
    # AMX's pair-interleaved weight tiles: [tap, C/32, O/16, 16 channel pairs, 16 outputs, 2]
    wv = kernel.astype(jnp.bfloat16).reshape(k * k, c // 32, 16, 2, o // 16, 16)
    wv = wv.transpose(0, 1, 4, 2, 5, 3).reshape(-1)
    return _conv_amx(xp, wv, h, w, o, k)


def _conv_amx_local(xp, wv, h, w, o, k):
    call = jax.ffi.ffi_call(
        "imgclass_amx_conv", jax.ShapeDtypeStruct((xp.shape[0], h, w, o), jnp.float32)
    )
    return call(xp, wv, k=np.int64(k))


def _partition_conv_amx(h, w, o, k, mesh, arg_shapes, result_shape):
    """Each device convolves its share of the batch with the whole (replicated) kernel."""
    axis = _batch_axis(arg_shapes)

    def lower(xp, wv):
        return _conv_amx_local(xp, wv, h, w, o, k)

    batch, whole = NamedSharding(mesh, PartitionSpec(axis)), NamedSharding(mesh, PartitionSpec())
    return mesh, lower, batch, (batch, whole)


_conv_amx = custom_partitioning(_conv_amx_local, static_argnums=(2, 3, 4, 5))
_conv_amx.def_partition(
    partition=_partition_conv_amx,
    sharding_rule="n a b c, q -> n h w o",
    need_replication_factors=("a", "b", "c", "q", "h", "w", "o"),
)


def conv_amx_kernel_grad(x: jax.Array, dy: jax.Array, k: int) -> jax.Array:
    """``dw [k, k, C, O]`` of the stride-1 "SAME" convolution of ``x [N, H, W, C]`` whose
    output gradient is ``dy [N, H, W, O]`` (odd k; C and O multiples of 32; float32 or
    bfloat16, rounded to bfloat16 for the products, float32 sums) on AMX tiles. Call only
    where :func:`amx` is True. Under a batch-sharded ``jit`` each device sums its own
    images and the partial gradients are added (``psum``)."""
    return _conv_amx_kernel_grad(x, dy, k)


def _conv_amx_kernel_grad_local(x, dy, k):
    shape = (k, k, x.shape[-1], dy.shape[-1])
    return jax.ffi.ffi_call("imgclass_amx_conv_kernel_grad",
                            jax.ShapeDtypeStruct(shape, jnp.float32))(x, dy)  # fmt: skip


def _partition_amx_kernel_grad(k, mesh, arg_shapes, result_shape):
    axis = _batch_axis(arg_shapes)
    batch = NamedSharding(mesh, PartitionSpec(axis))

    def lower(x, dy):
        out = _conv_amx_kernel_grad_local(x, dy, k)
        return jax.lax.psum(out, axis) if axis is not None else out

    return mesh, lower, NamedSharding(mesh, PartitionSpec()), (batch, batch)


_conv_amx_kernel_grad = custom_partitioning(_conv_amx_kernel_grad_local, static_argnums=(2,))
_conv_amx_kernel_grad.def_partition(
    partition=_partition_amx_kernel_grad,
    infer_sharding_from_operands=lambda k, mesh, args, shape: NamedSharding(mesh, PartitionSpec()),
    sharding_rule="n h w c, n a b o -> i j c o",
)
