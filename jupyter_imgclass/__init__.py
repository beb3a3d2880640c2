"""jupyter_imgclass: the whole custom image-classifier workflow inside Jupyter."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("jupyter_imgclass")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

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
    "TrainingError",
    "__version__",
]
