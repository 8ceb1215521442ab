"""The running test's context: where assertions find their model, seed and recorder.

Assertions take ``model=``, ``seed=`` ... explicitly; when left out they come
from the context of the running pytest test (set by the plugin around each
test call). Outside pytest there is no context and the arguments are required.
This module knows nothing about pytest: the plugin installs an object with the
:class:`TestContext` methods.

Two more pieces of state live here, both per context (thread, task):

- **checks as they return.** The registry's wrapper of every claim kind's
  check hands each result of an outermost check to :func:`note_check`; the
  running test records it as *informational* (shown in the report, never
  deciding the test) unless :func:`record` is then called with it (by
  ``conclude``: the ``assert_*`` twin), which makes it a claim of the test.
- **soft mode** (:func:`soft_claims`, ``cc.claims()``, ``--circuitcheck-soft``):
  inside it a failed claim is recorded and kept instead of raised, and the
  block raises one :class:`~circuitcheck.errors.CircuitAssertionError` at its
  end with every failed claim's lab note.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Iterator, Protocol

from ..errors import CircuitAssertionError, CircuitCheckError
from .seeds import MAX_SEED, SeedError, check_seed  # noqa: F401 (importable here)


class TestContext(Protocol):
    __test__ = False  # not a pytest test class

    def get_model(self) -> Any: ...

    def default_seed(self) -> int: ...

    def record(self, result, tolerance=None) -> str | None: ...

    def get_task(self, model) -> Any: ...

    def get_patcher(self, model) -> Any: ...

    def record_sweep(self, sweep: dict) -> None: ...


_current: ContextVar[TestContext | None] = ContextVar("circuitcheck_test_context", default=None)


@contextmanager
def active(context: TestContext) -> Iterator[None]:
    token = _current.set(context)
    try:
        yield
    finally:
        _current.reset(token)


def current() -> TestContext | None:
    return _current.get()


def resolve_model(model=None):
    """``model`` if given, else the running test's ``model`` fixture; eval mode is required."""
    if model is None:
        context = current()
        if context is None:
            raise CircuitCheckError(
                "no model: pass model=... (outside pytest), or call the assertion inside a test run by pytest with circuitcheck"
            )
        model = context.get_model()
    elif not hasattr(model, "cfg") or not callable(getattr(model, "run_with_cache", None)):
        raise CircuitCheckError(f"model={model!r} is not a model: give a TransformerLens model (a TransformerBridge or "
                                f"HookedTransformer, e.g. circuitcheck.load_model('zoo:induction-2l')), got {type(model).__name__}")
    require_eval(model)
    return model


def resolve_seed(seed: int | None) -> int:
    if seed is not None:
        return check_seed(seed)
    context = current()
    return context.default_seed() if context is not None else 0


def resolve_task(task, model):
    """``task`` if given, else the running test's task (marker or task fixture)."""
    if task is not None:
        from .tasks import Task

        if not isinstance(task, Task):
            raise CircuitCheckError(f"task={task!r} is not valid: it must be a circuitcheck Task (see circuitcheck.tasks), got {type(task).__name__}")
        return task
    context = current()
    found = context.get_task(model) if context is not None else None
    if found is None:
        raise CircuitCheckError(
            "no task: pass task=..., mark the test with @pytest.mark.circuitcheck_task(...), or request a task fixture "
            "(e.g. induction_task)"
        )
    return found


def current_patcher(model):
    """The running test's shared patcher for ``model``, if any."""
    context = current()
    return context.get_patcher(model) if context is not None else None


def record(result, tolerance=None) -> str | None:
    """Record a result on the running test; returns a regression message when it moved beyond its baseline."""
    context = current()
    if context is not None:
        return context.record(result, tolerance)
    return None


def record_sweep(sweep: dict) -> None:
    """Attach a JSON-safe sweep (heatmap) to the running test's report, if any."""
    context = current()
    if context is not None:
        context.record_sweep(sweep)


def note_check(result) -> None:
    """A claim kind's check has returned ``result`` (its outermost call): the running test records it as informational.

    Called by the registry's wrapper of every check. A context without a
    ``note_check`` method (a replay, no test) records nothing. Concluding the
    result afterwards (:func:`record`) makes it a claim that decides the test.
    """
    note = getattr(current(), "note_check", None)
    if note is not None:
        note(result)


