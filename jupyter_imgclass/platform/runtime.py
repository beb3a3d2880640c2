"""Where the engine starts JAX: CPU devices, the malloc tuning, the persistent compilation
cache, and multi-process runs.

Nothing here runs at import. :func:`prepare` does it all, once per process, and must run
before JAX's backend starts (its first computation: ``nnx.Rngs(0)``, ``jax.devices()``,
``jax.process_index()``): the engine calls it where every computation begins, in
``models.get`` and ``ModelSpec.create`` (each network is looked up, then built, before
anything runs on it) and in :func:`start_processes` (the CLI and ``Project.train`` call it
before asking JAX for the process's rank). ``import jax`` starts no thread and reads no
``XLA_FLAGS``, so it may come earlier.

Malloc: XLA's CPU runtime takes each compiled program's buffers (a training step of
``small_cnn`` needs hundreds of MB) from ``malloc`` and frees them when the step ends.
With glibc's defaults every allocation over a few MB is a fresh ``mmap``, and worker
threads use arenas whose heaps are capped at 64 MB, so each step page-faults all of its
memory in again: a plain 30 MB copy ran at 3 GB/s instead of 13-18 GB/s, and
``small_cnn`` training went from 211 to 286-338 images/s on the 2-core machine of
``shared/PERFORMANCE.md`` (same command, PyTorch peer at 585-659 images/s).
:func:`tune_malloc` asks glibc for one arena, serves allocations up to 1 GiB from the
heap, and keeps up to 1 GiB of freed memory for reuse, so the process keeps its peak
memory after a training. ``IMGCLASS_MALLOC_TUNING=0`` leaves glibc alone; other C
libraries (macOS, musl, Windows) are left alone too. tcmalloc does better still, but it
must be loaded before the process starts: ``make run`` starts JupyterLab (and so its
kernels) with :func:`preload_command` where ``libtcmalloc-minimal4`` is installed, and
:func:`tune_malloc` then stands aside. Measured in alternating rounds
(``benchmarks/ab_small_cnn.py``, ``results-cpu-speed.txt``): small_cnn trained 1.36-1.39x
faster on tcmalloc than on the tuned glibc; jemalloc was 0.93x.

Compilation cache: compiled programs of every size are kept on disk (measured here: the
first training step compiles in 1.25 s cold and 0.06 s from the cache).

CPU devices: one XLA CPU device keeps about 1.2 of 2 cores busy; EfficientNet-Lite0
features ran at 36 images/s on one device and 64 images/s with the batch split over two
(``benchmarks/bench_features.py --devices``). :func:`use_cpu_cores` asks XLA for one CPU
device per core (at most :data:`MAX_CPU_DEVICES`) through ``XLA_FLAGS``, which works only
before JAX's first computation in the process; training and batched inference then split
each batch over the devices (``apply.batch_sharding``). ``IMGCLASS_CPU_DEVICES=N`` sets
the count (1 keeps one device); a count the user gave JAX (``jax_num_cpu_devices``,
``--xla_force_host_platform_device_count``) is left as it is.
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

KEEP_BYTES = 1 << 30  # mallopt takes a C int: values must stay below 2**31
TOP_PAD_BYTES = 1 << 30

MAX_CPU_DEVICES = 8

applied: bool | None = None
"""None until :func:`tune_malloc` ran; then whether glibc took the settings."""

_cache_dir: str | None = None
_prepared = False


TCMALLOC_NAMES = ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4")
"""gperftools' tcmalloc (Debian and Ubuntu: ``libtcmalloc-minimal4``)."""
LIBRARY_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib")


def allocator() -> str:
    """The malloc this process runs on: ``"tcmalloc"`` or ``"jemalloc"`` (loaded with
    ``LD_PRELOAD``), ``"glibc"`` (Linux otherwise) or ``"system"`` (elsewhere)."""
    if not sys.platform.startswith("linux"):
        return "system"
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "glibc"
    for name in ("tcmalloc", "jemalloc"):
        if f"/lib{name}" in maps:
            return name
    return "glibc"


def tcmalloc_library() -> str | None:
    """The path of an installed tcmalloc, or None."""
    for directory in LIBRARY_DIRS:
        for name in TCMALLOC_NAMES:
            path = Path(directory) / name
            if path.is_file():
                return str(path)
    return None


def preload_command() -> str:
    """``env LD_PRELOAD=<tcmalloc> ...`` to start a process (JupyterLab: its kernels
    inherit it) on tcmalloc, or ``""`` where none is installed or
    ``IMGCLASS_MALLOC=glibc``. XLA's CPU training runs 1.3-1.6x faster on it than on the
    tuned glibc malloc (``benchmarks/results-cpu-speed.txt``). Its reports of large
    allocations (XLA's buffers) are switched off."""
    library = tcmalloc_library()
    if library is None or os.environ.get("IMGCLASS_MALLOC", "") == "glibc":
        return ""
    return f"env LD_PRELOAD={library} TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD={1 << 40}"


