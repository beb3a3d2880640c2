"""jupyter_imgclass: the whole custom image-classifier workflow inside Jupyter.

Importing the package loads no JAX, no FastAPI and no widget, and changes nothing in the
process (the malloc tuning waits until the engine builds its first network; see
:mod:`jupyter_imgclass.models.runtime`).
"""

from ._version import __version__
from .data.importer import ImportReport
from .errors import (
    BadImageError,
    BundleError,
    DatasetError,
    ImgClassError,
    OptionError,
    ProjectError,
    TagError,
    TrainingError,
)
from .project import ImageRecord, Iteration, Project, TagRecord, TrainingRun
from .project import views as _views

__all__ = [
    "BadImageError",
    "BundleError",
    "DatasetError",
    "ImageRecord",
    "ImgClassError",
    "ImportReport",
    "Iteration",
    "OptionError",
    "Project",
    "ProjectError",
    "Studio",
    "TagError",
    "TagRecord",
    "TrainingError",
    "TrainingRun",
    "__version__",
    "datasets",
    "load_model",
    "models",
]


def _load_views() -> None:
    # The package root sits above every layer: it may load the widgets for the project
    # layer's view methods (project.labeller(), iteration.report(), run.monitor()).
    from . import widgets  # noqa: F401  (its import registers the views)


_views.set_loader(_load_views)


def __getattr__(name: str):
    # Heavier parts load on first use, so `import jupyter_imgclass` stays quick and free
    # of JAX, FastAPI and widget imports.
    if name == "load_model":
        from .publish.bundle import load_model

        return load_model
    if name == "Studio":
        from .widgets.studio import Studio

        return Studio
    if name in ("datasets", "models"):
        import importlib

        # `from . import x` here would ask this very __getattr__ again.
        where = {"datasets": ".data.datasets", "models": ".models"}[name]
        return importlib.import_module(where, __name__)
    raise AttributeError(f"module 'jupyter_imgclass' has no attribute {name!r}")
