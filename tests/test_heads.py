"""Head scores agree with TransformerLens's head_detector ("mul" measure) on the same input."""

import pytest
import torch
from transformer_lens.head_detector import detect_head

from circuitcheck import head_scores
from circuitcheck.engine.heads import bos_pattern, default_tokens, detection_pattern

TL_NAMES = {"previous_token": "previous_token_head", "duplicate_token": "duplicate_token_head", "induction": "induction_head"}


def prompts_of(model, tokens):
    """The prompt strings whose tokenisation is exactly ``tokens`` (BOS included)."""
    words = [model.tokenizer.convert_ids_to_tokens(row[1:].tolist()) for row in tokens]
    prompts = [" ".join(w) for w in words]
    for prompt, row in zip(prompts, tokens):
        assert model.to_tokens(prompt)[0].tolist() == row.tolist()
    return prompts


@pytest.mark.parametrize("kind", sorted(TL_NAMES))
@pytest.mark.parametrize("which", ["induction_2l", "random_model"])
def test_default_scores_equal_head_detector(kind, which, request):
    model = request.getfixturevalue(which)
    tokens = default_tokens(model, n_prompts=6, half_len=12, seed=3)
    ours = torch.tensor(head_scores(model, kind, tokens=tokens).to_numpy())
    theirs = detect_head(model, prompts_of(model, tokens), TL_NAMES[kind], exclude_bos=True)
    assert ours.shape == (model.cfg.n_layers, model.cfg.n_heads)
    torch.testing.assert_close(ours, theirs.float(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", sorted(TL_NAMES))
def test_scores_equal_head_detector_on_natural_prompts_of_mixed_lengths(kind, induction_2l):
    prompts = ["the cat sat on the mat and the cat sat", "a b c d e a b c d e", "he saw the big red fox and he saw"]
    ours = torch.tensor(head_scores(induction_2l, kind, prompts=prompts).to_numpy())
    theirs = detect_head(induction_2l, prompts, TL_NAMES[kind], exclude_bos=True)
    torch.testing.assert_close(ours, theirs.float(), atol=1e-5, rtol=0)


def test_bos_scores_equal_head_detector_with_a_first_token_pattern(induction_2l):
    prompt = "the cat sat on the mat and the dog ran"
    tokens = induction_2l.to_tokens(prompt)[0]
    ours = torch.tensor(head_scores(induction_2l, "bos", prompts=[prompt]).to_numpy())
    theirs = detect_head(induction_2l, prompt, bos_pattern(tokens), exclude_bos=False)
    torch.testing.assert_close(ours, theirs.float(), atol=1e-5, rtol=0)


def test_user_pattern_scores_equal_head_detector(random_model):
    prompt = "a b c d e f g h"
    n = random_model.to_tokens(prompt).shape[-1]
    pattern = torch.tril(torch.ones(n, n), diagonal=-2)  # "attends two or more back"
    ours = torch.tensor(head_scores(random_model, pattern=pattern, prompts=[prompt]).to_numpy())
    theirs = detect_head(random_model, prompt, pattern, exclude_bos=True)
    torch.testing.assert_close(ours, theirs.float(), atol=1e-5, rtol=0)


def test_scores_are_seeded_and_deterministic(induction_2l):
    first = head_scores(induction_2l, "induction", seed=5)
    again = head_scores(induction_2l, "induction", seed=5)
    other = head_scores(induction_2l, "induction", seed=6)
    assert first.equals(again)
    assert not first.equals(other)


def test_detection_patterns_match_their_definitions():
    tokens = torch.tensor([0, 5, 6, 5, 6])
    assert detection_pattern("previous_token", tokens)[3].tolist() == [0, 0, 1, 0, 0]
    assert detection_pattern("duplicate_token", tokens)[3].tolist() == [0, 1, 0, 0, 0]
    assert detection_pattern("induction", tokens)[3].tolist() == [0, 0, 1, 0, 0]
    assert detection_pattern("induction", tokens)[4].tolist() == [0, 0, 0, 1, 0]


def test_unknown_kind_lists_the_valid_ones(induction_2l):
    with pytest.raises(ValueError, match="unknown head kind 'inductive': valid kinds are previous_token, duplicate_token, induction, bos"):
        head_scores(induction_2l, "inductive")


def test_a_pattern_of_the_wrong_shape_is_an_error(induction_2l):
    with pytest.raises(ValueError, match=r"detection pattern has shape \(3, 3\), expected \(11, 11\)"):
        head_scores(induction_2l, pattern=torch.zeros(3, 3), prompts=["a b c d e f g h i j"])


def test_a_pattern_above_the_diagonal_is_an_error(induction_2l):
    with pytest.raises(ValueError, match="lower triangular"):
        head_scores(induction_2l, pattern=torch.ones(4, 4), prompts=["a b c"])


def test_tokens_outside_the_vocabulary_are_an_error(induction_2l):
    with pytest.raises(ValueError, match=r"token id 999 is outside the model's vocabulary 0-63"):
        head_scores(induction_2l, "induction", tokens=torch.tensor([[0, 1, 999]]))


def test_too_long_prompts_name_the_context_window(induction_2l):
    n_ctx = induction_2l.cfg.n_ctx
    with pytest.raises(ValueError, match=rf"half_len={n_ctx} is not valid: .* more than the model's context of {n_ctx} \(half_len can be at most {(n_ctx - 1) // 2}\)"):
        head_scores(induction_2l, "induction", half_len=n_ctx)
    with pytest.raises(ValueError, match=rf"needs 2 to {n_ctx} tokens"):
        head_scores(induction_2l, "induction", tokens=torch.zeros(1, n_ctx + 1, dtype=torch.long))


def test_repeated_claims_on_the_same_input_run_the_model_once(zoo_tokenizer_dir):
    from conftest import build_native

    model = build_native(d_vocab=64, tokenizer_dir=zoo_tokenizer_dir)
    calls = []
    original = model.run_with_cache

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    model.run_with_cache = counting
    first = head_scores(model, "induction")
    head_scores(model, "previous_token")
    head_scores(model, "induction")
    assert len(calls) == 1
    with torch.no_grad():
        next(model.parameters()).add_(1.0)  # an in-place edit of the weights
    head_scores(model, "induction")
    assert len(calls) == 2  # the edit invalidated the cached patterns
