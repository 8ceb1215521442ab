"""Necessity, sufficiency, minimality and paths: ground truth on the zoo, and clear errors."""

import dataclasses
import json

import numpy as np
import pytest
import torch

import circuitcheck as cc
from circuitcheck import CircuitAssertionError, CircuitCheckError, ComponentError, tasks, zoo
from circuitcheck.zoo import circuits as zoo_circuits


@pytest.fixture(scope="module")
def task_2l(induction_2l):
    return tasks.induction(induction_2l, **zoo_circuits.TASK)


@pytest.fixture(scope="module")
def circuit():
    return cc.Circuit.parse(zoo.card("induction-2l")["circuits"]["induction"], name="induction")


@pytest.fixture(scope="module")
def induction_heads(circuit):
    return [str(c) for c in circuit if c.layer == 1]


@pytest.fixture(scope="module")
def unrelated_head(induction_2l, circuit):
    """A head outside the card's circuit (the lowest-scoring layer-0 head not in it)."""
    outside = [f"L0H{h}" for h in range(induction_2l.cfg.n_heads) if f"L0H{h}" not in circuit]
    assert outside, "the card's circuit uses every layer-0 head"
    return outside[-1]


# Ground truth ----------------------------------------------------------------------


def test_the_cards_circuit_is_necessary(induction_2l, task_2l, circuit):
    result = cc.assert_necessary(circuit, min_drop=zoo_circuits.MIN_DROP, model=induction_2l, task=task_2l)
    assert result.ci_low >= zoo_circuits.MIN_DROP
    assert list(result.evidence["necessity"]["ablated"])[1:] == [str(c) for c in circuit]


def test_the_cards_circuit_is_sufficient(induction_2l, task_2l, circuit):
    result = cc.assert_sufficient(circuit, min_recovery=zoo_circuits.MIN_RECOVERY, model=induction_2l, task=task_2l)
    assert result.value <= 1.05


def test_the_cards_circuit_is_minimal(induction_2l, task_2l, circuit):
    result = cc.assert_minimal(circuit, min_contribution=zoo_circuits.MIN_CONTRIBUTION, method=zoo_circuits.MINIMALITY_METHOD,
                               model=induction_2l, task=task_2l)
    table = result.evidence["minimality"]
    assert sorted(table["component"]) == sorted(str(c) for c in circuit)
    assert list(table["contribution"]) == sorted(table["contribution"])


def test_without_its_induction_heads_the_circuit_is_not_sufficient(induction_2l, task_2l, circuit, induction_heads):
    reduced = circuit
    for head in induction_heads:
        reduced = reduced.without(head)
    with pytest.raises(CircuitAssertionError, match="is sufficient for induction"):
        cc.assert_sufficient(reduced, min_recovery=0.9, model=induction_2l, task=task_2l)
    assert cc.check_sufficient(reduced, model=induction_2l, task=task_2l).value < 0.5


def test_without_the_strongest_induction_head_recovery_drops(induction_2l, task_2l, circuit, induction_heads):
    full = cc.check_sufficient(circuit, model=induction_2l, task=task_2l)
    best = cc.head_scores(induction_2l, "induction").loc[1].idxmax()
    assert f"L1H{best}" in circuit
    reduced = cc.check_sufficient(circuit.without(f"L1H{best}"), model=induction_2l, task=task_2l)
    assert reduced.ci_high < full.ci_low


def test_an_unrelated_head_fails_minimality_and_is_named(induction_2l, task_2l, circuit, unrelated_head):
    with pytest.raises(CircuitAssertionError) as info:
        cc.assert_minimal(circuit.with_(unrelated_head), min_contribution=0.05, method="ioi", model=induction_2l, task=task_2l)
    message = str(info.value)
    assert f"below the threshold: {unrelated_head}" in message
    assert info.value.result.evidence["minimality"]["component"].iloc[0] == unrelated_head


def test_the_cards_circuit_is_complete_and_without_a_backup_head_it_is_not(induction_2l, task_2l, circuit):
    card = zoo.card("induction-2l")["circuit_evidence"]
    result = cc.assert_complete(circuit, max_incompleteness=zoo_circuits.MAX_INCOMPLETENESS, model=induction_2l, task=task_2l)
    assert result.value == pytest.approx(card["incompleteness"], abs=1e-4)
    assert card["without_backup"], "the card names the circuits without one backup head"
    for smaller, info in card["without_backup"].items():
        assert not info["complete"]
        assert not cc.check_complete(smaller, max_incompleteness=zoo_circuits.MAX_INCOMPLETENESS, model=induction_2l, task=task_2l).passed


