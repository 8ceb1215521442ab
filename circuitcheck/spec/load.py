"""Executable spec files: ``*.circuit.yaml`` claims that pytest runs without any Python.

A spec names a model, a task, named circuits and a list of claims; pytest
collects one item per claim (per checkpoint when the spec lists checkpoints)
and runs each through the same assertion as a Python test, so failures read
as the same lab notes and land in the same report. The full schema is in
``circuitcheck/spec_schema.md``; in short::

    model: zoo:induction-2l              # a model spec string (required)
    checkpoints: [step0, step3000]        # optional: a list, or `all` (zoo models)
    task: {name: induction, n_prompts: 32, seq_len: 20}   # or `task: induction`,
                                          # or {clean: [...], corrupt: [...], answers: [...], wrong_answers: [...]}
    circuits:                             # optional: name -> component string (or list)
      induction: L0H0 L0H2 L1H0 L1H2 L1H3
    claims:                               # required: a list
      - kind: induction_head              # previous_token_head, duplicate_token_head, induction_head, bos_head
        layer: 1
        head: 0
        min_score: 0.8                    # or max_score: for an "is not" claim
      - kind: necessary                   # necessary, sufficient, minimal: circuit + thresholds
        circuit: induction                # a name from `circuits`, or components: "L0H0 L1H0"
        min_drop: 0.7
      - kind: path
        sender: L0H0
        receiver: L1H0.k
        min_effect: 0.1
      - id: a documented false claim      # every claim: optional id, xfail, tolerance
        kind: induction_head
        layer: 0
        head: 1
        min_score: 0.5
        xfail: "L0H1 has no previous-token head to compose with"

Files are read with YAML's safe loader (no Python objects), keeping line
numbers: every problem is reported as ``file:line: key what-is-wrong: what
is allowed``, all problems of a file at once, as a pytest collection error.

Public: :func:`load_spec` (parse and validate a file, no pytest needed),
:class:`Spec`, :class:`Claim`, :class:`SpecError`, the pytest nodes
:class:`SpecFile` / :class:`SpecItem`, :func:`new_spec_text` and
:func:`write_new_spec` (``python -m circuitcheck spec new``).

Import cost: PyYAML and the component parser only; torch loads when a claim runs.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from ..errors import CircuitAssertionError, CircuitCheckError

SUFFIX = ".circuit.yaml"

__all__ = [
    "CLAIM_KINDS",
    "Claim",
    "Spec",
    "SpecError",
    "SpecFile",
    "SpecItem",
    "TaskSpec",
    "load_spec",
    "new_spec_text",
    "write_new_spec",
]


class SpecError(CircuitCheckError):
    """A spec file that does not parse or validate; lists every problem with file, line and key."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))

    def __str__(self) -> str:
        return "\n".join(self.problems)


# YAML with line numbers ----------------------------------------------------------------------


class _Map(dict):
    """A YAML mapping that remembers the lines of itself, its keys and its values (1-based)."""

    line: int = 1

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.key_lines: dict[Any, int] = {}
        self.value_lines: dict[Any, int] = {}


class _List(list):
    """A YAML sequence that remembers its line and each item's line (1-based)."""

    line: int = 1

    def __init__(self, *args):
        super().__init__(*args)
        self.lines: list[int] = []


class _Loader(yaml.SafeLoader):
    """SafeLoader (plain data only) whose mappings and sequences record line numbers."""

    def __init__(self, stream):
        super().__init__(stream)
        self.problems: list[tuple[int, str]] = []


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> _Map:
    loader.flatten_mapping(node)
    result = _Map()
    result.line = node.start_mark.line + 1
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        key_line = key_node.start_mark.line + 1
        try:
            hash(key)
        except TypeError:
            loader.problems.append((key_line, f"a mapping key must be a plain name, got a {_type_name(key)}"))
            continue
        if key in result:
            loader.problems.append((key_line, f"duplicate key {key!r} (first given on line {result.key_lines[key]}): give each key once"))
            continue
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = key_line
        result.value_lines[key] = value_node.start_mark.line + 1
    return result


def _construct_seq(loader: _Loader, node: yaml.SequenceNode) -> _List:
    result = _List(loader.construct_object(child, deep=True) for child in node.value)
    result.line = node.start_mark.line + 1
    result.lines = [child.start_mark.line + 1 for child in node.value]
    return result


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_map)
_Loader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)


def _parse_yaml(text: str, display: str) -> Any:
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


# Validation helpers ------------------------------------------------------------------------------


def _type_name(value: Any) -> str:
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


class _Bad(Exception):
    """A value of the wrong type or range; the message says what is allowed."""


