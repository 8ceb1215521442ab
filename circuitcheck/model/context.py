"""The running test's context: where assertions find their model, seed and recorder.

Assertions take ``model=``, ``seed=`` ... explicitly; when left out they come
from the context of the running pytest test (set by the plugin around each
test call). Outside pytest there is no context and the arguments are required.
This module knows nothing about pytest: the plugin installs an object with the
:class:`TestContext` methods.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Iterator, Protocol

from ..errors import CircuitCheckError
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


def require_eval(model) -> None:
    if getattr(model, "training", False):
        raise CircuitCheckError(
            "the model is in training mode, so dropout would make every measurement random: call model.eval() first"
        )
