"""Executable spec files: the model of a spec (:class:`Spec`, :class:`Claim`, :class:`TaskSpec`) and :func:`load_spec`.

A spec names a model, a task, named circuits and a list of claims; pytest
collects one item per claim (per checkpoint when the spec lists checkpoints,
see :mod:`circuitcheck.pytest_plugin.spec_items`) and runs each through the
same assertion as a Python test, so failures read as the same lab notes and
land in the same report. The kinds of claims and their keys are the records of
:mod:`circuitcheck.claims.registry` (validated by :mod:`.schema`); the full
schema is ``circuitcheck/spec/spec_schema.md``. In short::

    model: zoo:induction-2l              # a model spec string (required)
    checkpoints: [step0, step3000]        # optional: a list, or `all` (zoo models)
    task: {name: induction, n_prompts: 32, seq_len: 20}   # or `task: induction`, prompts or tokens
    circuits:                             # optional: name -> component string (or list)
      induction: L0H0 L0H2 L1H0 L1H2 L1H3
    claims:                               # required: a list
      - kind: induction_head              # any kind of the registry, with its keys
        layer: 1
        head: 0
        min_score: 0.8                    # or max_score: for an "is not" claim
      - id: a documented false claim      # every claim: optional id, xfail, tolerance
        kind: minimal
        circuit: L0H0 L0H2 L1H0 L1H1 L1H2 L1H3
        xfail: "L1H1 is a backup head"

Files are read with YAML's safe loader keeping line numbers (:mod:`.yaml`):
every problem is reported as ``file:line: key what-is-wrong: what is
allowed``, all problems of a file at once.

Import cost: PyYAML, the component parser and the claim records; torch loads
when a claim module is first read (the registry's built-in kinds).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..claims import registry
from ..errors import CircuitCheckError
from .schema import Bad, Problems, Scope, components_text, integer, reference, resolve_reference, shown, string, \
    string_list, suggest, validate_claim, boolean_hint
from .yaml import MAX_SPEC_BYTES, List, Map, SpecError, check_size, parse_yaml, type_name

SUFFIX = ".circuit.yaml"

__all__ = ["Claim", "Spec", "SpecError", "TaskSpec", "load_spec", "SUFFIX"]

TOP_KEYS = ("model", "description", "checkpoints", "task", "circuits", "claims")
BUILTIN_TASKS = {
    "induction": {
        "n_prompts": lambda v: integer(v, minimum=1),
        "seq_len": lambda v: integer(v, minimum=1),
        "seed": lambda v: integer(v, minimum=0),
    }
}
PROMPT_TASK_KEYS = ("clean", "corrupt", "answers", "wrong_answers")
TOKEN_TASK_KEYS = ("clean", "corrupt")


@dataclass
class TaskSpec:
    """The spec's task: a built-in (``name`` + ``params``), prompts (``tasks.from_prompts``) or tokens (``tasks.from_tokens``).

    ``metric``: a ``module:function`` reference to a custom metric (prompts and
    tokens tasks), resolved when the task is built.
    """

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    prompts: dict[str, list[str]] | None = None
    line: int = 1
    tokens: dict[str, list] | None = None
    metric: str | None = None
    base: Path | None = None

    @property
    def key(self) -> tuple:
        def frozen(value):
            return tuple(frozen(v) for v in value) if isinstance(value, list) else value

        prompts = tuple((k, frozen(v)) for k, v in sorted((self.prompts or {}).items()))
        tokens = tuple((k, frozen(v)) for k, v in sorted((self.tokens or {}).items()))
        return (self.name, tuple(sorted(self.params.items())), prompts, tokens, self.metric)

    def build(self, model, default_seed: int):
        """The Task on ``model`` (built-ins take ``default_seed`` unless the spec gives a seed)."""
        # `from ..model.tasks import ...` (not `from ..model import tasks`) at call time: the module in
        # sys.modules, the one the assertions check Task instances against
        from ..model.tasks import from_prompts, from_tokens, induction

        metric = self._metric()
        if self.prompts is not None:
            return from_prompts(model, name=self.name, metric=metric, **self.prompts)
        if self.tokens is not None:
            import torch

            values = {key: torch.tensor(value) for key, value in self.tokens.items()}
            return from_tokens(values.pop("clean"), values.pop("corrupt"), metric, name=self.name, d_vocab=model.cfg.d_vocab, **values)
        params = dict(self.params)
        params.setdefault("seed", default_seed)
        return {"induction": induction}[self.name](model, **params)

    def _metric(self):
        if self.metric is None:
            return None
        from ..model.metrics import as_metric

        try:
            return as_metric(resolve_reference(self.metric, self.base))
        except TypeError as error:
            raise CircuitCheckError(f"metric {self.metric!r}: {error}: give a circuitcheck Metric or fn(logits[, task]) -> [batch]") from None


@dataclass
class Claim:
    """One claim of a spec: its kind (a registry name), parameters (validated), and where it was written."""

    index: int
    kind: str
    id: str
    line: int
    params: dict[str, Any]
    xfail: str | None = None
    tolerance: float | dict | None = None
    base: Path | None = None

    @property
    def record(self) -> registry.ClaimKind:
        """The claim's :class:`~circuitcheck.claims.registry.ClaimKind`."""
        return registry.get(self.kind)

    @property
    def needs_task(self) -> bool:
        """Whether the claim is measured on the spec's task (not when a task-replacing key is given)."""
        record = self.record
        return record.needs_task and not any(self.params.get(key) is not None for key in record.replaces_task)

    @property
    def where(self) -> str:
        return f"claims[{self.index}]"

    def run(self, model, task=None, seed: int | None = None):
        """Run the claim's assertion on ``model`` (raises :class:`CircuitAssertionError` if it fails)."""
        __tracebackhide__ = True
        record = self.record
        params = dict(self.params)
        names = {param.name: param for param in record.params}
        if seed is not None and "seed" in names and params.get("seed") is None:
            params["seed"] = seed
        if self.tolerance is not None:
            params["tolerance"] = self.tolerance  # for --circuitcheck-baseline
        for name, value in params.items():
            param = names.get(name)
            if param is not None and param.type == "reference" and value not in param.choices:
                params[name] = resolve_reference(value, self.base)
        context = {"model": model}
        if record.needs_task:
            context["task"] = task if self.needs_task else None
        return record.run(params, **context)


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


