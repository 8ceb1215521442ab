"""What a run says: the bound that decided beside the value, soft mode, check_* calls, failures that start with the lab note.

End to end through pytester on zoo:induction-2l (two layers, four heads, a
64-word vocabulary: loads in a second). Every number the terminal or the report
shows is compared with the results JSON of the same run, and every decision
with the thresholds, in the tests' own code.
"""

from __future__ import annotations

import inspect
import json
import os
import re
from html import unescape

import pytest
import torch

import circuitcheck as cc
from circuitcheck import report
from circuitcheck.claims import format as claim_format
from circuitcheck.errors import ArgumentError, CircuitAssertionError

MODEL = "zoo:induction-2l"


def claims_of(pytester, path="results.json") -> dict[str, list[dict]]:
    """The results JSON's claims by test name."""
    document = json.loads((pytester.path / path).read_text())
    return {test["nodeid"].split("::")[-1]: test["claims"] for test in document["tests"]}


def shown_number(value: float) -> str:
    return f"{value:.3f}"


# The bound that decided, beside the value -------------------------------------------------------


def test_the_terminal_table_shows_the_value_and_beside_it_the_bound_compared_with_the_threshold(pytester):
    pytester.makepyfile(
        """
        import circuitcheck as cc

        def test_claims(model):
            cc.check_head(1, 3, "induction", min_score=0.99)            # fails: its lower bound is below 0.99
            cc.assert_previous_token_head(0, 2, min_score=0.5)          # holds
            cc.assert_duplicate_token_head(0, 1, max_score=0.5)         # holds
        """
    )
    result = pytester.runpytest("-v", f"--circuitcheck-model={MODEL}", "--circuitcheck-json=results.json")
    result.assert_outcomes(passed=1)
    claims = claims_of(pytester)["test_claims"]
    lines = result.stdout.str().split("circuitcheck claims")[1].splitlines()
    for claim in claims:
        low, high = claim["min_value"], claim["max_value"]
        bound = claim["ci_low"] if low is not None else claim["ci_high"]
        assert claim["decided_on"] == ("lower bound" if low is not None else "upper bound")
        relation = (">=" if bound >= low else "<") if low is not None else ("<=" if bound <= high else ">")
        held = bound >= low if low is not None else bound <= high
        assert held == claim["passed"]
        expected = (f"{shown_number(claim['value'])}  {claim['decided_on']} {shown_number(bound)} {relation} "
                    f"{low if low is not None else high:g}  {claim['claim']}")
        assert [line for line in lines if expected in line], (expected, lines)
    assert any(line.startswith("  (failed)") and "L1H3 is an induction head" in line for line in lines)


def report_row(claim: dict) -> str:
    """The words of the claim's row in the HTML report's claims table."""
    document = report.new_document({})
    document["tests"].append({"nodeid": "t.py::test_x", "outcome": "failed", "claims": [claim]})
    html = report.render_html(document)
    row = re.search(r'<tr class="claim-row[^"]*" id="claim-0">(.*?)</tr>', html, re.S).group(1)
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
    return [" ".join(unescape(re.sub(r"<[^>]+>", " ", cell)).split()) for cell in cells]


def test_the_reports_claim_row_shows_the_deciding_bound_beside_the_value():
    # the mean clears the threshold, the lower bound (which decides) does not
    claim = cc.CheckResult(kind="induction_head", claim="L1H1 is an induction head", value=0.737, passed=False, n=2,
                           metric="induction score", min_value=0.72, ci_low=0.695, ci_high=0.779, confidence=0.95,
                           decided_on="lower bound").to_dict()
    verdict, text, measured, interval, required, n, links = report_row(claim)
    assert measured.startswith("0.737 lower bound 0.695 < 0.72")
    assert required.startswith("≥ 0.72")
    held = report_row({**claim, "passed": True, "ci_low": 0.725})[2]
    assert held.startswith("0.737 lower bound 0.725 ≥ 0.72")


def test_a_comparison_that_would_contradict_the_verdict_is_not_shown():
    # a lens claim is decided on its KL bound and its top-1 agreement: the KL bound alone held, the claim failed
    claim = {"claim": "the logit lens converges by layer 0", "value": 0.05, "passed": False, "min_value": None, "max_value": 0.1,
             "ci_low": 0.01, "ci_high": 0.08, "confidence": 0.95, "n": 20, "metric": "KL(final || lens)",
             "decided_on": "upper bound of the worst layer >= 0 (L0; and top-1 agreement's lower bound)"}
    assert claim_format.comparison(claim) is None
    assert claim_format.decided(claim) == ("upper bound of the worst layer >= 0 (L0; and top-1 agreement's lower bound): 0.080, "
                                           "required <= 0.1")


