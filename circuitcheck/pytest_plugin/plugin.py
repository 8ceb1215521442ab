"""The pytest plugin (entry point ``pytest11``): options, markers, fixtures, and the plugins that do the rest.

Only wiring lives here. Each duty of a run is a plugin object of its own,
registered at configure time the way pytest registers its cache provider:

- ``circuitcheck-state``: the fixtures' state (the model store, the test's task, conftest model sources);
- ``circuitcheck-collect``: per-test records and the JSON / HTML report (:mod:`.collect`);
- ``circuitcheck-baseline``: baseline comparison and update (:mod:`.baselines`);
- ``circuitcheck-checkpoints``: running tests over checkpoints (:mod:`.checkpoints`);
- ``circuitcheck-summary``: the terminal summary (:mod:`.summary`);
- ``circuitcheck-correction``: Holm / Benjamini-Hochberg over the run's claims (:mod:`.correction`);
- ``circuitcheck-power``: each claim's mutation score with ``--circuitcheck-power`` (:mod:`.power`);
- ``circuitcheck-xdist``: merging the workers' records, only when xdist is present.

Options are read through :mod:`.options`. This module must stay cheap to
import: torch, pandas and transformer_lens are imported inside fixtures, on
first use, so a project that has circuitcheck installed but does not use it
pays nothing at start-up.
"""

from __future__ import annotations

from typing import Any

import pytest

from ..errors import CircuitAssertionError
from ..model import context as _context
from ..model import sources as registry
from . import options as _options
from .baselines import BaselinePlugin
from .checkpoints import CheckpointsPlugin
from .collect import ReportCollector, XdistMerge, run_environment
from .correction import CorrectionPlugin
from .power import PowerPlugin
from .session import DEFAULT_SPEC, ModelStore
from .summary import TerminalSummary

_STATE = pytest.StashKey["CircuitCheckState"]()
_COLLECTOR = pytest.StashKey[ReportCollector]()
_BASELINES = pytest.StashKey[BaselinePlugin]()
_POWER = pytest.StashKey[PowerPlugin]()

#: The plugin objects the main plugin registers for a run, by name.
PLUGIN_NAMES = (
    "circuitcheck-state",
    "circuitcheck-collect",
    "circuitcheck-baseline",
    "circuitcheck-checkpoints",
    "circuitcheck-summary",
    "circuitcheck-correction",
    "circuitcheck-power",
    "circuitcheck-xdist",
)

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
    option("max-batch", "most rows (variants x examples) in one patched forward pass (default: as many as half the free memory holds); halved on out-of-memory")
    option("checkpoints", "run every test that uses `model` once per checkpoint: comma-separated names, or 'all'")
    option("baseline", "compare every claim's value with this baseline file; fail when one moved beyond its tolerance")
    option("correction", "multiple comparisons over the run's claims: none (default), holm (family-wise error rate) or bh "
           "(false discovery rate)", default="none")
    group.addoption("--circuitcheck-update-baseline", action="store_true", default=False, dest="circuitcheck_update_baseline",
                    help="write this run's claim values into the baseline file (merging; entries of tests that did not run are kept)")
    option("power-mutations", "with --circuitcheck-power: the most mutations per claim (default 12), chosen seeded, every family in turn")
    group.addoption("--circuitcheck-power", action="store_true", default=False, dest="circuitcheck_power",
                    help="measure test power: run every claim again on mutated copies of its model and report its mutation "
                    "score (the share of mutations that make it fail) and the claims that cannot fail")
    parser.addini("circuitcheck_power", type="bool", default=False, help="measure every claim's mutation score (as --circuitcheck-power)")
    group.addoption("--circuitcheck-prune-baseline", action="store_true", default=False, dest="circuitcheck_prune_baseline",
                    help="with --circuitcheck-update-baseline: remove entries that tests which ran no longer produce")
    group.addoption("--circuitcheck-soft", action="store_true", default=False, dest="circuitcheck_soft",
                    help="soft mode: a failed claim does not stop its test; every claim is measured and recorded, and the test "
                    "fails once at its end with every failed claim's lab note (as `with circuitcheck.claims():` around each test)")
    parser.addini("circuitcheck_soft", type="bool", default=False, help="soft mode for every test (as --circuitcheck-soft)")
    group.addoption("--circuitcheck-baseline-strict", action="store_true", default=False, dest="circuitcheck_baseline_strict",
                    help="checking against --circuitcheck-baseline: fail the run when a claim is not in the baseline or an entry "
                    "of a test that ran to completion is no longer produced (no effect with --circuitcheck-update-baseline)")
    parser.addini("circuitcheck_baseline_strict", type="bool", default=False,
                  help="fail the run on new or missing baseline entries (as --circuitcheck-baseline-strict)")