def _shown(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _integer(value, minimum: int | None = None):
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Bad(f"must be an integer, got {_shown(value)} ({_type_name(value)})")
    if minimum is not None and value < minimum:
        raise _Bad(f"must be an integer >= {minimum}, got {value}")
    return value


def _number(value, low: float | None = None, high: float | None = None, open_ends: bool = False):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise _Bad(f"must be a number, got {_shown(value)} ({_type_name(value)})")
    value = float(value)
    if open_ends:
        if not (low < value < high):
            raise _Bad(f"must be a number strictly between {low:g} and {high:g}, got {value:g}")
    elif (low is not None and value < low) or (high is not None and value > high):
        if low is not None and high is not None:
            rng = f"between {low:g} and {high:g}"
        else:
            rng = f">= {low:g}" if low is not None else f"<= {high:g}"
        raise _Bad(f"must be a number {rng}, got {value:g}")
    return value


def _string(value):
    if not isinstance(value, str) or not value.strip():
        raise _Bad(f"must be a non-empty string, got {_shown(value)} ({_type_name(value)})")
    return value.strip()


def _boolean(value):
    if not isinstance(value, bool):
        raise _Bad(f"must be true or false, got {_shown(value)} ({_type_name(value)})")
    return value


def _strings(value):
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise _Bad(f"must be a non-empty list of strings, got {_shown(value)} ({_type_name(value)})")
    return list(value)


def _choice(*options: str):
    def check(value):
        if value not in options:
            raise _Bad(f"{_shown(value)} is not valid: valid values are {', '.join(options)}")
        return value

    return check


def _ablation(value):
    text = _string(value)
    if text in ("resample", "mean", "zero") or re.fullmatch(r"noise\(\s*[0-9.eE+-]+\s*\)", text):
        try:
            if text.startswith("noise"):
                std = float(text[text.index("(") + 1 : -1])
                if not std > 0:
                    raise ValueError
        except ValueError:
            raise _Bad(f"{text!r} is not valid: noise(STD) takes a positive number") from None
        return text
    from ..engine import ablation  # plugin-provided ablations (imports torch)

    try:
        ablation.parse(text)
    except CircuitCheckError as error:
        raise _Bad(str(error)) from None
    return text


def _tolerance(value):
    if isinstance(value, dict):
        unknown = [k for k in value if k not in ("abs", "rel")]
        if unknown or not value:
            raise _Bad(f"must be a number or a mapping with abs and/or rel, got keys {', '.join(map(str, value)) or '(none)'}")
        return {k: _number(v, low=0.0) for k, v in value.items()}
    try:
        return _number(value, low=0.0)
    except _Bad:
        raise _Bad(f"must be a number >= 0 or a mapping {{abs: NUMBER, rel: NUMBER}}, got {_shown(value)} ({_type_name(value)})") from None


def _suggest(word: Any, options) -> str:
    close = difflib.get_close_matches(str(word), list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


# The schema ------------------------------------------------------------------------------------

_PROBABILITY = lambda v: _number(v, 0.0, 1.0, open_ends=True)  # noqa: E731
_SCORE = lambda v: _number(v, 0.0, 1.0)  # noqa: E731
_SEED = lambda v: _integer(v, minimum=0)  # noqa: E731
_POSITIVE = lambda v: _integer(v, minimum=1)  # noqa: E731

def _test_id(value):
    text = _string(value)
    if "::" in text or "\n" in text:
        raise _Bad(f"{text!r} is not valid: an id is one line without '::' (pytest separates node ids with it)")
    return text


#: Keys every claim may have.
COMMON_KEYS: dict[str, Callable] = {"kind": _string, "id": _test_id, "xfail": _string, "tolerance": _tolerance}

HEAD_KINDS = ("previous_token_head", "duplicate_token_head", "induction_head", "bos_head")
CAUSAL_KINDS = ("necessary", "sufficient", "minimal")

_HEAD_KEYS = {
    "layer": _integer,
    "head": _integer,
    "min_score": _SCORE,
    "max_score": _SCORE,
    "n_prompts": _POSITIVE,
    "half_len": _POSITIVE,
    "prompts": _strings,
    "exclude_bos": _boolean,
    "seed": _SEED,
    "confidence": _PROBABILITY,
}
_CAUSAL_COMMON = {"circuit": None, "ablation": _ablation, "confidence": _PROBABILITY, "seed": _SEED}

#: kind -> (required keys, allowed keys with their validators; None: resolved against the spec's circuits)
CLAIM_KINDS: dict[str, tuple[tuple[str, ...], dict[str, Callable | None]]] = {
    **{kind: (("layer", "head"), _HEAD_KEYS) for kind in HEAD_KINDS},
    "necessary": (("circuit",), {**_CAUSAL_COMMON, "min_drop": _number, "max_drop": _number}),
    "sufficient": (("circuit",), {**_CAUSAL_COMMON, "min_recovery": _number, "max_recovery": _number}),
    "minimal": (("circuit",), {**_CAUSAL_COMMON, "min_contribution": _number}),
    "path": (
        ("sender", "receiver"),
        {"sender": None, "receiver": None, "min_effect": _number, "max_effect": _number,
         "direction": _choice("noise", "denoise"), "confidence": _PROBABILITY, "seed": _SEED},
    ),
}

#: kind -> (min key, max key) of its thresholds
_THRESHOLDS = {
    **{kind: ("min_score", "max_score") for kind in HEAD_KINDS},
    "necessary": ("min_drop", "max_drop"),
    "sufficient": ("min_recovery", "max_recovery"),
    "minimal": ("min_contribution", None),
    "path": ("min_effect", "max_effect"),
}

TOP_KEYS = ("model", "description", "checkpoints", "task", "circuits", "claims")
BUILTIN_TASKS = {"induction": {"n_prompts": _POSITIVE, "seq_len": _POSITIVE, "seed": _SEED}}
PROMPT_TASK_KEYS = ("clean", "corrupt", "answers", "wrong_answers")


@dataclass
class TaskSpec:
    """The spec's task: a built-in (``name`` + ``params``) or prompts (``prompts`` for ``tasks.from_prompts``)."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    prompts: dict[str, list[str]] | None = None
    line: int = 1

    @property
    def key(self) -> tuple:
        prompts = tuple((k, tuple(v)) for k, v in sorted((self.prompts or {}).items()))
        return (self.name, tuple(sorted(self.params.items())), prompts)

    def build(self, model, default_seed: int):
        # `from .tasks import ...` (not `from . import tasks`): always the module in sys.modules,
        # the one the assertions check Task instances against
        from ..model.tasks import from_prompts, induction

        if self.prompts is not None:
            return from_prompts(model, name=self.name, **self.prompts)
        params = dict(self.params)
        params.setdefault("seed", default_seed)
        return {"induction": induction}[self.name](model, **params)


@dataclass
class Claim:
    """One claim of a spec: its kind, parameters (validated), and where it was written."""

    index: int
    kind: str
    id: str
    line: int
    params: dict[str, Any]
    circuit: Any = None  # Circuit for causal claims; the senders' Circuit for path
    receiver: str | None = None
    xfail: str | None = None
    tolerance: float | dict | None = None

    @property
    def needs_task(self) -> bool:
        return self.kind not in HEAD_KINDS

    @property
    def where(self) -> str:
        return f"claims[{self.index}]"

    def run(self, model, task=None, seed: int | None = None):
        """Run the claim's assertion on ``model`` (raises :class:`CircuitAssertionError` if it fails)."""
        __tracebackhide__ = True
        # `from .x.y import name`: the modules in sys.modules, like the tasks (see TaskSpec.build)
        from ..claims.causal import assert_minimal, assert_necessary, assert_path, assert_sufficient
        from ..claims.heads import assert_head

        params = dict(self.params)
        if seed is not None and "seed" not in params:
            params["seed"] = seed
        if self.tolerance is not None:
            params["tolerance"] = self.tolerance  # for --circuitcheck-baseline
        if self.kind in HEAD_KINDS:
            layer, head = params.pop("layer"), params.pop("head")
            return assert_head(layer, head, self.kind[: -len("_head")], model=model, **params)
        if self.kind == "path":
            return assert_path(list(self.circuit.components), self.receiver, model=model, task=task, **params)
        assertion = {"necessary": assert_necessary, "sufficient": assert_sufficient, "minimal": assert_minimal}[self.kind]
        return assertion(self.circuit, model=model, task=task, **params)


@dataclass
class Spec:
    """A validated spec file."""

    path: Path
    display: str
    model: str
    model_line: int
    checkpoints: list[str] | None
    task: TaskSpec | None
    circuits: dict[str, Any]
    claims: list[Claim]
    description: str | None = None

    def model_specs(self) -> list[tuple[str, str | None]]:
        """``(model spec, checkpoint)`` per run: one per checkpoint, else the model alone."""
        if not self.checkpoints:
            return [(self.model, None)]
        return [(f"{self.model}@{checkpoint}", checkpoint) for checkpoint in self.checkpoints]


class _Validator:
    def __init__(self, display: str):
        self.display = display
        self._problems: list[tuple[int, int, str]] = []

    def error(self, line: int, where: str, text: str) -> None:
        self._problems.append((line, len(self._problems), f"{self.display}:{line}: {where}{' ' if where else ''}{text}"))

    @property
    def problems(self) -> list[str]:
        """Every problem, in file order."""
        return [text for _, _, text in sorted(self._problems)]

    def check(self, mapping: _Map, key: str, where: str, validate: Callable):
        """``validate(mapping[key])``, recording a problem (and returning None) when it is bad."""
        try:
            return validate(mapping[key])
        except _Bad as bad:
            self.error(mapping.value_lines.get(key, mapping.line), f"{where}.{key}" if where else key, str(bad))
            return None

    def keys(self, mapping: _Map, where: str, allowed, required=(), what: str = "") -> bool:
        """Report unknown and missing keys; True when all required keys are there."""
        what = what or where
        for key in mapping:
            if key not in allowed:
                self.error(
                    mapping.key_lines.get(key, mapping.line),
                    f"{where}:" if where else "",
                    f"unknown key {key!r}{_suggest(key, allowed)}: {what} takes {', '.join(allowed)}",
                )
        missing = [key for key in required if key not in mapping]
        for key in missing:
            self.error(mapping.line, f"{where}:" if where else "", f"missing required key {key!r}: {what} needs {', '.join(required)}")
        return not missing


_ZOO = re.compile(r"^zoo:(?P<name>[^@]+)(?:@(?P<checkpoint>.+))?$")


class _ZooModel:
    """Just enough of a model (its config) to validate components at collection, without loading it."""

    def __init__(self, spec: str, config: dict):
        from types import SimpleNamespace

        self.circuitcheck_spec = spec
        self.cfg = SimpleNamespace(**config)


def load_spec(path: str | os.PathLike, text: str | None = None, display: str | None = None) -> Spec:
    """Parse and validate a spec file; raises :class:`SpecError` listing every problem (file:line: key ...).

    ``text`` replaces reading the file; ``display`` is how messages name it (default: the path).
    """
    path = Path(path)
    display = display or str(path)
    if text is None:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise SpecError([f"{display}:1: cannot read the spec: {error.strerror or error}"]) from None
    data = _parse_yaml(text, display)
    v = _Validator(display)
    if data is None:
        raise SpecError([f"{display}:1: the spec is empty: it needs at least `model:` and `claims:` (see circuitcheck/spec_schema.md)"])
    if not isinstance(data, _Map):
        raise SpecError([f"{display}:1: a spec is a mapping with keys {', '.join(TOP_KEYS)}, got {_type_name(data)}"])
    v.keys(data, "", TOP_KEYS, required=("model", "claims"), what="a spec")

    # model and checkpoints
    model = v.check(data, "model", "", _string) if "model" in data else None
    model_line = data.value_lines.get("model", data.line)
    zoo_name = zoo_model = None
    if model is not None:
        match = _ZOO.match(model)
        if match:
            from .. import zoo

            if match["name"] not in zoo.names():
                v.error(model_line, "model", f"{model!r}: no zoo model named {match['name']!r}: zoo models are {', '.join(zoo.names())}")
            else:
                zoo_name = match["name"]
                zoo_model = _ZooModel(model, zoo.config(zoo_name))
                if match["checkpoint"] and match["checkpoint"] not in zoo.checkpoints(zoo_name):
                    v.error(model_line, "model", f"{model!r}: zoo model {zoo_name!r} has no checkpoint {match['checkpoint']!r}: "
                                                 f"its checkpoints are {', '.join(zoo.checkpoints(zoo_name))}")
    checkpoints = _checkpoints(data, v, model, zoo_name) if "checkpoints" in data else None
    if checkpoints:
        zoo_model = _ZooModel(f"{model}@{checkpoints[0]}", zoo_model.cfg.__dict__) if zoo_model is not None else None
    description = v.check(data, "description", "", _string) if "description" in data else None

    task = _task(data, v) if "task" in data else None

    from ..model.circuit import Circuit
    from ..errors import ComponentError

    circuits: dict[str, Circuit | None] = {}
    if "circuits" in data:
        raw = data["circuits"]
        if not isinstance(raw, _Map):
            v.error(data.value_lines["circuits"], "circuits", f"must be a mapping of name: components, got {_type_name(raw)}")
        else:
            for name, text_ in raw.items():
                line = raw.value_lines[name]
                if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][\w.-]*", name):
                    v.error(raw.key_lines[name], "circuits",
                            f"circuit name {name!r} is not valid: use letters, digits, _ . - (starting with a letter)")
                    continue
                try:
                    circuit = Circuit.parse(_components_text(text_), name=name)
                    if not circuit.components and not circuit.edges:
                        raise ComponentError(f"circuit {name!r} is empty: list at least one component")
                    if zoo_model is not None:
                        circuit.validate(zoo_model)
                    circuits[name] = circuit
                except (_Bad, ComponentError) as error:
                    v.error(line, f"circuits.{name}", str(error))
                    circuits[name] = None  # reported once here, not again by each claim naming it

    claims: list[Claim] = []
    if "claims" in data:
        raw_claims = data["claims"]
        if raw_claims is None:
            raw_claims = _List()
        if not isinstance(raw_claims, _List):
            v.error(data.value_lines["claims"], "claims",
                    f"must be a list of claims (each starting with '- kind: ...'), got {_type_name(raw_claims)}")
        else:
            ids: dict[str, int] = {}
            for index, raw in enumerate(raw_claims):
                claim = _claim(raw, index, raw_claims.lines[index], v, circuits, zoo_model, task, "task" in data)
                if claim is None:
                    continue
                if claim.id in ids:
                    if "id" in raw:
                        v.error(raw.value_lines["id"], f"claims[{index}].id",
                                f"{claim.id!r} is already used by claims[{ids[claim.id]}]: ids must be unique")
                        continue
                    n = 2
                    while f"{claim.id} #{n}" in ids:
                        n += 1
                    claim.id = f"{claim.id} #{n}"
                ids[claim.id] = index
                claims.append(claim)
    if v.problems:
        raise SpecError(v.problems)
    valid_circuits = {k: c for k, c in circuits.items() if c is not None}
    return Spec(path, display, model, model_line, checkpoints, task, valid_circuits, claims, description)


def _components_text(value) -> Any:
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, list) and value and all(isinstance(item, str) for item in value):
        return ", ".join(value)
    raise _Bad(f"must be a component string such as 'L0H0 L1H0' (or a list of them), got {_shown(value)} ({_type_name(value)})")