def tune_malloc() -> bool:
    """Applies the malloc settings once; returns whether glibc took them (never on a
    preloaded tcmalloc or jemalloc, which need none)."""
    global applied
    if applied is not None:
        return applied
    applied = False
    if os.environ.get("IMGCLASS_MALLOC_TUNING", "1") == "0" or allocator() != "glibc":
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


def cache_home() -> Path:
    """``~/.cache/jupyter_imgclass``: the folder of the package's per-user caches (the
    compilation cache here, the CPU kernels' builds in :mod:`.cpu_kernels`)."""
    return Path.home() / ".cache" / "jupyter_imgclass"


def default_cache_dir() -> Path:
    """``$IMGCLASS_JAX_CACHE`` or ``~/.cache/jupyter_imgclass/jax``."""
    env = os.environ.get("IMGCLASS_JAX_CACHE")
    return Path(env) if env else cache_home() / "jax"


def enable_compilation_cache(directory: str | os.PathLike | None = None) -> Path:
    """Turns on JAX's persistent compilation cache so a second run does not recompile."""
    global _cache_dir
    import jax

    path = Path(directory) if directory else default_cache_dir()
    if _cache_dir == str(path):
        return path
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    _cache_dir = str(path)
    return path


def cpu_device_count() -> int:
    """The CPU devices :func:`use_cpu_cores` asks for: ``$IMGCLASS_CPU_DEVICES`` or one per
    usable core, at most :data:`MAX_CPU_DEVICES`."""
    env = os.environ.get("IMGCLASS_CPU_DEVICES", "").strip()
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise ValueError(
                f"IMGCLASS_CPU_DEVICES={env!r}: expected a whole number of devices"
            ) from None
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_CPU_DEVICES))


def use_cpu_cores() -> int | None:
    """Asks XLA for :func:`cpu_device_count` CPU devices; returns the count asked for, or
    None where the user chose one (then it is left alone).

    It sets ``--xla_force_host_platform_device_count`` in ``XLA_FLAGS``, which JAX reads
    when its backend starts (its first computation, e.g. ``nnx.Rngs(0)``), so it needs no
    ``import jax``; once JAX has started, its devices stay as they are.
    """
    if _user_chose_devices():
        return None
    count = cpu_device_count()
    if count > 1:
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={count}".strip()
    return count


def _user_chose_devices() -> bool:
    if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        return True
    jax = sys.modules.get("jax")
    return jax is not None and getattr(jax.config, "jax_num_cpu_devices", -1) != -1


def prepare() -> None:
    """Prepares the process for JAX, once: the CPU devices (``XLA_FLAGS``), the malloc
    tuning, then the compilation cache.

    Call it before JAX's first computation in the process: JAX reads ``XLA_FLAGS`` once,
    when its backend starts, and keeps the devices it made then. A second call does
    nothing. It changes the process (an environment variable, glibc's malloc settings,
    JAX's configuration), which is why nothing calls it at import.

    Examples:
        >>> from jupyter_imgclass.platform import runtime
        >>> runtime.prepare()  # doctest: +SKIP
        >>> import jax
        >>> jax.local_device_count() == runtime.cpu_device_count()  # doctest: +SKIP
        True
    """
    global _prepared
    if _prepared:
        return
    _prepared = True
    use_cpu_cores()
    tune_malloc()
    if _cache_dir is None:
        enable_compilation_cache()


# ------------------------------------------------------------------- processes
_processes: tuple[str, int, int] | None = None


def check_processes(coordinator: str | None, num_processes: int | None, process_id: int | None):
    """Checked ``(coordinator, num_processes, process_id)`` of a multi-process run, or None
    for one process (all three unset, or ``num_processes == 1``).

    Raises:
        ValueError: naming the option and the reason.
    """
    given = [v is not None for v in (coordinator, num_processes, process_id)]
    if not any(given):
        return None
    if num_processes is not None and (
        isinstance(num_processes, bool) or not isinstance(num_processes, int) or num_processes < 1
    ):
        raise ValueError(f"num_processes {num_processes!r}: must be a whole number of 1 or more")
    if num_processes == 1 and process_id in (None, 0):
        return None
    if not all(given):
        raise ValueError(
            "coordinator, num_processes and process_id: give all three (or none, for one process)"
        )
    if (
        isinstance(process_id, bool)
        or not isinstance(process_id, int)
        or not 0 <= process_id < num_processes
    ):
        raise ValueError(f"process_id {process_id!r}: must be 0 to {num_processes - 1}")
    host, sep, port = str(coordinator).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(
            f"coordinator {coordinator!r}: expected HOST:PORT, e.g. 10.0.0.1:1234 (process 0 "
            "listens there; every process gives the same address)"
        )
    return str(coordinator), num_processes, process_id


