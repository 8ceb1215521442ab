"""Logit-lens claims about zoo:induction-2l.

The model has two layers. Its layer-0 residual stream does not yet predict the
next token (the logit lens agrees with the output at about 1 position in 5,
KL about 4 nats); the output is only settled after layer 1, where the induction
heads have copied the answer. So the lens converges by layer 1 and not earlier.
Layer 1 is the last layer, whose lens *is* the output: a claim that the lens
converges by it could not fail, and circuitcheck refuses it. What can be
claimed is that layer 0 has not converged.
"""

import pytest

import circuitcheck as cc

PROMPT = "a b c d e a b c d e"


def test_the_prediction_forms_in_layer_1(model):
    result = cc.check_logit_lens_converges_by(0, prompt=PROMPT, max_kl=0.1)
    assert not result.passed and result.parameters["converges_by"] == 1


@pytest.mark.xfail(strict=True, reason="documented false claim: before the induction heads run, the residual stream does not predict")
def test_false_claim_the_lens_converges_after_layer_0(model, induction_task):
    cc.assert_logit_lens_converges_by(0, max_kl=1.0)  # the task's clean inputs, every position but BOS
