"""The spec schema, read from the registry of claim kinds: one validator per parameter type.

A claim in a spec file is ``kind: NAME`` and the kind's parameters, exactly
the :class:`circuitcheck.claims.registry.Param` records of its
:class:`~circuitcheck.claims.registry.ClaimKind`: their names are the keys,
their types pick the validator (:data:`VALIDATORS`), required parameters must
be there, and a kind's threshold pair cannot be crossed. Every problem is
recorded with its line and key by a :class:`Problems` collector, so that a
file's problems are reported all at once, in file order.

:func:`kinds_markdown` renders the kind tables of ``spec_schema.md`` from the
same records (a test keeps the shipped file equal to it).
"""

from __future__ import annotations

import difflib
import importlib
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..claims import registry
from ..claims.registry import ClaimKind, Param
from ..errors import CircuitCheckError
from .yaml import Map, type_name


class Bad(Exception):
    """A value of the wrong type or range; the message says what is allowed."""


def shown(value: Any) -> str:
    """A value as an error message quotes it (cut at 60 characters)."""
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def suggest(word: Any, options) -> str:
    """`` (did you mean 'x'?)`` for the option ``word`` is a typo or a shortening of, or nothing.

    Names are compared word by word (``copying_head``: ``copying``, ``head``;
    case ignored). Each word of ``word`` must match a word of the option: the
    same, a typo of it (:func:`edit_distance` at most a third of its length,
    at least 1) or its start (``copy`` for ``copying``); words of the option
    left unmatched count one each (``induction`` for ``induction_head``). A
    word shared by many options (``head``) does not make a match on its own,
    so ``copying_head`` does not suggest ``bos_head``, nor ``mover_head``
    ``bos_head``. The option with the fewest edits wins; among equals, the
    one whose number is nearest (``step800``: ``step700``, not ``step300``),
    then the most similar as a whole (difflib's ratio).
    """
    text = str(word).lower()
    names = [str(option) for option in options]
    words_of = {name: _words(name.lower()) for name in names}
    frequency: dict[str, int] = {}
    for name in names:
        for part in set(words_of[name]):
            frequency[part] = frequency.get(part, 0) + 1
    common = {part for part, count in frequency.items() if count >= 3 and count * 4 >= len(names)}
    best = None
    for name in names:
        cost = _typo_cost(_words(text), words_of[name], common)
        if cost is None:
            continue
        rank = (cost, _number_gap(text, name), -difflib.SequenceMatcher(None, text, name.lower()).ratio())
        if best is None or rank < best[0]:
            best = (rank, name)
    return f" (did you mean {best[1]!r}?)" if best is not None else ""


def _number_gap(a: str, b: str) -> float:
    """How far apart the last numbers of ``a`` and ``b`` are (0 when either has none)."""
    x, y = re.findall(r"\d+", a), re.findall(r"\d+", b)
    return abs(int(x[-1]) - int(y[-1])) if x and y else 0


def _words(name: str) -> list[str]:
    return [part for part in re.split(r"[_\s.\-]+", name) if part]


def _typo_cost(typed: list[str], option: list[str], common: set[str]) -> int | None:
    """Edits from the words ``typed`` to the words of ``option`` (None: not a typo of it); see :func:`suggest`."""
    left = list(option)
    cost, distinctive = 0, False
    for part in typed:
        allowed = max(1, len(part) // 3)
        scored = [(edit_distance(part, other, limit=allowed), i) for i, other in enumerate(left)]
        prefix = [(1, i) for i, other in enumerate(left) if len(part) >= 3 and other.startswith(part) and other != part]
        candidates = [(d, i) for d, i in scored if d <= allowed] + prefix
        if not candidates:
            return None  # a word the option does not have
        distance, i = min(candidates)
        distinctive = distinctive or left[i] not in common
        cost += distance
        del left[i]
    if not distinctive or len(left) > len(typed):
        return None
    return cost + len(left)


def edit_distance(a: str, b: str, limit: int | None = None) -> int:
    """The optimal-string-alignment distance: insertions, deletions, substitutions and adjacent swaps, one each.

    With ``limit``, any distance above it may be returned as ``limit + 1`` (the work stops early).
    """
    if limit is not None and abs(len(a) - len(b)) > limit:
        return limit + 1
    before, previous = None, list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i] + [0] * len(b)
        for j, y in enumerate(b, 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y))
            if before is not None and i > 1 and j > 1 and x == b[j - 2] and a[i - 2] == y:
                current[j] = min(current[j], before[j - 2] + 1)
        if limit is not None and min(current) > limit:
            return limit + 1
        before, previous = previous, current
    return previous[-1]


