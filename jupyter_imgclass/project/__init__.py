"""What a notebook holds: the :class:`Project`, its :class:`Iteration` objects and the
:class:`TrainingRun` that makes them.

* :mod:`.project` -- :class:`Project` (images, tags, labels, training, iterations);
* :mod:`.iteration` -- :class:`Iteration` (a saved model: metrics, predict, export, serve);
* :mod:`.runs` -- :class:`TrainingRun` and the path from labels to a saved iteration;
* :mod:`.events` -- the one event mechanism (subscribe, emit, unsubscribe);
"""

from .iteration import Iteration
from .project import ImageRecord, Project, TagRecord
from .runs import TrainingRun

__all__ = ["ImageRecord", "Iteration", "Project", "TagRecord", "TrainingRun"]