def test_the_one_layer_control_reaches_no_meaningful_recovery(induction_1l, induction_2l, task_2l, circuit):
    # Recovery is relative to a model's own gap m(M) - m(∅), so it is compared in
    # nats: the 1-layer control's heads gain only what context statistics give
    # ("a token seen before is likely", measured 1.3 nats), the 2-layer circuit
    # gains what induction gives (measured 6.7 nats).
    task = tasks.induction(induction_1l, **zoo_circuits.TASK)
    heads = [f"L0H{h}" for h in range(induction_1l.cfg.n_heads)]
    control = cc.check_sufficient(heads, model=induction_1l, task=task).evidence["means"].set_index("run")["mean_metric"]
    real = cc.check_sufficient(circuit, model=induction_2l, task=task_2l).evidence["means"].set_index("run")["mean_metric"]
    control_gain = control["circuit only m(C)"] - control["everything ablated m(∅)"]
    real_gain = real["circuit only m(C)"] - real["everything ablated m(∅)"]
    assert control_gain < 0.25 * real_gain
    assert control["full model m(M)"] < real["full model m(M)"] - 2.0


def test_the_previous_token_head_k_composes_into_an_induction_head(induction_2l, task_2l, induction_heads):
    prev = cc.head_scores(induction_2l, "previous_token").loc[0].idxmax()
    best = cc.head_scores(induction_2l, "induction").loc[1].idxmax()
    k = cc.assert_path(f"L0H{prev}", f"L1H{best}.k", min_effect=0.05, model=induction_2l, task=task_2l)
    q = cc.check_path(f"L0H{prev}", f"L1H{best}.q", model=induction_2l, task=task_2l)
    assert k.value > q.value
    assert k.parameters["direction"] == "noise"


def test_an_induction_head_writes_to_the_logits(induction_2l, task_2l):
    best = cc.head_scores(induction_2l, "induction").loc[1].idxmax()
    result = cc.assert_path(f"L1H{best}", "logits", min_effect=0.05, model=induction_2l, task=task_2l)
    assert "logits" in result.claim


def test_not_necessary_claims_use_the_upper_bound(induction_2l, task_2l, unrelated_head):
    result = cc.assert_necessary(unrelated_head, max_drop=0.1, model=induction_2l, task=task_2l)
    assert result.claim.endswith("is not necessary for induction") and result.decided_on == "upper bound"


@pytest.mark.parametrize("ablation", ["resample", "mean", "zero", "noise(3.0)"])  # noise(1.0)'s gap is not distinguishable from 0 here
def test_every_ablation_kind_runs_and_is_deterministic(induction_2l, task_2l, circuit, ablation):
    first = cc.check_necessary(circuit, model=induction_2l, task=task_2l, ablation=ablation)
    again = cc.check_necessary(circuit, model=induction_2l, task=task_2l, ablation=ablation)
    assert first.value == again.value and first.ci_low == again.ci_low
    assert first.parameters["ablation"] == cc.ablation.parse(ablation).name
    if not ablation.startswith("noise"):  # small noise is a weak ablation: its ratios are not comparable
        assert first.value > 0.5


def test_results_are_json_safe_with_the_per_component_table(induction_2l, task_2l, circuit):
    result = cc.check_minimal(circuit, model=induction_2l, task=task_2l)
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert data["evidence"]["minimality"]["columns"] == ["component", "contribution", "ci_low", "ci_high", "recovery_without"]
    assert data["parameters"]["aggregation"].startswith("per-example metric, mean over examples")


def test_the_same_seed_gives_the_same_interval_and_another_seed_another(induction_2l, task_2l, circuit):
    a = cc.check_sufficient(circuit, model=induction_2l, task=task_2l, seed=1)
    b = cc.check_sufficient(circuit, model=induction_2l, task=task_2l, seed=1)
    c = cc.check_sufficient(circuit, model=induction_2l, task=task_2l, seed=2)
    assert (a.ci_low, a.ci_high) == (b.ci_low, b.ci_high)
    assert (a.ci_low, a.ci_high) != (c.ci_low, c.ci_high)


