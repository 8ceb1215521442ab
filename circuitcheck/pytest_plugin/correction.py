"""The multiple-comparisons plugin: ``--circuitcheck-correction=none|holm|bh`` over the run's claims.

Registered by the main plugin as ``circuitcheck-correction``. The family is
every claim of the run, known only at the end of the session (on the xdist
controller, after every worker's records have been merged), so the correction
is applied at session finish, before the report collector writes the JSON and
HTML files: claims that held at their own level and fail under the correction
are written as failed, the document and the HTML environment table state the
method, the family size and the adjusted levels, the terminal summary lists
the claims it failed, and the run's exit status is non-zero. The statistics
are :mod:`circuitcheck.claims.correction` (usable without pytest).
"""

from __future__ import annotations

import pytest

from . import options
from .collect import ReportCollector


class CorrectionPlugin:
    """Applies the run's correction at session finish; ``summary`` is what it did (None before, or on a worker)."""

    def __init__(self, config: pytest.Config, collector: ReportCollector):
        self.config = config
        self.collector = collector
        self.method = options.correction(config)
        self.summary = None

    @pytest.hookimpl(tryfirst=True)  # before the collector writes the files and the baseline plugin reads the claims
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus) -> None:
        if self.collector.is_worker or self.method == "none":
            return
        from ..claims import correction

        # check_* results no assertion decided on decide nothing: not in the family
        claims = [claim for test in self.collector.tests for claim in test["claims"] if not claim.get("informational")]
        if not claims:
            return
        self.summary = correction.apply(claims, self.method)
        self.collector.extra["correction"] = self.summary.to_dict()
        self.collector.extra_environment["multiple comparisons"] = self.summary.describe()
        if self.summary.failed_under_correction and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    @pytest.hookimpl(trylast=True)  # after the claims table
    def pytest_terminal_summary(self, terminalreporter, exitstatus, config: pytest.Config) -> None:
        if self.summary is None:
            return
        terminalreporter.section("circuitcheck multiple comparisons")
        terminalreporter.write_line(self.summary.describe())
        failed = self.summary.failed_under_correction
        if failed:
            terminalreporter.write_line(
                f"{len(failed)} claim{'s' if len(failed) != 1 else ''} held at {'its' if len(failed) == 1 else 'their'} own level "
                f"but fail{'s' if len(failed) == 1 else ''} under the {self.summary.method} correction (the run fails):", red=True
            )
            for test in self.collector.tests:
                for claim in test["claims"]:
                    entry = claim.get("correction") or {}
                    if entry.get("held_at_own_level") and not entry.get("held"):
                        terminalreporter.write_line(f"  {claim.get('claim')}  [{test['nodeid']}]", red=True)
                        terminalreporter.write_line(
                            f"    p-value {entry['p_value']:.3g} ({entry['p_method']}), adjusted {entry['adjusted_p_value']:.3g} "
                            f"> {entry['alpha']:.3g}; rank {entry['rank']} of {entry['family_size']}, level {entry['level']:.3g}"
                        )
