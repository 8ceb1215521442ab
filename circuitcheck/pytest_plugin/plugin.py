"""The pytest plugin (entry point ``pytest11``): options, markers, fixtures, reporting.

Only wiring lives here; the work is in importable modules usable without
pytest. This module must stay cheap to import: torch, pandas and
transformer_lens are imported inside fixtures, on first use, so a project that
has circuitcheck installed but does not use it pays nothing at start-up.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

from ..model import context as _context
from ..model import sources as registry
from .session import DEFAULT_SPEC, ActivationStore, ModelStore

_STATE = pytest.StashKey["CircuitCheckState"]()
_RESULTS = pytest.StashKey[list]()
_SWEEPS = pytest.StashKey[list]()
_KEYS = pytest.StashKey[dict]()

MARKERS = {
    "circuitcheck_model(spec)": "run the test's `model` fixture on this model spec (e.g. 'zoo:induction-1l').",
    "circuitcheck_prompt(prompt)": "the prompt (string or list of strings) the `cache` fixture runs the model on.",
    "circuitcheck_task(task, **kwargs)": "the task causal assertions use: a built-in name ('induction'), a function of the model, or a Task.",
    "circuitcheck_checkpoints(*names)": "run the test once per checkpoint of its model ('all' where the source can list them).",
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
    option("checkpoints", "run every test that uses `model` once per checkpoint: comma-separated names, or 'all'")
    option("baseline", "compare every claim's value with this baseline file; fail when one moved beyond its tolerance")
    group.addoption("--circuitcheck-update-baseline", action="store_true", default=False, dest="circuitcheck_update_baseline",
                    help="write this run's claim values into the baseline file (merging; entries of tests that did not run are kept)")
    group.addoption("--circuitcheck-prune-baseline", action="store_true", default=False, dest="circuitcheck_prune_baseline",
                    help="with --circuitcheck-update-baseline: remove entries that tests which ran no longer produce")


def pytest_configure(config: pytest.Config) -> None:
    for marker, text in MARKERS.items():
        config.addinivalue_line("markers", f"{marker}: {text}")
    state = CircuitCheckState(config)
    config.stash[_STATE] = state
    state.load_baseline()
    if state.option("checkpoints") and getattr(config.option, "dist", "no") == "load" and not state.is_worker:
        # one worker per checkpoint group, so each worker loads a checkpoint once
        config.option.dist = "loadgroup"
    # Registered as a plugin of its own so that its hooks see only this run
    # (pytester runs nested sessions in one process).
    config.pluginmanager.register(state, "circuitcheck-state")


def pytest_collect_file(file_path, parent):
    """``*.circuit.yaml`` files are executable specs: one test item per claim (see circuitcheck.spec)."""
    if file_path.name.endswith(".circuit.yaml"):
        from ..spec.load import SpecFile

        return SpecFile.from_parent(parent, path=file_path)
    return None


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(_STATE, None)
    if state is not None:
        state.close()


class CircuitCheckState:
    """Everything circuitcheck keeps for one pytest run."""

    def __init__(self, config: pytest.Config):
        self.config = config
        self.models = ModelStore(loader=self._load_model)
        self.model_info: dict[str, str] = {}
        self.activations = ActivationStore()
        self.patchers: dict[int, Any] = {}
        self.tasks: dict[tuple, Any] = {}
        self.tests: list[dict[str, Any]] = []
        self.registered_sources: list[Any] = []
        self.is_worker = hasattr(config, "workerinput")
        self.interrupted = False
        self.baseline = None
        self.baseline_counts: dict[str, int] = {}
        self.baseline_report: list[str] = []
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
        from ..engine.patcher import Patcher

        key = id(model)
        if key not in self.patchers:
            self.patchers[key] = Patcher(model, max_batch=self.max_batch())
        return self.patchers[key]

    def task_for(self, item: pytest.Item, model):
        """The task of the running test: marker, else the one Task among its fixtures."""
        from ..model.tasks import Task

        marker = item.get_closest_marker("circuitcheck_task")
        if marker is not None:
            return self.task_from_marker(marker, model, item.nodeid)
        found = [(name, value) for name, value in getattr(item, "funcargs", {}).items() if isinstance(value, Task)]
        if len(found) > 1:
            names = ", ".join(name for name, _ in found)
            raise pytest.UsageError(f"{item.nodeid} has several task fixtures ({names}): pass task= to say which one a claim is about")
        return found[0][1] if found else None

    def task_from_marker(self, marker, model, nodeid: str):
        from ..model import tasks
        from ..model.tasks import Task

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

    def _load_model(self, spec: str, device: str):
        """Load through the model sources and note what was loaded, for the report's environment."""
        from ..engine.lens import weights_hash

        model = registry.load_model(spec, device)
        cfg = model.cfg
        shape = f"{cfg.n_layers} layers x {cfg.n_heads} heads, d_model {cfg.d_model}, d_vocab {cfg.d_vocab}"
        if getattr(cfg, "attn_only", False):
            shape += ", attention-only"
        self.model_info[f"model {spec}"] = f"{type(model).__name__} on {device}; {shape}; weights sha256 {weights_hash(model)[:16]}"
        return model

    # baselines ---------------------------------------------------------------------
    def load_baseline(self) -> None:
        from ..claims.baseline import Baseline, BaselineError

        path = self.option("baseline")
        if self.config.getoption("circuitcheck_update_baseline") and not path:
            raise pytest.UsageError("--circuitcheck-update-baseline needs a file: give --circuitcheck-baseline=FILE (or the ini key)")
        if self.config.getoption("circuitcheck_prune_baseline") and not self.config.getoption("circuitcheck_update_baseline"):
            raise pytest.UsageError("--circuitcheck-prune-baseline only applies with --circuitcheck-update-baseline")
        if path:
            try:
                self.baseline = Baseline.load(Path(self.config.rootpath, path) if not Path(path).is_absolute() else path)
            except BaselineError as error:
                raise pytest.UsageError(str(error)) from None

    @property
    def updating_baseline(self) -> bool:
        return bool(self.config.getoption("circuitcheck_update_baseline"))

    def compare_baseline(self, item: pytest.Item, result, tolerance, record: dict) -> str | None:
        """Key the claim, compare it with the stored value; annotate ``record``; a message when it regressed."""
        from ..claims.baseline import Tolerance, entry_key

        test_id = item_identity(item)["test_id"]
        key = entry_key(test_id, result.claim, result.checkpoint)
        seen = item.stash.setdefault(_KEYS, {})
        seen[key] = seen.get(key, 0) + 1
        if seen[key] > 1:  # the same claim twice in one test
            key = f"{key} #{seen[key]}"
        record["baseline_key"] = key
        record["baseline_test"] = test_id
        if self.baseline is None:
            return None
        if self.updating_baseline:
            record["baseline"] = {"status": "recorded"}
            return None
        comparison = self.baseline.compare(key, result.value, Tolerance.parse(tolerance))
        record["baseline"] = comparison.to_dict()
        if comparison.status == "regressed":
            return comparison.message(result.claim, str(self.baseline.path), result.metric)
        return None

    def finish_baseline(self) -> None:
        from ..claims.baseline import make_entry

        if self.baseline is None:
            return
        claims = [(test, claim) for test in self.tests for claim in test["claims"] if claim.get("baseline_key")]
        if not self.updating_baseline:
            statuses = [claim.get("baseline", {}).get("status") for _, claim in claims]
            new = statuses.count("new")
            self.baseline_report.append(
                f"baseline {self.baseline.path}: {statuses.count('ok')} claims within tolerance, {statuses.count('regressed')} regressed, "
                f"{new} not in the baseline" + (" (add them with --circuitcheck-update-baseline)" if new else "")
            )
            return
        produced = {claim["baseline_key"]: make_entry(claim["baseline_test"], claim) for _, claim in claims if claim.get("value") is not None}
        ran = {claim["baseline_test"] for _, claim in claims} | {test.get("test_id", test["nodeid"]) for test in self.tests}
        prune = bool(self.config.getoption("circuitcheck_prune_baseline"))
        before = dict(self.baseline.entries)
        merged, stale = self.baseline.merged(produced, ran, prune)
        merged.write()
        added = sum(key not in before for key in produced)
        changed = sum(key in before and before[key].get("value") != entry["value"] for key, entry in produced.items())
        self.baseline_report.append(
            f"wrote baseline {merged.path}: {len(merged.entries)} entries ({added} added, {changed} changed, "
            f"{len(before) - len(stale) * prune - sum(key in before for key in produced)} kept from tests that did not run or did not change)"
        )
        if stale:
            verb = "removed" if prune else "kept (remove them with --circuitcheck-prune-baseline)"
            self.baseline_report.append(f"{len(stale)} baseline entries are no longer produced by tests that ran, {verb}:")
            self.baseline_report.extend(f"  {key}" for key in stale)

    # checkpoints ---------------------------------------------------------------------
    def checkpoints_for(self, node, spec: str) -> list[str] | None:
        """The checkpoints a test runs over: marker > option > ini; None when there are none."""
        marker = node.get_closest_marker("circuitcheck_checkpoints")
        if marker is not None:
            names = list(marker.args)
            if len(names) == 1 and isinstance(names[0], (list, tuple)):
                names = list(names[0])
        else:
            raw = self.option("checkpoints")
            if not raw:
                return None
            names = [n.strip() for n in raw.split(",") if n.strip()]
        if not names or not all(isinstance(n, str) and n for n in names):
            raise pytest.UsageError(f"checkpoints {names!r} are not valid: give checkpoint names (strings) or 'all'")
        if names == ["all"]:
            listed = registry.list_checkpoints(spec)
            if not listed:
                raise pytest.UsageError(f"the source of model {spec!r} cannot list its checkpoints: name them instead of 'all'")
            return listed
        return names

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

    def pytest_collection_modifyitems(self, session, config, items: list[pytest.Item]) -> None:
        """Group checkpoint-parametrised tests by (model, checkpoint): each checkpoint loads once, in order."""
        order: dict[str, int] = {}
        steps: dict[str, dict[str, int]] = {}
        keys = {}
        for item in items:
            identity = item_identity(item)
            checkpoint = identity["checkpoint"]
            if checkpoint is None:
                keys[item] = (0, 0, 0)
                continue
            group = identity["model_spec"]
            order.setdefault(group, len(order))
            seen = steps.setdefault(group, {})
            seen.setdefault(checkpoint, len(seen))  # checkpoints in the order they first appear
            keys[item] = (1, order[group], seen[checkpoint])
            item.add_marker(pytest.mark.xdist_group(f"circuitcheck:{group}@{checkpoint}"))
        if order:
            items.sort(key=lambda item: keys[item])  # stable: the original order within a group

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
                **(getattr(report, "circuitcheck_test", None) or {}),
            }
        )

    def pytest_keyboard_interrupt(self, excinfo) -> None:
        self.interrupted = True

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus) -> None:
        if self.is_worker:
            return
        from ..claims.baseline import BaselineError

        try:
            self.finish_baseline()
        except (BaselineError, OSError) as error:
            self.baseline_report.append(f"baseline not written: {error}")
            session.exitstatus = pytest.ExitCode.USAGE_ERROR
        report_path, json_path = self.option("report"), self.option("json")
        if not report_path and not json_path:
            return
        from .. import report as _report

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
        for line in self.baseline_report:
            terminalreporter.write_line(f"circuitcheck: {line}" if not line.startswith("  ") else line)
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
    return _spec_for(request.node, state)


