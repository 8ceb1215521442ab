"""Head assertions outside pytest's fixtures: explicit model=, results as data, lab-note failures."""

import json

import pytest
import torch

import circuitcheck as cc
from circuitcheck import CircuitAssertionError, CircuitCheckError, ComponentError


def best_and_worst(model, kind):
    scores = cc.head_scores(model, kind)
    stacked = scores.stack()
    return stacked.idxmax(), stacked.idxmin(), stacked


def test_the_best_induction_head_passes_and_returns_its_result(induction_2l):
    (layer, head), _, scores = best_and_worst(induction_2l, "induction")
    result = cc.assert_induction_head(layer, head, min_score=0.8, model=induction_2l)
    assert result.passed and result.kind == "induction_head"
    assert result.value == pytest.approx(scores[(layer, head)], abs=1e-6)
    assert result.ci_low <= result.value <= result.ci_high
    assert result.n == 16 and result.model == "zoo:induction-2l"
    assert result.claim == f"L{layer}H{head} is an induction head"


def test_a_failing_claim_raises_a_lab_note(induction_2l):
    (best_layer, best_head), (layer, head), scores = best_and_worst(induction_2l, "induction")
    with pytest.raises(CircuitAssertionError) as info:
        cc.assert_induction_head(layer, head, min_score=0.7, model=induction_2l)
    message = str(info.value)
    assert message.startswith(f"claim failed: L{layer}H{head} is an induction head (model zoo:induction-2l)")
    assert f"measured: induction score {scores[(layer, head)]:.3f} (95% CI" in message
    assert f"required: induction score >= 0.7, decided on the lower bound {info.value.result.ci_low:.3f}" in message
    assert "16 seeded prompts 'BOS r r', r = 20 random tokens, seed 0" in message
    assert f"best heads of this kind instead: L{best_layer}H{best_head} {scores[(best_layer, best_head)]:.3f}" in message
    assert info.value.result.passed is False


def test_max_score_makes_an_is_not_claim(induction_2l):
    _, (layer, head), scores = best_and_worst(induction_2l, "induction")
    result = cc.assert_induction_head(layer, head, max_score=0.3, model=induction_2l)
    assert result.claim == f"L{layer}H{head} is not an induction head"
    (best_layer, best_head), _, _ = best_and_worst(induction_2l, "induction")
    with pytest.raises(CircuitAssertionError, match="is not an induction head"):
        cc.assert_induction_head(best_layer, best_head, max_score=0.3, model=induction_2l)


def test_the_best_previous_token_head_sits_in_layer_0(induction_2l):
    (layer, head), _, _ = best_and_worst(induction_2l, "previous_token")
    assert layer == 0
    cc.assert_previous_token_head(layer, head, min_score=0.8, model=induction_2l)


def test_duplicate_and_bos_assertions_measure_their_own_kinds(induction_2l):
    (layer, head), _, scores = best_and_worst(induction_2l, "duplicate_token")
    assert cc.assert_duplicate_token_head(layer, head, min_score=0.0, model=induction_2l).value == pytest.approx(scores[(layer, head)], abs=1e-6)
    (layer, head), _, scores = best_and_worst(induction_2l, "bos")
    result = cc.assert_bos_head(layer, head, min_score=0.0, model=induction_2l)
    assert result.value == pytest.approx(scores[(layer, head)], abs=1e-6)
    assert result.parameters["exclude_bos"] is False


def test_a_user_pattern_claim(induction_2l):
    (layer, head), _, _ = best_and_worst(induction_2l, "previous_token")

    def previous(tokens):
        n = len(tokens)
        return torch.diag(torch.ones(n - 1), diagonal=-1)

    result = cc.assert_head_matches_pattern(layer, head, previous, min_score=0.8, model=induction_2l)
    assert result.claim == f"L{layer}H{head} is a head matching the given pattern"


def test_result_is_a_frame_and_json_safe(induction_2l):
    (layer, head), _, _ = best_and_worst(induction_2l, "induction")
    result = cc.assert_induction_head(layer, head, min_score=0.5, model=induction_2l)
    frame = result.to_frame()
    assert list(frame["claim"]) == [result.claim] and frame.loc[0, "passed"]
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert data["evidence"]["head_scores"]["index_name"] == "layer"
    attention = data["evidence"]["attention"]
    assert attention["index"][0] == "0:<bos>" and len(attention["data"]) == 41


def test_a_head_that_does_not_exist_names_the_valid_range(induction_2l):
    with pytest.raises(ComponentError, match=r"head 99 does not exist in L1H99"):
        cc.assert_induction_head(1, 99, model=induction_2l)
    with pytest.raises(ComponentError, match=r"layer 5 does not exist .* has layers 0-1"):
        cc.assert_induction_head(5, 0, model=induction_2l)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"min_score": 1.5}, r"min_score=1.5 is not valid: the measured value lies between 0.0 and 1.0"),
        ({"min_score": 0.8, "max_score": 0.2}, "min_score=0.8 is above max_score=0.2"),
        ({"min_score": "high"}, "min_score='high' is not valid: it must be a number"),
    ],
)
def test_bad_thresholds_are_clear_errors(induction_2l, kwargs, message):
    with pytest.raises(ValueError, match=message):
        cc.assert_induction_head(1, 0, model=induction_2l, **kwargs)


def test_without_a_model_outside_pytest_is_a_clear_error():
    import subprocess
    import sys

    code = "import circuitcheck as cc; cc.assert_induction_head(1, 0)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 1
    assert "CircuitCheckError: no model: pass model=... (outside pytest)" in out.stderr


def test_a_model_in_training_mode_is_refused(zoo_tokenizer_dir):
    from conftest import build_native

    model = build_native(tokenizer_dir=zoo_tokenizer_dir, d_vocab=64)
    model.train()
    with pytest.raises(CircuitCheckError, match=r"training mode.*call model.eval\(\)"):
        cc.assert_induction_head(1, 0, model=model)


def test_a_head_claim_is_decided_on_the_lower_bound_not_the_mean(induction_2l):
    # issue 13: on 2 prompts L1H1 measures 0.737 [0.695, 0.779]; the mean clears 0.72, the lower bound does not
    result = cc.check_head(1, 1, "induction", model=induction_2l, n_prompts=2, min_score=0.72)
    assert result.value == pytest.approx(0.737, abs=5e-4) and result.ci_low == pytest.approx(0.695, abs=5e-4)
    assert not result.passed and result.decided_on == "lower bound"
    with pytest.raises(CircuitAssertionError, match="decided on the lower bound 0.695"):
        cc.assert_induction_head(1, 1, min_score=0.72, n_prompts=2, model=induction_2l)
    # on 16 prompts its interval is narrow enough to clear the same threshold... or not: the bound says which
    wide = cc.check_head(1, 1, "induction", model=induction_2l, min_score=0.72)
    assert wide.passed == (wide.ci_low >= 0.72)


def test_an_is_not_claim_is_decided_on_the_upper_bound(induction_2l):
    measured = cc.check_head(1, 1, "induction", model=induction_2l, n_prompts=4, min_score=0.0)
    between = (measured.value + measured.ci_high) / 2  # above the mean, below the upper bound
    result = cc.check_head(1, 1, "induction", model=induction_2l, n_prompts=4, max_score=between)
    assert result.value < between and not result.passed and result.decided_on == "upper bound"
