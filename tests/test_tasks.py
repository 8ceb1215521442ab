import dataclasses

import pytest
import torch

from circuitcheck import CircuitCheckError, metrics, tasks


def test_clean_and_corrupt_shapes_must_match_and_the_error_names_both():
    with pytest.raises(CircuitCheckError, match=r"clean is \(2, 5\), corrupted is \(2, 6\)"):
        tasks.from_tokens(torch.zeros(2, 5, dtype=torch.long), torch.zeros(2, 6, dtype=torch.long))


def test_float_tokens_are_refused():
    with pytest.raises(CircuitCheckError, match="integer token ids"):
        tasks.from_tokens(torch.zeros(2, 5), torch.zeros(2, 5))


def test_a_task_for_another_vocabulary_is_refused(induction_2l, random_model):
    task = dataclasses.replace(tasks.induction(induction_2l, n_prompts=4, seq_len=5), d_vocab=50257)
    with pytest.raises(CircuitCheckError, match="built for a vocabulary of 50257 tokens, but the model has 64"):
        task.validate(induction_2l)


def test_token_ids_outside_the_vocabulary_are_named(induction_2l):
    task = tasks.from_tokens(torch.tensor([[0, 70]]), torch.tensor([[0, 3]]), answers=[3], wrong_answers=[4])
    with pytest.raises(CircuitCheckError, match="clean token id 70 .* outside the model's vocabulary 0-63"):
        task.validate(induction_2l)


def test_induction_task_repeats_and_corrupts(induction_2l):
    task = tasks.induction(induction_2l, n_prompts=5, seq_len=7, seed=3)
    assert task.clean.shape == task.corrupt.shape == (5, 15)
    assert (task.clean[:, 0] == 0).all()
    assert torch.equal(task.clean[:, 1:8], task.clean[:, 8:])
    assert not torch.equal(task.corrupt[:, 1:8], task.corrupt[:, 8:])
    assert torch.equal(task.clean, tasks.induction(induction_2l, n_prompts=5, seq_len=7, seed=3).clean)


def test_induction_metric_reads_the_second_copy(induction_2l):
    task = tasks.induction(induction_2l, n_prompts=3, seq_len=6)
    logits = torch.zeros(3, 13, 64)
    # make the model certain of every correct next token on positions 7..11 only
    for p in range(7, 12):
        logits[torch.arange(3), p, task.clean[:, p + 1]] = 100.0
    values = task.metric(logits, task)
    assert torch.allclose(values, torch.zeros(3), atol=1e-4)


def test_from_prompts_builds_a_logit_difference_task(induction_2l):
    task = tasks.from_prompts(induction_2l, ["a b c a b", "x y z x y"], ["a b c d e", "x y z w v"], ["c", "z"], ["d", "w"])
    assert task.clean.shape == (2, 6)
    logits = torch.zeros(2, 6, 64)
    logits[0, -1, 5] = 3.0  # 'c' is id 5
    assert task.metric(logits, task).tolist() == [3.0, 0.0]


def test_from_prompts_needs_single_token_answers(induction_2l):
    with pytest.raises(CircuitCheckError, match="answer 'a b' is 2 tokens; answers must be single tokens"):
        tasks.from_prompts(induction_2l, ["a b"], ["c d"], ["a b"], ["c"])


def test_from_prompts_needs_equal_lengths(induction_2l):
    with pytest.raises(CircuitCheckError, match="tokenise to different lengths"):
        tasks.from_prompts(induction_2l, ["a b", "a b c"], ["c d", "c d e"], ["a", "b"], ["c", "d"])


def test_metrics_definitions():
    task = tasks.from_tokens(torch.tensor([[1, 2, 3]]), torch.tensor([[1, 2, 4]]), answers=[2], wrong_answers=[0])
    logits = torch.tensor([[[0.0, 0.0, 0.0]] * 2 + [[1.0, 0.0, 3.0]]])
    assert metrics.logit_diff()(logits, task).item() == pytest.approx(2.0)
    probs = torch.tensor([1.0, 0.0, 3.0]).softmax(-1)
    assert metrics.answer_prob()(logits, task).item() == pytest.approx(probs[2].item())
    assert metrics.answer_logprob()(logits, task).item() == pytest.approx(probs[2].log().item())
    assert metrics.kl_to_clean()(logits, task, logits).item() == pytest.approx(0.0, abs=1e-7)
    assert metrics.loss([0])(logits, task).item() == pytest.approx(-torch.zeros(3).log_softmax(-1)[2].item())


def test_a_metric_must_return_one_value_per_example():
    task = tasks.from_tokens(torch.tensor([[1, 2]]), torch.tensor([[1, 3]]), metric=lambda logits: logits.sum())
    with pytest.raises(ValueError, match=r"must return one value per example, shape \(1,\)"):
        task.metric(torch.zeros(1, 2, 4), task)