ZOO = re.compile(r"^zoo:(?P<name>[^@]+)(?:@(?P<checkpoint>.+))?$")


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
    base = path.resolve().parent
    if text is None:
        text = read_spec_text(path, display)
    data = parse_yaml(text, display)
    v = Problems(display)
    if data is None:
        raise SpecError([f"{display}:1: the spec is empty: it needs at least `model:` and `claims:` (see circuitcheck/spec/spec_schema.md)"])
    if not isinstance(data, Map):
        raise SpecError([f"{display}:1: a spec is a mapping with keys {', '.join(TOP_KEYS)}, got {type_name(data)}"])
    v.keys(data, "", TOP_KEYS, required=("model", "claims"), what="a spec")

    model = v.check(data, "model", "", string) if "model" in data else None
    model_line = data.value_lines.get("model", data.line)
    zoo_name, zoo_model = _zoo(model, model_line, v)
    checkpoints = _checkpoints(data, v, model, zoo_name) if "checkpoints" in data else None
    if checkpoints:
        zoo_model = _ZooModel(f"{model}@{checkpoints[0]}", zoo_model.cfg.__dict__) if zoo_model is not None else None
    description = v.check(data, "description", "", string) if "description" in data else None
    task = _task(data, v, base) if "task" in data else None
    circuits = _circuits(data, v, zoo_model) if "circuits" in data else {}
    claims = _claims(data, v, Scope(circuits, zoo_model), "task" in data, base) if "claims" in data else []
    if v.problems:
        raise SpecError(v.problems)
    valid_circuits = {k: c for k, c in circuits.items() if c is not None}
    return Spec(path, display, model, model_line, checkpoints, task, valid_circuits, claims, description)


