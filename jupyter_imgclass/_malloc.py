"""Keeps glibc from handing XLA's large buffers back to the kernel after every step.

XLA's CPU runtime takes each compiled program's buffers (a training step of ``small_cnn``
needs hundreds of MB) from ``malloc`` and frees them when the step ends. With glibc's
defaults every allocation over a few MB is a fresh ``mmap``, and worker threads use
arenas whose heaps are capped at 64 MB, so each step page-faults all of its memory in
again: a plain 30 MB copy ran at 3 GB/s instead of 13-18 GB/s, and ``small_cnn``
training went from 211 to 286-338 images/s on the 2-core machine of
``shared/PERFORMANCE.md`` (same command, PyTorch peer at 585-659 images/s).

:func:`tune` (called once when :mod:`jupyter_imgclass` is imported, before JAX starts
its threads) asks glibc for one arena, serves allocations up to 1 GiB from the heap, and
keeps up to 1 GiB of freed memory for reuse. The process keeps its peak memory after a
training instead of returning it at once. ``IMGCLASS_MALLOC_TUNING=0`` leaves glibc
alone; other C libraries (macOS, musl) are left alone too.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

KEEP_BYTES = 1 << 30  # mallopt takes a C int: values must stay below 2**31
TOP_PAD_BYTES = 1 << 30

applied: bool | None = None


def tune() -> bool:
    """Applies the settings once; returns whether glibc took them."""
    global applied
    if applied is not None:
        return applied
    applied = False
    if os.environ.get("IMGCLASS_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return applied
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return applied
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    results = [
        mallopt(M_ARENA_MAX, 1),
        mallopt(M_MMAP_THRESHOLD, KEEP_BYTES),
        mallopt(M_TRIM_THRESHOLD, KEEP_BYTES),
        mallopt(M_TOP_PAD, TOP_PAD_BYTES),
    ]
    applied = all(r == 1 for r in results)
    return applied