def _checkpoints(data: _Map, v: _Validator, model: str | None, zoo_name: str | None) -> list[str] | None:
    raw, line = data["checkpoints"], data.value_lines["checkpoints"]
    if model is not None and "@" in model:
        v.error(line, "checkpoints",
                f"cannot be combined with a model spec that already names a checkpoint ({model!r}): drop '@...' from model")
        return None
    if raw == "all":
        if zoo_name is None:
            if model is not None and not model.startswith("zoo:"):
                v.error(line, "checkpoints", f"'all' is not available for model {model!r}: only zoo models list their checkpoints; "
                                             "list the checkpoint names instead")
            return None
        from .. import zoo

        return zoo.checkpoints(zoo_name)
    if not isinstance(raw, _List) or not raw or not all(isinstance(c, str) and c.strip() for c in raw):
        v.error(line, "checkpoints",
                f"must be a list of checkpoint names (e.g. [step0, step3000]) or 'all', got {_shown(raw)} ({_type_name(raw)})")
        return None
    names = [c.strip() for c in raw]
    if zoo_name is not None:
        from .. import zoo

        available = zoo.checkpoints(zoo_name)
        for name, item_line in zip(names, raw.lines):
            if name not in available:
                v.error(item_line, "checkpoints", f"{name!r}: zoo model {zoo_name!r} has no such checkpoint{_suggest(name, available)}: "
                                                  f"its checkpoints are {', '.join(available)}")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        v.error(line, "checkpoints", f"lists {', '.join(duplicates)} more than once")
    return names


