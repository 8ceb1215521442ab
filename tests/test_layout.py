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


def test_no_two_modules_import_each_other():
    modules = {path: ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__") for path in PACKAGE.rglob("*.py")}
    graph = {name: _imports(path) for path, name in modules.items()}
    circles = sorted({tuple(sorted((a, b))) for a, targets in graph.items() for b in targets if a in graph.get(b, ())})
    assert circles == [], f"modules that import each other: {circles}"