def pytest_configure(config: pytest.Config) -> None:
    for marker, text in MARKERS.items():
        config.addinivalue_line("markers", f"{marker}: {text}")
    state = CircuitCheckState(config)
    config.stash[_STATE] = state
    collector = ReportCollector(config, environment=lambda: run_environment(config, state.models.loads, state.model_info))
    baselines = BaselinePlugin(config, collector.tests)
    power = PowerPlugin(config, collector)
    config.stash[_COLLECTOR] = collector
    config.stash[_BASELINES] = baselines
    config.stash[_POWER] = power
    plugins: dict[str, Any] = {
        "circuitcheck-state": state,
        "circuitcheck-collect": collector,
        "circuitcheck-baseline": baselines,
        "circuitcheck-checkpoints": CheckpointsPlugin(config),
        "circuitcheck-summary": TerminalSummary(collector, baselines),
        "circuitcheck-correction": CorrectionPlugin(config, collector),
        "circuitcheck-power": power,
    }
    if config.pluginmanager.hasplugin("xdist"):  # its hook (pytest_testnodedown) exists only then
        plugins["circuitcheck-xdist"] = XdistMerge(collector)
    # Plugins of their own, so that their hooks see only this run
    # (pytester runs nested sessions in one process).
    for name, plugin in plugins.items():
        config.pluginmanager.register(plugin, name)


def pytest_collect_file(file_path, parent):
    """``*.circuit.yaml`` files are executable specs: one test item per claim (see circuitcheck.spec)."""
    if file_path.name.endswith(".circuit.yaml"):
        from .spec_items import SpecFile

        return SpecFile.from_parent(parent, path=file_path)
    return None


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(_STATE, None)
    if state is not None:
        state.close()
    for name in PLUGIN_NAMES:
        plugin = config.pluginmanager.get_plugin(name)
        if plugin is not None:
            config.pluginmanager.unregister(plugin, name)


class CircuitCheckState:
    """What the fixtures share in one pytest run: the model store, what it loaded, the test's task, conftest model sources.

    Each model's patcher, tasks and activation caches live in its own session
    (``engine.session``), so they are freed with the model.
    """

    def __init__(self, config: pytest.Config):
        self.config = config
        self.models = ModelStore(loader=self._load_model)
        self.model_info: dict[str, str] = {}
        # Patchers, tasks and activation caches live in each model's session (engine.session), freed with the model.
        self.registered_sources: list[Any] = []

    # options (read through .options) --------------------------------------------
    def seed(self) -> int:
        """The run's ``--circuitcheck-seed``."""
        return _options.seed(self.config)

    def max_batch(self) -> int | None:
        """The run's ``--circuitcheck-max-batch`` (None: the engine's default)."""
        return _options.max_batch(self.config)

    def patcher(self, model):
        """The run's shared patcher of ``model`` (``--circuitcheck-max-batch`` rows), kept in the model's session."""
        from ..engine.patcher import shared_patcher

        return shared_patcher(model, self.max_batch())

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
        from ..engine.session import session_of

        def build():
            if isinstance(spec, str):
                builders = {"induction": tasks.induction}
                if spec not in builders:
                    raise pytest.UsageError(f"unknown task {spec!r} in {nodeid}: built-in tasks are {', '.join(builders)}; or pass a function of the model")
                return builders[spec](model, **{"seed": self.seed(), **kwargs})
            if callable(spec):
                return spec(model, **kwargs)
            raise pytest.UsageError(f"@pytest.mark.circuitcheck_task got {spec!r} in {nodeid}: give a task name, a function of the model, or a Task")

        # Built once per model (in its session); the seed is part of the key, as a model can outlive a run.
        key = ("circuitcheck_task", repr(spec), tuple(sorted((k, repr(v)) for k, v in kwargs.items())), self.seed())
        task = session_of(model).task(key, build)
        if not isinstance(task, Task):
            raise pytest.UsageError(f"the task function in {nodeid} returned {type(task).__name__}, not a circuitcheck Task")
        return task

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

    # pytest hooks of this run ---------------------------------------------------
    def pytest_plugin_registered(self, plugin, plugin_name, manager) -> None:
        # historic: called for the plugins registered before this one too
        self.maybe_register_source(plugin)


