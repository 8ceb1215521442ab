"""Test power in pytest: ``--circuitcheck-power`` measures each claim's mutation score as it is recorded.

Registered by the main plugin as ``circuitcheck-power``. With the option on
(or ini ``circuitcheck_power = true``), every claim a test records is run on
the mutations of its kind's catalogue right after it is measured
(:func:`circuitcheck.claims.power.mutation_score`, at most
``--circuitcheck-power-mutations`` per claim, seeded by ``--circuitcheck-seed``);
its score travels in the claim's dict (``"power"``), so it reaches the xdist
controller, the JSON and the HTML report like every other field. A claim that
fails is recorded "not measured" without running anything. The power run
never changes a test's outcome; ``python -m circuitcheck power`` turns the
scores into an exit status.

The terminal summary gets a ``circuitcheck power`` section: one line per claim
with its score, killed/decided (``+N undecided``: mutations on which the claim
could not be measured, left out of the score) and the CANNOT FAIL flag
(``-v``: the mutations each claim survived, and the undecided ones with their
errors).
"""

from __future__ import annotations

import pytest

from . import options
from .collect import ReportCollector


#: Characters of an undecided mutation's error shown per line (the JSON and the report keep all of it).
ERROR_WIDTH = 120


class PowerPlugin:
    """Measures the run's claims' mutation scores (when asked) and writes their table at the end."""

    def __init__(self, config: pytest.Config, collector: ReportCollector):
        self.config = config
        self.collector = collector
        self.enabled = options.power(config)
        self.max_mutations = options.power_mutations(config) if self.enabled else None

    def measure(self, result) -> None:
        """Set ``result.power`` (its mutation score) when the run measures power; nothing otherwise."""
        if not self.enabled or getattr(result, "power", None) is not None:
            return
        from ..claims.power import mutation_score

        mutation_score(result, max_mutations=self.max_mutations, seed=options.seed(self.config))

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        if self.enabled:
            from ..claims import registry

            registry.kinds()  # plugins' kinds are read now, so that their checks' calls are recorded too

    def pytest_report_header(self, config: pytest.Config):
        if self.enabled:
            return f"circuitcheck: measuring test power (at most {self.max_mutations} mutations per claim)"
        return None

    @pytest.hookimpl(trylast=True)  # after the claims' own section
    def pytest_terminal_summary(self, terminalreporter, exitstatus, config: pytest.Config) -> None:
        if not self.enabled or self.collector.is_worker:
            return
        claims = [claim for test in self.collector.tests for claim in test.get("claims") or []]
        terminalreporter.section("circuitcheck power")
        lines = power_lines(claims, survivors=config.option.verbose > 0)
        for line, flagged in lines:
            terminalreporter.write_line(line, red=flagged, bold=flagged)


def power_counts(claims: list[dict]) -> dict:
    """How many claims were measured, could not fail, scored (their mean), and were not measured; undecided mutations."""
    from ..claims.power import is_measured, killed_count, score_of, undecided_count

    powers = [claim["power"] for claim in claims if isinstance(claim.get("power"), dict)]
    measured = [p for p in powers if is_measured(p)]
    scores = [float(score_of(p)) for p in measured if isinstance(score_of(p), (int, float))]
    return {
        "claims": len(claims),
        "measured": len(measured),
        "cannot_fail": sum(killed_count(p) == 0 for p in measured),
        "not_measured": len(powers) - len(measured),
        "without_power": len(claims) - len(powers),
        "mean_score": sum(scores) / len(scores) if scores else None,
        "undecided": sum(undecided_count(p) for p in powers),
    }


