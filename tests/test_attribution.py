"""Direct logit attribution: the decomposition sums to the model's logit difference; claims as data."""

import json

import numpy as np

import pytest
import torch

from circuitcheck import CircuitAssertionError, CircuitCheckError, ComponentError, tasks
from circuitcheck.engine.attribution import direct_logit_attribution, per_example, summary
from circuitcheck.claims.attribution import (
    assert_direct_effect,
    assert_top_direct_effects,
    check_direct_effect,
    check_top_direct_effects,
)

from conftest import build_native

INDUCTION_POSITIONS = slice(9, -1)  # tasks.induction(seq_len=8): positions 9..15 predict the second copy


def assert_sums(frame, n_layers, n_heads, atol=1e-4):
    values = per_example(frame)
    decomposition = values[frame["in_total"].to_numpy(dtype=bool)].sum(axis=0)
    torch.testing.assert_close(
        torch.tensor(decomposition.to_numpy(dtype=float)), torch.tensor(values.loc["total"].to_numpy(dtype=float)), atol=atol, rtol=0
    )
    for layer in range(n_layers):
        parts = [f"L{layer}H{h}" for h in range(n_heads)] + [f"L{layer}.attn.b_O"]
        heads = values.loc[parts].sum(axis=0).to_numpy(dtype=float)
        torch.testing.assert_close(torch.tensor(heads), torch.tensor(values.loc[f"L{layer}.attn"].to_numpy(dtype=float)), atol=atol, rtol=0)


@pytest.fixture(scope="module")
def induction_task(induction_2l):
    return tasks.induction(induction_2l, n_prompts=8, seq_len=8, seed=0)


@pytest.fixture(scope="module")
def perturbed_model():
    """Random weights with MLPs and non-trivial LayerNorm gains/biases and output biases."""
    model = build_native(n_layers=2, n_heads=4, d_model=32, d_vocab=64, seed=5)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias") or "ln" in name:
                param.add_(0.3 * torch.randn(param.shape, generator=generator))
    return model


def test_dla_sums_to_the_logit_difference_on_the_zoo_model(induction_2l):
    tokens = torch.randint(3, 64, (6, 12), generator=torch.Generator().manual_seed(1))
    answers = torch.randint(3, 64, (6,), generator=torch.Generator().manual_seed(2))
    wrong = torch.randint(3, 64, (6, 2), generator=torch.Generator().manual_seed(3))
    frame = direct_logit_attribution(induction_2l, tokens, positions=[-1, 4], answers=answers, wrong_answers=wrong)
    assert_sums(frame, 2, 4)
    # the total row is the model's own logit difference
    logits = induction_2l(tokens)
    expected = ((logits[:, [-1, 4]].gather(-1, answers[:, None, None].expand(6, 2, 1)).squeeze(-1))
                - logits[:, [-1, 4]].gather(-1, wrong[:, None, :].expand(6, 2, 2)).mean(-1)).mean(1)
    torch.testing.assert_close(torch.tensor(per_example(frame).loc["total"].to_numpy(dtype=float)), expected.double(), atol=1e-4, rtol=0)
    assert "L0.mlp" not in frame.index  # attention-only


def test_dla_sums_on_a_random_model_with_mlps_and_biases(perturbed_model):
    tokens = torch.randint(0, 64, (5, 10), generator=torch.Generator().manual_seed(4))
    answers = torch.randint(0, 64, (5,), generator=torch.Generator().manual_seed(5))
    wrong = torch.randint(0, 64, (5,), generator=torch.Generator().manual_seed(6))
    frame = direct_logit_attribution(perturbed_model, tokens, answers=answers, wrong_answers=wrong)
    assert {"L0.mlp", "L1.mlp", "ln_final.b", "b_U", "L1.attn.b_O"} <= set(frame.index)
    assert frame.loc["ln_final.b", "mean"] != 0 and frame.loc["L0.mlp", "mean"] != 0
    assert_sums(frame, 2, 4)
    # a single answer's logit (no wrong answer) decomposes too
    single = direct_logit_attribution(perturbed_model, tokens, positions=slice(3, 7), answers=answers, wrong_answers=False)
    assert_sums(single, 2, 4)
    logits = perturbed_model(tokens)[:, 3:7]
    torch.testing.assert_close(
        torch.tensor(per_example(single).loc["total"].to_numpy(dtype=float)),
        logits.gather(-1, answers[:, None, None].expand(5, 4, 1)).squeeze(-1).mean(1).double(),
        atol=1e-4,
        rtol=0,
    )


