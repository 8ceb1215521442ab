"""Claims about zoo:planted-4l that hold but say little: what the power command is for.

Each claim below is true, and each passes. `python -m circuitcheck power
example_suites/test_planted_weak_claims.py` re-runs them on mutated copies of
the model (heads' weights scrambled or swapped, the circuit replaced by random
ones of the same size, the checkpoint shuffled) and shows how little could
make them fail:

- "the logit lens has converged by layer 2" with max_kl=50 nats and no
  top-1 agreement required holds, but no mutation moves the lens that far:
  it cannot fail (a claim about layer 3, the last, could not fail at all: its
  lens is the output, and circuitcheck refuses it);
- "the planted circuit is necessary" is true, but L3.mlp alone carries it
  (drop 1.49): swap every head of the circuit for another and the claim still
  holds, and so do random sets that contain L3.mlp;
- "L2H2 alone is not necessary" (max_drop=0.8; it costs 0.52 because the
  backup L3H0 steps in) is not measured: a 'not' claim is falsified by moving
  function into it, and no other head of layer 2 matters that much.

Compare test_planted_circuit.py, whose claims each fail under the mutations
meant to falsify them.
"""

import pytest

import circuitcheck as cc

pytestmark = pytest.mark.circuitcheck_model("zoo:planted-4l")

PLANTED = cc.Circuit.parse("L0H0 L2H2 L3H0 L3H3 L3.mlp", name="planted")


def test_lens_has_converged_within_50_nats(model, induction_task):
    cc.assert_logit_lens_converges_by(2, max_kl=50.0, min_agreement=0.0)  # 0.669 nats: thresholds no mutation breaks


def test_the_whole_circuit_is_necessary(model, induction_task):
    cc.assert_necessary(PLANTED.components, min_drop=0.9)  # 1.000, but carried by L3.mlp alone


def test_the_induction_head_alone_is_not_necessary(model, induction_task):
    cc.assert_necessary("L2H2", max_drop=0.8)  # 0.52: the backup head L3H0 steps in