def power_lines(claims: list[dict], *, survivors: bool = False) -> list[tuple[str, bool]]:
    """The power table's lines and whether each is flagged (a claim that cannot fail).

    ``survivors``: under each claim, the mutations it survived and the undecided ones (with the error).
    """
    from ..claims import format as claim_format
    from ..claims.power import (decided_count, is_measured, killed_count, score_of, summary_text, survivor_names,
                                undecided_count, undecided_texts)

    counts = power_counts(claims)
    mean = counts["mean_score"]
    head = f"{counts['measured']} claims measured"
    if counts["measured"]:
        head += f": {counts['cannot_fail']} cannot fail, mean score {claim_format.number(mean, 2)}"
    if counts["not_measured"]:
        head += f"; {counts['not_measured']} not measured"
    if counts["undecided"]:
        head += f"; {counts['undecided']} undecided mutation{'s' if counts['undecided'] != 1 else ''} (left out of the scores)"
    lines = [(head, False)]
    if counts["measured"] or counts["not_measured"]:
        lines.append(("   score  killed  claim", False))
    for claim in claims:
        power = claim.get("power")
        if not isinstance(power, dict):
            continue
        text = str(claim.get("claim"))
        if not is_measured(power):
            lines.append((f"       –       –  {text}  ({summary_text(power)})", False))
            continue
        score = claim_format.number(score_of(power), 2)
        ratio = f"{killed_count(power)}/{decided_count(power)}"
        undecided = undecided_count(power)
        flag = killed_count(power) == 0
        lines.append((f"  {score:>6}  {ratio:>6}  {text}" + ("  CANNOT FAIL" if flag else "")
                      + (f"  (+{undecided} undecided)" if undecided else ""), flag))
        if survivors:
            for name in survivor_names(power):
                lines.append((f"                  survived: {name}", False))
            for line in undecided_texts(power, limit=ERROR_WIDTH):
                lines.append((f"                  undecided: {line}", False))
    return lines


def weak_claims(tests: list[dict], min_score: float = 0.0) -> list[tuple[dict, dict, str]]:
    """``(test, claim, why)`` for each measured claim that cannot fail or scores below ``min_score``."""
    from ..claims.power import is_measured, killed_count, score_of

    weak = []
    for test in tests:
        for claim in test.get("claims") or []:
            power = claim.get("power")
            if not isinstance(power, dict) or not is_measured(power):
                continue
            score = score_of(power)
            if killed_count(power) == 0:
                weak.append((test, claim, "cannot fail"))
            elif isinstance(score, (int, float)) and score < min_score:
                weak.append((test, claim, f"scores below --min-score {min_score:g}"))
    return weak


def detailed_lines(tests: list[dict], min_score: float = 0.0) -> list[str]:
    """Per claim (with its test): score, killed/decided, the mutations it survived, the undecided ones, and the flags.

    The power command's output.
    """
    from ..claims import format as claim_format
    from ..claims.power import (decided_count, is_measured, killed_count, score_of, summary_text, survivor_names,
                                undecided_count, undecided_texts)

    weak = {id(claim): why for _, claim, why in weak_claims(tests, min_score)}
    lines = []
    for test in tests:
        for claim in test.get("claims") or []:
            power = claim.get("power")
            if not isinstance(power, dict):
                continue
            where = f"  [{test.get('nodeid')}]"
            if not is_measured(power):
                lines.append(f"     –    –    {claim.get('claim')}{where}")
                lines.append(f"               {summary_text(power)}")
                continue
            flag = weak.get(id(claim))
            ratio = f"{killed_count(power)}/{decided_count(power)}"
            mark = f"  {flag.upper()}" if flag == "cannot fail" else (f"  BELOW {min_score:g}" if flag else "")
            undecided = undecided_count(power)
            extra = f"  (+{undecided} undecided)" if undecided else ""
            lines.append(f"  {claim_format.number(score_of(power), 2):>4}  {ratio:>5}  {claim.get('claim')}{mark}{extra}{where}")
            for name in survivor_names(power):
                lines.append(f"               survived: {name}")
            for line in undecided_texts(power, limit=ERROR_WIDTH):
                lines.append(f"               undecided: {line}")
    return lines
