"""The registry of claim kinds: one record per kind, declared beside its check.

Every place that needs to know the kinds of claims reads this registry and
nothing else: the spec schema and its validation, ``spec new``, the report's
sections and definitions, the terminal summary, JUnit properties and the
pytest-html extras. A kind is declared once, in the module of its check::

    NECESSARY = declare(ClaimKind(
        name="necessary",
        check=check_necessary,
        assertion=assert_necessary,
        metric="drop",
        params=(Param("circuit", "components", required=True), Param("min_drop", "number"), ...),
        thresholds=("min_drop", "max_drop"),
        evidence=("per component",),
        definition="drop(C) = ...",
        section="necessity",
    ))

Plugins add kinds through the ``circuitcheck_claim_kinds`` hook (see
:mod:`circuitcheck.hookspecs`). The built-in kinds are the records declared by
the modules of this package; they are imported the first time the registry is
read, so importing this module stays light.
"""

from __future__ import annotations

import importlib
import pkgutil
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import CircuitCheckError

#: Parameter types a spec file can express (the spec's validators know each one).
PARAM_TYPES = (
    "integer",      # any int (layer, head)
    "positive",     # int >= 1
    "seed",         # int >= 0
    "number",       # any finite float
    "score",        # float in [0, 1]
    "probability",  # float in (0, 1)
    "boolean",
    "string",
    "strings",      # a string or a list of strings
    "choice",       # one of Param.choices
    "ablation",     # an ablation spec (str or list of str)
    "components",   # a circuit: components text, a list, or a circuit name of the spec (a Circuit)
    "component",    # one component (a receiver, a head); Param.choices: other words allowed ("logits")
    "positions",    # int, list of ints, or "a:b" (a slice)
    "reference",    # "module:function", resolved when the claim runs; Param.choices: built-in names allowed
    "any",          # passed through as written (validated by the check itself)
)

REQUIRED = object()


@dataclass(frozen=True)
class Param:
    """One parameter of a claim kind, as a spec file writes it.

    ``name`` is the keyword of the check function; ``type`` one of
    :data:`PARAM_TYPES`; ``default`` the check's default (``REQUIRED`` when
    the claim cannot be written without it); ``doc`` one line for the schema.
    """

    name: str
    type: str
    default: Any = None
    required: bool = False
    choices: tuple[str, ...] = ()
    doc: str = ""

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f"parameter name {self.name!r} is not valid: use a Python identifier (the spec key)")
        if self.type not in PARAM_TYPES:
            raise ValueError(f"parameter {self.name!r} has type {self.type!r}: valid types are {', '.join(PARAM_TYPES)}")
        if self.type == "choice" and not self.choices:
            raise ValueError(f"parameter {self.name!r} is a choice but lists no choices")


@dataclass(frozen=True)
class ClaimKind:
    """The single declaration of one kind of claim.

    Attributes:
        name: the kind as results, specs and the report spell it (``CheckResult.kind``).
        check: the ``check_*`` function: measures and decides, never raises on a failed claim.
        assertion: the ``assert_*`` twin (``conclude(check(...))``).
        metric: what the measured value is ("drop", "induction score", ...).
        params: the parameters a spec file may give, in the order a user writes them.
        thresholds: (min key, max key) among ``params``; either may be None.
        evidence: names of the evidence tables its results carry.
        definition: the definition text shown in the report and the spec schema.
        section: the report section its results appear in (report sections
            the report does not know show the claim with its evidence tables).
        needs_task: whether the claim is measured on a task (a spec passes ``task=``
            and requires a top-level ``task:``).
        spec_call: how a spec claim calls the assertion when it is not
            ``assertion(**params, model=..., task=...)``: ``spec_call(assertion, params, model=..., task=...)``.
        aliases: other names a spec may use for this kind.
        replaces_task: parameters that stand in for the task when given (a lens
            claim's ``prompt``): the spec then passes ``task=None``.
        subject: the claim's subject in its default spec id
            (``induction_head L1H0``: ``subject(params) == "L1H0"``), from the
            validated spec parameters; default: the required parameters' values.
    """

    name: str
    check: Callable[..., Any]
    assertion: Callable[..., Any]
    metric: str
    params: tuple[Param, ...]
    thresholds: tuple[str | None, str | None]
    definition: str
    section: str
    evidence: tuple[str, ...] = ()
    needs_task: bool = False
    spec_call: Callable[..., Any] | None = None
    aliases: tuple[str, ...] = ()
    replaces_task: tuple[str, ...] = ()
    subject: Callable[[dict[str, Any]], str] | None = None
    source: str = field(default="circuitcheck", compare=False)

    def __post_init__(self):
        names = [param.name for param in self.params]
        if len(set(names)) != len(names):
            raise ValueError(f"claim kind {self.name!r} lists a parameter twice: {names}")
        for key in (*self.thresholds, *self.replaces_task):
            if key is not None and key not in names:
                raise ValueError(f"claim kind {self.name!r} names {key!r}, which is not one of its parameters ({', '.join(names)})")

    def param(self, name: str) -> Param:
        """The parameter called ``name`` (KeyError if the kind has none)."""
        for param in self.params:
            if param.name == name:
                return param
        raise KeyError(name)

    @property
    def required(self) -> tuple[str, ...]:
        """The names of the parameters a claim of this kind cannot leave out."""
        return tuple(param.name for param in self.params if param.required)

    def describe(self, params: dict[str, Any]) -> str:
        """The claim's default spec id: ``KIND SUBJECT``, ``not ...`` when only the upper threshold is given."""
        if self.subject is not None:
            subject = self.subject(params)
        else:
            subject = " ".join(str(params[name]) for name in self.required if name in params)
        low, high = self.thresholds
        negative = low is not None and high is not None and params.get(low) is None and params.get(high) is not None
        text = f"{self.name} {subject}".strip()
        return f"not {text}" if negative else text

    def run(self, params: dict[str, Any], **context_kwargs):
        """Run the assertion with ``params`` (a spec claim's validated parameters)."""
        __tracebackhide__ = True
        if self.spec_call is not None:
            return self.spec_call(self.assertion, dict(params), **context_kwargs)
        return self.assertion(**params, **context_kwargs)


