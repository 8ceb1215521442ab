"""Causal assertions inside pytest: tasks from markers and fixtures, the patcher fixture, options."""

import json


CARD_CIRCUIT = "from circuitcheck import zoo\nCIRCUIT = zoo.card('induction-2l')['circuits']['induction']\n"


def test_the_induction_task_fixture_feeds_the_assertions(pytester):
    pytester.makepyfile(
        CARD_CIRCUIT
        + """
import circuitcheck as cc

def test_circuit(model, patcher, induction_task):
    cc.assert_necessary(CIRCUIT, min_drop=0.7)
    cc.assert_sufficient(CIRCUIT, min_recovery=0.9)
    cc.assert_minimal(CIRCUIT, min_contribution=0.05, method="ioi")  # the card's circuit has two backup heads
    assert patcher.runs(induction_task).task is induction_task
"""
    )
    pytester.runpytest().assert_outcomes(passed=1)


def test_the_task_marker_names_a_built_in_task_with_arguments(pytester):
    pytester.makepyfile(
        CARD_CIRCUIT
        + """
import pytest
import circuitcheck as cc

@pytest.mark.circuitcheck_task("induction", n_prompts=8, seq_len=10)
def test_marked():
    result = cc.assert_necessary(CIRCUIT, min_drop=0.5)
    assert result.n == 8
"""
    )
    pytester.runpytest().assert_outcomes(passed=1)


def test_a_task_fixture_made_with_task_fixture(pytester):
    pytester.makepyfile(
        CARD_CIRCUIT
        + """
import circuitcheck as cc

BUILT = []

@cc.task_fixture
def short_induction(model):
    BUILT.append(model)
    return cc.tasks.induction(model, n_prompts=6, seq_len=8, seed=4)

def test_one(short_induction):
    assert cc.assert_necessary(CIRCUIT, min_drop=0.5).n == 6

def test_two(short_induction):
    assert cc.check_sufficient(CIRCUIT).parameters["task"] == "induction"
    assert len(BUILT) == 1
"""
    )
    pytester.runpytest().assert_outcomes(passed=2)


def test_two_task_fixtures_are_ambiguous(pytester):
    pytester.makepyfile(
        """
import circuitcheck as cc

@cc.task_fixture
def one(model):
    return cc.tasks.induction(model, n_prompts=4, seq_len=5)

@cc.task_fixture
def two(model):
    return cc.tasks.induction(model, n_prompts=4, seq_len=6)

def test_ambiguous(one, two):
    cc.assert_necessary("L1H0")
"""
    )
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*has several task fixtures (one, two): pass task= to say which one*"])


def test_a_causal_failure_is_a_lab_note(pytester):
    pytester.makepyfile(
        """
import circuitcheck as cc

def test_claim(induction_task):
    cc.assert_sufficient("L1H0", min_recovery=0.99)
"""
    )
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "claim failed: L1H0 is sufficient for induction (model zoo:induction-2l)",
            "*measured: recovery * (95% CI * to *, n=32)",
            "*required: recovery >= 0.99, decided on the lower bound*",
            "*task:*induction: 32 prompts*",
            "*ablation: resample (*); seed 0",
            "",
            "test_a_causal_failure_is_a_lab_note.py:4: in test_claim",
            "    cc.assert_sufficient(\"L1H0\", min_recovery=0.99)",
        ]
    )


def test_max_batch_option_reaches_the_patcher(pytester):
    pytester.makepyfile("def test_it(patcher):\n    assert patcher.max_batch == 64\n")
    pytester.runpytest("--circuitcheck-max-batch=64").assert_outcomes(passed=1)
    result = pytester.runpytest("--circuitcheck-max-batch=0")
    result.stdout.fnmatch_lines(["*--circuitcheck-max-batch='0' is not valid: it must be a positive integer*"])


def test_causal_claims_reach_the_json_report(pytester):
    pytester.makepyfile(
        CARD_CIRCUIT
        + """
import circuitcheck as cc

def test_claims(induction_task):
    cc.assert_sufficient(CIRCUIT, min_recovery=0.9)
    cc.assert_minimal(CIRCUIT, method="ioi")
"""
    )
    pytester.runpytest("--circuitcheck-json=results.json").assert_outcomes(passed=1)
    claims = json.loads((pytester.path / "results.json").read_text())["tests"][0]["claims"]
    assert [c["kind"] for c in claims] == ["sufficient", "minimal"]
    assert claims[1]["evidence"]["minimality"]["index_name"] is None
