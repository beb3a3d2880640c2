"""jupyter_imgclass: the whole custom image-classifier workflow inside Jupyter."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("jupyter_imgclass")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

from . import _malloc  # noqa: E402

_malloc.tune()  # before JAX starts its threads; see _malloc

from .data.importer import ImportReport  # noqa: E402
from .errors import (  # noqa: E402
    BadImageError,
    BundleError,
    DatasetError,
    ImgClassError,
    ProjectError,
    TagError,
    TrainingError,
)
from .project import ImageRecord, Project, TagRecord  # noqa: E402

__all__ = [
    "BadImageError",
    "BundleError",
    "DatasetError",
    "ImageRecord",
    "ImgClassError",
    "ImportReport",
    "Project",
    "ProjectError",
    "TagError",
    "TagRecord",
    "Studio",
    "TrainingError",
    "__version__",
    "load_model",
]


def __getattr__(name: str):
    # Heavier parts load on first use, so `import jupyter_imgclass` stays quick and free
    # of JAX, FastAPI and widget imports.
    if name == "load_model":
        from .export import load_model

        return load_model
    if name == "Studio":
        from .widgets.studio import Studio

        return Studio
    if name in ("datasets", "models"):
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'jupyter_imgclass' has no attribute {name!r}")