def session_model(config: pytest.Config, spec: str):
    """The run's shared model for ``spec`` on the run's device (loaded once per session)."""
    state = config.stash[_STATE]
    return state.models.get(spec, _options.device(config))


def session_seed(config: pytest.Config) -> int:
    """The run's ``--circuitcheck-seed``."""
    return config.stash[_STATE].seed()


# Fixtures ----------------------------------------------------------------------


@pytest.fixture
def model(request: pytest.FixtureRequest):
    """The model under test, in eval mode without gradients, loaded once per (spec, device) per session.

    Spec: ``@pytest.mark.circuitcheck_model(spec)`` > ``--circuitcheck-model`` >
    ini ``circuitcheck_model`` > ``zoo:induction-2l``.
    """
    state = request.config.stash[_STATE]
    spec = _options.model_spec(request.node, request.config)
    device = _options.device(request.config)
    checkpoint = getattr(request, "param", None)
    if checkpoint is None:
        return state.models.get(spec, device)
    # One checkpoint at a time: a sweep over many does not hold them all in memory.
    model = state.models.get(registry.with_checkpoint(spec, checkpoint), device, group=spec)
    model.circuitcheck_checkpoint = checkpoint
    return model


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
        tokens = inputs.as_tokens(model, marker.args[0], what="circuitcheck_prompt prompts")
    else:
        task = state.task_for(request.node, model)
        tokens = task.clean if task is not None else heads.default_tokens(model, seed=state.seed())

    def compute():
        device = getattr(model.cfg, "device", None) or "cpu"
        with torch.no_grad():
            _, activation_cache = model.run_with_cache(tokens.to(device))
        return activation_cache

    from ..engine.session import session_of

    return session_of(model).activations(tokens, compute)


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
    from ..engine.session import session_of

    seed = state.seed()
    return session_of(model).task(("induction fixture", seed), lambda: tasks.induction(model, seed=seed))


# The running test's context -------------------------------------------------


class _ItemContext:
    def __init__(self, item: pytest.Item, state: CircuitCheckState):
        self.item = item
        self.state = state
        #: (result, record) of checks recorded as informational, which an assertion may still conclude
        self.pending: list[tuple[Any, dict]] = []

    def get_model(self):
        funcargs = getattr(self.item, "funcargs", {})
        if "model" in funcargs:
            return funcargs["model"]
        return self.item._request.getfixturevalue("model")

    def default_seed(self) -> int:
        return self.state.seed()

    def record_sweep(self, sweep: dict) -> None:
        self.item.config.stash[_COLLECTOR].add_sweep(self.item, sweep)

    def get_task(self, model):
        return self.state.task_for(self.item, model)

    def get_patcher(self, model):
        return self.state.patcher(model)

    def note_check(self, result) -> None:
        """A check's result as it returns: kept for the report as informational, until (unless) an assertion concludes it."""
        record = self.item.config.stash[_COLLECTOR].add_claim(self.item, result, informational=True)
        self.pending.append((result, record))

    def record(self, result, tolerance=None) -> str | None:
        """Keep the claim for the report and compare it with the baseline; a message when it regressed."""
        config = self.item.config
        config.stash[_POWER].measure(result)  # with --circuitcheck-power: its mutation score, before it is serialised
        collector = config.stash[_COLLECTOR]
        noted = next((i for i, (kept, _) in enumerate(self.pending) if kept is result), None)
        if noted is not None:  # the assert_* twin concluding its check: the informational record becomes the claim
            record = collector.decide_claim(self.item, self.pending.pop(noted)[1], result)
        else:
            record = collector.add_claim(self.item, result)
        return config.stash[_BASELINES].compare(self.item, result, tolerance, record)


