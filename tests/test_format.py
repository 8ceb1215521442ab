"""One claim formatter: the lab note, the terminal line, the report row and the pytest-html extra say the same thing."""

from __future__ import annotations

import re
import subprocess
import sys
from html import unescape

import pytest

from circuitcheck import report
from circuitcheck.claims import format as claim_format
from circuitcheck.claims.result import CheckResult
from circuitcheck.errors import CircuitAssertionError
from circuitcheck.claims.decision import conclude
from circuitcheck_plugins.pytest_html_extras import claims_html


def sufficiency_claim(**changes) -> CheckResult:
    """A claim whose mean clears the threshold while its lower bound, which decides, does not."""
    fields = dict(
        kind="sufficient", claim="L1H0 is sufficient for induction", value=1.302, passed=False, n=32, metric="recovery",
        min_value=0.7, ci_low=-4.37, ci_high=3.1, confidence=0.95, decided_on="lower bound", model="zoo:induction-2l",
        notes=["recovery of the circuit varies a lot between prompts"],
    )
    return CheckResult(**{**fields, **changes})


def report_row(claim: dict) -> str:
    """The text of the claim's row in the HTML report."""
    document = report.new_document({})
    document["tests"].append({"nodeid": "t.py::test_x", "outcome": "failed", "claims": [claim]})
    html = report.render_html(document)
    row = re.search(r'<tr class="claim-row[^"]*" id="claim-0">(.*?)</tr>', html, re.S).group(1)
    return unescape(re.sub(r"<[^>]+>", " ", row))


def words(text: str) -> str:
    return " ".join(text.split())


def test_the_lab_note_terminal_line_report_row_and_html_extra_say_the_same_words():
    claim = sufficiency_claim().to_dict()
    note, line = claim_format.lab_note(claim), claim_format.terminal_line(claim)
    row, extra = words(report_row(claim)), words(unescape(re.sub(r"<[^>]+>", " ", claims_html([claim]))))
    for shown in (note, line, row, extra):
        assert "L1H0 is sufficient for induction" in shown
        assert "1.302" in shown and "lower bound -4.370" in shown  # the value, and beside it the bound that decided
    assert "claim failed:" in note and "FAILED" in line and "failed" in row and "failed" in extra
    assert "recovery >= 0.7, decided on the lower bound -4.370" in note
    assert "1.302  lower bound -4.370 < 0.7" in line  # the value, and beside it how the deciding bound compared
    assert "≥ 0.7 decided on the lower bound -4.370" in row and "≥ 0.7 decided on the lower bound -4.370" in extra


def test_a_check_result_and_its_json_dict_are_formatted_alike():
    result = sufficiency_claim()
    assert result.message() == claim_format.lab_note(result.to_dict()) == claim_format.lab_note(result)
    assert claim_format.terminal_line(result, show_model=True) == claim_format.terminal_line(result.to_dict(), show_model=True)
    assert claim_format.row(result) == claim_format.row(result.to_dict())


def test_a_failed_assertion_raises_the_lab_note():
    with pytest.raises(CircuitAssertionError) as raised:
        conclude(sufficiency_claim())
    assert str(raised.value).splitlines() == [
        "claim failed: L1H0 is sufficient for induction (model zoo:induction-2l)",
        "  measured: recovery 1.302 (95% CI -4.370 to 3.100, n=32)",
        "  required: recovery >= 0.7, decided on the lower bound -4.370",
        "  recovery of the circuit varies a lot between prompts",
    ]


def test_claims_hold_or_fail():
    assert sufficiency_claim().verdict == claim_format.verdict(sufficiency_claim().to_dict()) == claim_format.FAILED == "failed"
    assert sufficiency_claim(passed=True).verdict == claim_format.HELD == "held"


@pytest.mark.parametrize(
    ("changes", "decision", "required", "shown"),
    [
        ({"decided_on": "lower bound"}, "lower bound -4.370", ">= 0.7", "lower bound -4.370 < 0.7"),
        ({"decided_on": "upper bound", "min_value": None, "max_value": 0.2}, "upper bound 3.100", "<= 0.2", "upper bound 3.100 > 0.2"),
        ({"decided_on": "interval", "max_value": 2.0}, "interval [-4.370, 3.100]", "between 0.7 and 2",
         "interval [-4.370, 3.100] not within [0.7, 2]"),
        # the mean clears the threshold, yet the claim failed (decided on more than it): no comparison that contradicts the verdict
        ({"decided_on": "mean"}, "mean 1.302", ">= 0.7", "mean 1.302, required >= 0.7"),
        ({"decided_on": "max over layers >= 1"}, "max over layers >= 1: 1.302", ">= 0.7", "max over layers >= 1: 1.302, required >= 0.7"),
        ({"decided_on": "lower bound of every component"}, "lower bound of every component: -4.370", ">= 0.7",
         "lower bound of every component: -4.370 < 0.7"),
        ({"decided_on": "lower bound", "min_value": None}, "lower bound -4.370", "no threshold", "lower bound -4.370, required no threshold"),
        ({"decided_on": "lower bound", "passed": True, "ci_low": 0.75}, "lower bound 0.750", ">= 0.7", "lower bound 0.750 >= 0.7"),
        ({"decided_on": "upper bound", "passed": True, "min_value": None, "max_value": 3.5}, "upper bound 3.100", "<= 3.5",
         "upper bound 3.100 <= 3.5"),
        ({"decided_on": "interval", "passed": True, "min_value": -5.0, "max_value": 4.0}, "interval [-4.370, 3.100]", "between -5 and 4",
         "interval [-4.370, 3.100] within [-5, 4]"),
    ],
)
def test_the_decision_names_the_statistic_compared_with_the_threshold(changes, decision, required, shown):
    claim = sufficiency_claim(**changes)
    assert claim_format.decision(claim) == decision
    assert claim_format.requirement(claim) == required
    assert claim_format.decided(claim) == shown
    assert f"1.302  {shown}  L1H0 is sufficient" in claim_format.terminal_line(claim)


def test_a_claim_without_an_interval_or_value_is_still_formatted():
    claim = sufficiency_claim(ci_low=None, ci_high=None, confidence=None, value=float("nan"), decided_on="mean").to_dict()
    assert "measured: recovery – (n=32)" in claim_format.lab_note(claim)
    assert claim_format.interval(claim) == "" and claim_format.row(claim).measured == "recovery –"


def test_the_terminal_line_names_the_model_when_asked():
    assert claim_format.terminal_line(sufficiency_claim(), show_model=True).endswith("  [zoo:induction-2l]")
    assert "zoo:induction-2l" not in claim_format.terminal_line(sufficiency_claim())


def test_something_that_is_not_a_claim_is_a_clear_error():
    with pytest.raises(TypeError, match="is not a claim: give a CheckResult or its to_dict()"):
        claim_format.lab_note(42)


def test_the_formatter_imports_nothing_heavy():
    code = "import sys, circuitcheck.claims.format; print(sorted({'torch', 'pandas', 'numpy'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"
