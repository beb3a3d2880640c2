"""Where the engine starts JAX (platform.runtime): nothing at import, malloc before threads."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from jupyter_imgclass.platform import runtime

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the tuning is for glibc on Linux"
)

# What a notebook does before training: import the package, open a project, look at the
# networks; then build one. The thread count shows whether JAX's runtime had started.
CHILD = """
import os, sys, tempfile
import jupyter_imgclass as ic
from jupyter_imgclass.platform import runtime
def threads(): return len(os.listdir('/proc/self/task'))
project = ic.Project.create(tempfile.mkdtemp() + '/p')
ic.models.names()
print('jax' in sys.modules, runtime.applied)
from flax import nnx
before = threads()
ic.models.get('small_cnn').create(2, rngs=nnx.Rngs(0))
print(runtime.applied, before < threads())
import jax
print(jax.local_device_count(), runtime.cpu_device_count())
"""


def _run(env_value: str | None) -> list[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("IMGCLASS_MALLOC_TUNING", "IMGCLASS_CPU_DEVICES", "XLA_FLAGS")
    }
    if env_value is not None:
        env["IMGCLASS_MALLOC_TUNING"] = env_value
    out = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True
    )
    return out.stdout.split()


@linux_only
def test_import_changes_nothing_and_the_first_network_tunes_malloc_before_jax_threads():
    jax_loaded, applied_at_import, applied, threads_started_after, devices, cores = _run(None)
    assert (jax_loaded, applied_at_import) == ("False", "None")
    assert applied == "True"
    assert threads_started_after == "True"  # JAX's threads came after the tuning
    assert devices == cores  # one CPU device per core, asked for before the first computation


def test_cpu_devices_follow_the_environment_and_leave_a_started_jax_alone():
    code = (
        "import jax, jax.numpy as jnp, sys; "
        "jnp.ones(1).block_until_ready() if sys.argv[1] == 'started' else None; "
        "from jupyter_imgclass.platform import runtime; runtime.prepare(); "
        "print(jax.local_device_count())"
    )

    def devices(env_value: str, state: str) -> str:
        env = dict(os.environ, IMGCLASS_CPU_DEVICES=env_value)
        env.pop("XLA_FLAGS", None)
        out = subprocess.run(
            [sys.executable, "-c", code, state], env=env, capture_output=True, text=True
        )
        return out.stdout.strip() or out.stderr.strip().splitlines()[-1]

    assert devices("3", "fresh") == "3"
    assert devices("1", "fresh") == "1"
    assert devices("3", "started") == "1"  # a computation ran first: its one device stays
    assert "IMGCLASS_CPU_DEVICES='many'" in devices("many", "fresh")


@linux_only
def test_tuning_can_be_switched_off():
    assert _run("0")[2] == "False"


def _two_devices(code: str) -> str:
    """The output of ``python -c code`` in a process asked for two CPU devices."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["IMGCLASS_CPU_DEVICES"] = "2"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


def test_importing_the_networks_changes_no_environment_variable():
    """``import jupyter_imgclass.models`` (and its layers, the kernels' module and the
    runtime) writes nothing into ``os.environ``: XLA_FLAGS waits for ``runtime.prepare``,
    which the first ``models.get`` calls."""
    code = (
        # JAX's own import sets TF_CPP_MIN_LOG_LEVEL and TPU_SKIP_MDS_QUERY: not ours
        "import os, json, jax; before = dict(os.environ); "
        "import jupyter_imgclass.models, jupyter_imgclass.models.layers; "
        "import jupyter_imgclass.platform.cpu_kernels; "
        "changed = sorted(k for k in set(before) | set(os.environ) "
        "if before.get(k) != os.environ.get(k)); "
        "import jupyter_imgclass.models as m; m.get('small_cnn'); "
        "print(json.dumps([changed, os.environ.get('XLA_FLAGS', '')]))"
    )
    changed, flags = json.loads(_two_devices(code).splitlines()[-1])
    assert changed == []
    assert flags == "--xla_force_host_platform_device_count=2"  # the first lookup asked


def test_starting_processes_prepares_jax_before_the_rank_is_asked():
    """The CLI and ``Project.train`` call ``start_processes`` (one process: no options) and
    then ask JAX for the rank, which starts its backend: the devices are asked for first."""
    code = (
        "from jupyter_imgclass.platform import runtime; import jax; "
        "print(runtime.start_processes(None, None, None), jax.process_index(), "
        "jax.local_device_count())"
    )
    assert _two_devices(code).split() == ["1", "0", "2"]


def test_import_leaves_jax_fastapi_and_widgets_unloaded():
    code = (
        "import jupyter_imgclass, sys; "
        "heavy = ('jax', 'fastapi', 'ipywidgets', 'anywidget'); "
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@linux_only
def test_on_a_preloaded_tcmalloc_the_glibc_tuning_stands_aside_and_training_runs():
    library = runtime.tcmalloc_library()
    if library is None:
        pytest.skip("tcmalloc is not installed (Debian: libtcmalloc-minimal4)")
    code = (
        "from jupyter_imgclass.platform import runtime; import jupyter_imgclass as ic; "
        "import numpy as np; from jupyter_imgclass import training; "
        "x = np.random.default_rng(0).integers(0, 256, (64, 28, 28, 3), dtype=np.uint8); "
        "y = np.arange(64, dtype=np.int32) % 2; "
        "cfg = training.TrainConfig(model='small_cnn', epochs=1, batch_size=32, "
        "augment=False, num_classes=2); "
        "r = training.fit(cfg, {'image': x, 'label': y}, {'image': x[:8], 'label': y[:8]}); "
        "print(runtime.allocator(), runtime.applied, r.extra['steps'])"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("IMGCLASS_MALLOC_TUNING", "XLA_FLAGS")}
    command = runtime.preload_command().split()[1:]  # NAME=value pairs after `env`
    env.update(pair.split("=", 1) for pair in command)
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    allocator, applied, steps = out.stdout.split()
    assert (allocator, applied, int(steps) > 0) == ("tcmalloc", "False", True)
    assert "large alloc" not in out.stderr  # tcmalloc's reports are switched off


def test_preload_command_names_tcmalloc_or_nothing(monkeypatch):
    library = runtime.tcmalloc_library()
    command = runtime.preload_command()
    assert command == "" if library is None else command.startswith(f"env LD_PRELOAD={library} ")
    monkeypatch.setenv("IMGCLASS_MALLOC", "glibc")
    assert runtime.preload_command() == ""
    assert runtime.allocator() in ("glibc", "tcmalloc", "jemalloc", "system")