def _spec_for(node, state: CircuitCheckState) -> str:
    marker = node.get_closest_marker("circuitcheck_model")
    if marker is not None:
        if len(marker.args) != 1 or not isinstance(marker.args[0], str):
            raise pytest.UsageError(f"@pytest.mark.circuitcheck_model takes one model spec string, got {marker.args!r} in {node.nodeid}")
        return marker.args[0]
    return state.option("model") or DEFAULT_SPEC


def item_identity(item: pytest.Item) -> dict[str, Any]:
    """The test's id for baselines and reports, its checkpoint, and its model spec group."""
    nodeid = item.nodeid.split("@circuitcheck:")[0]  # xdist's loadgroup suffix
    callspec = getattr(item, "callspec", None)
    if callspec is None:  # e.g. spec-file items, which know their own model and checkpoint
        checkpoint, spec = getattr(item, "checkpoint", None), getattr(item, "model_spec", None)
        base = nodeid[: -len(f"[{checkpoint}]")] if checkpoint and nodeid.endswith(f"[{checkpoint}]") else nodeid
        return {"test_id": nodeid, "checkpoint": checkpoint, "model_spec": spec, "test": base}
    checkpoint = callspec.params.get("model")
    state = item.config.stash.get(_STATE, None)
    spec = _spec_for(item, state) if state is not None else None
    return {
        "test_id": nodeid,
        "checkpoint": None if checkpoint is None else str(checkpoint),
        "model_spec": spec,
        "test": nodeid.replace(f"[{callspec.id}]", "") if checkpoint is not None and callspec.id == str(checkpoint) else nodeid,
    }


