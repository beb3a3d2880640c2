"""jupyter_imgclass: the whole custom image-classifier workflow inside Jupyter."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("jupyter_imgclass")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