class Problems:
    """Collects a spec file's problems as ``file:line: key what-is-wrong``, reported in file order."""

    def __init__(self, display: str):
        self.display = display
        self._problems: list[tuple[int, int, str]] = []

    def error(self, line: int, where: str, text: str) -> None:
        self._problems.append((line, len(self._problems), f"{self.display}:{line}: {where}{' ' if where else ''}{text}"))

    @property
    def problems(self) -> list[str]:
        """Every problem, in file order."""
        return [text for _, _, text in sorted(self._problems)]

    def check(self, mapping: Map, key: str, where: str, validate: Callable):
        """``validate(mapping[key])``, recording a problem (and returning None) when it is bad."""
        try:
            return validate(mapping[key])
        except Bad as bad:
            self.error(mapping.value_lines.get(key, mapping.line), f"{where}.{key}" if where else key, str(bad))
            return None

    def keys(self, mapping: Map, where: str, allowed, required=(), what: str = "") -> bool:
        """Report unknown and missing keys; True when all required keys are there."""
        what = what or where
        for key in mapping:
            if key not in allowed:
                self.error(
                    mapping.key_lines.get(key, mapping.line),
                    f"{where}:" if where else "",
                    f"unknown key {key!r}{suggest(key, allowed)}: {what} takes {', '.join(allowed)}",
                )
        missing = [key for key in required if key not in mapping]
        for key in missing:
            self.error(mapping.line, f"{where}:" if where else "", f"missing required key {key!r}: {what} needs {', '.join(required)}")
        return not missing


# Plain values ----------------------------------------------------------------------------------


