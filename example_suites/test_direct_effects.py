"""Weight-circuit and direct-effect claims about zoo:induction-2l.

Measured on the model (step3000): the previous-token heads L0H0 / L0H2 K-compose
with the induction head L1H0 (0.229 / 0.236, random baseline 0.125, 95%
quantile 0.138) and barely Q-compose with it (0.035 / 0.029, below random).
Through their OV circuits (W_E W_V W_O W_U, LayerNorm ignored) L1H1-L1H3 are
copying heads (copying scores 0.78-0.82); L1H0 is not by that measure (0.27),
although on real inputs it raises the copied token's logit as much as the
others: what it reads at the attended position is mostly the layer-0 heads'
output, which the embedding-only OV circuit leaves out. On the second copy of
repeated random tokens the four layer-1 heads carry nearly all of the direct
effect on the correct next token's logit.
"""

import pytest

import circuitcheck as cc

SECOND_COPY = slice(21, -1)  # induction_task: 'BOS r r', r of 20 tokens; positions 21..39 predict the second copy


@pytest.mark.parametrize("previous_token_head", ["L0H0", "L0H2"])
def test_the_previous_token_heads_k_compose_with_the_induction_head(model, previous_token_head):
    cc.assert_composition(previous_token_head, "L1H0.k", min_score=0.2, above_random=True)
    cc.assert_composition(previous_token_head, "L1H0.q", max_score=0.1)


def test_layer_1_heads_copy_through_their_ov_circuits(model):
    for head in (1, 2, 3):
        cc.assert_copying_head(1, head, min_score=0.7)


@pytest.mark.xfail(strict=True, reason="documented: L1H0's embedding-only OV circuit scores 0.27, it copies what layer 0 wrote")
def test_false_claim_l1h0_is_a_copying_head_by_its_ov_circuit(model):
    cc.assert_copying_head(1, 0, min_score=0.5)


def test_the_induction_heads_dominate_the_direct_effect(model, induction_task):
    where = dict(positions=SECOND_COPY, answers="next")
    cc.assert_top_direct_effects("L1H0 L1H1 L1H2 L1H3", **where)
    cc.assert_direct_effect("L1.attn", min_share=0.9, **where)
    cc.assert_direct_effect("L1H3", min_share=0.2, **where)
    cc.assert_direct_effect("L0.attn", max_share=0.05, **where)