_lock = threading.RLock()
_declared: dict[str, ClaimKind] = {}
_loaded = False


def declare(kind: ClaimKind) -> ClaimKind:
    """Declare a built-in kind (called at import of the module that defines its check)."""
    with _lock:
        existing = _declared.get(kind.name)
        # a module imported again (pytester drops modules first imported in an inner run) declares again
        if existing is not None and _origin(existing.check) != _origin(kind.check):
            raise CircuitCheckError(f"claim kind {kind.name!r} is declared twice ({existing.source} and {kind.source})")
        _declared[kind.name] = kind
    return kind


#: The claim modules in the order their kinds are listed (spec errors, the schema); others follow by name.
_FIRST = ("heads", "causal", "minimality", "completeness", "faithfulness", "lens", "attribution", "probe")


def _listing_order(kind: ClaimKind) -> tuple:
    """Built-in kinds by their module's place in _FIRST (then by module name), in declaration order within it."""
    module = getattr(kind.check, "__module__", "").rpartition(".")[2]
    rank = _FIRST.index(module) if module in _FIRST else len(_FIRST)
    return rank, module, list(_declared).index(kind.name)


def _origin(function: Callable) -> tuple[str, str]:
    return getattr(function, "__module__", ""), getattr(function, "__qualname__", repr(function))


def _load_builtins() -> None:
    global _loaded
    with _lock:
        if _loaded:
            return
        package = importlib.import_module(__package__)
        found = sorted(info.name for info in pkgutil.iter_modules(package.__path__))
        for name in [*(n for n in _FIRST if n in found), *(n for n in found if n not in _FIRST)]:
            importlib.import_module(f"{__package__}.{name}")
        _loaded = True


def kinds() -> dict[str, ClaimKind]:
    """Every claim kind by name: the built-in ones and those plugins add."""
    from ..model.sources import plugin_manager

    _load_builtins()
    found = {kind.name: kind for kind in sorted(_declared.values(), key=_listing_order)}
    for contributed in plugin_manager().hook.circuitcheck_claim_kinds():
        for kind in contributed or ():
            if not isinstance(kind, ClaimKind):
                raise CircuitCheckError(f"circuitcheck_claim_kinds returned {kind!r}: give circuitcheck.ClaimKind records")
            if kind.name in found and found[kind.name].check is not kind.check:
                raise CircuitCheckError(f"claim kind {kind.name!r} from a plugin clashes with an existing kind of that name")
            found[kind.name] = kind
    return found


def get(name: str) -> ClaimKind:
    """The kind called ``name`` (or one of its aliases); a clear error naming the known kinds otherwise."""
    known = kinds()
    if name in known:
        return known[name]
    for kind in known.values():
        if name in kind.aliases:
            return kind
    raise CircuitCheckError(f"unknown claim kind {name!r}: known kinds are {', '.join(sorted(known))}")


def find(name: str) -> ClaimKind | None:
    """Like :func:`get`, but None for an unknown kind (the report shows unknown kinds generically)."""
    try:
        return get(name)
    except CircuitCheckError:
        return None