def _task(data: _Map, v: _Validator) -> TaskSpec | None:
    raw, line = data["task"], data.value_lines["task"]
    builtins = ", ".join(BUILTIN_TASKS)
    if isinstance(raw, str):
        if raw not in BUILTIN_TASKS:
            v.error(line, "task", f"{raw!r} is not a built-in task{_suggest(raw, BUILTIN_TASKS)}: built-in tasks are {builtins}; "
                                  f"or give prompts as a mapping with {', '.join(PROMPT_TASK_KEYS)}")
            return None
        return TaskSpec(raw, line=line)
    if not isinstance(raw, _Map):
        v.error(line, "task", f"must be a built-in task name ({builtins}) or a mapping, got {_shown(raw)} ({_type_name(raw)})")
        return None
    if any(key in raw for key in PROMPT_TASK_KEYS):
        if not v.keys(raw, "task", ("name", *PROMPT_TASK_KEYS), required=PROMPT_TASK_KEYS, what="a prompts task"):
            return None
        name = v.check(raw, "name", "task", _string) if "name" in raw else "prompts"
        prompts = {key: v.check(raw, key, "task", _strings) for key in PROMPT_TASK_KEYS}
        if any(value is None for value in prompts.values()) or name is None:
            return None
        lengths = {key: len(value) for key, value in prompts.items()}
        if len(set(lengths.values())) != 1:
            v.error(raw.line, "task", "clean, corrupt, answers and wrong_answers need one entry per example, got "
                                      + ", ".join(f"{k} {n}" for k, n in lengths.items()))
            return None
        return TaskSpec(name, prompts=prompts, line=raw.line)
    if "name" not in raw:
        v.error(raw.line, "task", f"needs a name (a built-in task: {builtins}) or prompts ({', '.join(PROMPT_TASK_KEYS)})")
        return None
    name = v.check(raw, "name", "task", _string)
    if name is None:
        return None
    if name not in BUILTIN_TASKS:
        v.error(raw.value_lines["name"], "task.name",
                f"{name!r} is not a built-in task{_suggest(name, BUILTIN_TASKS)}: built-in tasks are {builtins}; "
                f"or give prompts with {', '.join(PROMPT_TASK_KEYS)}")
        return None
    allowed = BUILTIN_TASKS[name]
    v.keys(raw, "task", ("name", *allowed), what=f"the {name} task")
    params = {key: v.check(raw, key, "task", allowed[key]) for key in allowed if key in raw}
    if any(value is None for value in params.values()):
        return None
    return TaskSpec(name, params=params, line=raw.line)