def soft_mode(config: pytest.Config) -> bool:
    """``--circuitcheck-soft`` (or ini ``circuitcheck_soft = true``): every claim of a test is measured; it fails once at the end."""
    return bool(config.getoption("circuitcheck_soft", False) or config.getini("circuitcheck_soft"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    state = item.config.stash[_STATE]
    context = _ItemContext(item, state)
    with _context.active(context):
        # soft mode is for Python tests; a spec item is one claim already
        if isinstance(item, pytest.Function) and soft_mode(item.config):
            with _context.soft_claims():
                return (yield)
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    """A failed claim's section starts with its lab note, then the test's lines: no dump of the fixtures' tensors."""
    report = yield
    excinfo = call.excinfo
    if (
        call.when == "call" and report.failed and excinfo is not None and isinstance(excinfo.value, CircuitAssertionError)
        and isinstance(item, pytest.Function) and item.config.getoption("tbstyle", "auto") in ("auto", "short")
        and not item.config.getoption("fulltrace", False)
    ):
        report.longrepr = LabNoteRepr.of(item, excinfo)
    return report


class LabNoteRepr:
    """A failed claim as pytest shows it: the lab note, then the user's frames (``file:line: in test`` and the line).

    Replaces pytest's long traceback, whose first lines are the test
    function's arguments (a model's module tree, a task's tensors). ``--tb=long``
    or ``--fulltrace`` keep pytest's own; ``reprcrash`` gives the short
    summary's line (the note's first line).
    """

    def __init__(self, text: str, path: str, line: int):
        from _pytest._code.code import ReprFileLocation

        self.text = text
        self.reprcrash = ReprFileLocation(path, line, text.splitlines()[0] if text else "")

    @classmethod
    def of(cls, item: pytest.Function, excinfo) -> "LabNoteRepr":
        import contextlib
        import os

        import pluggy

        from .. import __file__ as package_init

        # circuitcheck's, pytest's and pluggy's frames are not the user's; nor is contextlib's (the end of a `with cc.claims():`)
        skipped = tuple(os.path.dirname(os.path.abspath(module)) + os.sep for module in (package_init, pytest.__file__, pluggy.__file__))
        frames = []
        for entry in excinfo.traceback.filter(excinfo):  # frames with __tracebackhide__ left out
            path = os.path.abspath(str(entry.path))
            if path.startswith(skipped) or "_pytest" + os.sep in path or path == os.path.abspath(contextlib.__file__):
                continue
            try:
                source = str(entry.statement).strip()
            except Exception:  # no source (a frame of generated code)
                source = ""
            shown = _shown_path(item, path)
            frames.append((shown, entry.lineno + 1, entry.name, source))
        lines = [str(excinfo.value)]
        notes = getattr(excinfo.value, "__notes__", None) or []
        lines += [str(note) for note in notes]
        if frames:
            lines.append("")
            for shown, number, name, source in frames:
                lines.append(f"{shown}:{number}: in {name}")
                if source:
                    lines += [f"    {line}" for line in source.splitlines()]
        path, line = (frames[-1][0], frames[-1][1]) if frames else (_shown_path(item, str(item.path)), 0)
        return cls("\n".join(lines), path, line)

    def toterminal(self, tw) -> None:
        for line in self.text.splitlines():
            tw.line(line)

    def __str__(self) -> str:
        return self.text


def _shown_path(item: pytest.Item, path: str) -> str:
    import os

    try:
        relative = os.path.relpath(path, item.config.invocation_params.dir)
    except ValueError:
        return path
    return path if relative.startswith("..") else relative
