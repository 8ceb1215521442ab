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

**Calls of claims.** To run a claim again (on a mutated copy of its model, for
its mutation score: :mod:`circuitcheck.claims.power`), its result carries the
call that made it: ``result.call``, a :class:`ClaimCall`. The registry records
it: each kind's check function is wrapped by :func:`recorded`, and the wrapper
is bound in the check's module under the check's own name, which is the name
the ``assert_*`` twin calls it by, so assertions, ``check_*`` calls, spec
claims and plugin kinds (wrapped when the registry reads them) are all
recorded the same way. The wrapper notes the arguments as given and, while the
check runs, the model, task and default seed it takes from the running test's
context.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import pkgutil
import sys
import threading
import weakref
from contextvars import ContextVar
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
    "components",   # a circuit: components or edges text ("L0H0 -> L1H0.k, L1H0 -> logits"), a list, a Circuit or a spec circuit name
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
    """Declare a built-in kind (called at import of the module that defines its check); its check's calls are recorded."""
    kind = _recording(kind)
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
            kind = _recording(kind)
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


# Calls of claims: how a result was made, so that it can be made again -----------------------------

#: Whether a recorded check is running in this context (a check called inside another is part of it).
_IN_CLAIM: ContextVar[bool] = ContextVar("circuitcheck_in_claim", default=False)


class ClaimCall:
    """One call of a claim kind's check function: enough to run the claim again, on another model.

    Attributes:
        check: the check function (``check_head``, ``check_sufficient``, a plugin's ``check_*``).
        arguments: its arguments by parameter name, as given (``model`` left out: see :attr:`model`).
        task: the task the running test's context gave the check (None when it took none from there).
        seed: the running test's default seed, when the check took it from there (None otherwise).
        model_given: whether the model was passed as ``model=`` (else the context gave it).

    The model is held weakly (a result does not keep its model alive):
    :attr:`model` is None once it is gone.
    """

    def __init__(self, check: Callable, arguments: dict[str, Any], model=None, *, task=None, seed: int | None = None,
                 model_given: bool = False):
        self.check = check
        self.arguments = dict(arguments)
        self.arguments.pop("model", None)
        extra = self._var_keyword()
        if extra is not None and isinstance(self.arguments.get(extra), dict):
            self.arguments[extra] = {k: v for k, v in self.arguments[extra].items() if k != "model"}
        self._model = weakref.ref(model) if model is not None else None
        self.task = task
        self.seed = seed
        self.model_given = model_given

    @property
    def model(self):
        """The model the claim was measured on, or None once it is gone."""
        return self._model() if self._model is not None else None

    def run(self, model=None, **changes):
        """Run the check again: on ``model`` (default: the original one), with ``changes`` to its arguments.

        Runs outside the running test's context (nothing is recorded for its
        report or baseline, and no fixture's patcher is used), with the task and
        default seed the original call took from that context. Returns the
        check's result (the check raises only on errors, never on a failed claim).
        """
        __tracebackhide__ = True
        model = self.model if model is None else model
        if model is None:
            raise CircuitCheckError("the model this claim was measured on is gone: run the claim again on a model you hold")
        extra = self._var_keyword()
        named = [name for name in self.parameters() if name != extra]
        unknown = [name for name in changes if name not in named and extra is None]
        if unknown:
            raise CircuitCheckError(
                f"{getattr(self.check, '__name__', 'the check')} has no parameter {', '.join(map(repr, unknown))}: "
                f"its parameters are {', '.join(named)}"
            )
        arguments = dict(self.arguments)
        keywords = dict(arguments.get(extra) or {}) if extra is not None else {}
        for name, value in {**changes, "model": model}.items():
            if name in named:
                arguments[name] = value
            elif extra is not None:
                keywords[name] = value
        if extra is not None:
            arguments[extra] = keywords
        bound = inspect.BoundArguments(inspect.signature(self.check), arguments)
        with self.replaying(model):
            return self.check(*bound.args, **bound.kwargs)

    def replaying(self, model):
        """The context :meth:`run` runs the check in, for other engine calls on ``model`` that should share its caches."""
        from ..model import context

        return context.active(_Replay(model, self.task, self.seed))

    def parameters(self) -> tuple[str, ...]:
        """The names of the check's parameters (``**kwargs`` included by its name)."""
        return tuple(inspect.signature(self.check).parameters)

    def _var_keyword(self) -> str | None:
        for name, parameter in inspect.signature(self.check).parameters.items():
            if parameter.kind is inspect.Parameter.VAR_KEYWORD:
                return name
        return None

    def __getstate__(self):  # a weak reference cannot be pickled: a pickled call has no model
        state = dict(self.__dict__)
        state["_model"] = None
        return state

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={value!r:.40}" for name, value in self.arguments.items())
        return f"ClaimCall({getattr(self.check, '__name__', self.check)}({shown}))"


