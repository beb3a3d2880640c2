"""Notebook widgets: thin views over a :class:`~jupyter_imgclass.Project`.

They hold no state beyond what the view shows; every change goes through the Project
(and so to disk) and every widget listens to Project events, so two views of one project
stay in sync. Build them from a Project with the package root's helpers
(``ic.labeller(project)``, ``ic.report(iteration)``, ``ic.monitor(run)``, ...) or with the
classes here; the layers below never build one.
"""

from .datacheck import DataCheckWidget
from .evaluation import EvaluationWidget
from .labeller import LabellerWidget
from .monitor import TrainingMonitor
from .studio import Studio
from .tester import TesterWidget

__all__ = [
    "DataCheckWidget",
    "EvaluationWidget",
    "LabellerWidget",
    "Studio",
    "TesterWidget",
    "TrainingMonitor",
]
