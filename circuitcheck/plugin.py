"""The pytest plugin (entry point ``pytest11``): options, markers, fixtures, reporting.

Only wiring lives here; the work is in importable modules usable without
pytest. This module must stay cheap to import: torch, pandas and
transformer_lens are imported inside fixtures, on first use, so a project that
has circuitcheck installed but does not use it pays nothing at start-up.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import pytest

from . import context as _context
from . import registry
from .session import DEFAULT_SPEC, ActivationStore, ModelStore

_STATE = pytest.StashKey["CircuitCheckState"]()
_RESULTS = pytest.StashKey[list]()
_SWEEPS = pytest.StashKey[list]()

MARKERS = {
    "circuitcheck_model(spec)": "run the test's `model` fixture on this model spec (e.g. 'zoo:induction-1l').",
    "circuitcheck_prompt(prompt)": "the prompt (string or list of strings) the `cache` fixture runs the model on.",
    "circuitcheck_task(task, **kwargs)": "the task causal assertions use: a built-in name ('induction'), a function of the model, or a Task.",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("circuitcheck", "circuitcheck: interpretability claims as tests")

    def option(name: str, help: str, default: Any = None, **kwargs) -> None:
        group.addoption(f"--circuitcheck-{name}", dest=f"circuitcheck_{name.replace('-', '_')}", default=None, help=help, **kwargs)
        parser.addini(f"circuitcheck_{name.replace('-', '_')}", help=help, default=default)

    option("model", f"model spec for the `model` fixture (default {DEFAULT_SPEC})", default=DEFAULT_SPEC)
    option("device", "torch device for models: auto (cuda when available), cpu, cuda, cuda:N", default="auto")
    option("report", "write an HTML report of every claim to this path")
    option("json", "write every claim's results as JSON to this path")
    option("seed", "seed for generated inputs and bootstrap resampling (default 0)", default="0")
    option("max-batch", "most rows (variants x examples) in one patched forward pass (default 256); halved on out-of-memory")


def pytest_configure(config: pytest.Config) -> None:
    for marker, text in MARKERS.items():
        config.addinivalue_line("markers", f"{marker}: {text}")
    state = CircuitCheckState(config)
    config.stash[_STATE] = state
    # Registered as a plugin of its own so that its hooks see only this run
    # (pytester runs nested sessions in one process).
    config.pluginmanager.register(state, "circuitcheck-state")


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(_STATE, None)
    if state is not None:
        state.close()


class CircuitCheckState:
    """Everything circuitcheck keeps for one pytest run."""

    def __init__(self, config: pytest.Config):
        self.config = config
        self.models = ModelStore(loader=registry.load_model)
        self.activations = ActivationStore()
        self.patchers: dict[int, Any] = {}
        self.tasks: dict[tuple, Any] = {}
        self.tests: list[dict[str, Any]] = []
        self.registered_sources: list[Any] = []
        self.is_worker = hasattr(config, "workerinput")
        self.interrupted = False
        self.written: list[str] = []
        self.written_error: str | None = None

    # options: CLI flag wins over ini key -------------------------------------
    def option(self, name: str):
        value = self.config.getoption(f"circuitcheck_{name}", None)
        if value is None:
            value = self.config.getini(f"circuitcheck_{name}")
        return value.strip() if isinstance(value, str) else value

    def seed(self) -> int:
        raw = self.option("seed")
        try:
            return int(raw)
        except (TypeError, ValueError):
            raise pytest.UsageError(f"--circuitcheck-seed={raw!r} is not valid: it must be an integer") from None

    def max_batch(self) -> int | None:
        raw = self.option("max_batch")
        if raw in (None, ""):
            return None
        try:
            value = int(raw)
        except (TypeError, ValueError):
            value = 0
        if value < 1:
            raise pytest.UsageError(f"--circuitcheck-max-batch={raw!r} is not valid: it must be a positive integer")
        return value

    def patcher(self, model):
        from .patcher import Patcher

        key = id(model)
        if key not in self.patchers:
            self.patchers[key] = Patcher(model, max_batch=self.max_batch())
        return self.patchers[key]

    def task_for(self, item: pytest.Item, model):
        """The task of the running test: marker, else the one Task among its fixtures."""
        from .tasks import Task

        marker = item.get_closest_marker("circuitcheck_task")
        if marker is not None:
            return self.task_from_marker(marker, model, item.nodeid)
        found = [(name, value) for name, value in getattr(item, "funcargs", {}).items() if isinstance(value, Task)]
        if len(found) > 1:
            names = ", ".join(name for name, _ in found)
            raise pytest.UsageError(f"{item.nodeid} has several task fixtures ({names}): pass task= to say which one a claim is about")
        return found[0][1] if found else None

    def task_from_marker(self, marker, model, nodeid: str):
        from . import tasks
        from .tasks import Task

        if len(marker.args) != 1:
            raise pytest.UsageError(f"@pytest.mark.circuitcheck_task takes one task (a name, a function of the model, or a Task) in {nodeid}")
        spec, kwargs = marker.args[0], dict(marker.kwargs)
        if isinstance(spec, Task):
            return spec
        key = (id(model), repr(spec), tuple(sorted((k, repr(v)) for k, v in kwargs.items())))
        if key not in self.tasks:
            if isinstance(spec, str):
                builders = {"induction": tasks.induction}
                if spec not in builders:
                    raise pytest.UsageError(f"unknown task {spec!r} in {nodeid}: built-in tasks are {', '.join(builders)}; or pass a function of the model")
                kwargs.setdefault("seed", self.seed())
                self.tasks[key] = builders[spec](model, **kwargs)
            elif callable(spec):
                self.tasks[key] = spec(model, **kwargs)
            else:
                raise pytest.UsageError(f"@pytest.mark.circuitcheck_task got {spec!r} in {nodeid}: give a task name, a function of the model, or a Task")
            if not isinstance(self.tasks[key], Task):
                raise pytest.UsageError(f"the task function in {nodeid} returned {type(self.tasks[key]).__name__}, not a circuitcheck Task")
        return self.tasks[key]

    def maybe_register_source(self, plugin) -> None:
        """Forward conftest.py plugins that implement circuitcheck hooks to circuitcheck's manager."""
        if plugin is None or plugin in self.registered_sources or not registry.has_hooks(plugin):
            return
        if getattr(plugin, "__name__", "").startswith("circuitcheck"):
            return  # our own modules, registered through entry points
        registry.register(plugin)
        self.registered_sources.append(plugin)

    def close(self) -> None:
        for plugin in self.registered_sources:
            registry.unregister(plugin)
        self.registered_sources.clear()
        self.models.clear()
        self.activations.clear()
        self.patchers.clear()
        self.tasks.clear()

    # pytest hooks of this run ---------------------------------------------------
    def pytest_plugin_registered(self, plugin, plugin_name, manager) -> None:
        # historic: called for the plugins registered before this one too
        self.maybe_register_source(plugin)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Collect claims on the process that writes the report (the controller under xdist)."""
        if self.is_worker:
            return
        failed_setup = report.when == "setup" and report.outcome != "passed"
        if report.when != "call" and not failed_setup:
            return
        outcome = "error" if failed_setup and report.outcome == "failed" else report.outcome
        if hasattr(report, "wasxfail"):
            outcome = "xfailed" if report.outcome == "skipped" else "xpassed"
        self.tests.append(
            {
                "nodeid": report.nodeid,
                "outcome": outcome,
                "duration": round(float(report.duration), 4),
                "claims": list(getattr(report, "circuitcheck", None) or []),
                "sweeps": list(getattr(report, "circuitcheck_sweeps", None) or []),
            }
        )

    def pytest_keyboard_interrupt(self, excinfo) -> None:
        self.interrupted = True

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus) -> None:
        if self.is_worker:
            return
        report_path, json_path = self.option("report"), self.option("json")
        if not report_path and not json_path:
            return
        from . import report as _report

        document = _report.new_document(_environment(self))
        document["tests"] = self.tests
        document["complete"] = not self.interrupted and not session.shouldstop and not session.shouldfail
        try:
            if json_path:
                _report.write_json(json_path, document)
            if report_path:
                _report.write_html(report_path, document)
        except _report.CircuitCheckError as error:
            self.written_error = str(error)
            session.exitstatus = pytest.ExitCode.USAGE_ERROR
            return
        self.written = [p for p in (json_path, report_path) if p]

    def pytest_terminal_summary(self, terminalreporter, exitstatus, config: pytest.Config) -> None:
        if self.is_worker:
            return
        tests = [test for test in self.tests if test["claims"]]
        if tests:
            terminalreporter.section("circuitcheck claims")
            claims = [claim for test in tests for claim in test["claims"]]
            held = sum(claim["passed"] for claim in claims)
            terminalreporter.write_line(f"{held} claims held, {len(claims) - held} failed" + ("" if config.option.verbose > 0 else " (-v lists every claim)"))
            if config.option.verbose <= 0:  # only the failures, unless asked
                tests = [{**test, "claims": [c for c in test["claims"] if not c["passed"]]} for test in tests]
                tests = [test for test in tests if test["claims"]]
            models = {claim.get("model") for claim in claims}
            for test in tests:
                terminalreporter.write_line(test["nodeid"] + (f" ({test['outcome']})" if test["outcome"] in ("xfailed", "xpassed") else ""))
                for claim in test["claims"]:
                    value = "nan" if claim["value"] is None else f"{claim['value']:.3f}"
                    bound = " ".join(
                        f"{sign} {limit:.3g}" for sign, limit in ((">=", claim["min_value"]), ("<=", claim["max_value"])) if limit is not None
                    )
                    where = f"  [{claim.get('model')}]" if len(models) > 1 else ""
                    verdict = "held  " if claim["passed"] else "FAILED"
                    terminalreporter.write_line(f"  {verdict} {value:>8}  {bound:<10} {claim['claim']}{where}", red=not claim["passed"], green=claim["passed"])
        for path in self.written:
            terminalreporter.write_line(f"circuitcheck: wrote {path}")
        if self.written_error:
            terminalreporter.write_line(f"circuitcheck: {self.written_error}", red=True)


def session_model(config: pytest.Config, spec: str):
    """The run's shared model for ``spec`` on the run's device (loaded once per session)."""
    state = config.stash[_STATE]
    return state.models.get(spec, registry.resolve_device(state.option("device")))


def session_seed(config: pytest.Config) -> int:
    """The run's ``--circuitcheck-seed``."""
    return config.stash[_STATE].seed()