# Clear errors ------------------------------------------------------------------------


def test_a_zero_gap_is_an_error_not_a_pass(induction_2l):
    same = tasks.induction(induction_2l, n_prompts=4, seq_len=5)
    constant = tasks.from_tokens(same.clean, same.corrupt, metric=lambda logits: torch.zeros(logits.shape[0]), d_vocab=64)
    with pytest.raises(CircuitCheckError, match="zero gap: the full model and the fully ablated model score the same mean metric"):
        cc.assert_sufficient("L1H0", model=induction_2l, task=constant)


def test_nan_metric_values_are_an_error(induction_2l):
    same = tasks.induction(induction_2l, n_prompts=4, seq_len=5)
    nan = tasks.from_tokens(same.clean, same.corrupt, metric=lambda logits: torch.full((logits.shape[0],), float("nan")), d_vocab=64)
    with pytest.raises(CircuitCheckError, match="NaN or infinite values for 4 of 4 examples"):
        cc.assert_necessary("L1H0", model=induction_2l, task=nan)


def test_an_empty_circuit_is_an_error(induction_2l, task_2l):
    with pytest.raises(ComponentError, match="no components given"):
        cc.assert_sufficient([], model=induction_2l, task=task_2l)


def test_a_component_that_does_not_exist_is_named(induction_2l, task_2l):
    with pytest.raises(ComponentError, match="layer 4 does not exist in L4H0: model zoo:induction-2l has layers 0-1"):
        cc.assert_necessary("L4H0", model=induction_2l, task=task_2l)


def test_a_model_in_training_mode_is_refused(task_2l, zoo_tokenizer_dir):
    from conftest import build_native

    model = build_native(d_vocab=64, tokenizer_dir=zoo_tokenizer_dir)
    model.train()
    with pytest.raises(CircuitCheckError, match="training mode"):
        cc.assert_necessary("L1H0", model=model, task=task_2l)


def test_a_task_built_for_another_vocabulary_is_refused(random_model, induction_2l):
    task = dataclasses.replace(tasks.induction(random_model, n_prompts=4, seq_len=5), d_vocab=1000)
    with pytest.raises(CircuitCheckError, match="built for a vocabulary of 1000 tokens, but the model has 64"):
        cc.assert_necessary("L1H0", model=induction_2l, task=task)


def test_embeddings_are_not_node_circuit_members(induction_2l, task_2l):
    with pytest.raises(ComponentError, match="embeddings always run"):
        cc.assert_sufficient("embed L1H0", model=induction_2l, task=task_2l)


def test_an_unknown_ablation_lists_the_valid_ones(induction_2l, task_2l):
    with pytest.raises(CircuitCheckError, match=r"unknown ablation 'median': valid ablations are resample, mean, zero, noise\(STD\)"):
        cc.assert_necessary("L1H0", model=induction_2l, task=task_2l, ablation="median")


def test_a_plugin_can_add_an_ablation(induction_2l, task_2l):
    from circuitcheck.engine.ablation import Ablation

    class Halves:
        @cc.hookimpl
        def circuitcheck_make_ablation(self, spec):
            if spec == "negated":  # strong enough that its gap m(M) - m(∅) is distinguishable from 0 (halving is not)
                return Ablation("negated", lambda hook, runs: -runs.clean(hook), needs=("clean",))

    plugin = Halves()
    cc.register(plugin)
    try:
        result = cc.check_necessary("L1H0", model=induction_2l, task=task_2l, ablation="negated")
    finally:
        cc.unregister(plugin)
    assert result.parameters["ablation"] == "negated"
    assert np.isfinite(result.value)


def test_a_receiver_before_the_sender_is_refused(induction_2l, task_2l):
    with pytest.raises(ComponentError, match="the receiver must read the residual stream after the sender writes it"):
        cc.assert_path("L1H0", "L0H1.k", model=induction_2l, task=task_2l)


def test_without_a_task_outside_pytest_the_error_says_how_to_give_one(induction_2l):
    with pytest.raises(CircuitCheckError, match="no task: pass task="):
        cc.assert_necessary("L1H0", model=induction_2l)
