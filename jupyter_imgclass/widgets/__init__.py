"""Notebook widgets: thin views over a :class:`~jupyter_imgclass.Project`.

They hold no state beyond what the view shows; every change goes through the Project
(and so to disk) and every widget listens to Project events, so two views of one project
stay in sync.
"""

from ..project import views as _views
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

# The project layer's view methods (project.labeller(), iteration.report(), ...) reach
# these classes through project.views, never by importing this layer.
_views.provide("check", DataCheckWidget)
_views.provide("evaluation", EvaluationWidget)
_views.provide("labeller", LabellerWidget)
_views.provide("monitor", TrainingMonitor)
_views.provide("tester", TesterWidget)