# Fixtures ----------------------------------------------------------------------


def _model_spec(request: pytest.FixtureRequest, state: CircuitCheckState) -> str:
    marker = request.node.get_closest_marker("circuitcheck_model")
    if marker is not None:
        if len(marker.args) != 1 or not isinstance(marker.args[0], str):
            raise pytest.UsageError(
                f"@pytest.mark.circuitcheck_model takes one model spec string, got {marker.args!r} in {request.node.nodeid}"
            )
        return marker.args[0]
    return state.option("model") or DEFAULT_SPEC


@pytest.fixture
def model(request: pytest.FixtureRequest):
    """The model under test, in eval mode without gradients, loaded once per (spec, device) per session.

    Spec: ``@pytest.mark.circuitcheck_model(spec)`` > ``--circuitcheck-model`` >
    ini ``circuitcheck_model`` > ``zoo:induction-2l``.
    """
    state = request.config.stash[_STATE]
    spec = _model_spec(request, state)
    device = registry.resolve_device(state.option("device"))
    return state.models.get(spec, device)


@pytest.fixture
def cache(request: pytest.FixtureRequest, model):
    """The model's ``ActivationCache`` on the test's prompt, computed once per session per (model, input).

    The prompt comes from ``@pytest.mark.circuitcheck_prompt(...)``; else the
    clean inputs of the test's task (marker or task fixture); else the seeded
    default input of the head scores (``BOS r r``).
    """
    import torch

    from . import heads, inputs

    state = request.config.stash[_STATE]
    marker = request.node.get_closest_marker("circuitcheck_prompt")
    if marker is not None:
        if len(marker.args) != 1:
            raise pytest.UsageError(f"@pytest.mark.circuitcheck_prompt takes one prompt or list of prompts, got {marker.args!r}")
        token_list = inputs.tokens_of_prompts(model, marker.args[0])
        lengths = {len(t) for t in token_list}
        if len(lengths) != 1:
            raise pytest.UsageError(
                f"circuitcheck_prompt prompts tokenise to different lengths {sorted(lengths)}: a cache needs one shape"
            )
        tokens = torch.stack(token_list)
    else:
        task = state.task_for(request.node, model)
        tokens = task.clean if task is not None else heads.default_tokens(model, seed=state.seed())

    def compute():
        device = getattr(model.cfg, "device", None) or "cpu"
        with torch.no_grad():
            _, activation_cache = model.run_with_cache(tokens.to(device))
        return activation_cache

    return state.activations.get(model, tokens, compute)


