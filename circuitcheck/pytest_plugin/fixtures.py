"""Helpers that turn user code into pytest fixtures."""

from __future__ import annotations

from typing import Callable


def task_fixture(function: Callable | None = None, *, name: str | None = None):
    """Make a function of the model into a task fixture, built once per model.

    ::

        @cc.task_fixture
        def ioi_task(model):
            return cc.tasks.from_prompts(model, clean, corrupt, answers, wrong)

        def test_circuit(model, ioi_task):
            cc.assert_sufficient(CIRCUIT)          # the task comes from the fixture
    """

    def decorate(build: Callable):
        import pytest

        from ..engine.session import session_of

        @pytest.fixture(name=name or build.__name__)
        def fixture(model):
            # Kept in the model's session: built once per model, freed with it.
            return session_of(model).task(("task_fixture", build), lambda: build(model))

        fixture.__doc__ = build.__doc__
        return fixture

    return decorate(function) if function is not None else decorate