def test_dla_of_a_task_uses_its_answers_and_matches_its_logit_diff_metric(induction_2l):
    tokens = torch.randint(3, 64, (4, 9), generator=torch.Generator().manual_seed(7))
    task = tasks.from_tokens(tokens, tokens.flip(0), answers=tokens[:, 0], wrong_answers=tokens[:, 1], d_vocab=64)
    frame = direct_logit_attribution(induction_2l, task)
    metric = task.metric(induction_2l(task.clean), task)
    torch.testing.assert_close(torch.tensor(per_example(frame).loc["total"].to_numpy(dtype=float)), metric.double(), atol=1e-4, rtol=0)
    assert list(summary(frame).columns) == ["kind", "layer", "head", "in_total", "mean", "std", "share"]
    assert frame.loc["total", "share"] == pytest.approx(1.0)


def test_next_token_answers_on_the_induction_task(induction_2l, induction_task):
    frame = direct_logit_attribution(induction_2l, induction_task, positions=INDUCTION_POSITIONS, answers="next")
    assert_sums(frame, 2, 4)
    layer_1 = frame.loc[[f"L1H{h}" for h in range(4)], "share"]
    assert (layer_1 > 0.15).all()  # every layer-1 head raises the copied token's logit


def test_clear_errors(induction_2l, induction_task):
    with pytest.raises(CircuitCheckError, match="needs answer tokens and task 'induction' has no answers"):
        direct_logit_attribution(induction_2l, induction_task)
    with pytest.raises(CircuitCheckError, match="position 16 is the last one"):
        direct_logit_attribution(induction_2l, induction_task, positions=-1, answers="next")
    with pytest.raises(CircuitCheckError, match="position 40 is out of range: the inputs have 17 positions, valid are 0 to 16"):
        direct_logit_attribution(induction_2l, induction_task, positions=40, answers="next")
    with pytest.raises(CircuitCheckError, match="outside the model's vocabulary 0-63"):
        direct_logit_attribution(induction_2l, induction_task.clean, answers=99)
    with pytest.raises(CircuitCheckError, match="for 8 examples"):
        direct_logit_attribution(induction_2l, induction_task.clean, answers=[3, 4])
    with pytest.raises(ComponentError, match="layer 2 does not exist in L2H0"):
        check_direct_effect("L2H0", min_share=0.1, task=induction_task, answers="next", positions=9, model=induction_2l)
    with pytest.raises(ComponentError, match="use L1H0"):
        check_direct_effect("L1H0.k", min_share=0.1, task=induction_task, answers="next", positions=9, model=induction_2l)
    with pytest.raises(ComponentError, match="attention-only"):
        check_direct_effect("L0.mlp", min_share=0.1, task=induction_task, answers="next", positions=9, model=induction_2l)
    with pytest.raises(ValueError, match="min_share"):
        check_direct_effect("L1H0", task=induction_task, model=induction_2l)
    with pytest.raises(ValueError, match="not both"):
        check_top_direct_effects("L1H0 L1.attn", task=induction_task, answers="next", positions=9, model=induction_2l)
    with pytest.raises(ValueError, match="k=1 is not valid"):
        check_top_direct_effects("L1H0 L1H3", k=1, task=induction_task, answers="next", positions=9, model=induction_2l)


def test_direct_effect_claims_pass_fail_and_are_json_safe(induction_2l, induction_task):
    kwargs = dict(task=induction_task, positions=INDUCTION_POSITIONS, answers="next", model=induction_2l)
    result = assert_direct_effect("L1.attn", min_share=0.9, **kwargs)
    assert result.kind == "direct_effect" and result.passed and result.n == 8
    assert result.ci_low <= result.value <= result.ci_high
    assert result.value == pytest.approx(result.parameters["mean_dla"] / result.parameters["mean_logit_diff"])
    assert "direct_logit_attribution" in result.evidence
    json.dumps(result.to_dict())
    with pytest.raises(CircuitAssertionError) as info:
        assert_direct_effect("L0H2", min_share=0.2, **kwargs)
    message = str(info.value)
    assert message.startswith("claim failed: L0H2 carries at least 20% of the direct effect")
    assert "largest direct effects: L1H" in message


