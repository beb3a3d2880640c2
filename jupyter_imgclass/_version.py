"""The installed package's version, read from its metadata (never typed by hand)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("jupyter_imgclass")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
