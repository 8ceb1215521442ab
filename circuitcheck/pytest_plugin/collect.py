"""The report collector: one record per test, with its claims, written as JSON and HTML at the end.

Registered by the main plugin as ``circuitcheck-collect``. While a test runs,
each recorded claim is kept in the item's stash; its report carries the claims
(``report.circuitcheck``, which the pytest-html extras read), and
``pytest_runtest_logreport`` turns the report into a plain-dict test record.

Under xdist each test's claims travel with its own report to the controller,
which records them as they arrive and alone writes the files: a worker that
crashes loses only the test it was running. xdist reports that test with
``when="???"``; it is recorded with the outcome ``crashed``. The tests that
were collected but never reported (a crash with no restarts left, ``-x``,
Ctrl-C) are the document's ``not_run``; either makes the document incomplete,
with the reasons listed (:class:`XdistMerge`, registered only when xdist is
present, tells the collector what the workers collected and which went down).

The files are written twice: at session start, an in-progress document that
names the run (so a run killed before its end never leaves an earlier run's
report in place, and a path that cannot be written is refused before any
test runs), and at session finish the results. A write failure at the end is
one error line in the terminal summary and a failing exit status.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any, Callable

import pytest

from .identity import item_identity

_RESULTS = pytest.StashKey[list]()
_SWEEPS = pytest.StashKey[list]()
#: The outcome of a test whose xdist worker died while running it.
CRASHED = "crashed"


class ReportCollector:
    """Per-test records of one run, and the JSON / HTML files written from them.

    ``environment`` is called at session finish for the report's environment
    table (versions, seed, device, models loaded).
    """

    def __init__(self, config: pytest.Config, environment: Callable[[], dict[str, Any]]):
        self.config = config
        self.environment = environment
        self.tests: list[dict[str, Any]] = []
        self.is_worker = hasattr(config, "workerinput")
        self.interrupted = False
        self.written: list[str] = []
        self.written_error: str | None = None
        #: node ids of the run's tests in collection order (the workers' under xdist)
        self.collected: dict[str, None] = {}
        #: why the run is incomplete, beyond crashed tests and tests not run
        self.reasons: list[str] = []
        #: xdist workers that went down with an error, by id
        self.worker_errors: dict[str, str] = {}
        self.started: str | None = None
        #: top-level document keys and environment entries other plugins add before the files are written (the correction)
        self.extra: dict[str, Any] = {}
        self.extra_environment: dict[str, Any] = {}

    # while a test runs ------------------------------------------------------------
    def add_claim(self, item: pytest.Item, result, *, informational: bool = False) -> dict[str, Any]:
        """Keep a claim's result for the test's report; JUnit XML properties for CI dashboards. Returns its record.

        ``informational``: a ``check_*`` result no assertion concluded (yet):
        recorded with ``"informational": true``, which the summaries count
        apart and nothing fails on; :meth:`decide_claim` makes it a claim.
        """
        from ..claims import format as claim_format

        results = item.stash.setdefault(_RESULTS, [])
        record = result.to_dict()
        if informational:
            record["informational"] = True
        results.append(record)
        prefix = f"circuitcheck[{len(results) - 1}]"
        item.user_properties.extend(
            [(f"{prefix}.claim", result.claim), (f"{prefix}.value", f"{result.value:.6g}"), (f"{prefix}.verdict", result.verdict),
             (f"{prefix}.decided", claim_format.decided(record))]
            + ([(f"{prefix}.informational", "true")] if informational else [])
        )
        return record

    def decide_claim(self, item: pytest.Item, record: dict[str, Any], result) -> dict[str, Any]:
        """An informational record (:meth:`add_claim`) whose result an assertion concluded: rewritten in place as a claim."""
        results = item.stash.get(_RESULTS, [])
        index = next(i for i, kept in enumerate(results) if kept is record)
        record.pop("informational", None)
        if getattr(result, "power", None) is not None:  # measured since (--circuitcheck-power): serialised again
            record.clear()
            record.update(result.to_dict())
        item.user_properties[:] = [prop for prop in item.user_properties if prop[0] != f"circuitcheck[{index}].informational"]
        return record

    def add_sweep(self, item: pytest.Item, sweep: dict) -> None:
        """Keep a sweep's table (plain data) for the test's report."""
        item.stash.setdefault(_SWEEPS, []).append(sweep)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call):
        report = yield
        if call.when == "call":
            report.circuitcheck = list(item.stash.get(_RESULTS, []))
            report.circuitcheck_sweeps = list(item.stash.get(_SWEEPS, []))
            identity = item_identity(item)
            report.circuitcheck_test = {"test_id": identity["test_id"], "test": identity["test"], "checkpoint": identity["checkpoint"]}
        return report

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.note_collected(item.nodeid for item in session.items)

    def note_collected(self, nodeids) -> None:
        """Add node ids to the tests the run should report on (a worker's collection, under xdist)."""
        self.collected.update(dict.fromkeys(nodeids))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """One record per test: its call, or its setup when that did not pass; a crashed test (xdist) as ``crashed``."""
        if self.is_worker:
            return  # the controller records this report when it arrives there, claims and all
        if report.when == "???":  # xdist's report of a test whose worker died
            self.tests.append(
                {"nodeid": report.nodeid, "test_id": report.nodeid.split("@circuitcheck:")[0], "outcome": CRASHED,
                 "duration": 0.0, "claims": [], "sweeps": [], "crash": str(report.longrepr)}
            )
            self.reasons.append(f"{report.longrepr}: its claims are lost")
            node = getattr(report, "node", None)
            self.worker_errors.pop(getattr(getattr(node, "gateway", None), "id", None), None)  # said by the crash itself
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
        text = str(excinfo.value).strip()
        self.reasons.append(f"interrupted: {text}" if text else f"interrupted ({excinfo.typename})")

    def paths(self) -> list[tuple[str, str]]:
        """The files this run writes: ``(kind, path)`` with kind ``json`` or ``html``."""
        from . import options

        pairs = [("json", options.get(self.config, "json")), ("html", options.get(self.config, "report"))]
        return [(kind, str(path)) for kind, path in pairs if path]

    # at the start -----------------------------------------------------------------
    @pytest.hookimpl(tryfirst=True)  # before xdist starts its workers
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        """Mark the files as this run's, in progress; a path that cannot be written stops the run before any test."""
        if self.is_worker or not self.paths():
            return
        from .. import report as _report

        document = _report.in_progress_document({})
        self.started = document["started"]
        try:
            for kind, path in self.paths():
                (_report.write_json if kind == "json" else _report.write_html)(path, document)
        except _report.CircuitCheckError as error:
            raise pytest.UsageError(f"circuitcheck: {error}") from None

    # at the end -------------------------------------------------------------------
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus) -> None:
        if self.is_worker or not self.paths():
            return
        from .. import report as _report

        document = _report.new_document({**self.environment(), **self.extra_environment})
        document.update(self.extra)
        if self.started:
            document["started"] = self.started
        document["tests"] = self.tests
        document["not_run"] = self.not_run()
        document["incomplete_reasons"] = self.incomplete_reasons(session)
        document["complete"] = not document["incomplete_reasons"] and not document["not_run"]
        errors = []
        for kind, path in self.paths():
            try:
                (_report.write_json if kind == "json" else _report.write_html)(path, document)
            except _report.CircuitCheckError as error:  # a ReportWriteError, or a file that is no longer ours
                errors.append(str(error))
            else:
                self.written.append(path)
        if errors:
            self.written_error = "report not written: " + "; ".join(errors)
            if session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
                session.exitstatus = pytest.ExitCode.USAGE_ERROR  # the run did not do what it was asked; a failing status stays

    def not_run(self) -> list[str]:
        """Node ids collected for the run that have no record (in collection order)."""
        option = self.config.option
        if getattr(option, "collectonly", False) or getattr(option, "setuponly", False) or getattr(option, "setupplan", False):
            return []  # no test is meant to run
        reported = {test["nodeid"] for test in self.tests}
        return [nodeid for nodeid in self.collected if nodeid not in reported]

    def incomplete_reasons(self, session: pytest.Session) -> list[str]:
        """Why the run did not finish: interrupted, stopped early, crashed tests, workers that went down, tests not run."""
        reasons = list(self.reasons)
        for flag in (session.shouldstop, session.shouldfail):
            if flag:
                reasons.append(f"stopped early: {flag}" if isinstance(flag, str) else "stopped early")
        reasons += [f"xdist worker {worker} went down: {error}" for worker, error in self.worker_errors.items()]
        missing = len(self.not_run())
        if missing:
            reasons.append(f"{missing} test{'s' if missing != 1 else ''} did not run")
        return reasons