@pytest.fixture
def patcher(request: pytest.FixtureRequest, model):
    """The batched intervention engine bound to the test's model, shared by the session (its runs are cached)."""
    return request.config.stash[_STATE].patcher(model)


@pytest.fixture
def induction_task(request: pytest.FixtureRequest, model):
    """``circuitcheck.tasks.induction`` on the test's model (32 prompts, seq_len 20, the run's seed), built once per model."""
    from . import tasks

    state = request.config.stash[_STATE]
    key = (id(model), "induction-fixture", state.seed())
    if key not in state.tasks:
        state.tasks[key] = tasks.induction(model, seed=state.seed())
    return state.tasks[key]


# The running test's context -------------------------------------------------


class _ItemContext:
    def __init__(self, item: pytest.Item, state: CircuitCheckState):
        self.item = item
        self.state = state

    def get_model(self):
        funcargs = getattr(self.item, "funcargs", {})
        if "model" in funcargs:
            return funcargs["model"]
        return self.item._request.getfixturevalue("model")

    def default_seed(self) -> int:
        return self.state.seed()

    def record_sweep(self, sweep: dict) -> None:
        self.item.stash.setdefault(_SWEEPS, []).append(sweep)

    def get_task(self, model):
        return self.state.task_for(self.item, model)

    def get_patcher(self, model):
        return self.state.patcher(model)

    def record(self, result) -> None:
        results = self.item.stash.setdefault(_RESULTS, [])
        results.append(result.to_dict())
        # JUnit XML properties, so CI dashboards can chart each claim's value
        prefix = f"circuitcheck[{len(results) - 1}]"
        self.item.user_properties.extend(
            [(f"{prefix}.claim", result.claim), (f"{prefix}.value", f"{result.value:.6g}"), (f"{prefix}.verdict", result.verdict)]
        )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    state = item.config.stash[_STATE]
    with _context.active(_ItemContext(item, state)):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    report = yield
    if call.when == "call":
        report.circuitcheck = list(item.stash.get(_RESULTS, []))
        report.circuitcheck_sweeps = list(item.stash.get(_SWEEPS, []))
    return report


def _environment(state: CircuitCheckState) -> dict[str, Any]:
    from importlib import metadata

    env: dict[str, Any] = {"python": sys.version.split()[0], "seed": state.seed(), "device": state.option("device")}
    for package in ("circuitcheck", "torch", "transformer-lens", "transformers", "pytest"):
        try:
            env[f"version {package}"] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    env["models loaded"] = ", ".join(f"{spec} on {device}" for spec, device in state.models.loads) or "none"
    commit = _git_commit(str(state.config.rootpath))
    if commit:
        env["git commit"] = commit
    return env


def _git_commit(root: str) -> str | None:
    import subprocess

    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5, env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