def integer(value, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise Bad(f"must be an integer, got {shown(value)} ({type_name(value)})")
    if minimum is not None and value < minimum:
        raise Bad(f"must be an integer >= {minimum}, got {value}")
    return value


def number(value, low: float | None = None, high: float | None = None, open_ends: bool = False) -> float:
    """A finite number, optionally within ``[low, high]`` (``(low, high)`` with ``open_ends``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Bad(f"must be a number, got {shown(value)} ({type_name(value)})")
    try:
        value = float(value)
    except OverflowError:  # an integer beyond float range
        raise Bad(f"must be a finite number, got an integer too large for a float ({value.bit_length()} bits)") from None
    if not math.isfinite(value):  # YAML .inf / -.inf / .nan: a threshold of inf decides every claim alike
        raise Bad(f"must be a finite number, got {_yaml_float(value)}")
    if open_ends:
        if not (low < value < high):
            raise Bad(f"must be a number strictly between {low:g} and {high:g}, got {value:g}")
    elif (low is not None and value < low) or (high is not None and value > high):
        if low is not None and high is not None:
            rng = f"between {low:g} and {high:g}"
        else:
            rng = f">= {low:g}" if low is not None else f"<= {high:g}"
        raise Bad(f"must be a number {rng}, got {value:g}")
    return value


def _yaml_float(value: float) -> str:
    """A non-finite float as YAML spells it."""
    return ".nan" if value != value else (".inf" if value > 0 else "-.inf")


def boolean_hint(value: Any) -> str:
    """For a YAML boolean where text was expected: YAML 1.1 reads unquoted yes/no, on/off, true/false as booleans.

    `` (YAML reads an unquoted on, yes or true as true: quote it, e.g. 'on', to write the word)`` when
    ``value`` is a boolean or a list holding one; nothing otherwise.
    """
    found = value if isinstance(value, bool) else next((v for v in value if isinstance(v, bool)), None) if isinstance(value, list) else None
    if found is None:
        return ""
    words, word = ("on, yes or true", "true") if found else ("off, no or false", "false")
    example = "'on'" if found else "'off'"
    return f" (YAML reads an unquoted {words} as {word}: quote it, e.g. {example}, to write the word)"


def string(value) -> str:
    if not isinstance(value, str) or not value.strip():
        raise Bad(f"must be a non-empty string, got {shown(value)} ({type_name(value)}){boolean_hint(value)}")
    return value.strip()


def boolean(value) -> bool:
    if not isinstance(value, bool):
        raise Bad(f"must be true or false, got {shown(value)} ({type_name(value)})")
    return value


def string_list(value) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise Bad(f"must be a non-empty list of strings, got {shown(value)} ({type_name(value)}){boolean_hint(value)}")
    return list(value)


def choice(value, options: tuple[str, ...]) -> str:
    if value not in options:
        raise Bad(f"{shown(value)} is not valid: valid values are {', '.join(options)}{boolean_hint(value)}")
    return value


def ablation(value) -> "str | list[str]":
    if isinstance(value, list):  # several ablations: the claim is decided on the worst
        if not value:
            raise Bad("names no ablation: give one (resample) or a list such as [resample, mean, zero]")
        if len(set(map(str, value))) != len(value):
            raise Bad(f"{shown(value)} names an ablation more than once: list each ablation once")
        return [ablation(item) for item in value]
    text = string(value)
    if text in ("resample", "mean", "zero", "mean(corrupt)", "mean(clean)") or re.fullmatch(r"noise\(\s*[0-9.eE+-]+\s*\)", text):
        try:
            if text.startswith("noise"):
                std = float(text[text.index("(") + 1 : -1])
                if not std > 0:
                    raise ValueError
        except ValueError:
            raise Bad(f"{text!r} is not valid: noise(STD) takes a positive number") from None
        return text
    from ..engine import ablation as _ablation  # plugin-provided ablations (imports torch)

    try:
        _ablation.parse(text)
    except CircuitCheckError as error:
        raise Bad(str(error)) from None
    return text


def tolerance(value):
    if isinstance(value, dict):
        unknown = [k for k in value if k not in ("abs", "rel")]
        if unknown or not value:
            raise Bad(f"must be a number or a mapping with abs and/or rel, got keys {', '.join(map(str, value)) or '(none)'}")
        return {k: number(v, low=0.0) for k, v in value.items()}
    try:
        return number(value, low=0.0)
    except Bad:
        raise Bad(f"must be a number >= 0 or a mapping {{abs: NUMBER, rel: NUMBER}}, got {shown(value)} ({type_name(value)})") from None


def claim_id(value) -> str:
    text = string(value)
    if "::" in text or "\n" in text:
        raise Bad(f"{text!r} is not valid: an id is one line without '::' (pytest separates node ids with it)")
    return text


_REFERENCE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def reference(value, builtins: tuple[str, ...] = ()) -> str:
    """A ``module:function`` reference (or one of ``builtins``), kept as text until the claim runs."""
    if isinstance(value, str) and value.strip() in builtins:
        return value.strip()
    if not isinstance(value, str) or not _REFERENCE.match(value.strip()):
        named = f"one of {', '.join(builtins)}, or " if builtins else ""
        raise Bad(f"{shown(value)} is not valid{suggest(value, builtins)}: give {named}a reference 'module:function' "
                  f"(an importable module and a name in it){boolean_hint(value)}")
    return value.strip()


def resolve_reference(text: str, base: Path | None = None) -> Any:
    """The object ``module:name`` names; the spec's directory ``base`` is searched after ``sys.path``."""
    module_name, _, attribute = text.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if base is None or error.name != module_name.split(".")[0]:
            raise CircuitCheckError(f"cannot import {module_name!r} for {text!r}: {error}") from None
        sys.path.insert(0, str(base))
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as again:
            raise CircuitCheckError(f"cannot import {module_name!r} for {text!r}: {again} (searched sys.path and {str(base)!r})") from None
        finally:
            sys.path.remove(str(base))
    value: Any = module
    for part in attribute.split("."):
        if not hasattr(value, part):
            names = [n for n in dir(module) if not n.startswith("_")]
            raise CircuitCheckError(f"{text!r}: module {module_name!r} has no {attribute!r}{suggest(attribute, names)}")
        value = getattr(value, part)
    return value


def positions(value):
    """An int, a list of ints, or ``"a:b"`` (either end may be left out), as a Python int, list or slice."""
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(-?\d+)?\s*:\s*(-?\d+)?\s*", value)
        if match:
            return slice(*(int(g) if g is not None else None for g in match.groups()))
    if isinstance(value, list) and value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return list(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise Bad(f"must be a position (an integer, negative from the end), a list of them, or 'START:STOP', "
              f"got {shown(value)} ({type_name(value)})")


# Components, against the spec's circuits and (for zoo models) the model's config -----------------


@dataclass
class Scope:
    """What component parameters are resolved against: the spec's circuits and, for zoo models, the config."""

    circuits: dict[str, Any] = field(default_factory=dict)
    zoo_model: Any = None


def components_text(value) -> str:
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, list) and value and all(isinstance(item, str) for item in value):
        return ", ".join(value)
    raise Bad(f"must be a component string such as 'L0H0 L1H0' (or a list of them), got {shown(value)} ({type_name(value)})"
              f"{boolean_hint(value)}")


def circuit(value, scope: Scope):
    """A Circuit from a circuit name of the spec, a component string, or a list of component strings (edges ``L0H0 -> L1H0.k`` too)."""
    from ..model.circuit import Circuit

    if isinstance(value, str) and value.strip() in scope.circuits:
        found = scope.circuits[value.strip()]
        if found is None:  # that circuit is invalid (already reported)
            raise _Reported()
        return found
    text = components_text(value)
    try:
        parsed = Circuit.parse(text)
    except CircuitCheckError as error:
        if isinstance(value, str) and re.fullmatch(r"[A-Za-z_][\w.-]*", value.strip()):
            defined = ", ".join(scope.circuits) or "(none: add a top-level `circuits:` mapping)"
            raise Bad(f"{value.strip()!r} is neither a circuit of this spec{suggest(value.strip(), scope.circuits)} nor a component "
                      f"string: circuits defined here are {defined}; components look like 'L0H0 L1H0.k'") from None
        raise Bad(str(error)) from None
    if not parsed.components and not parsed.edges:
        raise Bad(f"{shown(value)} names no components")
    if scope.zoo_model is not None:
        try:
            parsed.validate(scope.zoo_model)
        except CircuitCheckError as error:
            raise Bad(str(error)) from None
    return parsed


def component(value, scope: Scope, words: tuple[str, ...] = ()) -> str:
    """One component (``L1H0.k``, ``L2.mlp``) as text, or one of ``words`` (``logits``)."""
    from ..model.components import Component

    text = string(value)
    if text in words:
        return text
    try:
        parsed = Component.parse(text)
        if scope.zoo_model is not None:
            parsed.validate(scope.zoo_model)
    except CircuitCheckError as error:
        alternatives = f" (or {', '.join(map(repr, words))})" if words else ""
        raise Bad(f"{error}{alternatives}") from None
    return str(parsed)


class _Reported(Bad):
    """The value names something already reported as invalid: no second message."""


# One validator per parameter type ---------------------------------------------------------------

#: Param.type -> validate(value, param, scope)
VALIDATORS: dict[str, Callable[[Any, Param, Scope], Any]] = {
    "integer": lambda v, p, s: integer(v),
    "positive": lambda v, p, s: integer(v, minimum=1),
    "seed": lambda v, p, s: integer(v, minimum=0),
    "number": lambda v, p, s: number(v),
    "score": lambda v, p, s: number(v, 0.0, 1.0),
    "probability": lambda v, p, s: number(v, 0.0, 1.0, open_ends=True),
    "boolean": lambda v, p, s: boolean(v),
    "string": lambda v, p, s: string(v),
    "strings": lambda v, p, s: v if isinstance(v, str) and v.strip() else _strings_or_string(v),
    "choice": lambda v, p, s: choice(v, p.choices),
    "ablation": lambda v, p, s: ablation(v),
    "components": lambda v, p, s: circuit(v, s),
    "component": lambda v, p, s: component(v, s, p.choices),
    "positions": lambda v, p, s: positions(v),
    "reference": lambda v, p, s: reference(v, p.choices),
    "any": lambda v, p, s: v,
}
assert set(VALIDATORS) == set(registry.PARAM_TYPES), "every parameter type needs a validator"


def _strings_or_string(value) -> list[str]:
    try:
        return string_list(value)
    except Bad:
        raise Bad(f"must be a string or a non-empty list of strings, got {shown(value)} ({type_name(value)}){boolean_hint(value)}") from None


#: Keys every claim may have, besides its kind's parameters.
COMMON_KEYS: dict[str, Callable] = {"kind": string, "id": claim_id, "xfail": string, "tolerance": tolerance}


def kind_names() -> list[str]:
    """The kinds a spec may write, in registry order."""
    return list(registry.kinds())


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


@dataclass
class ClaimData:
    """A claim's validated parts: its kind, the kind's parameters, and the keys every claim has."""

    kind: ClaimKind
    params: dict[str, Any]
    id: str | None
    xfail: str | None
    tolerance: Any


def validate_claim(raw, where: str, line: int, problems: Problems, scope: Scope, has_task: bool) -> ClaimData | None:
    """Validate one entry of ``claims:`` against its kind's record; None (problems recorded) when it is bad."""
    if not isinstance(raw, Map):
        problems.error(line, where, f"must be a mapping starting with 'kind: ...', got {shown(raw)} ({type_name(raw)})")
        return None
    names = kind_names()
    if "kind" not in raw:
        problems.error(raw.line, f"{where}:", f"missing required key 'kind': valid kinds are {', '.join(names)}")
        return None
    kind = registry.find(raw["kind"]) if isinstance(raw["kind"], str) else None
    if kind is None:
        spelled = names + [alias for k in registry.kinds().values() for alias in k.aliases]
        problems.error(raw.value_lines["kind"], f"{where}.kind",
                       f"{shown(raw['kind'])} is not valid{suggest(raw['kind'], spelled)}: valid kinds are {', '.join(names)}")
        return None
    by_name = {param.name: param for param in kind.params}
    bad = not problems.keys(raw, where, (*COMMON_KEYS, *by_name), required=kind.required,
                            what=f"{_article(kind.name)} {kind.name} claim")
    common: dict[str, Any] = {}
    params: dict[str, Any] = {}
    for key in raw:
        if key == "kind" or (key not in COMMON_KEYS and key not in by_name):
            continue
        if key in COMMON_KEYS:
            value = problems.check(raw, key, where, COMMON_KEYS[key])
            common[key] = value
        else:
            param = by_name[key]
            try:
                value = VALIDATORS[param.type](raw[key], param, scope)
            except _Reported:
                value = None
            except Bad as error:
                problems.error(raw.value_lines.get(key, raw.line), f"{where}.{key}", str(error))
                value = None
            params[key] = value
        bad |= value is None
    if not bad and scope.zoo_model is not None and "layer" in params and "head" in params:
        # the convention of every head claim: a (layer, head) pair names a head of the model
        from ..model.components import Component

        try:
            Component("head", params["layer"], params["head"]).validate(scope.zoo_model)
        except CircuitCheckError as error:
            problems.error(raw.value_lines["layer"], f"{where}:", str(error))
            bad = True
    low_key, high_key = kind.thresholds
    low = params.get(low_key) if low_key else None
    high = params.get(high_key) if high_key else None
    if isinstance(low, float) and isinstance(high, float) and low > high:
        problems.error(raw.value_lines[low_key], f"{where}:", f"{low_key}={low:g} is above {high_key}={high:g}: no value can satisfy both")
        bad = True
    if kind.needs_task and not has_task and not any(key in raw for key in kind.replaces_task):
        instead = f", or give {' or '.join(kind.replaces_task)}" if kind.replaces_task else ""
        problems.error(raw.line, f"{where}:",
                       f"{_article(kind.name)} {kind.name} claim needs the spec's task: add a top-level `task:` (e.g. `task: induction`){instead}")
        bad = True
    if bad:
        return None
    return ClaimData(kind, params, common.get("id"), common.get("xfail"), common.get("tolerance"))


# The schema's kind tables ------------------------------------------------------------------------

_TYPE_TEXT = {
    "integer": "integer",
    "positive": "integer ≥ 1",
    "seed": "integer ≥ 0",
    "number": "number",
    "score": "number in [0, 1]",
    "probability": "number strictly between 0 and 1",
    "boolean": "true/false",
    "string": "string",
    "strings": "string or list of strings",
    "choice": "one of",
    "ablation": "`resample`, `mean`, `zero`, `noise(STD)`, a plugin's, or a list of them",
    "components": "circuit name, component string or list",
    "component": "one component",
    "positions": "int, list of ints or `START:STOP`",
    "reference": "`module:function`",
    "any": "any value",
}


def _param_row(param: Param) -> str:
    kind = _TYPE_TEXT[param.type]
    if param.choices:
        words = ", ".join(f"`{c}`" for c in param.choices)
        kind = f"one of {words}" if param.type == "choice" else f"{kind}, or {words}"
    default = "required" if param.required else ("" if param.default is None else f"`{param.default}`")
    doc = param.doc.replace("|", "\\|")
    return f"| `{param.name}` | {kind} | {default} | {doc} |"


SCHEMA_FILE = Path(__file__).with_name("spec_schema.md")
_START, _END = "<!-- claim kinds: start -->", "<!-- claim kinds: end -->"


def kinds_markdown() -> str:
    """The spec schema's section on claim kinds, one table per kind, from the registry."""
    lines = ["<!-- generated from the registry of claim kinds (circuitcheck.spec.schema.kinds_markdown); "
             "regenerate with `python -m circuitcheck spec schema --write` -->", ""]
    for kind in registry.kinds().values():
        names = f"`{kind.name}`" + "".join(f" (or `{alias}`)" for alias in kind.aliases)
        assertion = getattr(kind.assertion, "__name__", str(kind.assertion))
        lines += [f"### {names}", "", f"{kind.definition} Runs `{assertion}`; measured value: {kind.metric}.", ""]
        low, high = kind.thresholds
        facts = []
        if low or high:
            facts.append("thresholds: " + " / ".join(f"`{key}`" for key in (low, high) if key))
        if kind.needs_task:
            instead = f" unless {' or '.join(f'`{k}`' for k in kind.replaces_task)} is given" if kind.replaces_task else ""
            facts.append(f"measured on the spec's `task`{instead}")
        if kind.evidence:
            facts.append("evidence: " + ", ".join(f"`{name}`" for name in kind.evidence))
        if facts:
            lines += ["; ".join(facts) + ".", ""]
        lines += ["| key | value | default | meaning |", "| --- | --- | --- | --- |"]
        lines += [_param_row(param) for param in kind.params]
        lines.append("")
    return "\n".join(lines)


def schema_document(text: str) -> str:
    """``text`` (spec_schema.md) with the part between its claim-kind markers replaced by :func:`kinds_markdown`."""
    start, end = text.find(_START), text.find(_END)
    if start < 0 or end < start:
        raise CircuitCheckError(f"the schema document has no {_START} ... {_END} markers around its claim-kind tables")
    return text[: start + len(_START)] + "\n" + kinds_markdown() + text[end:]