class XdistMerge:
    """On the xdist controller: what the workers collected, and which went down with an error.

    The tests' records themselves arrive with their reports (see the module's docstring).
    """

    def __init__(self, collector: ReportCollector):
        self.collector = collector

    def pytest_xdist_node_collection_finished(self, node, ids) -> None:
        self.collector.note_collected(ids)

    def pytest_testnodedown(self, node, error) -> None:
        if error:
            self.collector.worker_errors[str(getattr(getattr(node, "gateway", None), "id", node))] = str(error).strip() or "no reason given"


def run_environment(config: pytest.Config, loads: dict, model_info: dict[str, str]) -> dict[str, Any]:
    """The report's environment: Python and package versions, seed, device, the models loaded and the git commit."""
    from importlib import metadata

    from . import options

    env: dict[str, Any] = {"python": sys.version.split()[0], "seed": options.seed(config), "device": options.get(config, "device")}
    for package in ("circuitcheck", "torch", "transformer-lens", "transformers", "pytest"):
        try:
            env[f"version {package}"] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    env["models loaded"] = ", ".join(f"{spec} on {device}" for spec, device in loads) or "none"
    env.update(model_info)
    commit = _git_commit(str(config.rootpath))
    if commit:
        env["git commit"] = commit
    return env


def _git_commit(root: str) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5, env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
