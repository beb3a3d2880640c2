"""No import circle inside the package: module A imports B (at any depth, type-only imports
included) and B imports A back is refused, so a room's dependencies read one way."""

from __future__ import annotations

from pathlib import Path

from test_layers import PACKAGE, exists, imports_in, imports_of, module_name, modules


def import_graph(paths: list[Path]) -> dict[str, set[str]]:
    """``{module: modules of this package it imports}``; an import of a package counts as
    one of its ``__init__`` (edges from a package to its own modules are its re-exports)."""
    graph: dict[str, set[str]] = {}
    for path in paths:
        this = module_name(path)
        targets = set()
        for _line, target in imports_of(path):
            while target.startswith("jupyter_imgclass") and not exists(target):
                target = target.rpartition(".")[0]  # `from mod import name`
            if target.startswith("jupyter_imgclass") and target != this:
                targets.add(target)
        if path.name == "__init__.py":
            targets = {t for t in targets if not t.startswith(this + ".")}
        graph[this] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def test_no_module_imports_one_that_imports_it_back():
    found = cycles(import_graph(modules()))
    assert not found, "import circles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_the_cycle_finder_sees_a_circle_hidden_in_a_function_or_under_type_checking():
    sources = {  # the shape of the circle the project layer had (Project <-> its runs)
        "jupyter_imgclass.project.a": "def train():\n    from .b import run\n",
        "jupyter_imgclass.project.b": (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import Project\n"
        ),
        "jupyter_imgclass.project.c": "from .a import train\n",
    }
    graph = {m: {t for _, t in imports_in(src, m, False)} for m, src in sources.items()}
    assert cycles(graph) == [["jupyter_imgclass.project.a", "jupyter_imgclass.project.b"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    assert PACKAGE.is_dir()
