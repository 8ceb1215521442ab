"""The planted circuit of zoo:planted-4l, whose ground truth is known.

zoo:planted-4l's weights were set by hand (circuitcheck/zoo/planted.py), so
its circuit is a fact, measured exhaustively in its model card: L0H0
(previous-token head) -> L2H2 (induction head) -> L3.mlp (turns the found
token into logits), with L3H0 a backup induction head that waits on BOS while
L2H2 works and takes over when L2H2 is removed, and L3H3 a negative head that
takes logits from the answer. L1H1 and L2H1 attend like a previous-token and
an induction head but write only what nothing reads.

Every claim here is true, and `python -m circuitcheck power example_suites/test_planted_circuit.py`
shows that each could fail: scrambling, swapping or replacing what it is about
makes it fail (its mutation score). The numbers in the comments are the card's.
Claims that hold but say little are in test_planted_weak_claims.py.
"""

import pytest

import circuitcheck as cc

pytestmark = pytest.mark.circuitcheck_model("zoo:planted-4l")

PLANTED = cc.Circuit.parse("L0H0 L2H2 L3H0 L3H3 L3.mlp", name="planted")
WITHOUT_NEGATIVE = PLANTED.without("L3H3")
DISTRACTORS = cc.Circuit.parse("L1H1 L2H1", name="distractors")


def test_attention_patterns(model):
    cc.assert_previous_token_head(0, 0, min_score=0.9)  # 1.000
    cc.assert_induction_head(2, 2, min_score=0.9)  # 0.999
    cc.assert_induction_head(3, 3, min_score=0.9)  # the negative head attends like an induction head too
    # The distractors look the part; only causal claims tell them apart (below).
    cc.assert_previous_token_head(1, 1, min_score=0.9)
    cc.assert_induction_head(2, 1, min_score=0.9)


def test_planted_circuit(model, induction_task):
    cc.assert_sufficient(PLANTED, min_recovery=0.9)  # 1.003
    cc.assert_faithful(PLANTED, max_error=0.1)  # |1 - recovery| 0.003
    cc.assert_complete(PLANTED, max_incompleteness=0.2)  # 0.010
    cc.assert_minimal(PLANTED, min_contribution=0.05, method="ioi")  # weakest L3H3 0.233 (K = {L0H0})


def test_each_step_of_the_circuit_is_necessary(model, induction_task):
    cc.assert_necessary("L0H0", min_drop=0.9)  # 0.972: no previous token, no match for any induction head
    cc.assert_necessary("L3.mlp", min_drop=0.9)  # 1.49: without it the negative head is left to act alone


def test_backup_head_takes_over(model, induction_task):
    cc.assert_necessary("L2H2 L3H0", min_drop=0.9)  # together they are the answer (alone, L2H2 costs 0.52)


def test_without_the_negative_head_the_circuit_over_recovers(model, induction_task):
    cc.assert_sufficient(WITHOUT_NEGATIVE, min_recovery=1.05)  # 1.149


def test_distractors_are_not_necessary(model, induction_task):
    cc.assert_necessary(DISTRACTORS.components, max_drop=0.05)  # 0.000
