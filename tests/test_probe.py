"""Linear probes (circuitcheck.engine.probe) and the probe assertion, with ground truth on zoo:induction-2l.

Ground truth: layer 0's previous-token heads copy each token into the next
position, so the previous token is linearly decodable from
``blocks.0.hook_resid_post`` and not from ``hook_embed`` (the current token only).
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import circuitcheck as cc
import circuitcheck.claims.probe  # noqa: F401  (imported before pytester's inner runs, see conftest)
from circuitcheck.claims.probe import assert_probe_accuracy, check_probe_accuracy
from circuitcheck.errors import CircuitAssertionError, CircuitCheckError
from circuitcheck.engine.probe import Prober, ProbeResult

SEQ_LEN = 16
POSITIONS = list(range(2, SEQ_LEN + 1))  # previous token is an ordinary token, never BOS
N_CLASSES = 61  # ordinary tokens 3..63 of the zoo tokenizer


def previous_token_data(model, n_prompts=128, seq_len=SEQ_LEN, seed=0):
    tokens = cc.inputs.with_bos(model, cc.inputs.random_tokens(model, n_prompts, seq_len, seed=seed))
    return tokens, tokens.roll(1, dims=1)  # label at p = token at p - 1


@pytest.fixture(scope="module")
def data(induction_2l):
    return previous_token_data(induction_2l)


@pytest.fixture(scope="module")
def prober(induction_2l):
    return Prober(induction_2l, seed=0)


# Ground truth ------------------------------------------------------------------


def test_layer_0_output_linearly_encodes_the_previous_token(induction_2l, data, prober):
    tokens, previous = data
    result = assert_probe_accuracy(
        "blocks.0.hook_resid_post", previous, inputs=tokens, positions=POSITIONS,
        min_accuracy=0.9, min_selectivity=0.8, what="the previous token", prober=prober,
    )
    assert result.kind == "probe" and result.passed
    assert result.claim == "blocks.0.hook_resid_post linearly encodes the previous token"
    assert result.value >= 0.98 and result.ci_low >= 0.95  # measured 1.000 (CI 1.000 to 1.000)
    table = result.evidence["probe"].iloc[0]
    assert table["control_accuracy"] < 0.06  # shuffled labels: about chance (1/61) or the majority class
    assert table["selectivity"] > 0.9
    assert table["majority_baseline"] < 0.06
    assert result.n == 32 * len(POSITIONS)  # 25% of 128 prompts held out
    assert len(result.evidence["per_class"]) == N_CLASSES


def test_the_token_embedding_does_not_encode_the_previous_token(induction_2l, data, prober):
    tokens, previous = data
    result = check_probe_accuracy(
        "hook_embed", previous, inputs=tokens, positions=POSITIONS, max_accuracy=0.1, what="the previous token", prober=prober
    )
    assert result.passed, result.message()
    assert result.claim == "hook_embed does not linearly encode the previous token"
    assert result.value < 0.05 and result.ci_high < 0.08  # measured 0.017 (CI 0.008 to 0.029); chance 0.016
    assert abs(result.evidence["probe"].iloc[0]["selectivity"]) < 0.05

    with pytest.raises(CircuitAssertionError) as failure:
        assert_probe_accuracy("hook_embed", previous, inputs=tokens, positions=POSITIONS, min_accuracy=0.5, prober=prober)
    note = str(failure.value)
    assert "claim failed: hook_embed linearly encodes the labels" in note
    assert "majority class" in note and "control (shuffle)" in note and "split by prompt" in note
    assert failure.value.result.passed is False


def test_a_hewitt_liang_control_is_memorised_from_the_current_token(induction_2l, data, prober):
    # the control labels are a function of the token at the position, which layer 0's output carries:
    # a linear probe memorises them, so this selectivity is about zero (why "shuffle" is the default)
    tokens, previous = data
    result = prober.fit("blocks.0.hook_resid_post", tokens, previous, positions=POSITIONS, control="hewitt-liang")
    assert result.control == "hewitt-liang"
    assert result.control_accuracy > 0.9 and result.selectivity < 0.1


# Determinism, splitting, caching ----------------------------------------------------


def test_the_same_seed_gives_the_same_numbers(induction_2l):
    tokens, previous = previous_token_data(induction_2l, n_prompts=40, seq_len=8, seed=3)
    first = Prober(induction_2l, seed=5).fit("hook_embed", tokens, previous)
    second = Prober(induction_2l, seed=5).fit("hook_embed", tokens, previous)
    assert first.summary() == second.summary()
    assert first.per_class.equals(second.per_class)
    np.testing.assert_array_equal(first.test_correct, second.test_correct)
    other = Prober(induction_2l, seed=6).fit("hook_embed", tokens, previous)
    assert set(other.test_prompt) != set(first.test_prompt)  # another seed, another split

    one = check_probe_accuracy("hook_embed", previous, inputs=tokens, max_accuracy=0.5, model=induction_2l, seed=5)
    two = check_probe_accuracy("hook_embed", previous, inputs=tokens, max_accuracy=0.5, model=induction_2l, seed=5)
    assert one.to_dict() == two.to_dict()


def test_prompts_are_split_not_positions_and_activations_are_cached(induction_2l):
    tokens, previous = previous_token_data(induction_2l, n_prompts=20, seq_len=6)
    prober = Prober(induction_2l, seed=0)
    result = prober.fit("blocks.0.hook_resid_post", tokens, previous, test_fraction=0.25)
    assert result.positions == [1, 2, 3, 4, 5, 6]  # None: every position but BOS
    assert (result.n_train_prompts, result.n_test_prompts) == (15, 5)
    assert (result.n_train, result.n_test) == (90, 30)
    prompts, counts = np.unique(result.test_prompt, return_counts=True)
    assert len(prompts) == 5 and (counts == 6).all()  # every position of a test prompt is in the test set
    prober.fit("blocks.0.hook_resid_post", tokens.clone(), previous, positions=-1)
    assert len(prober._activations) == 1  # same hook and inputs: the model ran once


def test_inputs_may_be_a_task_and_labels_one_per_prompt(induction_2l):
    task = cc.tasks.induction(induction_2l, seed=0)
    previous = task.clean[:, -2]  # one position: labels are [batch]
    result = Prober(induction_2l).fit("blocks.0.hook_resid_post", task, previous, positions=-1, control=None)
    assert result.positions == [task.clean.shape[1] - 1]
    assert result.control_accuracy is None and result.selectivity is None
    assert result.n_test == result.n_test_prompts


# Errors ---------------------------------------------------------------------------


def test_labels_of_the_wrong_shape_name_both_shapes(induction_2l, prober):
    tokens, previous = previous_token_data(induction_2l, n_prompts=8, seq_len=6)
    with pytest.raises(CircuitCheckError) as error:
        prober.fit("hook_embed", tokens, previous[:, :3], positions=[2, 3, 4, 5])
    message = str(error.value)
    assert "(8, 3)" in message and "(8, 7)" in message and "(8, 4)" in message
    with pytest.raises(CircuitCheckError, match=r"\(8,\)"):
        prober.fit("hook_embed", tokens, previous[:5, 2], positions=2)


def test_an_unknown_hook_is_named_with_suggestions(induction_2l, prober):
    tokens, previous = previous_token_data(induction_2l, n_prompts=8, seq_len=6)
    with pytest.raises(CircuitCheckError, match=r"'blocks\.0\.hook_resid_pots' does not exist.*blocks\.0\.hook_resid_post"):
        prober.fit("blocks.0.hook_resid_pots", tokens, previous)


def test_a_single_class_is_an_error(induction_2l, prober):
    tokens, _ = previous_token_data(induction_2l, n_prompts=8, seq_len=6)
    with pytest.raises(CircuitCheckError, match="single class"):
        prober.fit("hook_embed", tokens, torch.full((8,), 7), positions=3)


def test_positions_out_of_range_are_named(induction_2l, prober):
    tokens, previous = previous_token_data(induction_2l, n_prompts=8, seq_len=6)
    with pytest.raises(CircuitCheckError, match="position 7 is out of range: the inputs have 7 positions"):
        prober.fit("hook_embed", tokens, previous, positions=[2, 7])
    with pytest.raises(CircuitCheckError, match="position -8 is out of range"):
        prober.fit("hook_embed", tokens, previous[:, 0], positions=-8)


def test_other_bad_arguments(induction_2l, prober):
    tokens, previous = previous_token_data(induction_2l, n_prompts=8, seq_len=6)
    with pytest.raises(CircuitCheckError, match="test_fraction"):
        prober.fit("hook_embed", tokens, previous, test_fraction=1.0)
    with pytest.raises(CircuitCheckError, match="control="):
        prober.fit("hook_embed", tokens, previous, control="random")
    with pytest.raises(CircuitCheckError, match="at least 2"):
        prober.fit("hook_embed", tokens[:1], previous[:1])
    with pytest.raises(CircuitCheckError, match="min_accuracy="):
        check_probe_accuracy("hook_embed", previous, inputs=tokens, model=induction_2l)
    with pytest.raises(CircuitCheckError, match="no inputs"):
        check_probe_accuracy("hook_embed", previous, min_accuracy=0.5, model=induction_2l)
    with pytest.raises(CircuitCheckError, match="different lengths"):
        prober.fit("hook_embed", ["a b", "a b c"], [1, 2])


# Data -------------------------------------------------------------------------------


def test_results_are_json_safe(induction_2l, prober):
    tokens, previous = previous_token_data(induction_2l, n_prompts=24, seq_len=6)
    labels = np.where(previous.numpy() % 2 == 0, "even", "odd")  # string labels work too
    fit = prober.fit("blocks.0.hook_resid_post", tokens, labels)
    assert isinstance(fit, ProbeResult)
    assert list(fit.per_class.index) == ["even", "odd"]
    json.dumps(fit.to_dict())
    assert fit.to_frame().shape[0] == 1

    result = check_probe_accuracy("blocks.0.hook_resid_post", labels, inputs=tokens, min_accuracy=0.5, prober=prober)
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert data["kind"] == "probe" and set(data["evidence"]) == {"probe", "per_class"}
    assert result.to_frame()["param_hook"].iloc[0] == "blocks.0.hook_resid_post"


# The example suite, with a conftest that provides the fixture as the plugin will ------------

PROBE_FIXTURE = """
import pytest
from circuitcheck.pytest_plugin.plugin import session_seed
from circuitcheck.engine.probe import Prober

@pytest.fixture
def probe(model, request):
    return Prober(model, seed=session_seed(request.config))
"""


def test_the_example_suite_passes(pytester):
    example = Path(__file__).resolve().parents[1] / "example_suites" / "test_probing.py"
    shutil.copy(example, pytester.path / "test_probe_example.py")
    pytester.makeini("[pytest]\ncircuitcheck_model = zoo:induction-2l\n")
    import circuitcheck.pytest_plugin.plugin

    if not hasattr(circuitcheck.pytest_plugin.plugin, "probe"):  # until the plugin provides the fixture
        pytester.makeconftest(PROBE_FIXTURE)
    result = pytester.runpytest("-p", "no:cacheprovider", "--circuitcheck-device=cpu")
    result.assert_outcomes(passed=3)

