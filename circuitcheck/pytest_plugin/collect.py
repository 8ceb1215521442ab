"""The report collector: one record per test, with its claims, written as JSON and HTML at the end.

Registered by the main plugin as ``circuitcheck-collect``. While a test runs,
each recorded claim is kept in the item's stash; its report carries the claims
(``report.circuitcheck``, which the pytest-html extras read), and
``pytest_runtest_logreport`` turns the report into a plain-dict test record.

Under xdist every worker keeps the records of its own tests and publishes
them through ``config.workeroutput`` at the end of its session; the
controller merges them as each worker goes down (:class:`XdistMerge`,
registered only when xdist is present) and alone writes the files.
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
#: The key of a worker's records in ``config.workeroutput``.
WORKER_OUTPUT = "circuitcheck_tests"


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
        #: top-level document keys and environment entries other plugins add before the files are written (the correction)
        self.extra: dict[str, Any] = {}
        self.extra_environment: dict[str, Any] = {}

    # while a test runs ------------------------------------------------------------
    def add_claim(self, item: pytest.Item, result) -> dict[str, Any]:
        """Keep a claim's result for the test's report; JUnit XML properties for CI dashboards. Returns its record."""
        results = item.stash.setdefault(_RESULTS, [])
        record = result.to_dict()
        results.append(record)
        prefix = f"circuitcheck[{len(results) - 1}]"
        item.user_properties.extend(
            [(f"{prefix}.claim", result.claim), (f"{prefix}.value", f"{result.value:.6g}"), (f"{prefix}.verdict", result.verdict)]
        )
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

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """One record per test: its call, or its setup when that did not pass."""
        if getattr(report, "node", None) is not None:
            return  # a worker's report on the xdist controller: the worker publishes its records itself
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

    # at the end -------------------------------------------------------------------
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus) -> None:
        if self.is_worker:
            self.config.workeroutput[WORKER_OUTPUT] = self.tests
            return
        from . import options

        report_path, json_path = options.get(self.config, "report"), options.get(self.config, "json")
        if not report_path and not json_path:
            return
        from .. import report as _report

        document = _report.new_document({**self.environment(), **self.extra_environment})
        document.update(self.extra)
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


class XdistMerge:
    """On the xdist controller: each worker's published records join the collector's as the worker goes down."""

    def __init__(self, collector: ReportCollector):
        self.collector = collector

    def pytest_testnodedown(self, node, error) -> None:
        # extended in place: the baseline plugin reads the same list
        self.collector.tests.extend(getattr(node, "workeroutput", {}).get(WORKER_OUTPUT, []))


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
