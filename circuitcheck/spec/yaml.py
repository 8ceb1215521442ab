"""YAML with line numbers: spec files read with the safe loader, every mapping and list knowing its lines.

:func:`parse_yaml` returns plain data whose mappings are :class:`Map` (with
the 1-based lines of themselves, their keys and their values) and whose
sequences are :class:`List` (with each item's line), so that every problem
found later can be reported as ``file:line: key ...``. Only plain data is
built (``yaml.SafeLoader``): a spec file can never construct Python objects.

Hostile files are refused before they cost time or memory: aliases may add at
most :data:`MAX_ALIAS_EXPANSION` values beyond those written in the file (an
"alias bomb" of a few hundred bytes would otherwise expand to millions),
recursive aliases and nesting deeper than :data:`MAX_DEPTH` are errors, and
:data:`MAX_SPEC_BYTES` bounds the file (checked by :func:`parse_yaml` and by
the loader before reading).
"""

from __future__ import annotations

from typing import Any

import yaml

from ..errors import CircuitCheckError

MAX_SPEC_BYTES = 8 * 1024 * 1024
"""The largest spec file read (8 MiB: tens of thousands of claims)."""
MAX_ALIAS_EXPANSION = 10_000
"""How many values aliases (``*name``) may add beyond those written in the file."""
MAX_DEPTH = 100
"""How deeply lists and mappings may nest."""


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
    """Parse ``text`` (a file shown as ``display`` in messages); :class:`SpecError` on invalid YAML or duplicate keys.

    Also refused, with the line: text over :data:`MAX_SPEC_BYTES`, aliases
    expanding to more than :data:`MAX_ALIAS_EXPANSION` extra values, recursive
    aliases and nesting deeper than :data:`MAX_DEPTH`.
    """
    check_size(len(text.encode("utf-8", "surrogatepass")), display)
    try:
        loader = _Loader(text)  # reads the stream: an unprintable character is an error here already
    except yaml.reader.ReaderError as error:
        line = text.count("\n", 0, error.position) + 1
        raise SpecError([f"{display}:{line}: invalid YAML: the character {chr(error.character)!r} (#x{error.character:04x}) "
                         "is not allowed in a YAML file"]) from None
    try:
        node = loader.get_single_node()
        if node is not None:
            _check_expansion(node, display)
        data = loader.construct_document(node) if node is not None else None
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
    except RecursionError:
        raise SpecError([f"{display}:1: lists and mappings are nested too deeply: at most {MAX_DEPTH} levels"]) from None
    finally:
        loader.dispose()
    if loader.problems:
        raise SpecError([f"{display}:{line}: {text}" for line, text in loader.problems])
    return data


def check_size(n_bytes: int, display: str) -> None:
    """:class:`SpecError` when a spec of ``n_bytes`` is over :data:`MAX_SPEC_BYTES`."""
    if n_bytes > MAX_SPEC_BYTES:
        raise SpecError([f"{display}:1: the spec is {n_bytes:,} bytes: spec files are at most {MAX_SPEC_BYTES:,} bytes "
                         "(split it into several *.circuit.yaml files)"])


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [child for pair in node.value for child in pair]
    return []


def _check_expansion(root: yaml.Node, display: str) -> None:
    """Refuse recursive aliases, nesting deeper than MAX_DEPTH, and aliases adding over MAX_ALIAS_EXPANSION values.

    The composed graph shares one node per anchor, so its expanded size (each
    alias counted as a full copy) is found in one pass over distinct nodes.
    """
    cap = MAX_ALIAS_EXPANSION * 1000  # sizes beyond this all mean "too big"; keeps the numbers small
    sizes: dict[int, int] = {}
    uses: dict[int, int] = {}
    open_nodes: set[int] = set()
    order: list[yaml.Node] = []
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 1, False)]
    while stack:
        node, depth, leaving = stack.pop()
        key = id(node)
        if leaving:
            open_nodes.discard(key)
            sizes[key] = min(cap, 1 + sum(sizes[id(child)] for child in _children(node)))
            order.append(node)
            continue
        uses[key] = uses.get(key, 0) + 1
        if key in open_nodes:
            raise SpecError([f"{display}:{node.start_mark.line + 1}: a recursive alias (a value that contains itself): "
                             "aliases may only repeat a finished value"])
        if key in sizes:
            continue
        if depth > MAX_DEPTH:
            raise SpecError([f"{display}:{node.start_mark.line + 1}: lists and mappings are nested too deeply: at most {MAX_DEPTH} levels"])
        open_nodes.add(key)
        stack.append((node, depth, True))
        stack.extend((child, depth + 1, False) for child in reversed(_children(node)))
    extra = sizes[id(root)] - len(sizes)
    if extra > MAX_ALIAS_EXPANSION:
        worst = max((n for n in order if uses[id(n)] > 1), key=lambda n: sizes[id(n)] * (uses[id(n)] - 1), default=root)
        shown_extra = f"{extra:,}" if sizes[id(root)] < cap else f"more than {cap:,}"
        raise SpecError([f"{display}:{worst.start_mark.line + 1}: aliases expand the spec by {shown_extra} values "
                         f"(this anchored value is repeated {uses[id(worst)]} times): at most {MAX_ALIAS_EXPANSION:,} "
                         "values may come from aliases"])
