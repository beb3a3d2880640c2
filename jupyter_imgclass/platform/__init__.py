"""What the engine needs from the machine, below the networks: the process's JAX set-up
and the hand-written CPU kernels.

- :mod:`.runtime`: :func:`.runtime.prepare` (CPU devices, malloc tuning, the persistent
  compilation cache; once per process, before JAX's first computation), the allocator,
  and multi-process runs (``jax.distributed``: start, barrier, publish, read).
- :mod:`.cpu_kernels`: C++ kernels called from XLA through its FFI, built once per
  machine on a CPU backend and never on another.

Importing this package changes nothing in the process and loads no JAX.
"""
