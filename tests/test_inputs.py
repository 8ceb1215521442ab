"""model/inputs: the one place that turns prompts, tokens and positions into tensors."""

import numpy as np
import pytest
import torch

from circuitcheck.errors import CircuitCheckError
from circuitcheck.model import inputs
from circuitcheck.model.inputs import InputError


def test_input_errors_are_circuitcheck_errors_and_value_errors():
    assert issubclass(InputError, CircuitCheckError) and issubclass(InputError, ValueError)


@pytest.mark.parametrize(
    "positions, expected",
    [
        (-1, [9]),
        (np.int64(3), [3]),
        ([0, -1, 0], [0, 9, 0]),  # in the order given, repeats kept
        (range(2, 5), [2, 3, 4]),
        (slice(7, None), [7, 8, 9]),
        (torch.tensor([1, 2]), [1, 2]),
    ],
)
def test_positions_in_every_form_become_non_negative_indices(positions, expected):
    assert inputs.resolve_positions(positions, 10) == expected


@pytest.mark.parametrize(
    "positions, message",
    [
        (10, "position 10 is out of range: the inputs have 10 positions, valid are 0 to 9 (or -10 to -1 from the end)"),
        ([2, -11], "position -11 is out of range"),
        ([], "positions=[] selects no position"),
        (slice(12, None), "positions 12: select no position of inputs with 10 positions (0 to 9)"),
        ([1.5], "position 1.5 is not valid: positions are integers"),
        ([True], "position True is not valid"),
        (2.0, "positions=2.0 is not valid: give an int, a list of ints or a slice"),
    ],
)
def test_bad_positions_name_the_value_and_the_valid_range(positions, message):
    with pytest.raises(InputError) as error:
        inputs.resolve_positions(positions, 10)
    assert message in str(error.value)


def test_an_error_names_what_the_position_is_for():
    with pytest.raises(InputError, match="metric position 5 is out of range"):
        inputs.resolve_positions(5, 3, what="metric position")


def test_tokens_in_every_form_become_one_long_cpu_tensor(induction_2l):
    expected = torch.tensor([[1, 2, 3], [4, 5, 6]])
    for value in (expected, expected.int(), expected.numpy(), [[1, 2, 3], [4, 5, 6]], [torch.tensor([1, 2, 3]), torch.tensor([4, 5, 6])]):
        tokens = inputs.as_tokens(induction_2l, value)
        assert tokens.dtype == torch.long and tokens.device.type == "cpu" and torch.equal(tokens, expected)
    assert inputs.as_tokens(induction_2l, torch.tensor([7, 8])).shape == (1, 2)  # one prompt


def test_prompts_are_tokenised_with_bos(induction_2l):
    tokens = inputs.as_tokens(induction_2l, ["a b c", "c b a"])
    assert tokens.shape == (2, 4) and bool((tokens[:, 0] == inputs.bos_token_id(induction_2l)).all())


def test_rows_of_different_lengths_are_kept_apart_or_refused(induction_2l):
    rows = inputs.token_rows(induction_2l, ["a b", "a b c"])
    assert [len(row) for row in rows] == [3, 4]
    with pytest.raises(InputError, match=r"the prompts tokenise to different lengths \(3, 4 tokens\)"):
        inputs.as_tokens(induction_2l, ["a b", "a b c"], what="the prompts")


@pytest.mark.parametrize(
    "value, message",
    [
        (torch.ones(2, 3), "tokens must be integer token ids, got dtype torch.float32"),
        (torch.zeros(2, 2, 2, dtype=torch.long), "tokens must be [batch, pos] or [pos] token ids, got shape (2, 2, 2)"),
        ([], "tokens are empty"),
        ([[1, 99]], "token id 99 is outside the model's vocabulary 0-63"),
        ({"a": 1}, "tokens of type dict are not valid"),
    ],
)
def test_bad_tokens_name_the_value_and_what_is_valid(induction_2l, value, message):
    with pytest.raises(InputError) as error:
        inputs.as_tokens(induction_2l, value)
    assert message in str(error.value)


def test_tokens_longer_than_the_context_are_refused(induction_2l):
    n_ctx = induction_2l.cfg.n_ctx
    with pytest.raises(InputError, match=f"have {n_ctx + 1} positions, more than the model's context of {n_ctx}"):
        inputs.as_tokens(induction_2l, torch.ones(1, n_ctx + 1, dtype=torch.long))


def test_without_a_model_tokens_are_checked_for_shape_and_type_only():
    assert inputs.as_tokens(None, [[1000, 2000]]).tolist() == [[1000, 2000]]
    with pytest.raises(InputError, match="no tokenizer"):
        inputs.as_tokens(None, "a prompt")


def test_the_default_positions_skip_a_leading_bos(induction_2l):
    bos = inputs.bos_token_id(induction_2l)
    assert inputs.positions_after_bos(induction_2l, torch.tensor([[bos, 5, 6], [bos, 7, 8]])) == [1, 2]
    assert inputs.positions_after_bos(induction_2l, torch.tensor([[bos, 5, 6], [9, 7, 8]])) == [0, 1, 2]
    with pytest.raises(InputError, match="no position follows it"):
        inputs.positions_after_bos(induction_2l, torch.tensor([[bos]]))