# Soft mode -------------------------------------------------------------------


class SoftClaims:
    """The claims concluded in one soft block: how many, and the failed ones with where they were claimed.

    ``failures`` holds ``(message, result, location)``: the lab note (with
    any baseline regression), the :class:`~circuitcheck.claims.result.CheckResult`
    and the claim's ``file:line`` (None when no caller frame outside
    circuitcheck was found).
    """

    def __init__(self):
        self.concluded = 0
        self.failures: list[tuple[str, Any, str | None]] = []

    def add_failure(self, message: str, result, location: str | None) -> None:
        self.failures.append((message, result, location))

    def message(self) -> str:
        """Every failed claim's lab note, each followed by where it was claimed; a count first when there are several."""
        notes = [message + (f"\n  at {location}" if location else "") for message, _, location in self.failures]
        if len(notes) == 1:
            return notes[0]
        held = self.concluded - len(notes)
        header = (f"{len(notes)} of {self.concluded} claims failed (soft mode: every claim was measured; "
                  f"{held} held)")
        return "\n\n".join([header, *notes])

    def error(self) -> CircuitAssertionError | None:
        """The error the block raises at its end (None when every claim held): ``.result`` the first failed claim, ``.results`` all."""
        if not self.failures:
            return None
        error = CircuitAssertionError(self.message(), self.failures[0][1])
        error.results = [result for _, result, _ in self.failures]
        return error


_soft: ContextVar[SoftClaims | None] = ContextVar("circuitcheck_soft_claims", default=None)


@contextmanager
def soft_claims() -> Iterator[SoftClaims]:
    """Soft mode for the block: each claim is measured and recorded, and the block fails once at its end.

    ::

        with cc.claims():
            cc.assert_induction_head(1, 3, min_score=0.7)
            cc.assert_necessary("L0H2 L1H3", min_drop=0.5)   # measured even if the first failed

    Inside the block an ``assert_*`` whose claim fails (or regresses against
    the baseline) records it and returns its result instead of raising; at the
    end of the block one :class:`~circuitcheck.errors.CircuitAssertionError`
    lists every failed claim's lab note with its ``file:line``. An error that
    is not a failed claim still stops the block at once; the claims that
    failed before it are added to that error's notes. A block inside another
    soft block (or inside a test run with ``--circuitcheck-soft``) joins it:
    the outermost one raises. As an ``assert_*`` no longer raises inside,
    ``pytest.raises(CircuitAssertionError)`` around one fails: check
    ``result.passed`` instead. Yields the :class:`SoftClaims` being collected.
    """
    __tracebackhide__ = True
    outer = _soft.get()
    if outer is not None:
        yield outer
        return
    claims = SoftClaims()
    token = _soft.set(claims)
    try:
        yield claims
    except BaseException as error:
        if claims.failures and hasattr(error, "add_note"):
            error.add_note(f"before this error, {len(claims.failures)} claim(s) failed in soft mode:\n\n" + claims.message())
        raise
    finally:
        _soft.reset(token)
    failed = claims.error()
    if failed is not None:
        raise failed


def soft_block() -> SoftClaims | None:
    """The soft block the caller runs in, if any (``conclude`` keeps a failed claim there instead of raising)."""
    return _soft.get()


def caller_location() -> str | None:
    """``file:line`` of the innermost frame on the stack that is not hidden from tracebacks: the user's claim.

    Frames that set ``__tracebackhide__`` (every ``assert_*``, ``conclude``,
    spec items) and circuitcheck's own modules are skipped, as pytest skips
    them in a traceback. The path is relative to the working directory when
    it lies below it.
    """
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    frame = sys._getframe(1)
    while frame is not None:
        filename = os.path.abspath(frame.f_code.co_filename)
        hidden = frame.f_locals.get("__tracebackhide__", False) or filename.startswith(package + os.sep)
        if not hidden and "contextlib" not in os.path.basename(filename):
            try:
                shown = os.path.relpath(filename)
            except ValueError:  # another drive (Windows)
                shown = filename
            return f"{filename if shown.startswith('..') else shown}:{frame.f_lineno}"
        frame = frame.f_back
    return None


def require_eval(model) -> None:
    if getattr(model, "training", False):
        raise CircuitCheckError(
            "the model is in training mode, so dropout would make every measurement random: call model.eval() first"
        )
