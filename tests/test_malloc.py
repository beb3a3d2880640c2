"""The glibc malloc settings applied when the package is imported (see _malloc)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the tuning is for glibc on Linux"
)

CHILD = "import jupyter_imgclass, sys; print(jupyter_imgclass._malloc.applied)"


def _applied(env_value: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "IMGCLASS_MALLOC_TUNING"}
    if env_value is not None:
        env["IMGCLASS_MALLOC_TUNING"] = env_value
    out = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


def test_import_tunes_malloc_before_jax_starts():
    assert _applied(None) == "True"


def test_tuning_can_be_switched_off():
    assert _applied("0") == "False"


def test_import_leaves_jax_unloaded_so_the_tuning_comes_first():
    out = subprocess.run(
        [sys.executable, "-c", "import jupyter_imgclass, sys; print('jax' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "False"
