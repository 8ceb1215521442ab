"""Spec files in pytest: a ``*.circuit.yaml`` file is a :class:`SpecFile` with one :class:`SpecItem` per claim.

One item per claim (per checkpoint when the spec lists checkpoints), named by
the claim's id (``induction_head L1H0[step0]``). An item loads its model
through the run's shared model store (the same model a Python test with the
same spec gets), builds the spec's task once per model (in the model's
session), and runs the claim's assertion. A failing claim shows its lab note
and the spec's ``file:line``, no traceback; a collection error shows every
problem of the file.
"""

from __future__ import annotations

import re

import pytest

from ..errors import CircuitAssertionError, CircuitCheckError
from ..spec.load import Claim, Spec, TaskSpec, load_spec
from ..spec.yaml import SpecError


#: (spec, line, "task" or "model", model spec, error text) -> the item whose failure showed that error in full
_SHOWN_ERRORS = pytest.StashKey[dict]()


def _run_plugin(config: pytest.Config):
    """The run's circuitcheck pytest plugin (it owns the shared models and the seed).

    Looked up by the names pytest registers it under (its entry point, or its
    module with ``-p``), not imported: the plugin imports this module.
    """
    for name in ("circuitcheck", "circuitcheck.pytest_plugin.plugin"):
        plugin = config.pluginmanager.get_plugin(name)
        if plugin is not None and hasattr(plugin, "session_model"):
            return plugin
    raise CircuitCheckError("the circuitcheck pytest plugin is not active in this run: spec files need it (remove `-p no:circuitcheck`)")


def _task_for(model, task_spec: TaskSpec, default_seed: int):
    from ..engine.session import session_of

    return session_of(model).task(("spec", task_spec.key, default_seed), lambda: task_spec.build(model, default_seed))


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
        plugin = _run_plugin(self.config)
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
            self.claim.run(model, task, seed=default_seed)
        except CircuitCheckError as error:
            raise _located(error, self.claim.line, self.claim.where)

    def _location_text(self, line: int, where: str) -> str:
        return f"{self.spec.display}:{line}: {where} ({self.claim.id}) on {self.model_spec}"

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
            if where in ("task", "model"):
                # every claim on this model (checkpoint) fails with the task's or the model's error: shown in full once
                shown = self.config.stash.setdefault(_SHOWN_ERRORS, {})
                first = shown.setdefault((self.spec.display, line, where, self.model_spec, str(error)), self.name)
                if first != self.name:
                    text = (f"error: same error as above (the {where} at {self.spec.display}:{line} on {self.model_spec}, "
                            f"shown in full for {first})\n\nspec: {self._location_text(line, where)}")
            return _TextRepr(text, self.spec.display, line)
        return super().repr_failure(excinfo, style)

    def reportinfo(self):
        # (path, 0-based line as pytest's convention, domain). The domain titles the failure
        # section; it is not a suffix of the node id, because pytest's verbose line would then
        # rewrite every '.' of the id (L1H0.k) as '::'.
        return self.path, self.claim.line - 1, f"{self.name} ({self.claim.where})"
