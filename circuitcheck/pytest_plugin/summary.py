"""The terminal summary: the run's claims (failed ones, or all with ``-v``), baseline results, files written.

Registered by the main plugin as ``circuitcheck-summary``; it reads what the
report collector and the baseline plugin gathered. Each claim's line comes
from :func:`circuitcheck.claims.format.terminal_line`, the same words as the
lab note and the report: the value, and beside it the bound that decided
against the threshold. Claims are counted as :func:`standing` says: held,
failed (a baseline regression too), xfailed (failed in a test marked xfail)
and, apart from the claims, informational ``check_*`` results.
"""

from __future__ import annotations

import pytest

from .baselines import BaselinePlugin, is_regressed
from .collect import ReportCollector


class TerminalSummary:
    """Writes the ``circuitcheck claims`` section and circuitcheck's closing lines."""

    def __init__(self, collector: ReportCollector, baselines: BaselinePlugin):
        self.collector = collector
        self.baselines = baselines

    def pytest_terminal_summary(self, terminalreporter, exitstatus, config: pytest.Config) -> None:
        if self.collector.is_worker:
            return
        tests = [test for test in self.collector.tests if test["claims"]]
        if tests:
            from ..claims import format as claim_format

            terminalreporter.section("circuitcheck claims")
            verbose = config.option.verbose > 0
            terminalreporter.write_line(counts_line(tests) + ("" if verbose else " (-v lists every claim)"))
            several_models = len({claim.get("model") for test in tests for claim in test["claims"]}) > 1
            for test in tests:
                # only the unexpected failures, unless asked
                shown = [c for c in test["claims"] if verbose or standing(test, c) == "failed"]
                if not shown:
                    continue
                terminalreporter.write_line(test["nodeid"] + (f" ({test['outcome']})" if test["outcome"] in ("xfailed", "xpassed") else ""))
                for claim in shown:
                    state = standing(test, claim)
                    mark = "xfailed" if state == "xfailed" else None
                    terminalreporter.write_line(claim_format.terminal_line(claim, show_model=several_models, mark=mark),
                                                red=state == "failed", green=state == "held")
        for line in self.baselines.lines:
            terminalreporter.write_line(f"circuitcheck: {line}" if not line.startswith("  ") else line)
        for path in self.collector.written:
            terminalreporter.write_line(f"circuitcheck: wrote {path}")
        if self.collector.written_error:
            terminalreporter.write_line(f"circuitcheck: {self.collector.written_error}", red=True)


def standing(test: dict, claim: dict) -> str:
    """How a claim counts in the summary: ``held``, ``failed``, ``xfailed`` or ``informational``.

    A claim that held but moved beyond its baseline tolerance failed its test
    (``failed``); a failed claim of a test marked xfail failed as expected
    (``xfailed``, not a failure); a ``check_*`` result no assertion concluded
    decides nothing (``informational``), whatever its verdict.
    """
    from ..claims import format as claim_format

    if claim_format.is_informational(claim):
        return "informational"
    if bool(claim.get("passed")) and not is_regressed(claim):
        return "held"
    return "xfailed" if test.get("outcome") == "xfailed" else "failed"


def counts_line(tests: list[dict]) -> str:
    """``12 claims held, 1 failed, 2 xfailed (in tests marked xfail); 3 informational checks (check_* only: ...)``."""
    counts = {"held": 0, "failed": 0, "xfailed": 0, "informational": 0}
    for test in tests:
        for claim in test["claims"]:
            counts[standing(test, claim)] += 1
    line = f"{counts['held']} claims held, {counts['failed']} failed"
    if counts["xfailed"]:
        line += f", {counts['xfailed']} xfailed (in tests marked xfail)"
    if counts["informational"]:
        n = counts["informational"]
        line += f"; {n} informational check{'s' if n != 1 else ''} (check_* only: shown, never failing a test)"
    return line