def read_spec_text(path: Path, display: str) -> str:
    """The text of a spec file: UTF-8, at most MAX_SPEC_BYTES; :class:`SpecError` (with the line of a bad byte) otherwise."""
    try:
        with open(path, "rb") as handle:
            check_size(os.fstat(handle.fileno()).st_size, display)
            raw = handle.read(MAX_SPEC_BYTES + 1)
    except OSError as error:
        raise SpecError([f"{display}:1: cannot read the spec: {error.strerror or error}"]) from None
    check_size(len(raw), display)  # a file that grew, or a pipe
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        raise SpecError([f"{display}:{line}: the byte {raw[error.start:error.start + 1]!r} is not UTF-8 text: "
                         "spec files are UTF-8 (re-save the file as UTF-8)"]) from None


def unique_ids(claims: list[Claim], explicit: set[int], problems: Problems, lines: dict[int, int]) -> list[Claim]:
    """Give each claim a unique id: a repeated derived id gets `` #2``, `` #3``...; a repeated explicit id is an error.

    Linear in the number of claims (the next free suffix is remembered per id).
    ``explicit``: the indices whose id was written in the file; ``lines``: the
    line of each such id.
    """
    taken: dict[str, int] = {}
    next_suffix: dict[str, int] = {}
    kept: list[Claim] = []
    for claim in claims:
        if claim.id in taken:
            if claim.index in explicit:
                problems.error(lines[claim.index], f"claims[{claim.index}].id",
                               f"{claim.id!r} is already used by claims[{taken[claim.id]}]: ids must be unique")
                continue
            base, n = claim.id, next_suffix.get(claim.id, 2)
            while f"{base} #{n}" in taken:
                n += 1
            next_suffix[base] = n + 1
            claim.id = f"{base} #{n}"
        taken[claim.id] = claim.index
        kept.append(claim)
    return kept


def _zoo(model: str | None, line: int, v: Problems):
    if model is None or not ZOO.match(model):
        return None, None
    match = ZOO.match(model)
    from .. import zoo

    if match["name"] not in zoo.names():
        v.error(line, "model", f"{model!r}: no zoo model named {match['name']!r}: zoo models are {', '.join(zoo.names())}")
        return None, None
    name = match["name"]
    if match["checkpoint"] and match["checkpoint"] not in zoo.checkpoints(name):
        v.error(line, "model", f"{model!r}: zoo model {name!r} has no checkpoint {match['checkpoint']!r}: "
                               f"its checkpoints are {', '.join(zoo.checkpoints(name))}")
    return name, _ZooModel(model, zoo.config(name))


def _circuits(data: Map, v: Problems, zoo_model) -> dict:
    from ..errors import ComponentError
    from ..model.circuit import Circuit

    circuits: dict[str, Circuit | None] = {}
    raw = data["circuits"]
    if not isinstance(raw, Map):
        v.error(data.value_lines["circuits"], "circuits", f"must be a mapping of name: components, got {type_name(raw)}")
        return circuits
    for name, text in raw.items():
        line = raw.value_lines[name]
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][\w.-]*", name):
            v.error(raw.key_lines[name], "circuits", f"circuit name {name!r} is not valid: use letters, digits, _ . - (starting with a letter)")
            continue
        try:
            circuit = Circuit.parse(components_text(text), name=name)
            if not circuit.components and not circuit.edges:
                raise ComponentError(f"circuit {name!r} is empty: list at least one component")
            if zoo_model is not None:
                circuit.validate(zoo_model)
            circuits[name] = circuit
        except (Bad, ComponentError) as error:
            v.error(line, f"circuits.{name}", str(error))
            circuits[name] = None  # reported once here, not again by each claim naming it
    return circuits


