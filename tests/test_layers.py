"""The package layout draws the architecture: every import points down a layer, or sideways.

Walks every module's imports with ``ast`` -- function-level ones included -- resolves
relative imports, and fails on an import of a higher layer, of a module that does not
exist, or of a UI library below the widgets.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import jupyter_imgclass

PACKAGE = Path(jupyter_imgclass.__file__).parent
ROOT = "jupyter_imgclass"

# Lowest first. A module may import its own layer and any below it, never one above.
LAYERS = [
    ("base", ["errors", "vocabulary", "_version"]),
    ("data", ["data"]),
    ("models", ["models"]),
    ("engine", ["training", "evaluate", "predict", "active", "datacheck", "publish"]),
    ("project", ["project"]),
    ("widgets", ["widgets"]),
    ("cli", ["cli", ""]),  # "" is the package root: the public facade, above everything
]
RANK = {part: rank for rank, (_, parts) in enumerate(LAYERS) for part in parts}
NAME = {rank: name for rank, (name, _) in enumerate(LAYERS)}
# Libraries only some layers may use.
UI_LIBRARIES = {"ipywidgets": "widgets", "anywidget": "widgets", "traitlets": "widgets"}
NOTEBOOK_LIBRARIES = {"IPython": "project"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def exists(name: str) -> bool:
    """Whether ``name`` is a module or package of this tree (read from disk, not imported)."""
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def layer_of(name: str) -> int:
    parts = name.split(".")
    assert parts[0] == ROOT, name
    return RANK[parts[1] if len(parts) > 1 else ""]


def imports_of(path: Path) -> list[tuple[int, str]]:
    """``(line, absolute module name)`` of every import in the file, at any depth."""
    return imports_in(path.read_text(), module_name(path), path.name == "__init__.py")


def imports_in(source: str, this: str, is_package: bool) -> list[tuple[int, str]]:
    """The imports of ``source`` as if it were the module ``this``."""
    package = this if is_package else this.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            # `from pkg import sub` imports the module pkg.sub when there is one.
            subs = [f"{target}.{a.name}" for a in node.names]
            found = [s for s in subs if s.startswith(ROOT) and exists(s)]
            out += [(node.lineno, s) for s in found] or [(node.lineno, target)]
    return out


def violations(source: str, this: str, is_package: bool = False) -> list[str]:
    """What is wrong with the imports of ``source`` as the module ``this``."""
    rank = layer_of(this)
    wrong = []
    for line, target in imports_in(source, this, is_package):
        top = target.split(".")[0]
        if top == ROOT:
            if not exists(target):
                wrong.append(f"line {line}: {target} does not exist")
            elif layer_of(target) > rank:
                wrong.append(
                    f"line {line}: {NAME[rank]} module imports {target} "
                    f"({NAME[layer_of(target)]}, a layer above)"
                )
        for libraries in (UI_LIBRARIES, NOTEBOOK_LIBRARIES):
            if top in libraries and rank < RANK[libraries[top]]:
                wrong.append(f"line {line}: {NAME[rank]} module imports {top}")
    return wrong


def test_every_module_is_in_a_layer():
    for path in modules():
        layer_of(module_name(path))  # raises KeyError for a module outside LAYERS


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down_only(path: Path):
    wrong = violations(path.read_text(), module_name(path), path.name == "__init__.py")
    assert not wrong, f"{module_name(path)}:\n" + "\n".join(wrong)


def test_the_walker_catches_upward_missing_and_ui_imports_at_any_depth():
    engine = "jupyter_imgclass.publish.serve"
    assert (
        violations("from ..errors import BundleError\nfrom .bundle import load_model", engine) == []
    )
    upward = "def serve_project(path):\n    from ..project import Project\n"
    assert violations(upward, engine) == [
        "line 2: engine module imports jupyter_imgclass.project (project, a layer above)"
    ]
    assert violations("import jupyter_imgclass.widgets.studio", engine)[0].endswith(
        "a layer above)"
    )
    assert violations("from .. import cli", "jupyter_imgclass.data.store") != []
    assert violations("from .gone import x", engine) == [
        "line 1: jupyter_imgclass.publish.gone does not exist"
    ]
    assert violations("import ipywidgets", "jupyter_imgclass.project.project") == [
        "line 1: project module imports ipywidgets"
    ]
    assert violations("from IPython.display import display", "jupyter_imgclass.predict") != []
    assert violations("from ..project import views", "jupyter_imgclass.widgets.labeller") == []