def _resolve_circuit(value, circuits: dict, zoo_model, name_ok: bool = True):
    """A Circuit from a circuit name of the spec, a component string, or a list of component strings."""
    from ..model.circuit import Circuit

    if isinstance(value, str) and value.strip() in circuits and name_ok:
        return circuits[value.strip()]  # None: that circuit is invalid (already reported)
    text = _components_text(value)
    try:
        circuit = Circuit.parse(text)
    except CircuitCheckError as error:
        if isinstance(value, str) and re.fullmatch(r"[A-Za-z_][\w.-]*", value.strip()):
            defined = ", ".join(circuits) or "(none: add a top-level `circuits:` mapping)"
            raise _Bad(f"{value.strip()!r} is neither a circuit of this spec{_suggest(value.strip(), circuits)} nor a component string: "
                       f"circuits defined here are {defined}; components look like 'L0H0 L1H0.k'") from None
        raise _Bad(str(error)) from None
    if not circuit.components:
        raise _Bad(f"{_shown(value)} names no components")
    if zoo_model is not None:
        try:
            circuit.validate(zoo_model)
        except CircuitCheckError as error:
            raise _Bad(str(error)) from None
    return circuit


def _claim(raw, index: int, line: int, v: _Validator, circuits: dict, zoo_model, task: TaskSpec | None, has_task: bool) -> Claim | None:
    where = f"claims[{index}]"
    if not isinstance(raw, _Map):
        v.error(line, where, f"must be a mapping starting with 'kind: ...', got {_shown(raw)} ({_type_name(raw)})")
        return None
    if "kind" not in raw:
        v.error(raw.line, f"{where}:", f"missing required key 'kind': valid kinds are {', '.join(CLAIM_KINDS)}")
        return None
    kind = raw["kind"]
    if kind not in CLAIM_KINDS:
        v.error(raw.value_lines["kind"], f"{where}.kind",
                f"{_shown(kind)} is not valid{_suggest(kind, CLAIM_KINDS)}: valid kinds are {', '.join(CLAIM_KINDS)}")
        return None
    required, allowed = CLAIM_KINDS[kind]
    ok = v.keys(raw, where, (*COMMON_KEYS, *allowed), required=required, what=f"{'an' if kind[0] in 'aeiou' else 'a'} {kind} claim")
    params: dict[str, Any] = {}
    bad = not ok
    for key, validate in {**COMMON_KEYS, **allowed}.items():
        if key not in raw or validate is None or key == "kind":
            continue
        value = v.check(raw, key, where, validate)
        bad |= value is None
        params[key] = value
    claim_id, xfail, tolerance = params.pop("id", None), params.pop("xfail", None), params.pop("tolerance", None)

    circuit = receiver = None
    if kind in CAUSAL_KINDS and "circuit" in raw:
        try:
            circuit = _resolve_circuit(raw["circuit"], circuits, zoo_model)
            bad |= circuit is None
        except _Bad as error:
            v.error(raw.value_lines["circuit"], f"{where}.circuit", str(error))
            bad = True
    if kind == "path":
        if "sender" in raw:
            try:
                circuit = _resolve_circuit(raw["sender"], circuits, zoo_model)
                bad |= circuit is None
            except _Bad as error:
                v.error(raw.value_lines["sender"], f"{where}.sender", str(error))
                bad = True
        if "receiver" in raw:
            try:
                receiver = _receiver(raw["receiver"], zoo_model)
            except _Bad as error:
                v.error(raw.value_lines["receiver"], f"{where}.receiver", str(error))
                bad = True
    if kind in HEAD_KINDS and zoo_model is not None and not bad:
        from ..model.components import Component

        try:
            Component("head", params["layer"], params["head"]).validate(zoo_model)
        except CircuitCheckError as error:
            v.error(raw.value_lines["layer"], f"{where}:", str(error))
            bad = True

    low_key, high_key = _THRESHOLDS[kind]
    low, high = params.get(low_key), params.get(high_key) if high_key else None
    if low is not None and high is not None and low > high:
        v.error(raw.value_lines[low_key], f"{where}:", f"{low_key}={low:g} is above {high_key}={high:g}: no value can satisfy both")
        bad = True
    if kind not in HEAD_KINDS and not has_task:
        v.error(raw.line, f"{where}:", f"a {kind} claim needs the spec's task: add a top-level `task:` (e.g. `task: induction`)")
        bad = True
    if bad:
        return None
    negative = high_key is not None and low is None and high is not None
    default_id = _default_id(kind, params, circuit, receiver, negative)
    return Claim(index, kind, claim_id or default_id, raw.line, params, circuit, receiver, xfail, tolerance)