def test_top_direct_effects(induction_2l, induction_task):
    kwargs = dict(task=induction_task, positions=INDUCTION_POSITIONS, answers="next", model=induction_2l)
    result = assert_top_direct_effects("L1H0 L1H1 L1H2 L1H3", **kwargs)
    assert result.kind == "top_direct_effects" and result.parameters["fraction_in_top_k"] == 1.0
    assert result.decided_on == "lower bound" and result.min_value == 0.0 and result.ci_low >= 0.0
    ranking = result.evidence["ranking"]
    assert set(ranking.index[:4]) == {"L1H0", "L1H1", "L1H2", "L1H3"} and len(ranking) == 10  # embed, pos_embed, 8 heads
    assert_top_direct_effects("L1.attn", k=1, **kwargs)
    json.dumps(result.to_dict())
    with pytest.raises(CircuitAssertionError, match="outside the top: L0H0"):
        assert_top_direct_effects(["L0H0"], k=3, **kwargs)


def test_the_rank_margin_matches_a_ranking_written_here(induction_2l, induction_task):
    kwargs = dict(task=induction_task, positions=INDUCTION_POSITIONS, answers="next", model=induction_2l)
    result = check_top_direct_effects("L1H0 L1H3", k=3, **kwargs)
    frame = direct_logit_attribution(induction_2l, induction_task, positions=INDUCTION_POSITIONS, answers="next")
    heads = [f"L{l}H{h}" for l in range(2) for h in range(4)]
    scores = {n: abs(float(frame.loc[n, "mean"])) for n in ["embed", "pos_embed", *heads]}
    # the margin of a listed component: its score minus the 3rd largest score among all the other candidates
    margins = [scores[n] - sorted((v for m, v in scores.items() if m != n), reverse=True)[2] for n in ("L1H0", "L1H3")]
    assert result.value == pytest.approx(min(margins), abs=1e-6)
    assert result.passed == (result.ci_low >= 0)


def test_direct_effect_shares_are_decided_on_the_interval_not_the_mean(induction_2l, induction_task):
    kwargs = dict(task=induction_task, positions=INDUCTION_POSITIONS, answers="next", model=induction_2l)
    measured = check_direct_effect("L1H0", min_share=0.0, **kwargs)
    between = (measured.value + measured.ci_low) / 2  # the mean clears it, the lower bound does not
    result = check_direct_effect("L1H0", min_share=between, **kwargs)
    assert result.value > between and not result.passed and result.decided_on == "lower bound"
    assert "decided on the lower bound" in result.message() and result.p_value > 0.025
    upper = check_direct_effect("L1H0", max_share=(measured.value + measured.ci_high) / 2, **kwargs)
    assert not upper.passed and upper.decided_on == "upper bound"


def test_copying_is_exact_and_composition_above_random_has_a_baseline_p_value(induction_2l):
    from circuitcheck.claims.attribution import check_composition, check_copying_head

    copying = check_copying_head(1, 0, min_score=0.5, model=induction_2l)
    assert copying.p_value is None and copying.p_method.startswith("exact") and copying.ci_low is None
    from circuitcheck.engine.composition import random_composition_baseline

    composed = check_composition("L0H2", "L1H0.k", above_random=True, model=induction_2l, seed=0)
    null = random_composition_baseline(induction_2l, "k", seed=0).samples
    reached = int((null >= composed.value).sum())
    assert composed.passed and reached < 10  # far above every random score: the tail is extrapolated
    assert composed.p_method == "t tail" and composed.p_value <= (1 + 10) / (len(null) + 1)
    z = (composed.value - null.mean()) / (null.std(ddof=1) * np.sqrt(1 + 1 / len(null)))
    assert composed.p_value == pytest.approx(float(__import__("scipy").stats.t.sf(z, len(null) - 1)), rel=1e-6)
    plain = check_composition("L0H2", "L1H0.k", min_score=0.1, model=induction_2l)
    assert plain.p_value is None
