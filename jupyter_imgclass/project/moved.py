"""What a user of an older version calls and where it went: a clear AttributeError.

The widget methods left the project layer (a widget is built by the package root's
helpers from a project-layer object), and ``Iteration.config`` became the typed
``Iteration.record``. An old notebook that calls them gets the new spelling in the error.
"""

from __future__ import annotations

__all__ = ["MOVED", "moved"]

MOVED = {
    ("Project", "labeller"): "ic.labeller(project)",
    ("Project", "tester"): "ic.tester(project)",
    ("Project", "data_check"): "ic.data_check(project)",
    ("Project", "studio"): "ic.Studio(project)",
    ("Iteration", "report"): "ic.report(iteration)",
    ("Iteration", "tester"): "ic.tester(iteration)",
    ("Iteration", "config"): "iteration.record (an IterationRecord: iteration.record.history, ...)",
    ("TrainingRun", "monitor"): "ic.monitor(run)",
    ("DataCheck", "panel"): "ic.data_check(project, report)",
}
"""``(class, old name)``: what to write instead."""


def moved(owner: object, name: str) -> AttributeError:
    """The AttributeError for ``owner.name``: where it went, when it moved."""
    cls = type(owner).__name__
    new = MOVED.get((cls, name))
    if new is None:
        return AttributeError(f"{cls!r} object has no attribute {name!r}")
    return AttributeError(f"{cls}.{name} is gone: use {new}")