def _receiver(value, zoo_model) -> str:
    from ..model.components import Component

    text = _string(value)
    if text == "logits":
        return text
    try:
        component = Component.parse(text)
        if zoo_model is not None:
            component.validate(zoo_model)
    except CircuitCheckError as error:
        raise _Bad(f"{error} (or 'logits')") from None
    return str(component)


def _default_id(kind: str, params: dict, circuit, receiver, negative: bool) -> str:
    if kind in HEAD_KINDS:
        text = f"{kind} L{params['layer']}H{params['head']}"
    elif kind == "path":
        text = f"path {' + '.join(map(str, circuit.components))} -> {receiver}"
    else:
        text = f"{kind} {circuit.name or ' '.join(map(str, circuit.components))}"
    return f"not {text}" if negative else text


# Running claims inside pytest ---------------------------------------------------------------------------

#: model -> {task key -> Task}: each (model, task) is built once per session (dropped with the model).
_TASKS: "weakref.WeakKeyDictionary[Any, dict]" = weakref.WeakKeyDictionary()


def _task_for(model, task_spec: TaskSpec, default_seed: int):
    cache = _TASKS.setdefault(model, {})
    key = (task_spec.key, default_seed)
    if key not in cache:
        cache[key] = task_spec.build(model, default_seed)
    return cache[key]


def _located(error: BaseException, line: int, where: str) -> BaseException:
    if getattr(error, "circuitcheck_spec_location", None) is None:
        error.circuitcheck_spec_location = (line, where)  # type: ignore[attr-defined]
    return error


class _TextRepr:
    """A failure shown as plain text (no traceback) whose first line is the short summary's message."""

    def __init__(self, text: str, path: str, line: int):
        from _pytest._code.code import ReprFileLocation

        self.text = text
        self.reprcrash = ReprFileLocation(path, line, text.splitlines()[0] if text else "")

    def toterminal(self, tw) -> None:
        for line in self.text.splitlines():
            tw.line(line)

    def __str__(self) -> str:
        return self.text


class SpecFile(pytest.File):
    """A ``*.circuit.yaml`` file: one :class:`SpecItem` per claim (per checkpoint)."""

    spec: Spec | None = None

    def display_path(self) -> str:
        try:
            from _pytest.pathlib import bestrelpath

            return bestrelpath(self.config.invocation_params.dir, self.path)
        except Exception:  # pragma: no cover - different drives etc.
            return str(self.path)

    def collect(self):
        self.spec = load_spec(self.path, display=self.display_path())
        for model_spec, checkpoint in self.spec.model_specs():
            for claim in self.spec.claims:
                name = claim.id if checkpoint is None else f"{claim.id}[{checkpoint}]"
                item = SpecItem.from_parent(self, name=name, spec=self.spec, claim=claim, model_spec=model_spec, checkpoint=checkpoint)
                if claim.xfail:
                    item.add_marker(pytest.mark.xfail(strict=True, reason=claim.xfail))
                yield item

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, SpecError) and not self.config.getoption("fulltrace", False):
            text = str(excinfo.value)
            match = re.match(r"^(.*?):(\d+): ", text)
            return _TextRepr(text, match[1] if match else self.display_path(), int(match[2]) if match else 1)
        return super().repr_failure(excinfo)


