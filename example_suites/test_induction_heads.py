"""Attention-head claims about zoo:induction-2l, as its card reports them."""

import pytest

import circuitcheck as cc


def test_layer_0_has_previous_token_heads(model):
    cc.assert_previous_token_head(0, 0, min_score=0.8)
    cc.assert_previous_token_head(0, 2, min_score=0.8)


def test_layer_1_has_induction_heads(model):
    cc.assert_induction_head(1, 0, min_score=0.8)
    cc.assert_induction_head(1, 3, min_score=0.75)  # 0.808 [0.790, 0.826]: decided on the lower bound, 0.8 would fail


def test_layer_0_has_no_induction_heads(model):
    for head in range(model.cfg.n_heads):
        cc.assert_induction_head(0, head, max_score=0.3)


@pytest.mark.circuitcheck_model("zoo:induction-1l")
def test_a_one_layer_model_cannot_form_induction_heads(model):
    for head in range(model.cfg.n_heads):
        cc.assert_induction_head(0, head, max_score=0.3)


def test_induction_holds_on_natural_prompts(model):
    prompts = ["the cat sat on the mat and the cat sat on the mat", "he saw a big red fox he saw a big red fox"]
    cc.assert_induction_head(1, 0, min_score=0.5, prompts=prompts)


@pytest.mark.circuitcheck_prompt("a b c d e f a b c d e f")
def test_the_induction_head_attends_to_the_token_after_the_earlier_copy(model, cache):
    pattern = cache["blocks.1.attn.hook_pattern"][0, 0]  # head L1H0, [query, key]
    # the second "c" (position 9) attends to the "d" after the first "c" (position 4)
    assert pattern[9].argmax().item() == 4


@pytest.mark.xfail(strict=True, reason="documented false claim: L0H1 is not an induction head; shows the lab note")
def test_false_claim_l0h1_is_an_induction_head(model):
    cc.assert_induction_head(0, 1, min_score=0.7)
