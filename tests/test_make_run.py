"""`make run` as a user meets it: the URL it prints opens the quick-start notebook."""

from __future__ import annotations

import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from helpers import terminate

from jupyter_imgclass.platform import runtime

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_make_run_prints_the_notebook_url_and_it_opens(tmp_path):
    port = _free_port()
    extra = f"--no-browser --port={port} --ServerApp.port_retries=0"
    dry = subprocess.run(
        ["make", "-n", "run", f"LAB_ARGS={extra}", f"PYTHON={sys.executable}"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    recipe = dry.stdout.replace("\\\n", " ")  # the recipe's continued lines as one
    line = next(x for x in recipe.splitlines() if "jupyter lab" in x)
    argv = shlex.split(line)
    preload = {}
    if argv[0] == "env":  # `env NAME=value ... python -m jupyter lab`
        argv.pop(0)
        while "=" in argv[0]:
            name, _, value = argv.pop(0).partition("=")
            preload[name] = value
    if runtime.tcmalloc_library():  # installed: the server and its kernels run on it
        assert preload["LD_PRELOAD"] == runtime.tcmalloc_library(), line
    argv[0] = sys.executable  # the suite's interpreter, not a second .venv
    env = {
        "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"),
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        **preload,
    }
    log = tmp_path / "lab.log"
    with log.open("w") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        url, deadline = None, time.time() + 90
        while url is None and time.time() < deadline and proc.poll() is None:
            found = re.search(r"(http://127\.0\.0\.1:\d+/\S+)", log.read_text())
            url = found.group(1) if found else time.sleep(0.2)
        assert url, log.read_text()
        expected = rf"http://127\.0\.0\.1:{port}/lab/tree/notebooks/01-quickstart\.ipynb\?token="
        assert re.match(expected, url), url
        page = None
        while page is None and time.time() < deadline:
            try:  # the URL is printed just before the server listens
                with urllib.request.urlopen(url, timeout=30) as answer:
                    page = (answer.status, answer.read().decode())
            except urllib.error.URLError:
                time.sleep(0.3)
        assert page and page[0] == 200 and "JupyterLab" in page[1]
        if preload:  # the server runs on tcmalloc, so the kernels it starts do too
            assert "libtcmalloc" in Path(f"/proc/{proc.pid}/maps").read_text()
    finally:
        terminate(proc, timeout=20)