def _claims(data: Map, v: Problems, scope: Scope, has_task: bool, base: Path) -> list[Claim]:
    raw_claims = data["claims"]
    if raw_claims is None:
        raw_claims = List()
    if not isinstance(raw_claims, List):
        v.error(data.value_lines["claims"], "claims", f"must be a list of claims (each starting with '- kind: ...'), got {type_name(raw_claims)}")
        return []
    claims: list[Claim] = []
    explicit: set[int] = set()
    id_lines: dict[int, int] = {}
    for index, raw in enumerate(raw_claims):
        where = f"claims[{index}]"
        found = validate_claim(raw, where, raw_claims.lines[index], v, scope, has_task)
        if found is None:
            continue
        claims.append(Claim(index, found.kind.name, found.id or found.kind.describe(found.params), raw.line, found.params,
                            found.xfail, found.tolerance, base))
        if "id" in raw:
            explicit.add(index)
            id_lines[index] = raw.value_lines["id"]
    return unique_ids(claims, explicit, v, id_lines)


def _checkpoints(data: Map, v: Problems, model: str | None, zoo_name: str | None) -> list[str] | None:
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
    if not isinstance(raw, List) or not raw or not all(isinstance(c, str) and c.strip() for c in raw):
        v.error(line, "checkpoints",
                f"must be a list of checkpoint names (e.g. [step0, step3000]) or 'all', got {shown(raw)} ({type_name(raw)})"
                f"{boolean_hint(raw)}")
        return None
    names = [c.strip() for c in raw]
    if zoo_name is not None:
        from .. import zoo

        available = zoo.checkpoints(zoo_name)
        for name, item_line in zip(names, raw.lines):
            if name not in available:
                v.error(item_line, "checkpoints", f"{name!r}: zoo model {zoo_name!r} has no such checkpoint{suggest(name, available)}: "
                                                  f"its checkpoints are {', '.join(available)}")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        v.error(line, "checkpoints", f"lists {', '.join(duplicates)} more than once")
    return names


def _task(data: Map, v: Problems, base: Path) -> TaskSpec | None:
    raw, line = data["task"], data.value_lines["task"]
    builtins = ", ".join(BUILTIN_TASKS)
    inputs = f"prompts ({', '.join(PROMPT_TASK_KEYS)}) or tokens ({', '.join(TOKEN_TASK_KEYS)} as lists of token ids)"
    if isinstance(raw, str):
        if raw not in BUILTIN_TASKS:
            v.error(line, "task", f"{raw!r} is not a built-in task{suggest(raw, BUILTIN_TASKS)}: built-in tasks are {builtins}; "
                                  f"or give {inputs} as a mapping")
            return None
        return TaskSpec(raw, line=line)
    if not isinstance(raw, Map):
        v.error(line, "task", f"must be a built-in task name ({builtins}) or a mapping, got {shown(raw)} ({type_name(raw)})"
                              f"{boolean_hint(raw)}")
        return None
    if "clean" in raw and isinstance(raw["clean"], list) and raw["clean"] and isinstance(raw["clean"][0], list):
        return _tokens_task(raw, v, base)
    if any(key in raw for key in PROMPT_TASK_KEYS):
        if not v.keys(raw, "task", ("name", *PROMPT_TASK_KEYS, "metric"), required=PROMPT_TASK_KEYS, what="a prompts task"):
            return None
        name = v.check(raw, "name", "task", string) if "name" in raw else "prompts"
        metric = v.check(raw, "metric", "task", reference) if "metric" in raw else None
        prompts = {key: v.check(raw, key, "task", string_list) for key in PROMPT_TASK_KEYS}
        if any(value is None for value in prompts.values()) or name is None or ("metric" in raw and metric is None):
            return None
        lengths = {key: len(value) for key, value in prompts.items()}
        if len(set(lengths.values())) != 1:
            v.error(raw.line, "task", "clean, corrupt, answers and wrong_answers need one entry per example, got "
                                      + ", ".join(f"{k} {n}" for k, n in lengths.items()))
            return None
        return TaskSpec(name, prompts=prompts, line=raw.line, metric=metric, base=base)
    if "name" not in raw:
        v.error(raw.line, "task", f"needs a name (a built-in task: {builtins}) or {inputs}")
        return None
    name = v.check(raw, "name", "task", string)
    if name is None:
        return None
    if name not in BUILTIN_TASKS:
        v.error(raw.value_lines["name"], "task.name",
                f"{name!r} is not a built-in task{suggest(name, BUILTIN_TASKS)}: built-in tasks are {builtins}; or give {inputs}")
        return None
    allowed = BUILTIN_TASKS[name]
    v.keys(raw, "task", ("name", *allowed), what=f"the {name} task")
    params = {key: v.check(raw, key, "task", allowed[key]) for key in allowed if key in raw}
    if any(value is None for value in params.values()):
        return None
    return TaskSpec(name, params=params, line=raw.line)