def start_processes(
    coordinator: str | None,
    num_processes: int | None,
    process_id: int | None,
    *,
    timeout_s: int = 300,
) -> int:
    """Joins this process to a multi-process JAX run (``jax.distributed.initialize``) and
    returns the number of processes (1 when none is asked for: nothing happens).

    Every process of the run calls it with the same ``coordinator`` and
    ``num_processes`` and its own ``process_id``, before JAX's first computation; after
    it, ``jax.devices()`` lists every process's devices and a jitted step over a global
    mesh reduces gradients across processes (on CPU through gloo collectives). Calling it
    again with the same values does nothing.

    Raises:
        ValueError: bad values, other values than an earlier call's, or JAX already
            started in this process.
    """
    global _processes
    checked = check_processes(coordinator, num_processes, process_id)
    prepare()  # callers ask JAX for the rank next, which starts its backend
    if checked is None:
        return 1 if _processes is None else _processes[1]
    if _processes is not None:
        if _processes != checked:
            raise ValueError(
                f"this process already joined {_processes[1]} processes at {_processes[0]} "
                f"as process {_processes[2]}; restart the kernel to join another run"
            )
        return checked[1]
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(
            checked[0],
            num_processes=checked[1],
            process_id=checked[2],
            initialization_timeout=timeout_s,
            # a killed process is noticed in this time, not the default 100 s
            heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT_S,
            # at exit, the others are waited for this long (a failed run ends sooner)
            shutdown_timeout_seconds=SHUTDOWN_TIMEOUT_S,
        )
    except RuntimeError as exc:
        if "before" in str(exc).lower() or "already" in str(exc).lower():
            raise ValueError(
                "multi-process training must start before JAX's first computation in the "
                "process: pass the options first thing (a fresh kernel or the CLI)"
            ) from exc
        raise
    _processes = checked
    return checked[1]


def agree(value: int) -> int:
    """Process 0's ``value`` in every process (the value itself in a one-process run): the
    processes of a run take decisions that change control flow (stop, deadline) together."""
    import jax
    import numpy as np

    if jax.process_count() == 1:
        return int(value)
    from jax.experimental import multihost_utils

    return int(multihost_utils.broadcast_one_to_all(np.int32(value)))


def joined_processes() -> int:
    """How many processes this process's run has (1 when it joined none)."""
    return 1 if _processes is None else _processes[1]


def process_rank() -> int:
    """This process's index in a multi-process run (0 alone)."""
    import jax

    return jax.process_index()


HEARTBEAT_TIMEOUT_S = 30
SHUTDOWN_TIMEOUT_S = 60
BARRIER_TIMEOUT_S = 600.0
"""How long a process waits at a barrier for the others by default."""
_barriers = 0


def _client():
    from jax._src import distributed

    return distributed.global_state.client


def barrier(name: str, timeout_s: float | None = None) -> None:
    """Waits until every process of the run reaches ``barrier(name)`` (no-op for one).

    The barrier is the coordination service's, not a collective over devices: processes
    that reach different barriers time out with a clear error instead of mixing up each
    other's data, and the wait is bounded (``timeout_s``, :data:`BARRIER_TIMEOUT_S` by
    default). Every process numbers its barriers in the order it reaches them, so the
    same name can be passed again.

    Raises:
        RuntimeError: not every process arrived in time (one failed or was killed).
    """
    import jax

    global _barriers
    if jax.process_count() == 1:
        return
    _barriers += 1
    limit = BARRIER_TIMEOUT_S if timeout_s is None else timeout_s
    try:
        _client().wait_at_barrier(f"imgclass/{_barriers}/{name}", int(limit * 1000))
    except Exception as exc:  # XLA's runtime error types vary between releases
        raise RuntimeError(
            f"not every process reached {name!r} within {limit:g} s: another process failed "
            f"or was killed (its output says why) [{type(exc).__name__}: {str(exc)[:300]}]"
        ) from None


def publish(key: str, value: str) -> None:
    """Stores ``value`` under ``key`` for every process of the run (no-op for one)."""
    import jax

    if jax.process_count() > 1:
        _client().key_value_set(f"imgclass/{key}", value)


def read(key: str, timeout_s: float) -> str:
    """The value a process stored with :func:`publish` under ``key`` (waits ``timeout_s``).

    Raises:
        RuntimeError: nothing came in time, or the coordinating process is gone.
    """
    try:
        return str(_client().blocking_key_value_get(f"imgclass/{key}", int(timeout_s * 1000)))
    except Exception as exc:
        raise RuntimeError(
            f"no word from process 0 on {key!r} within {timeout_s:g} s: it failed or was "
            f"killed (its output says why) [{type(exc).__name__}: {str(exc)[:300]}]"
        ) from None
