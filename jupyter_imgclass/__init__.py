"""jupyter_imgclass: the whole custom image-classifier workflow inside Jupyter.

Importing the package loads no JAX, no FastAPI and no widget, and changes nothing in the
process (the CPU devices and the malloc tuning wait until the engine looks up its first
network; see :mod:`jupyter_imgclass.platform.runtime`).

The widgets are built from a Project by the helpers below (:func:`labeller`,
:func:`tester`, :func:`report`, :func:`monitor`, :func:`data_check`); each imports
:mod:`jupyter_imgclass.widgets` on its first call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__
from .data.export import ExportReport
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

if TYPE_CHECKING:
    from .project.check import DataCheck
    from .widgets import (
        DataCheckWidget,
        EvaluationWidget,
        LabellerWidget,
        TesterWidget,
        TrainingMonitor,
    )

__all__ = [
    "BadImageError",
    "BundleError",
    "DataCheckWidget",
    "DatasetError",
    "EvaluationWidget",
    "ExportReport",
    "ImageRecord",
    "ImgClassError",
    "ImportReport",
    "Iteration",
    "LabellerWidget",
    "OptionError",
    "Project",
    "ProjectError",
    "Studio",
    "TagError",
    "TagRecord",
    "TesterWidget",
    "TrainingError",
    "TrainingMonitor",
    "TrainOptions",
    "TrainingRun",
    "__version__",
    "data_check",
    "datasets",
    "import_customvision",
    "labeller",
    "load_model",
    "models",
    "monitor",
    "report",
    "tester",
]

# ---------------------------------------------------------------------- widgets
# The package root sits above every layer, so it is the one place that builds a widget
# from a project-layer object. The imports wait for the first call: ipywidgets and
# anywidget load only when a widget is asked for.


def labeller(project: Project, filter: str | None = "untagged", **kwargs: Any) -> LabellerWidget:
    """The labelling widget over ``project`` (keys 1-9, 0 negative, arrows, Backspace undo,
    S skip).

    Args:
        project: the :class:`Project` to label.
        filter: which images to walk: ``"untagged"`` (default), ``"suggested"`` (the
            images to label next, each with the model's guess), ``"review"``, ``"all"``,
            ``"tagged"`` or a tag name.
        **kwargs: passed to :class:`~jupyter_imgclass.widgets.LabellerWidget`
            (``page_size``, ``mode="single"``).

    Returns:
        A :class:`~jupyter_imgclass.widgets.LabellerWidget`; display it as a cell's value.

    Examples:
        >>> import jupyter_imgclass as ic
        >>> project = ic.Project.create("pets")  # doctest: +SKIP
        >>> ic.labeller(project)                 # doctest: +SKIP
        >>> ic.labeller(project, filter="suggested", mode="single")  # doctest: +SKIP
    """
    from .widgets.labeller import LabellerWidget

    _expect("labeller", project, Project, "a Project")
    return LabellerWidget(project, filter=filter, **kwargs)


def tester(target: Project | Iteration) -> TesterWidget:
    """The tester widget: drop, upload or capture an image and see the probabilities.

    Args:
        target: a :class:`Project` (the tester follows its latest iteration) or an
            :class:`Iteration` (the tester of its project, fixed to that iteration).

    Returns:
        A :class:`~jupyter_imgclass.widgets.TesterWidget`; new images it adds go to the
        project.

    Examples:
        >>> import jupyter_imgclass as ic
        >>> ic.tester(project)                  # the latest model  # doctest: +SKIP
        >>> ic.tester(project.iterations[0])    # a chosen one      # doctest: +SKIP
    """
    from .widgets.tester import TesterWidget

    _expect("tester", target, (Project, Iteration), "a Project or an Iteration")
    if isinstance(target, Iteration):
        return TesterWidget(target.project, iteration=target)
    return TesterWidget(target)


def report(iteration: Iteration) -> EvaluationWidget:
    """The evaluation widget of one iteration: per-tag table, threshold slider, confusion
    matrix (click a cell to see its images), top losses and per-tag thresholds.

    Args:
        iteration: the trained :class:`Iteration` to look at.

    Returns:
        An :class:`~jupyter_imgclass.widgets.EvaluationWidget`.

    Examples:
        >>> import jupyter_imgclass as ic
        >>> iteration = project.train(budget="quick").wait()  # doctest: +SKIP
        >>> ic.report(iteration)                              # doctest: +SKIP
    """
    from .widgets.evaluation import EvaluationWidget

    _expect("report", iteration, Iteration, "an Iteration (run.wait() or project.iteration())")
    return EvaluationWidget(iteration)


def monitor(run: TrainingRun) -> TrainingMonitor:
    """The live monitor of a training run: phase, progress with ETA, curves, Stop button.

    A monitor made after the run ended replays its events, so it can come in a later cell.

    Args:
        run: the :class:`TrainingRun` that :meth:`Project.train` returned.

    Returns:
        A :class:`~jupyter_imgclass.widgets.TrainingMonitor`.

    Examples:
        >>> import jupyter_imgclass as ic
        >>> run = project.train(budget="quick")  # doctest: +SKIP
        >>> ic.monitor(run)                      # doctest: +SKIP
    """
    from .widgets.monitor import TrainingMonitor

    _expect("monitor", run, TrainingRun, "a TrainingRun (what project.train returns)")
    return TrainingMonitor(run)


def data_check(project: Project, report: DataCheck | None = None) -> DataCheckWidget:
    """The data-check panel: likely label errors, near-duplicates, thin or imbalanced tags,
    each with a one-click fix.

    Args:
        project: the :class:`Project` to check.
        report: a report from :meth:`Project.check` to show; when None the panel runs
            ``project.check()`` itself.

    Returns:
        A :class:`~jupyter_imgclass.widgets.DataCheckWidget`; after each fix it checks again.

    Examples:
        >>> import jupyter_imgclass as ic
        >>> ic.data_check(project)                    # doctest: +SKIP
        >>> ic.data_check(project, project.check())   # a report you already have  # doctest: +SKIP
    """
    from .widgets.datacheck import DataCheckWidget

    _expect("data_check", project, Project, "a Project")
    return DataCheckWidget(project, report)


def _expect(helper: str, value: Any, kind: type | tuple[type, ...], wanted: str) -> None:
    """Refuses the wrong object with what the helper takes (ic.monitor(iteration) would
    otherwise fail deep inside the widget)."""
    if not isinstance(value, kind):
        raise ImgClassError(
            f"ic.{helper}(...): expected {wanted}, got {type(value).__name__}"
            + ("; for a trained iteration use ic.report(it)" if helper == "monitor" else "")
        )


# Exported lazily, from the widgets package (its __all__).
_WIDGET_CLASSES = frozenset(
    {
        "DataCheckWidget",
        "EvaluationWidget",
        "LabellerWidget",
        "Studio",
        "TesterWidget",
        "TrainingMonitor",
    }
)


def __getattr__(name: str):
    # Heavier parts load on first use, so `import jupyter_imgclass` stays quick and free
    # of JAX, FastAPI and widget imports.
    if name == "load_model":
        from .publish.bundle import load_model

        return load_model
    if name == "import_customvision":
        from .project.customvision import import_customvision

        return import_customvision
    if name in _WIDGET_CLASSES:
        from . import widgets

        return getattr(widgets, name)
    if name == "TrainOptions":
        from .training.options import TrainOptions

        return TrainOptions
    if name in ("datasets", "models"):
        import importlib

        # `from . import x` here would ask this very __getattr__ again.
        where = {"datasets": ".data.datasets", "models": ".models"}[name]
        return importlib.import_module(where, __name__)
    raise AttributeError(f"module 'jupyter_imgclass' has no attribute {name!r}")
