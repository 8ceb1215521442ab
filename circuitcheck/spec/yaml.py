"""YAML with line numbers: spec files read with the safe loader, every mapping and list knowing its lines.

:func:`parse_yaml` returns plain data whose mappings are :class:`Map` (with
the 1-based lines of themselves, their keys and their values) and whose
sequences are :class:`List` (with each item's line), so that every problem
found later can be reported as ``file:line: key ...``. Only plain data is
built (``yaml.SafeLoader``): a spec file can never construct Python objects.
"""

from __future__ import annotations

from typing import Any

import yaml

from ..errors import CircuitCheckError


class SpecError(CircuitCheckError):
    """A spec file that does not parse or validate; lists every problem with file, line and key."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))

    def __str__(self) -> str:
        return "\n".join(self.problems)


class Map(dict):
    """A YAML mapping that remembers the lines of itself, its keys and its values (1-based)."""

    line: int = 1

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.key_lines: dict[Any, int] = {}
        self.value_lines: dict[Any, int] = {}


class List(list):
    """A YAML sequence that remembers its line and each item's line (1-based)."""

    line: int = 1

    def __init__(self, *args):
        super().__init__(*args)
        self.lines: list[int] = []


def type_name(value: Any) -> str:
    """How an error message names the type of a YAML value ("a string", "a list", ...)."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


class _Loader(yaml.SafeLoader):
    """SafeLoader (plain data only) whose mappings and sequences record line numbers."""

    def __init__(self, stream):
        super().__init__(stream)
        self.problems: list[tuple[int, str]] = []


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> Map:
    loader.flatten_mapping(node)
    result = Map()
    result.line = node.start_mark.line + 1
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        key_line = key_node.start_mark.line + 1
        try:
            hash(key)
        except TypeError:
            loader.problems.append((key_line, f"a mapping key must be a plain name, got a {type_name(key)}"))
            continue
        if key in result:
            loader.problems.append((key_line, f"duplicate key {key!r} (first given on line {result.key_lines[key]}): give each key once"))
            continue
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = key_line
        result.value_lines[key] = value_node.start_mark.line + 1
    return result


def _construct_seq(loader: _Loader, node: yaml.SequenceNode) -> List:
    result = List(loader.construct_object(child, deep=True) for child in node.value)
    result.line = node.start_mark.line + 1
    result.lines = [child.start_mark.line + 1 for child in node.value]
    return result


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_map)
_Loader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)


def parse_yaml(text: str, display: str) -> Any:
    """Parse ``text`` (a file shown as ``display`` in messages); :class:`SpecError` on invalid YAML or duplicate keys."""
    loader = _Loader(text)
    try:
        data = loader.get_single_data()
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark is not None else 1
        column = f" (column {mark.column + 1})" if mark is not None else ""
        what = error.problem or error.context or "cannot parse"
        if error.context and error.problem:
            where = f" on line {error.context_mark.line + 1}" if error.context_mark is not None else ""
            what += f" ({error.context}{where})"
        raise SpecError([f"{display}:{line}: invalid YAML{column}: {what}"]) from None
    except yaml.YAMLError as error:
        raise SpecError([f"{display}:1: invalid YAML: {error}"]) from None
    finally:
        loader.dispose()
    if loader.problems:
        raise SpecError([f"{display}:{line}: {text}" for line, text in loader.problems])
    return data