# Soft mode ----------------------------------------------------------------------------------------

SOFT_SUITE = """
import circuitcheck as cc

def test_three_claims(model):
    cc.assert_induction_head(1, 3, min_score=0.99)       # fails
    cc.assert_previous_token_head(0, 2, min_score=0.5)   # holds
    cc.assert_induction_head(1, 0, min_score=0.99)       # fails
"""


def test_with_cc_claims_every_claim_is_measured_and_the_test_fails_once_listing_every_failure(pytester):
    pytester.makepyfile(
        """
        import circuitcheck as cc

        def test_block(model):
            with cc.claims():
                cc.assert_induction_head(1, 3, min_score=0.99)
                held = cc.assert_previous_token_head(0, 2, min_score=0.5)
                failed = cc.assert_induction_head(1, 0, min_score=0.99)
                assert held.passed and not failed.passed  # the results come back, failed ones too
        """
    )
    result = pytester.runpytest(f"--circuitcheck-model={MODEL}", "--circuitcheck-json=results.json")
    result.assert_outcomes(failed=1)
    claims = claims_of(pytester)["test_block"]
    assert [(c["claim"], c["passed"]) for c in claims] == [
        ("L1H3 is an induction head", False), ("L0H2 is a previous-token head", True), ("L1H0 is an induction head", False)]
    text = result.stdout.str()
    section = text.split("test_block ___")[1].split("circuitcheck claims")[0]
    assert section.lstrip("_ \n").startswith("2 of 3 claims failed (soft mode: every claim was measured; 1 held)")
    assert section.count("claim failed:") == 2 and "claim held" not in section
    assert "claim failed: L1H3 is an induction head" in section and "at test_with_cc_claims_every_claim" in section
    lines = [line.strip() for line in section.splitlines()]
    assert lines.index("at test_with_cc_claims_every_claim_is_measured_and_the_test_fails_once_listing_every_failure.py:5") \
        < lines.index("at test_with_cc_claims_every_claim_is_measured_and_the_test_fails_once_listing_every_failure.py:7")


def test_without_soft_mode_the_first_failed_claim_stops_the_test(pytester):
    pytester.makepyfile(SOFT_SUITE)
    result = pytester.runpytest(f"--circuitcheck-model={MODEL}", "--circuitcheck-json=results.json")
    result.assert_outcomes(failed=1)
    assert [c["claim"] for c in claims_of(pytester)["test_three_claims"]] == ["L1H3 is an induction head"]
    assert "soft mode" not in result.stdout.str()


@pytest.mark.parametrize("how", ["option", "ini"])
def test_soft_mode_for_every_test_from_the_option_or_the_ini_key(pytester, how):
    pytester.makepyfile(SOFT_SUITE)
    args = [f"--circuitcheck-model={MODEL}", "--circuitcheck-json=results.json"]
    if how == "option":
        args.append("--circuitcheck-soft")
    else:
        pytester.makeini("[pytest]\ncircuitcheck_soft = true\n")
    result = pytester.runpytest(*args)
    result.assert_outcomes(failed=1)
    claims = claims_of(pytester)["test_three_claims"]
    assert [(c["claim"], c["passed"]) for c in claims] == [
        ("L1H3 is an induction head", False), ("L0H2 is a previous-token head", True), ("L1H0 is an induction head", False)]
    result.stdout.fnmatch_lines(["*2 of 3 claims failed (soft mode: every claim was measured; 1 held)*",
                                 "1 claims held, 2 failed (-v lists every claim)"])


def test_in_soft_mode_an_error_still_stops_the_test_and_names_the_claims_that_failed_before_it(pytester):
    pytester.makepyfile(
        """
        import circuitcheck as cc

        def test_error(model):
            with cc.claims():
                cc.assert_induction_head(1, 3, min_score=0.99)
                cc.assert_induction_head(7, 0, min_score=0.5)   # no layer 7: an error, not a failed claim
                cc.assert_previous_token_head(0, 2, min_score=0.5)
        """
    )
    result = pytester.runpytest(f"--circuitcheck-model={MODEL}", "--circuitcheck-json=results.json")
    result.assert_outcomes(failed=1)
    text = result.stdout.str()
    assert "layer 7" in text and "before this error, 1 claim(s) failed in soft mode" in text
    assert [c["claim"] for c in claims_of(pytester)["test_error"]] == ["L1H3 is an induction head"]


