"""The one exception family of jupyter_imgclass.

Every error a user can meet is an :class:`ImgClassError`; messages name the input and
say what to do about it.
"""


class ImgClassError(Exception):
    """Base class of every error raised by jupyter_imgclass."""


class BadImageError(ImgClassError, ValueError):
    """An image could not be decoded or was refused (empty, truncated, too big, not an image)."""


class ProjectError(ImgClassError):
    """A project folder is missing, already exists, or is not a jupyter_imgclass project."""


class OptionError(ImgClassError, ValueError):
    """An option's value is not one of its choices (a kind, a budget, a strategy...)."""


class TagError(ImgClassError, ValueError):
    """A tag name or tag assignment breaks the project's rules."""


class TrainingError(ImgClassError):
    """Training cannot start or failed (too few images, one tag, ...)."""


class BundleError(ImgClassError):
    """An exported model bundle is missing, truncated, tampered with or of an unknown kind."""


class DatasetError(ImgClassError):
    """A built-in dataset source is not available on this machine or its files are damaged."""


class StorageError(ProjectError):
    """The disk is full or read-only, so nothing more could be stored.

    Attributes:
        report: for an import, the partial :class:`ImportReport` of what was stored
            before the disk refused (every image listed there is stored and whole).
    """

    def __init__(self, message: str, report=None):
        super().__init__(message)
        self.report = report
