"""A workspace: a folder of project folders, looked up by the hosted API's GUIDs.

What ``jupyter-imgclass serve --workspace DIR`` serves: every sub-folder holding a
project is one project of the Training API, its published iterations answer the
prediction routes. A project made here is an ordinary project folder (open it in a
notebook, label it in the labeller); every lookup reads the project's store, so what a
notebook changed is seen at the next request.

Examples:
    >>> import tempfile
    >>> ws = Workspace(tempfile.mkdtemp())
    >>> project = ws.create_project("Fruit & veg")
    >>> project.path.name, ws.project(project.id) is project
    ('Fruit-veg', True)
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
from pathlib import Path

from ..errors import ProjectError
from .project import DB_NAME, Project

__all__ = ["TRASH_FOLDER", "Workspace"]

TRASH_FOLDER = ".deleted"
"""Where a deleted project's folder is moved (never erased: a person empties it)."""


class Workspace:
    """The projects under ``root``, by GUID; each opened once and kept open.

    Args:
        root: the workspace folder (created when missing).
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser()
        if self.root.exists() and not self.root.is_dir():
            raise ProjectError(f"{self.root}: not a folder; a workspace is a folder of projects")
        self.root.mkdir(parents=True, exist_ok=True)
        self._open: dict[Path, Project] = {}
        self._lock = threading.RLock()

    def projects(self) -> list[Project]:
        """Every project folder under the root, oldest folder first (new ones opened)."""
        with self._lock:
            found = []
            for folder in sorted(self.root.iterdir(), key=_created):
                if folder.name.startswith(".") or not (folder / DB_NAME).is_file():
                    continue
                project = self._open.get(folder)
                if project is None:
                    try:
                        project = self._open[folder] = Project.open(folder)
                    except ProjectError:
                        continue  # not ours to serve (damaged, newer): the notebook says why
                found.append(project)
            for gone in set(self._open) - {p.path for p in found}:
                self._open.pop(gone).close()
            return found

    def project(self, project_id: str) -> Project | None:
        """The project with this id (any case), or None."""
        wanted = project_id.lower()
        return next((p for p in self.projects() if p.id == wanted), None)

    def create_project(self, name: str, kind: str = "multiclass") -> Project:
        """A new project folder named after ``name`` (made safe, numbered when taken)."""
        with self._lock:
            base = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "project"
            folder, n = self.root / base[:60], 1
            while folder.exists():
                n += 1
                folder = self.root / f"{base[:60]}-{n}"
            project = self._open[folder] = Project.create(folder, kind, name=name)
            return project

    def delete_project(self, project: Project) -> Path:
        """Closes the project and moves its folder into ``.deleted/``; returns where."""
        with self._lock:
            self._open.pop(project.path, None)
            project.close()
            trash = self.root / TRASH_FOLDER
            trash.mkdir(exist_ok=True)
            kept = trash / f"{project.path.name}-{time.strftime('%Y%m%d-%H%M%S')}"
            shutil.move(str(project.path), str(kept))
            return kept

    def close(self) -> None:
        """Closes every open project."""
        with self._lock:
            for project in self._open.values():
                project.close()
            self._open.clear()

    def __repr__(self) -> str:
        return f"Workspace({str(self.root)!r})"


def _created(folder: Path) -> tuple[float, str]:
    """When a project folder's database was made (the listing's order), then its name."""
    try:
        return ((folder / DB_NAME).stat().st_ctime, folder.name)
    except OSError:
        return (0.0, folder.name)