class _Capture:
    """The running test's context, seen through: notes what model, task and seed it gives a check."""

    def __init__(self, outer):
        self.outer = outer
        self.model = None
        self.task = None
        self.seed: int | None = None

    def get_model(self):
        self.model = self.outer.get_model()
        return self.model

    def default_seed(self) -> int:
        self.seed = self.outer.default_seed()
        return self.seed

    def get_task(self, model):
        task = self.outer.get_task(model)
        if task is not None:
            self.task = task
        return task

    def get_patcher(self, model):
        return self.outer.get_patcher(model)

    def record(self, result, tolerance=None):
        return self.outer.record(result, tolerance)

    def record_sweep(self, sweep: dict) -> None:
        self.outer.record_sweep(sweep)


class _Replay:
    """The context of a claim run again: its model, its task and seed, and nothing recorded."""

    def __init__(self, model, task, seed: int | None):
        self.model, self.task, self.seed = model, task, seed

    def get_model(self):
        return self.model

    def default_seed(self) -> int:
        return self.seed if self.seed is not None else 0

    def get_task(self, model):
        return self.task

    def get_patcher(self, model):
        return None  # the model's own shared patcher (a fixture's belongs to the test's model)

    def record(self, result, tolerance=None):
        return None

    def record_sweep(self, sweep: dict) -> None:
        return None


def recorded(check: Callable) -> Callable:
    """``check`` wrapped so that each result it returns carries its :class:`ClaimCall` (``result.call``).

    A check called while another recorded check runs (one claim built on
    another) is not recorded: it is part of the outer claim. Wrapping a
    wrapped check returns it unchanged.
    """
    if getattr(check, "__circuitcheck_recorded__", None) is not None:
        return check

    @functools.wraps(check)
    def recording(*args, **kwargs):
        __tracebackhide__ = True
        if _IN_CLAIM.get():
            return check(*args, **kwargs)
        from ..model import context

        outer = context.current()
        capture = _Capture(outer) if outer is not None else None
        token = _IN_CLAIM.set(True)
        try:
            if capture is None:
                result = check(*args, **kwargs)
            else:
                with context.active(capture):
                    result = check(*args, **kwargs)
        finally:
            _IN_CLAIM.reset(token)
        arguments = dict(inspect.signature(check).bind(*args, **kwargs).arguments)
        given = kwargs.get("model")
        model = given if given is not None else (capture.model if capture is not None else None)
        if model is None:  # e.g. a probe claim given prober= (the prober's model)
            model = getattr(arguments.get("prober"), "model", None)
        call = ClaimCall(check, arguments, model, task=capture.task if capture else None,
                         seed=capture.seed if capture else None, model_given=given is not None)
        try:
            result.call = call
        except (AttributeError, TypeError):  # a result that takes no attributes: nothing to replay it by
            pass
        if outer is not None:
            context.note_check(result)  # informational on the running test, unless an assert_* concludes it
        return result

    recording.__circuitcheck_recorded__ = check
    return recording


def _recording(kind: ClaimKind) -> ClaimKind:
    """``kind`` with its check recorded, and the check's module name bound to the recorded check (see the module's docstring)."""
    check = recorded(kind.check)
    original = getattr(check, "__circuitcheck_recorded__", kind.check)
    module = sys.modules.get(getattr(original, "__module__", None) or "")
    name = getattr(original, "__name__", None)
    if module is not None and name and getattr(module, name, None) is original:
        setattr(module, name, check)  # what the assert_* twin calls
    return kind if check is kind.check else dataclasses.replace(kind, check=check)
