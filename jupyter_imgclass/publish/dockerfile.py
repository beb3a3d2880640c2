"""A container for a bundle: a ``Dockerfile`` and ``.dockerignore`` that install the package
and serve the bundle with the package's own server (``jupyter-imgclass serve``).

The build context is a folder holding the bundle (by default the bundle's parent, so the
bundle is not copied; another folder gets a copy), and, with ``wheel``, the package's
wheel. The image runs as a non-root user, listens on 0.0.0.0 inside the container,
prints one JSON access line per request, reads the key from ``$IMGCLASS_PREDICTION_KEY``
(``docker run -e``; never baked into the image) and checks itself on ``/healthz``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..errors import BundleError, ImgClassError
from ..vocabulary import check_publish_name

__all__ = ["DEFAULT_BASE_IMAGE", "write_dockerfile"]

DEFAULT_BASE_IMAGE = "python:3.12-slim"
CONTAINER_BUNDLE = "/srv/bundle"
CONTAINER_USER = "imgclass"
CONTAINER_UID = 10001


def write_dockerfile(
    bundle: str | Path,
    out: str | Path | None = None,
    *,
    port: int = 8000,
    base_image: str = DEFAULT_BASE_IMAGE,
    package: str | None = None,
    wheel: str | Path | None = None,
    overwrite: bool = False,
    published_name: str | None = None,
) -> Path:
    """Writes ``Dockerfile`` and ``.dockerignore`` into a build context for ``bundle``.

    Args:
        bundle: an exported bundle folder (it has ``model.json``).
        out: the build context folder; default: the bundle's parent. A bundle outside
            it is copied into it.
        port: the port the server listens on in the container (``EXPOSE``d).
        base_image: the Python image to build on.
        package: what ``pip install`` installs (default: ``jupyter_imgclass==<this
            version>``; a ``git+https://...`` URL works too); a build argument, so
            ``docker build --build-arg PACKAGE=...`` changes it.
        wheel: a wheel of the package, copied into the context and installed instead.
        overwrite: replace a ``Dockerfile`` already in ``out``.
        published_name: the published name the routes answer to (``serve
            --published-name``; an existing app's), instead of the bundle's.

    Returns:
        The path of the written ``Dockerfile``.

    Raises:
        BundleError: ``bundle`` is not a bundle.
        ImgClassError: ``out`` has a Dockerfile (without ``overwrite``), or ``wheel`` is
            not a wheel file.

    Examples:
        >>> write_dockerfile("out/fruit-model")  # doctest: +SKIP
        PosixPath('out/Dockerfile')
    """
    from .._version import __version__

    bundle = Path(bundle).resolve()
    if not (bundle / "model.json").is_file():
        raise BundleError(f"{bundle}: not a model bundle (no model.json); export one first")
    context = Path(out).resolve() if out is not None else bundle.parent
    dockerfile = context / "Dockerfile"
    if dockerfile.exists() and not overwrite:
        raise ImgClassError(f"{dockerfile} exists; pass --overwrite to replace it")
    if published_name is not None:
        check_publish_name(published_name, "published name")
    if wheel is not None and not (Path(wheel).is_file() and str(wheel).endswith(".whl")):
        raise ImgClassError(f"wheel {wheel}: not a .whl file (build one: pip wheel --no-deps .)")
    context.mkdir(parents=True, exist_ok=True)
    if bundle.parent != context and not bundle.is_relative_to(context):
        shutil.copytree(bundle, context / bundle.name, dirs_exist_ok=overwrite)
        bundle = context / bundle.name
    inside = bundle.relative_to(context).as_posix()
    wheel_name = None
    if wheel is not None:
        wheel_name = Path(wheel).name
        (context / "wheels").mkdir(exist_ok=True)
        shutil.copy2(wheel, context / "wheels" / wheel_name)
    spec = package or f"jupyter_imgclass=={__version__}"
    dockerfile.write_text(
        dockerfile_text(inside, port, base_image, spec, wheel_name, __version__, published_name),
        encoding="utf-8",
    )
    keep = [f"!{inside}/", "!wheels/"] if wheel_name else [f"!{inside}/"]
    (context / ".dockerignore").write_text(
        "# Only the bundle (and the wheel) go to the build.\n*\n" + "\n".join(keep) + "\n",
        encoding="utf-8",
    )
    return dockerfile


def dockerfile_text(
    bundle: str,
    port: int,
    base_image: str,
    package: str,
    wheel: str | None,
    version: str,
    published_name: str | None = None,
) -> str:
    """The Dockerfile serving the bundle at context path ``bundle``."""
    if wheel:
        copy = f"COPY wheels/{wheel} /tmp/wheels/{wheel}\n"
        install = f'pip install "/tmp/wheels/{wheel}" && rm -rf /tmp/wheels'
    else:
        copy, install = "", f'pip install "{package}"'
    name = f', "--published-name", "{published_name}"' if published_name else ""
    probe = (
        "import urllib.request; "
        f"urllib.request.urlopen('http://127.0.0.1:{port}/healthz', timeout=4)"
    )
    return f"""\
# Serves the model bundle {bundle}/ with jupyter-imgclass's own server.
# Written by `jupyter-imgclass dockerfile` (jupyter_imgclass {version}).
#   docker build -t imgclass-model .
#   docker run --rm -p 127.0.0.1:8000:{port} -e IMGCLASS_PREDICTION_KEY=... imgclass-model
# Probes: /healthz (liveness), /readyz (ready once warmed up), /metrics (Prometheus).
FROM {base_image}

ENV PYTHONDONTWRITEBYTECODE=1 \\
    PYTHONUNBUFFERED=1 \\
    PIP_NO_CACHE_DIR=1 \\
    PIP_DISABLE_PIP_VERSION_CHECK=1

{copy}RUN {install} \\
    && useradd --create-home --uid {CONTAINER_UID} {CONTAINER_USER}
COPY {bundle}/ {CONTAINER_BUNDLE}/

USER {CONTAINER_UID}
WORKDIR /home/{CONTAINER_USER}
EXPOSE {port}
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \\
    CMD ["python", "-c", "{probe}"]
CMD ["jupyter-imgclass", "serve", "{CONTAINER_BUNDLE}", "--host", "0.0.0.0", "--port", "{port}", \\
     "--access-log", "json"{name}]
"""
