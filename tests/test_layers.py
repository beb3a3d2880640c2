"""The package layout draws the architecture: every import points down a layer, or sideways.

Walks every module's imports with ``ast`` -- function-level ones included -- resolves
relative imports, and fails on an import of a higher layer, of a module that does not
exist, or of a UI library below the widgets. An import is the only way up: a module below
the widgets that names a widget class, or a registry that builds views from a string
(``make("labeller", project)``), would be an arrow this walk cannot see, so both fail too.
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
    ("platform", ["platform"]),  # the process's JAX set-up and the CPU kernels
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
    assert violations("from ..project import Iteration", "jupyter_imgclass.widgets.labeller") == []
    # Only the package root, above the widgets, builds a widget from a project object.
    assert violations("from .. import labeller", "jupyter_imgclass.widgets.studio") == [
        "line 1: widgets module imports jupyter_imgclass (cli, a layer above)"
    ]


# ---------------------------------------------------------------------- no string registry
# What a registry of views looks like: the widgets register a class under a name, the
# package root says how to load them, the project layer builds one by its name.
REGISTRY_VERBS = {"provide", "set_loader", "register_view"}
WIDGETS_RANK = RANK["widgets"]


def widget_classes() -> set[str]:
    """The names of the classes the widgets package defines."""
    names = set()
    for path in (PACKAGE / "widgets").rglob("*.py"):
        names |= {
            n.name for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.ClassDef)
        }
    return names


def _called(node: ast.Call) -> str | None:
    f = node.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None


def registry_uses(source: str) -> list[str]:
    """Where ``source`` defines or calls a view registry, or builds a view from a string."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.name in REGISTRY_VERBS
        ):
            found.append(f"line {node.lineno}: defines {node.name}()")
        elif isinstance(node, ast.Call):
            verb = _called(node)
            by_name = (
                node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            )
            if verb in REGISTRY_VERBS or (verb == "make" and by_name):
                found.append(f"line {node.lineno}: calls {verb}()")
    return found


def widget_names_in(source: str, widgets: set[str]) -> list[str]:
    """Where ``source`` names a widget class: a name, an attribute, an imported name or a
    string that is exactly one (prose in docstrings may mention them)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Name):
            name = node.id
        elif isinstance(node, ast.Attribute):
            name = node.attr
        elif isinstance(node, ast.alias):
            name = node.name.rpartition(".")[2]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            name = node.value
        else:
            continue
        if name in widgets:
            found.append(f"line {getattr(node, 'lineno', '?')}: {name}")
    return found


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_builds_a_view_from_a_string(path: Path):
    found = registry_uses(path.read_text())
    assert not found, f"{module_name(path)}:\n" + "\n".join(found)


def modules_below_the_widgets() -> list[Path]:
    # A module outside LAYERS is left to test_every_module_is_in_a_layer, which fails on it.
    def rank(path: Path) -> int:
        parts = module_name(path).split(".")
        return RANK.get(parts[1] if len(parts) > 1 else "", WIDGETS_RANK)

    return [p for p in modules() if rank(p) < WIDGETS_RANK]


@pytest.mark.parametrize(
    "path", modules_below_the_widgets(), ids=lambda p: str(p.relative_to(PACKAGE))
)
def test_no_module_below_the_widgets_names_a_widget(path: Path):
    found = widget_names_in(path.read_text(), widget_classes())
    assert not found, f"{module_name(path)} names a widget class:\n" + "\n".join(found)


def test_the_registry_checks_catch_what_the_import_walk_cannot_see():
    widgets = widget_classes()
    assert {"LabellerWidget", "TesterWidget", "EvaluationWidget", "TrainingMonitor"} <= widgets
    # The view methods the project layer used to have, and the registry behind them.
    method = (
        "def labeller(self, filter='untagged'):\n"
        "    from . import views\n"
        "    return views.make('labeller', self, filter=filter)\n"
    )
    assert violations(method, "jupyter_imgclass.project.project") == []  # invisible to the walk
    assert registry_uses(method) == ["line 3: calls make()"]
    assert registry_uses("_views.provide('check', DataCheckWidget)") == ["line 1: calls provide()"]
    assert registry_uses("_views.set_loader(_load_views)") == ["line 1: calls set_loader()"]
    assert registry_uses("def provide(name, factory):\n    pass") == ["line 1: defines provide()"]
    assert registry_uses("make(x, y)\nic.labeller(project)") == []
    by_attribute = "import importlib\nw = getattr(importlib.import_module(m), 'LabellerWidget')"
    assert violations(by_attribute, "jupyter_imgclass.project.project") == []
    assert widget_names_in(by_attribute, widgets) == ["line 2: LabellerWidget"]
    assert widget_names_in('"""Shown by the LabellerWidget."""', widgets) == []
