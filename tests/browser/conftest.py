"""JupyterLab on 127.0.0.1 driven by Playwright with Debian's Chromium (see TESTING.md).

One JupyterLab and one browser per session; each test opens a notebook from
``tests/browser/notebooks`` (copied into a temporary root), runs it, interacts, and
saves screenshots under ``test-artifacts/``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from helpers import terminate

CHROMIUM = "/usr/bin/chromium"
NOTEBOOKS = Path(__file__).parent / "notebooks"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # A fake camera that needs no permission prompt, for the tester's getUserMedia capture.
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
]


def pytest_collection_modifyitems(items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.browser)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 2.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - 127.0.0.1 only
        return json.loads(r.read() or b"null")


@pytest.fixture(scope="session")
def lab():
    """A running JupyterLab: ``{"url", "root"}``; notebooks are copied into ``root``."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium (CI installs it)")
    tmp = Path(tempfile.mkdtemp(prefix="imgclass-lab-"))
    root = tmp / "root"
    shutil.copytree(NOTEBOOKS, root)
    env = dict(os.environ)
    for var in ("JUPYTER_CONFIG_DIR", "JUPYTER_RUNTIME_DIR", "JUPYTERLAB_WORKSPACES_DIR"):
        (tmp / var).mkdir()
        env[var] = str(tmp / var)
    settings = tmp / "settings"
    (settings / "@jupyterlab" / "apputils-extension").mkdir(parents=True)
    (
        settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    ).write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    env["JUPYTERLAB_SETTINGS_DIR"] = str(settings)
    # Notebook 7's page (the classic interface) exposes its app as JupyterLab's does.
    (tmp / "JUPYTER_CONFIG_DIR" / "jupyter_server_config.json").write_text(
        json.dumps({"JupyterNotebookApp": {"expose_app_in_browser": True}})
    )
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH", "")]
    )
    port = _free_port()
    log = open(tmp / "lab.log", "wb")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyter",
            "lab",
            "--no-browser",
            "--allow-root",
            "--ip=127.0.0.1",
            f"--port={port}",
            "--ServerApp.port_retries=0",
            "--IdentityProvider.token=",
            "--ServerApp.password=",
            "--ServerApp.disable_check_xsrf=True",
            f"--ServerApp.root_dir={root}",
            "--LabApp.expose_app_in_browser=True",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            _get(f"{url}/api/status")
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                text = (tmp / "lab.log").read_text()
                raise RuntimeError(f"JupyterLab did not start:\n{text}") from None
            time.sleep(0.2)  # polling a starting server, not waiting on a result
    yield {"url": url, "root": root, "log": tmp / "lab.log"}
    try:
        req = urllib.request.Request(f"{url}/api/shutdown", method="POST")
        urllib.request.urlopen(req, timeout=10)  # noqa: S310
    except OSError:
        pass
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        terminate(proc)
    log.close()
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def browser(lab):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


class Notebook:
    """A notebook open in JupyterLab, run top to bottom, with its page errors."""

    def __init__(self, page, lab, name: str, classic: bool = False):
        self.page, self.lab, self.name, self.classic = page, lab, name, classic
        self.errors: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(f"{exc}\n{exc.stack}"))

    def open_and_run(self) -> None:
        page = self.page
        if self.classic:  # Notebook 7's own page, served by the same server
            page.goto(f"{self.lab['url']}/notebooks/{self.name}")
        else:
            page.goto(f"{self.lab['url']}/lab/tree/{self.name}?reset")
        page.wait_for_function(
            "() => window.jupyterapp && window.jupyterapp.started && window.jupyterapp.restored"
            " && true"
        )
        page.wait_for_selector(".jp-NotebookPanel .jp-Cell")
        page.wait_for_function(
            "() => { const w = window.jupyterapp.shell.currentWidget;"
            " return w && w.sessionContext && w.sessionContext.session &&"
            " w.sessionContext.kernelDisplayStatus === 'idle'; }"
        )
        page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")

    def wait_idle(self) -> None:
        self.page.wait_for_function(
            "() => window.jupyterapp.shell.currentWidget.sessionContext.kernelDisplayStatus"
            " === 'idle' && ![...document.querySelectorAll('.jp-InputPrompt')]"
            ".some(e => e.textContent.includes('*'))"
        )

    def screenshot(self, locator, name: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        locator.screenshot(path=str(path))
        return path

    def shutdown_kernel(self) -> None:
        self.page.evaluate("() => window.jupyterapp.shell.currentWidget.sessionContext.shutdown()")


@pytest.fixture
def notebook(lab, browser):
    """``notebook("x.ipynb")`` opens and runs a notebook; page errors are checked at the end."""
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    opened: list[Notebook] = []

    def open_notebook(name: str, classic: bool = False) -> Notebook:
        page = context.new_page()
        page.set_default_timeout(60_000)
        nb = Notebook(page, lab, name, classic)
        nb.open_and_run()
        opened.append(nb)
        return nb

    yield open_notebook
    for nb in opened:
        try:
            nb.shutdown_kernel()
        except Exception:  # the page may already be gone; the server shuts kernels down too
            pass
    context.close()