def test_outside_pytest_a_soft_block_collects_and_raises_at_its_end():
    model = cc.load_model(MODEL)
    with pytest.raises(CircuitAssertionError) as raised:
        with cc.claims() as soft:
            first = cc.assert_induction_head(1, 3, min_score=0.99, model=model)
            line = inspect.currentframe().f_lineno - 1
            cc.assert_previous_token_head(0, 2, min_score=0.5, model=model)
            assert len(soft.failures) == 1 and soft.concluded == 2
    assert raised.value.result is first and raised.value.results == [first]
    assert str(raised.value) == first.message() + f"\n  at {os.path.relpath(__file__)}:{line}"
    with cc.claims():  # every claim held: nothing raised
        cc.assert_previous_token_head(0, 2, min_score=0.5, model=model)


def test_a_soft_block_inside_another_joins_it(pytester):
    pytester.makepyfile(
        """
        import circuitcheck as cc

        def test_nested(model):
            with cc.claims():
                cc.assert_induction_head(1, 3, min_score=0.99)
                with cc.claims():
                    cc.assert_induction_head(1, 0, min_score=0.99)
                cc.assert_previous_token_head(0, 2, min_score=0.5)   # still measured: the inner block did not raise
        """
    )
    result = pytester.runpytest(f"--circuitcheck-model={MODEL}", "--circuitcheck-json=results.json")
    result.assert_outcomes(failed=1)
    assert len(claims_of(pytester)["test_nested"]) == 3
    result.stdout.fnmatch_lines(["*2 of 3 claims failed (soft mode*"])


def test_in_soft_mode_later_claims_fill_the_checkpoint_matrix(pytester):
    # at step0 nothing is an induction head yet: the first claim fails there, and without soft mode
    # the second claim would never be measured at step0 (a '–' in the matrix)
    pytester.makepyfile(
        """
        import pytest
        import circuitcheck as cc

        @pytest.mark.circuitcheck_checkpoints("step0", "step3000")
        def test_over_training(model):
            cc.assert_induction_head(1, 0, min_score=0.5)
            cc.assert_previous_token_head(0, 2, min_score=0.0)
        """
    )
    for soft, cells in ((False, 1), (True, 2)):
        args = ["--circuitcheck-report=report.html", "--circuitcheck-json=results.json"] + (["--circuitcheck-soft"] if soft else [])
        result = pytester.runpytest(*args)
        result.assert_outcomes(passed=1, failed=1)
        html = (pytester.path / "report.html").read_text()
        table = re.search(r'<table class="checkpoints">(.*?)</table>', html, re.S).group(1)
        row = next(r for r in re.findall(r"<tr id=.*?</tr>", table, re.S) if "L0H2 is a previous-token head" in r)
        measured = re.findall(r'<td class="cp (held|failed)"', row)
        assert len(measured) == cells and row.count('class="cp muted">–') == 2 - cells


# check_* calls ---------------------------------------------------------------------------------


def test_check_calls_are_recorded_as_informational_and_never_fail_the_test(pytester):
    pytester.makepyfile(
        """
        import circuitcheck as cc

        def test_checks(model):
            failed = cc.check_head(1, 3, "induction", min_score=0.99)
            assert not failed.passed
            cc.assert_previous_token_head(0, 2, min_score=0.5)
        """
    )
    result = pytester.runpytest(f"--circuitcheck-model={MODEL}", "--circuitcheck-json=results.json", "--circuitcheck-report=report.html")
    result.assert_outcomes(passed=1)
    claims = claims_of(pytester)["test_checks"]
    # the assertion's own check is recorded once, as the claim; the check_* call apart, as informational
    assert [(c["claim"], c["passed"], c.get("informational", False)) for c in claims] == [
        ("L1H3 is an induction head", False, True), ("L0H2 is a previous-token head", True, False)]
    result.stdout.fnmatch_lines(["1 claims held, 0 failed; 1 informational check (check_* only: shown, never failing a test)*"])
    document = json.loads((pytester.path / "results.json").read_text())
    summary = report.summarize(document)
    assert (summary["claims"], summary["claims_passed"], summary["claims_failed"], summary["checks_informational"]) == (1, 1, 0, 1)
    html = (pytester.path / "report.html").read_text()
    assert "check only" in html and "Failed claims" not in html