@pytest.fixture
def model(request: pytest.FixtureRequest):
    """The model under test, in eval mode without gradients, loaded once per (spec, device) per session.

    Spec: ``@pytest.mark.circuitcheck_model(spec)`` > ``--circuitcheck-model`` >
    ini ``circuitcheck_model`` > ``zoo:induction-2l``.
    """
    state = request.config.stash[_STATE]
    spec = _model_spec(request, state)
    device = registry.resolve_device(state.option("device"))
    checkpoint = getattr(request, "param", None)
    if checkpoint is None:
        return state.models.get(spec, device)
    # One checkpoint at a time: a sweep over many does not hold them all in memory.
    model = state.models.get(registry.with_checkpoint(spec, checkpoint), device, group=spec)
    model.circuitcheck_checkpoint = checkpoint
    return model


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise the ``model`` fixture over checkpoints (marker, option or ini)."""
    if "model" not in metafunc.fixturenames:
        return
    state = metafunc.config.stash.get(_STATE, None)
    if state is None:
        return
    spec = _spec_for(metafunc.definition, state)
    checkpoints = state.checkpoints_for(metafunc.definition, spec)
    if checkpoints:
        metafunc.parametrize("model", checkpoints, indirect=True, ids=[str(c) for c in checkpoints])


@pytest.fixture
def cache(request: pytest.FixtureRequest, model):
    """The model's ``ActivationCache`` on the test's prompt, computed once per session per (model, input).

    The prompt comes from ``@pytest.mark.circuitcheck_prompt(...)``; else the
    clean inputs of the test's task (marker or task fixture); else the seeded
    default input of the head scores (``BOS r r``).
    """
    import torch

    from ..engine import heads
    from ..model import inputs

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
def probe(request: pytest.FixtureRequest, model):
    """Fits linear probes on the test model's activations (circuitcheck.probe.Prober at the run's seed)."""
    from ..claims.probe import Prober

    return Prober(model, seed=request.config.stash[_STATE].seed())


@pytest.fixture
def induction_task(request: pytest.FixtureRequest, model):
    """``circuitcheck.tasks.induction`` on the test's model (32 prompts, seq_len 20, the run's seed), built once per model."""
    from ..model import tasks

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

    def record(self, result, tolerance=None) -> str | None:
        results = self.item.stash.setdefault(_RESULTS, [])
        record = result.to_dict()
        results.append(record)
        regression = self.state.compare_baseline(self.item, result, tolerance, record)
        # JUnit XML properties, so CI dashboards can chart each claim's value
        prefix = f"circuitcheck[{len(results) - 1}]"
        self.item.user_properties.extend(
            [(f"{prefix}.claim", result.claim), (f"{prefix}.value", f"{result.value:.6g}"), (f"{prefix}.verdict", result.verdict)]
        )
        return regression


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
        identity = item_identity(item)
        report.circuitcheck_test = {"test_id": identity["test_id"], "test": identity["test"], "checkpoint": identity["checkpoint"]}
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
    env.update(state.model_info)
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
