"""The terminal summary: the run's claims (failed ones, or all with ``-v``), baseline results, files written.

Registered by the main plugin as ``circuitcheck-summary``; it reads what the
report collector and the baseline plugin gathered. Each claim's line comes
from :func:`circuitcheck.claims.format.terminal_line`, the same words as the
lab note and the report.
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
            claims = [claim for test in tests for claim in test["claims"]]
            held = sum(bool(claim["passed"]) and not is_regressed(claim) for claim in claims)  # a regression failed its test
            verbose = config.option.verbose > 0
            terminalreporter.write_line(f"{held} claims held, {len(claims) - held} failed" + ("" if verbose else " (-v lists every claim)"))
            if not verbose:  # only the failures, unless asked
                tests = [{**test, "claims": [c for c in test["claims"] if not c["passed"] or is_regressed(c)]} for test in tests]
                tests = [test for test in tests if test["claims"]]
            several_models = len({claim.get("model") for claim in claims}) > 1
            for test in tests:
                terminalreporter.write_line(test["nodeid"] + (f" ({test['outcome']})" if test["outcome"] in ("xfailed", "xpassed") else ""))
                for claim in test["claims"]:
                    held_claim = claim_format.verdict(claim) == claim_format.HELD
                    terminalreporter.write_line(claim_format.terminal_line(claim, show_model=several_models), red=not held_claim, green=held_claim)
        for line in self.baselines.lines:
            terminalreporter.write_line(f"circuitcheck: {line}" if not line.startswith("  ") else line)
        for path in self.collector.written:
            terminalreporter.write_line(f"circuitcheck: wrote {path}")
        if self.collector.written_error:
            terminalreporter.write_line(f"circuitcheck: {self.collector.written_error}", red=True)