def test_informational_checks_are_no_baseline_entries(pytester):
    pytester.makepyfile(
        """
        import circuitcheck as cc

        def test_checks(model):
            cc.check_head(1, 3, "induction", min_score=0.5)
            cc.assert_previous_token_head(0, 2, min_score=0.5)
        """
    )
    pytester.runpytest(f"--circuitcheck-model={MODEL}", "--circuitcheck-baseline=baseline.json",
                       "--circuitcheck-update-baseline").assert_outcomes(passed=1)
    entries = json.loads((pytester.path / "baseline.json").read_text())["entries"]
    assert [entry["claim"] for entry in entries.values()] == ["L0H2 is a previous-token head"]


# Failures that start with the lab note ----------------------------------------------------------


def test_a_failed_claims_section_starts_with_the_lab_note_and_dumps_no_fixture(pytester):
    pytester.makepyfile(
        """
        import circuitcheck as cc

        def test_claim(model, induction_task):
            cc.assert_sufficient("L1H0", min_recovery=0.9)
        """
    )
    result = pytester.runpytest(f"--circuitcheck-model={MODEL}")
    result.assert_outcomes(failed=1)
    text = result.stdout.str()
    section = text.split("test_claim ___")[1].split("=====")[0].lstrip("_").strip().splitlines()
    assert section[0] == "claim failed: L1H0 is sufficient for induction (model zoo:induction-2l)"
    assert section[1].startswith("  measured: recovery ") and section[2].startswith("  required: recovery >= 0.9, decided on the lower bound")
    assert section[-2:] == ["test_a_failed_claims_section_starts_with_the_lab_note_and_dumps_no_fixture.py:4: in test_claim",
                            '    cc.assert_sufficient("L1H0", min_recovery=0.9)']
    for dump in ("TransformerBridge(", "tensor(", "model = ", "induction_task = ", "HookPoint"):
        assert dump not in text
    # the short summary's message (here: JUnit's failure message) is the note's first line
    junit = pytester.path / "junit.xml"
    pytester.runpytest(f"--circuitcheck-model={MODEL}", f"--junitxml={junit}").assert_outcomes(failed=1)
    message = re.search(r'<failure message="([^"]*)"', junit.read_text()).group(1)
    assert unescape(message) == "claim failed: L1H0 is sufficient for induction (model zoo:induction-2l)"
    # pytest's own traceback when asked for it
    assert "TransformerBridge(" in pytester.runpytest(f"--circuitcheck-model={MODEL}", "--tb=long").stdout.str()


# Vacuous lens claims ----------------------------------------------------------------------------


def test_a_lens_claim_about_the_last_layer_is_refused_as_one_that_cannot_fail():
    model = cc.load_model(MODEL)
    for call in (cc.check_logit_lens_converges_by, cc.assert_logit_lens_converges_by):
        with pytest.raises(ArgumentError) as raised:
            call(1, prompt="a b c d a b c", model=model)
        text = str(raised.value)
        assert "layer=1 is the last layer of zoo:induction-2l (layers 0 to 1)" in text
        assert "cannot fail" in text and "Claim an earlier layer (0 to 0)" in text
    # the claim it refuses is indeed vacuous: the last layer's residual, read through the final norm and the unembedding
    # (plain TransformerLens calls), is the model's output exactly
    tokens = cc.inputs.as_tokens(model, "a b c d a b c")
    with torch.no_grad():
        logits, activations = model.run_with_cache(tokens)
        lens_logits = model.unembed(model.ln_final(activations["blocks.1.hook_resid_post"]))
    assert torch.equal(lens_logits, logits)
    # an earlier layer is still measured (and here fails: the prediction forms in layer 1)
    assert not cc.check_logit_lens_converges_by(0, prompt="a b c d a b c", model=model).passed
    one_layer = cc.load_model("zoo:induction-1l")
    with pytest.raises(ArgumentError, match="layer=0 is the only layer of zoo:induction-1l, and its last"):
        cc.check_logit_lens_converges_by(0, prompt="a b c d a b c", model=one_layer)