def _token_rows(value) -> list[list[int]]:
    rows_ok = isinstance(value, list) and value and all(
        isinstance(row, list) and row and all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in row) for row in value
    )
    if not rows_ok:
        raise Bad(f"must be a list of token-id lists (one per example, e.g. [[1, 5, 9], [1, 7, 3]]), got {shown(value)} ({type_name(value)})")
    if len({len(row) for row in value}) != 1:
        raise Bad(f"every example needs the same number of tokens, got lengths {sorted({len(row) for row in value})}")
    return [list(row) for row in value]


def _token_ids(value) -> list[int]:
    if not isinstance(value, list) or not value or not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in value):
        raise Bad(f"must be a list of token ids (one per example), got {shown(value)} ({type_name(value)})")
    return list(value)


def _tokens_task(raw: Map, v: Problems, base: Path) -> TaskSpec | None:
    keys = ("name", *TOKEN_TASK_KEYS, "answers", "wrong_answers", "metric")
    if not v.keys(raw, "task", keys, required=TOKEN_TASK_KEYS, what="a tokens task"):
        return None
    name = v.check(raw, "name", "task", string) if "name" in raw else "tokens"
    metric = v.check(raw, "metric", "task", reference) if "metric" in raw else None
    tokens = {key: v.check(raw, key, "task", _token_rows) for key in TOKEN_TASK_KEYS}
    tokens.update({key: v.check(raw, key, "task", _token_ids) for key in ("answers", "wrong_answers") if key in raw})
    if any(value is None for value in tokens.values()) or name is None or ("metric" in raw and metric is None):
        return None
    n, width = len(tokens["clean"]), len(tokens["clean"][0])
    shapes = {key: (len(value), len(value[0]) if isinstance(value[0], list) else None) for key, value in tokens.items()}
    if shapes["corrupt"] != (n, width):
        v.error(raw.value_lines["corrupt"], "task.corrupt", f"must have the clean inputs' shape {n} x {width}, got "
                                                            f"{shapes['corrupt'][0]} x {shapes['corrupt'][1]}")
        return None
    for key in ("answers", "wrong_answers"):
        if key in tokens and len(tokens[key]) != n:
            v.error(raw.value_lines[key], f"task.{key}", f"needs one token id per example ({n}), got {len(tokens[key])}")
            return None
    if metric is None and not ("answers" in tokens and "wrong_answers" in tokens):
        v.error(raw.line, "task", "a tokens task needs answers and wrong_answers (for the default metric, the logit difference "
                                  "at the last position) or a metric: 'module:function'")
        return None
    return TaskSpec(name, line=raw.line, tokens=tokens, metric=metric, base=base)
