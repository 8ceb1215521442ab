"""The package's layout: old import paths keep working, and no module imports one that imports it."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import circuitcheck

PACKAGE = Path(circuitcheck.__file__).parent


@pytest.mark.parametrize("old", sorted(circuitcheck._MOVED))
def test_an_old_import_path_is_the_module_at_its_new_place(old):
    before = importlib.import_module(f"circuitcheck.{old}")
    after = importlib.import_module(f"circuitcheck.{circuitcheck._MOVED[old]}")
    assert before is after
    assert before.__spec__.name == after.__name__


def _imports(path: Path) -> set[str]:
    """The circuitcheck modules a module imports (anywhere in it, lazy imports included)."""
    name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    if path.name == "__init__.py":
        name = package
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = importlib.util.resolve_name("." * node.level + (node.module or ""), package) if node.level else node.module
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if _module_path(candidate) else base)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {module for module in found if module.startswith("circuitcheck") and module != name and _module_path(module)}


def _module_path(module: str) -> Path | None:
    parts = module.split(".")[1:]
    for candidate in (PACKAGE.joinpath(*parts).with_suffix(".py"), PACKAGE.joinpath(*parts, "__init__.py")):
        if candidate.exists():
            return candidate
    return None


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Groups of modules that reach each other through imports (strongly connected, more than one module)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in graph.get(module, ()):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def test_no_modules_import_each_other_directly_or_through_others():
    modules = {path: ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__") for path in PACKAGE.rglob("*.py")}
    graph = {name: _imports(path) for path, name in modules.items()}
    assert _circles(graph) == [], f"modules that import each other: {_circles(graph)}"


def test_the_circle_finder_sees_a_circle_through_three_modules():
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


#: Layers, lowest first: a module imports only modules of its own layer or below
#: (``circuitcheck/__init__.py`` and ``__main__.py`` are entry points above them all).
LAYERS = ("errors hookspecs tables", "model", "engine", "claims", "zoo", "spec", "report", "pytest_plugin")


def _layer(module: str) -> int | None:
    part = module.split(".")[1] if "." in module else ""
    for rank, names in enumerate(LAYERS):
        if part in names.split():
            return rank
    return None


def test_modules_import_only_their_own_layer_or_lower_ones():
    upward = []
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        rank = _layer(name)
        if rank is None:
            continue
        upward += [f"{name} -> {target}" for target in sorted(_imports(path)) if (_layer(target) or 0) > rank]
    assert upward == []


def test_every_module_belongs_to_a_layer():
    modules = {".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__") for path in PACKAGE.rglob("*.py")}
    assert sorted(m for m in modules if _layer(m) is None) == ["circuitcheck", "circuitcheck.__main__"]