class SpecItem(pytest.Item):
    """One claim of a spec on one model (checkpoint); runs the claim's assertion."""

    def __init__(self, *, spec: Spec, claim: Claim, model_spec: str, checkpoint: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.spec = spec
        self.claim = claim
        self.model_spec = model_spec
        self.checkpoint = checkpoint
        self.tolerance = claim.tolerance
        self.user_properties.append(("circuitcheck.spec", f"{spec.display}:{claim.line}"))

    def runtest(self) -> None:
        __tracebackhide__ = True
        from ..pytest_plugin import plugin

        try:
            model = plugin.session_model(self.config, self.model_spec)
        except CircuitCheckError as error:
            raise _located(error, self.spec.model_line, "model")
        default_seed = plugin.session_seed(self.config)
        task = None
        if self.claim.needs_task:
            try:
                task = _task_for(model, self.spec.task, default_seed)
            except CircuitCheckError as error:
                raise _located(error, self.spec.task.line, "task")
        try:
            self.claim.run(model, task, seed=self.claim.params.get("seed", default_seed))
        except CircuitCheckError as error:
            raise _located(error, self.claim.line, self.claim.where)

    def _location_text(self, line: int, where: str) -> str:
        on = f" on {self.model_spec}"
        return f"{self.spec.display}:{line}: {where} ({self.claim.id}){on}"

    def repr_failure(self, excinfo, style=None):
        error = excinfo.value
        if self.config.getoption("fulltrace", False):
            return super().repr_failure(excinfo, style)
        if isinstance(error, CircuitAssertionError):
            text = f"{error}\n\nspec: {self._location_text(self.claim.line, self.claim.where)}"
            return _TextRepr(text, self.spec.display, self.claim.line)
        if isinstance(error, CircuitCheckError):
            line, where = getattr(error, "circuitcheck_spec_location", (self.claim.line, self.claim.where))
            text = f"error: {error}\n\nspec: {self._location_text(line, where)}"
            return _TextRepr(text, self.spec.display, line)
        return super().repr_failure(excinfo, style)

    def reportinfo(self):
        # (path, 0-based line as pytest's convention, domain). The domain titles the failure
        # section; it is not a suffix of the node id, because pytest's verbose line would then
        # rewrite every '.' of the id (L1H0.k) as '::'.
        return self.path, self.claim.line - 1, f"{self.name} ({self.claim.where})"


# Starter specs ------------------------------------------------------------------------------------------

_HEAD_KIND_OF_SCORE = {"previous_token": "previous_token_head", "duplicate_token": "duplicate_token_head",
                       "induction": "induction_head", "bos": "bos_head"}


def _floor(value: float, margin: float = 0.05, step: float = 0.05) -> float:
    return round(max(0.0, math.floor((value - margin) / step + 1e-9) * step), 2)


def _ceil(value: float, margin: float = 0.05, step: float = 0.05) -> float:
    return round(min(1.0, math.ceil((value + margin) / step - 1e-9) * step), 2)


def new_spec_text(model: str) -> str:
    """A commented starter spec for ``model``.

    Zoo models get their card's circuits and head claims for the best heads
    (thresholds a margin below the card's measured scores, so the starter
    passes); other models get a commented template (nothing is loaded).
    """
    if not isinstance(model, str) or not model.strip():
        raise CircuitCheckError(f"model spec {model!r} is not valid: give a string such as 'zoo:induction-2l'")
    model = model.strip()
    match = _ZOO.match(model)
    if match:
        return _zoo_spec_text(model, match["name"], match["checkpoint"])
    return _generic_spec_text(model)


_HEADER = """\
# circuitcheck spec: claims about {model} that pytest runs (one test per claim).
# Run:    pytest {filename}      (schema: circuitcheck/spec_schema.md)
# Every claim is measured on seeded inputs and decided with stated statistics;
# a failing claim prints a lab note with this file's line.
"""


def _zoo_spec_text(model: str, name: str, checkpoint: str | None) -> str:
    from .. import zoo

    card = zoo.card(name)  # ModelSpecError listing the zoo for an unknown name
    if checkpoint:
        found = [c for c in card.get("checkpoints", []) if c.get("name") == checkpoint]
        if checkpoint not in zoo.checkpoints(name):
            zoo.checkpoint_path(name, checkpoint)  # raises, listing the checkpoints
        scores = found[0]["scores"] if found else card["scores"]
    else:
        scores = card["scores"]
    lines = [_HEADER.format(model=model, filename=f"{name}.circuit.yaml").rstrip("\n")]
    description = " ".join(str(card.get("description", "")).split())
    if description:
        lines.append("#")
        lines += ["# " + chunk for chunk in _wrap(description, 86)]
    lines += ["", f"model: {model}"]
    available = zoo.checkpoints(name)
    if not checkpoint and available:
        lines += [
            "",
            "# Check the claims across training checkpoints (one test per claim per checkpoint):",
            f"# checkpoints: [{', '.join(available)}]   # or: checkpoints: all",
        ]
    circuits = card.get("circuits") or {}
    rule = card.get("circuit_rule")
    lines += ["", "# The task that causal claims are measured on (built-in: induction on repeated random tokens).",
              "task:", "  name: induction", "  n_prompts: 32", "  seq_len: 20"]
    if circuits:
        lines += ["", "# Circuits from the model card."]
        if rule:
            lines += ["# " + chunk for chunk in _wrap(f"How they were found: {' '.join(str(rule).split())}", 86)]
        lines.append("circuits:")
        lines += [f"  {cname}: {ctext}" for cname, ctext in circuits.items()]
    lines += ["", "claims:", "  # Attention-head claims: thresholds sit a margin from the card's measured scores (below",
              "  # for 'is', above for 'is not' claims; head_scores at its defaults: 16 prompts 'BOS r r', seed 0)."]
    for score_kind, kind in _HEAD_KIND_OF_SCORE.items():
        table = scores.get(score_kind)
        if not table:
            continue
        ranked = sorted(((value, layer, head) for layer, row in enumerate(table) for head, value in enumerate(row)), reverse=True)
        strong = [entry for entry in ranked if entry[0] >= 0.5]
        if strong:
            for value, layer, head in strong:
                lines += [f"  - kind: {kind}  # measured {value:.3f}", f"    layer: {layer}", f"    head: {head}",
                          f"    min_score: {_floor(value)}"]
        else:
            value, layer, head = ranked[0]
            lines += [f"  - kind: {kind}  # no head scores >= 0.5; the best, L{layer}H{head}, measured {value:.3f}",
                      f"    layer: {layer}", f"    head: {head}", f"    max_score: {_ceil(value)}"]
    evidence = card.get("circuit_evidence") or {}
    if circuits:
        first = next(iter(circuits))
        drop = (evidence.get("drop_ci") or [None])[0]
        recovery = (evidence.get("recovery_ci") or [None])[0]
        lines += ["", f"  # Causal claims about the {first!r} circuit (resample ablation by default)."]
        lines += ["  - kind: necessary", f"    circuit: {first}", f"    min_drop: {_floor(drop, 0.02) if drop else 0.5}"]
        lines += ["  - kind: sufficient", f"    circuit: {first}", f"    min_recovery: {_floor(recovery, 0.02) if recovery else 0.8}"]
        lines += ["  - kind: minimal", f"    circuit: {first}", "    min_contribution: 0.05"]
    lines += [
        "",
        "  # More claim kinds (see circuitcheck/spec_schema.md):",
        "  # - kind: path                 # what the direct path sender -> receiver carries",
        "  #   sender: L0H0",
        "  #   receiver: L1H0.k",
        "  #   min_effect: 0.1",
        "  # - id: a documented false claim",
        "  #   kind: induction_head",
        "  #   layer: 0",
        "  #   head: 1",
        "  #   min_score: 0.5",
        '  #   xfail: "why it is expected to fail"',
    ]
    return "\n".join(lines) + "\n"


def _generic_spec_text(model: str) -> str:
    filename = re.sub(r"[^\w.-]+", "-", model.rstrip("/").split("/")[-1]).strip("-.") or "model"
    return _HEADER.format(model=model, filename=f"{filename}.circuit.yaml") + f"""
model: {model}

# Optional: check every claim at several checkpoints (model@checkpoint specs).
# checkpoints: [step1000, step2000]

# The task that causal claims (necessary, sufficient, minimal, path) are measured on:
# `task: induction` (repeated random tokens), or your own prompts with one-token
# answers (metric: logit difference answer - wrong answer at the last position):
# task:
#   name: my-task
#   clean:         ["When Mary and John went to the store, John gave a drink to"]
#   corrupt:       ["When Mary and John went to the store, Anne gave a drink to"]
#   answers:       [" Mary"]
#   wrong_answers: [" John"]

# Named circuits: components such as L0H2, L1H3.k, L2.mlp, embed.
# circuits:
#   my_circuit: L0H2 L1H3

claims: []
  # Replace [] with your claims, e.g.:
  # - kind: induction_head        # previous_token_head, duplicate_token_head, induction_head, bos_head
  #   layer: 1
  #   head: 3
  #   min_score: 0.7              # or max_score: 0.2 for "is not"
  # - kind: necessary             # also sufficient (min_recovery), minimal (min_contribution)
  #   circuit: my_circuit
  #   min_drop: 0.5
  # - kind: path
  #   sender: L0H2
  #   receiver: L1H3.k
  #   min_effect: 0.1
  #   xfail: "expected to fail because ..."   # any claim: a documented false claim
"""


def _wrap(text: str, width: int) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width) or [""]


_EXISTS = "{path!r} already exists: a spec is never overwritten; choose another path or remove the file first"


def write_new_spec(path: str | os.PathLike, model: str) -> Path:
    """Write :func:`new_spec_text` for ``model`` to ``path`` (never overwrites; a directory gets ``NAME.circuit.yaml``)."""
    path = Path(path)
    if path.is_dir():
        match = _ZOO.match(model.strip()) if isinstance(model, str) else None
        stem = match["name"] if match else re.sub(r"[^\w.-]+", "-", str(model).rstrip("/").split("/")[-1]).strip("-.") or "model"
        path = path / f"{stem}{SUFFIX}"
    if not path.name.endswith(SUFFIX):
        raise CircuitCheckError(
            f"{str(path)!r} does not end with {SUFFIX}: pytest collects spec files by that suffix; name it e.g. {path.stem}{SUFFIX}"
        )
    if path.exists():
        raise CircuitCheckError(_EXISTS.format(path=str(path)))
    text = new_spec_text(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(path, "x", encoding="utf-8") as handle:
            handle.write(text)
    except FileExistsError:
        raise CircuitCheckError(_EXISTS.format(path=str(path))) from None
    return path
