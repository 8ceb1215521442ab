"""Test power: a claim's mutation score, from its recorded call to the terminal, the JSON, the report and the command line.

On zoo:induction-2l, whose card gives true claims: L1H3 is an induction head,
the circuit L0H0 L0H2 L1H0 L1H1 L1H2 L1H3 is sufficient (recovery 0.974).
On zoo:planted-4l, whose weights were set by hand: the circuit L0H0 -> L2H2 ->
L3.mlp, backup L3H0, negative head L3H3, distractors L1H1 and L2H1 (its card).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import types

import pandas as pd
import pytest

import circuitcheck as cc
from circuitcheck import CircuitCheckError
from circuitcheck.claims import power as power_module
from circuitcheck.claims import registry
from circuitcheck.claims.decision import conclude, within
from circuitcheck.engine.session import session_of

CARD = "L0H0 L0H2 L1H0 L1H1 L1H2 L1H3"
PLANTED = "L0H0 L2H2 L3H0 L3H3 L3.mlp"
#: The card's circuit as 22 of the model's 106 edges (recovery 0.986): the previous-token heads read the tokens into
#: their values; each induction head reads the current token into its query and value and the previous-token heads
#: into its key, and writes into the logits.
INDUCTION_EDGES = ", ".join(
    ["embed -> L0H0.v", "embed -> L0H2.v"]
    + [edge for h in range(4) for edge in (f"embed -> L1H{h}.q", f"L0H0 -> L1H{h}.k", f"L0H2 -> L1H{h}.k",
                                           f"embed -> L1H{h}.v", f"L1H{h} -> logits")])
#: One induction head's path (each edge contributes at least 0.01, lower bound, leave-one-out).
CHAIN = "embed -> L0H0.v, L0H0 -> L1H3.k, embed -> L1H3.q, embed -> L1H3.v, L1H3 -> logits"


@pytest.fixture(scope="module")
def task(induction_2l):
    return cc.tasks.induction(induction_2l, seed=0)


@pytest.fixture(scope="module")
def planted_4l():
    return cc.load_model("zoo:planted-4l", device="cpu")


@pytest.fixture(scope="module")
def planted_task(planted_4l):
    return cc.tasks.induction(planted_4l, n_prompts=16)


def _without_timing(power: dict) -> dict:
    return {key: value for key, value in power.items() if key != "seconds"}


# The call a result carries ------------------------------------------------------------------------


def test_every_result_carries_the_call_that_made_it(induction_2l, task):
    head = cc.check_head(1, 3, "induction", min_score=0.7, model=induction_2l)
    assert head.call.check.__name__ == "check_head"
    assert head.call.arguments == {"layer": 1, "head": 3, "kind": "induction", "min_score": 0.7}
    assert head.call.model is induction_2l and head.call.model_given
    asserted = cc.assert_sufficient(CARD, min_recovery=0.9, model=induction_2l, task=task)
    assert asserted.call.arguments["circuit"] == CARD and asserted.call.arguments["task"] is task


def test_a_call_runs_again_with_other_arguments_and_records_nothing(induction_2l):
    result = cc.check_head(1, 3, "induction", min_score=0.7, model=induction_2l)
    again = result.call.run(head=0)
    assert again.claim == "L1H0 is an induction head" and again.passed
    assert result.call.run().value == result.value
    with pytest.raises(CircuitCheckError, match="check_head has no parameter 'heads': its parameters are layer, head, kind"):
        result.call.run(heads=2)


def _previous_token_pattern(tokens):
    import torch

    return torch.diag(torch.ones(len(tokens) - 1), diagonal=-1)


#: One claim of every built-in kind, as a test would write it (the model and task from keywords).
EVERY_KIND = {
    "previous_token_head": lambda m, t: cc.assert_previous_token_head(0, 2, min_score=0.7, model=m),
    "duplicate_token_head": lambda m, t: cc.assert_duplicate_token_head(0, 3, max_score=0.5, model=m),
    "induction_head": lambda m, t: cc.assert_induction_head(1, 3, min_score=0.7, model=m),
    "bos_head": lambda m, t: cc.assert_bos_head(1, 0, min_score=0.0, model=m),
    "pattern_head": lambda m, t: cc.assert_head_matches_pattern(0, 2, _previous_token_pattern, min_score=0.7, model=m),
    "necessary": lambda m, t: cc.assert_necessary(CARD, min_drop=0.7, model=m, task=t),
    "sufficient": lambda m, t: cc.assert_sufficient(CARD, min_recovery=0.9, model=m, task=t),
    "path": lambda m, t: cc.assert_path("L0H2", "L1H3.k", model=m, task=t),
    "minimal": lambda m, t: cc.assert_minimal(CARD, method="ioi", model=m, task=t),
    "complete": lambda m, t: cc.assert_complete(CARD, model=m, task=t),
    "faithful": lambda m, t: cc.assert_faithful(CARD, model=m, task=t),
    "logit_lens": lambda m, t: cc.assert_logit_lens_converges_by(0, task=t, model=m, max_kl=50.0, min_agreement=0.0),
    "direct_effect": lambda m, t: cc.assert_direct_effect("L1H3", min_share=0.05, answers="next", positions=-2, model=m, task=t),
    "top_direct_effects": lambda m, t: cc.assert_top_direct_effects("L1H0", k=3, answers="next", positions=-2, model=m, task=t),
    "copying_head": lambda m, t: cc.assert_copying_head(1, 3, min_score=0.5, model=m),
    "composition": lambda m, t: cc.assert_composition("L0H2", "L1H3.k", min_score=0.1, model=m),
    "probe": lambda m, t: cc.assert_probe_accuracy("blocks.0.hook_resid_post", t.clean.roll(1, dims=1), inputs=t.clean,
                                                   positions=list(range(2, 12)), min_accuracy=0.5, model=m),
    "faithfulness_curve": lambda m, t: cc.assert_faithfulness_curve("node", min_cpr=0.2, counts=[0, 3, 6], model=m, task=t),
}


def test_the_table_has_one_claim_of_every_built_in_kind():
    assert set(EVERY_KIND) == set(registry.kinds())


@pytest.mark.parametrize("kind", sorted(EVERY_KIND))
def test_a_claim_of_every_kind_is_recorded_and_replays_faithfully(kind, induction_2l, task):
    result = EVERY_KIND[kind](induction_2l, task)
    assert result.kind == kind and result.call is not None
    power = cc.mutation_score(result, max_mutations=1)
    # the first replay, on an unmutated copy, reproduces the claim (else: "cannot be replayed faithfully")
    assert power.status == "measured" or "replayed" not in power.reason, power.reason
    assert power.total <= 1 and (power.status != "measured" or power.decided == 1)


# Scores on the zoo model ------------------------------------------------------------------------------


def test_a_true_head_claim_scores_high_and_is_swapped_only_with_heads_that_fail_it(induction_2l):
    power = cc.mutation_score(cc.check_head(1, 3, "induction", min_score=0.7, model=induction_2l))
    assert power.status == "measured" and power.score >= 0.9 and not power.cannot_fail
    names = [outcome.name for outcome in power.mutations]
    assert {"scramble QK of L1H3", "zero QK of L1H3", "shuffle the checkpoint (seed 0)"} <= set(names)
    partners = [int(name[-1]) for name in names if name.startswith("swap")]
    assert partners
    for other in range(4):  # measured on the model: a swap partner fails the claim itself, a skipped head holds it
        holds = cc.check_head(1, other, "induction", min_score=0.7, model=induction_2l).passed
        if other in partners:
            assert not holds
        elif other != 3:
            assert holds and f"L1H{other}" in " ".join(power.notes)


def test_the_card_circuits_sufficiency_scores_high_against_swaps_random_circuits_and_the_shuffle(induction_2l, task):
    power = cc.mutation_score(cc.check_sufficient(CARD, min_recovery=0.9, model=induction_2l, task=task))
    assert power.score >= 0.9
    assert power.total == power_module.DEFAULT_MAX_MUTATIONS < power.catalogue
    assert {o.family for o in power.mutations} == {"swap heads", "random circuit", "shuffle checkpoint"}
    # layer 1's four heads are all in the circuit: only layer 0's heads can be swapped out (both at once)
    swaps = [o.name for o in power.mutations if o.family == "swap heads"]
    assert sorted(swaps) == ["swap the circuit's heads out: L0H0 with L0H1, L0H2 with L0H3",
                             "swap the circuit's heads out: L0H0 with L0H3, L0H2 with L0H1"]
    assert "swaps out of the circuit leave the heads of full layers in place: layer 1 has 0 heads outside the circuit for its 4" \
        in power.notes
    circuits = [o.name.removeprefix("random circuit ") for o in power.mutations if o.family == "random circuit"]
    assert all(len(c.split()) == 6 and set(c.split()) != set(CARD.split()) for c in circuits)
    assert len(set(circuits)) == len(circuits)


def test_a_lens_claim_whose_thresholds_nothing_breaks_cannot_fail(induction_2l, task):
    # (a claim about the last layer cannot even be made: the lens there is the output, see test_lens)
    result = cc.check_logit_lens_converges_by(0, task=task, model=induction_2l, max_kl=50.0, min_agreement=0.0)
    power = cc.mutation_score(result)
    assert result.passed and power.cannot_fail and power.score == 0.0
    assert [o.name for o in power.survivors] == ["scramble layer 1 (every head's OV)", "shuffle the checkpoint (seed 0)"]
    assert power.text() == "CANNOT FAIL (0/2 killed)"


def test_a_lens_claim_before_the_last_layer_is_tested_by_scrambling_the_layers_after_it(induction_2l):
    prompts = ["a b c d e f a b c d e f", "g h i j k l g h i j k l"]
    result = cc.check_logit_lens_converges_by(0, prompt=prompts, model=induction_2l, max_kl=50.0, min_agreement=0.0)
    power = cc.mutation_score(result)
    assert [o.name for o in power.mutations] == ["scramble layer 1 (every head's OV)", "shuffle the checkpoint (seed 0)"]


def test_a_necessity_claim_with_min_drop_0_survives_the_swaps_and_random_circuits(induction_2l, task):
    strong = cc.mutation_score(cc.check_necessary(CARD, min_drop=0.7, model=induction_2l, task=task), max_mutations=8)
    vacuous = cc.mutation_score(cc.check_necessary(CARD, min_drop=0, model=induction_2l, task=task), max_mutations=8)
    assert vacuous.score <= 0.25 < strong.score
    assert all(not o.killed for o in vacuous.mutations if o.family in ("swap heads", "random circuit"))
    # the shuffled model has no gap: undecided, not a kill; what kills it is a drop of exactly 0 whose lower bound
    # lands a rounding error below the threshold
    assert [o.name for o in vacuous.undecided_mutations] == ["shuffle the checkpoint (seed 0)"]
    for outcome in vacuous.mutations:
        if outcome.killed:
            assert abs(outcome.bound) < 1e-4


def test_a_claim_that_fails_on_the_model_is_not_measured(induction_2l):
    result = cc.check_head(0, 1, "induction", min_score=0.7, model=induction_2l)
    power = cc.mutation_score(result)
    assert not result.passed
    assert (power.status, power.reason, power.score, power.total) == ("not measured", "the claim fails on the model itself", None, 0)
    assert power.text() == "not measured: the claim fails on the model itself"


def test_a_not_head_claim_is_tested_by_swapping_in_and_copying_the_qk_of_the_heads_that_are_such_heads(induction_2l):
    power = cc.mutation_score(cc.check_head(0, 1, "previous_token", max_score=0.5, model=induction_2l))
    assert sorted(o.name for o in power.mutations) == [  # the card's previous-token heads: L0H0 and L0H2
        "copy the QK of L0H0 onto L0H1", "copy the QK of L0H2 onto L0H1", "swap L0H1 and L0H0", "swap L0H1 and L0H2"]
    assert power.score == 1.0


def test_a_replay_that_raises_is_undecided_and_left_out_of_the_score(induction_2l, task):
    power = cc.mutation_score(cc.check_sufficient(CARD, min_recovery=0.9, model=induction_2l, task=task))
    (shuffled,) = [o for o in power.mutations if o.family == "shuffle checkpoint"]
    assert shuffled.verdict == "undecided" and not shuffled.killed and shuffled.passed is None and shuffled.value is None
    assert shuffled.error.startswith("GapError: the gap m(M) - m(∅)")
    assert shuffled not in power.survivors and power.undecided_mutations == [shuffled]
    assert (power.total, power.decided, power.undecided) == (12, 11, 1)
    assert power.score == power.killed / 11
    assert power.text() == f"score {power.score:.2f} ({power.killed}/11 killed, 1 undecided)"
    data = power.to_dict()
    assert (data["decided"], data["undecided"], data["total"]) == (11, 1, 12)
    (shuffled_dict,) = [m for m in data["mutations"] if m["family"] == "shuffle checkpoint"]
    assert shuffled_dict["verdict"] == "undecided" and shuffled_dict["killed"] is False


def test_a_claim_whose_every_mutation_is_undecided_is_not_measured(induction_2l, task, monkeypatch):
    from circuitcheck.engine import mutate

    def only_the_shuffle(call, result, model, *, seed=0, max_mutations=12):
        return [power_module.Candidate("shuffle", "shuffle checkpoint", mutation=mutate.shuffle_checkpoint(seed))], [], None

    monkeypatch.setattr(power_module, "catalogue", only_the_shuffle)
    power = cc.mutation_score(cc.check_sufficient(CARD, min_recovery=0.9, model=induction_2l, task=task))
    assert power.status == "not measured" and power.score is None and not power.cannot_fail
    assert (power.total, power.decided, power.undecided) == (1, 0, 1)
    assert power.reason.startswith("no mutation could be decided: the claim could not be measured on any of the 1 mutations "
                                   "run (first: GapError: the gap m(M) - m(∅)")
    assert power.text() == f"not measured: {power.reason}"


def test_a_path_claim_is_killed_by_moving_the_path_and_by_zeroing_its_sender(induction_2l, task):
    power = cc.mutation_score(cc.check_path("L0H2", "L1H3.k", model=induction_2l, task=task))
    names = [o.name for o in power.mutations]
    assert "zero the outputs of L0H2" in names and any(name.startswith("swap L1H3 and") for name in names)
    assert power.score == 1.0


def test_a_composition_threshold_below_random_matrices_cannot_fail(induction_2l):
    # random matrices of this size K-compose at about 0.13, so "composes at >= 0.1" holds whatever the weights
    power = cc.mutation_score(cc.check_composition("L0H2", "L1H3.k", min_score=0.1, model=induction_2l))
    assert power.cannot_fail
    assert {"scramble OV of L0H2", "scramble QK of L1H3"} <= {o.name for o in power.survivors}


# Scores on the planted model (zoo:planted-4l: ground truth set by hand) -------------------------------


def _swapped_pairs(name: str) -> set[str]:
    """``swap every head of the circuit out: L0H0 with L0H1, L2H2 with L2H3`` -> {"L0H0 L0H1", "L2H2 L2H3"}."""
    return {pair.replace(" with ", " ") for pair in name.split(": ", 1)[1].split(", ")}


def test_a_set_claim_is_tested_by_swapping_every_head_of_the_circuit_out_at_once(planted_4l, planted_task):
    power = cc.mutation_score(cc.check_sufficient(PLANTED, min_recovery=0.9, model=planted_4l, task=planted_task))
    assert power.score >= 0.9
    swaps = [o for o in power.mutations if o.family == "swap heads"]
    assert len(swaps) == power_module.SET_SWAPS and all(o.killed for o in swaps)
    # each variant swaps all four heads of the circuit (L3.mlp stays), with partners of their own layers outside it
    pairs = [_swapped_pairs(o.name) for o in swaps]
    assert all(o.name.startswith("swap every head of the circuit out: ") for o in swaps)
    for variant in pairs:
        assert sorted(pair.split()[0] for pair in variant) == ["L0H0", "L2H2", "L3H0", "L3H3"]
        assert all(pair.split()[1] not in PLANTED.split() and pair[:2] == pair.split()[1][:2] for pair in variant)
    assert len({frozenset(p) for p in pairs}) == power_module.SET_SWAPS  # other partners in each variant
    # the one swap of a single member that sufficiency survives (the negative head L3H3 out: recovery rises) is gone
    assert not any(o.name.startswith("swap L3H3") for o in power.mutations)
    # what survives is a circuit that works: with L0H0 and the backup head L3H0, the task is recovered without L2H2
    for survivor in power.survivors:
        assert survivor.family == "random circuit" and {"L0H0", "L3H0"} <= set(survivor.name.split()), survivor.name


def test_the_necessity_of_the_backup_pair_and_of_the_mlp_scores_high(planted_4l, planted_task):
    pair = cc.mutation_score(cc.check_necessary("L2H2 L3H0", min_drop=0.9, model=planted_4l, task=planted_task))
    mlp = cc.mutation_score(cc.check_necessary("L3.mlp", min_drop=0.9, model=planted_4l, task=planted_task))
    assert pair.score >= 0.9 and mlp.score >= 0.9
    assert {"zero the outputs of L2H2 L3H0", "zero the outputs of L3.mlp"} <= {o.name for o in pair.mutations + mlp.mutations}
    assert sum(o.name.startswith("swap every head of the circuit out: L2H2 with L2H") for o in pair.mutations) == 3
    assert "no swaps: the circuit has no single heads (MLPs and whole attention layers are not swapped)" in mlp.notes
    # the shuffled checkpoint has no gap m(M) - m(∅): undecided, not counted
    assert [o.name for o in pair.undecided_mutations] == ["shuffle the checkpoint (seed 0)"]


def test_a_not_necessary_claim_is_falsified_by_swapping_in_a_head_that_matters(planted_4l, planted_task):
    power = cc.mutation_score(cc.check_necessary("L1H1 L2H1", max_drop=0.05, model=planted_4l, task=planted_task))
    assert power.status == "measured" and power.score >= 0.9
    # L2H2 (own drop 0.52 on the card) is the only head of layers 1 and 2 outside the distractors that matters
    assert [o.name for o in power.mutations] == ["swap L2H1 and L2H2"]
    for other in ("L1H0", "L1H2", "L1H3", "L2H0", "L2H3"):
        assert not cc.check_necessary(other, min_drop=0.05, model=planted_4l, task=planted_task).passed
    assert cc.check_necessary("L2H2", min_drop=0.05, model=planted_4l, task=planted_task).passed
    assert "swapped into the circuit: L2H2 (has its own drop at least max_drop=0.05 on the model, measured)" in power.notes


def test_a_not_claim_with_no_head_beside_it_that_matters_is_not_measured(planted_4l, planted_task):
    necessary = cc.mutation_score(cc.check_necessary("L2H2", max_drop=0.8, model=planted_4l, task=planted_task))
    assert (necessary.status, necessary.total) == ("not measured", 0)
    assert necessary.reason == ("no head of layer 2 outside L2H2 has its own drop at least max_drop=0.8 on the model "
                                "(measured: L2H0, L2H1, L2H3), so no swap moves function into it")
    # no single head in a distractor's place makes them sufficient: the task needs L0H0, L2H2 and L3.mlp together
    sufficient = cc.mutation_score(cc.check_sufficient("L1H1 L2H1", max_recovery=0.2, model=planted_4l, task=planted_task))
    assert sufficient.status == "not measured" and "so no swap moves function into it" in sufficient.reason


def test_a_lens_claim_whose_thresholds_nothing_breaks_cannot_fail_on_the_planted_model(planted_4l, planted_task):
    power = cc.mutation_score(cc.check_logit_lens_converges_by(2, task=planted_task, model=planted_4l, max_kl=50.0, min_agreement=0.0))
    assert power.cannot_fail and power.text() == "CANNOT FAIL (0/2 killed)"


def test_a_necessity_claim_with_min_drop_0_is_killed_only_where_an_ablation_helps_the_task(planted_4l, planted_task):
    # L1H1 writes only what nothing reads: its drop is 0. "drop >= 0" survives putting any head that matters in its
    # place (L2H2 drops 0.52) and fails only for components whose ablation raises the metric (L1H2 lowers the current
    # token's logit, L3H3 is the negative head): a weak claim, and its score says so.
    result = cc.check_necessary("L1H1", min_drop=0, model=planted_4l, task=planted_task)
    power = cc.mutation_score(result)
    assert result.passed and power.status == "measured" and power.score < 0.5
    for outcome in power.mutations:
        if outcome.killed:
            assert outcome.value < 0, outcome.name
        elif not outcome.undecided:
            assert outcome.bound >= 0, outcome.name


# Edge circuits ------------------------------------------------------------------------------------


def _edges_of(text: str) -> list[str]:
    return [str(edge) for edge in cc.Circuit.parse(text).edges]


def test_an_edge_circuits_sufficiency_scores_high_and_its_random_edge_circuits_are_killed(induction_2l, task):
    from circuitcheck.engine.edges import Graph

    result = cc.check_sufficient(INDUCTION_EDGES, min_recovery=0.9, model=induction_2l, task=task)
    power = cc.mutation_score(result)
    assert result.passed and power.status == "measured" and power.score >= 0.9 and not power.cannot_fail
    assert {o.family for o in power.mutations} == {"swap heads", "moved edges", "random circuit", "shuffle checkpoint"}
    randoms = [o for o in power.mutations if o.family == "random circuit"]
    assert len(randoms) >= 4 and all(o.killed for o in randoms)
    # each is 22 distinct edges of the model's graph, drawn afresh (never the circuit itself, never twice)
    graph = {str(edge) for edge in Graph.of(induction_2l, task.seq_len).edges()}
    own = set(_edges_of(INDUCTION_EDGES))
    drawn = [frozenset(_edges_of(o.name.removeprefix("random circuit "))) for o in randoms]
    assert all(len(d) == len(own) == 22 and d <= graph and d != own for d in drawn) and len(set(drawn)) == len(drawn)
    # one random circuit's recovery recomputed: a plain check on the user's model, and the ratio of means from m(C)
    # (the patcher's edge variant) with m(M) and m(∅) from plain forwards (resample ablation: ∅ is the corrupted run)
    first = randoms[0]
    text = first.name.removeprefix("random circuit ")
    plain = cc.check_sufficient(text, min_recovery=0.9, model=induction_2l, task=task)
    assert plain.value == pytest.approx(first.value, abs=1e-9) and not plain.passed
    import torch

    from circuitcheck.engine.patcher import Patcher

    (kept,) = Patcher(induction_2l).run(task, [Graph.of(induction_2l, task.seq_len).keep(_edges_of(text)).patches()])
    with torch.no_grad():
        full = task.metric(induction_2l(task.clean), task).mean()
        empty = task.metric(induction_2l(task.corrupt), task).mean()
    assert float((kept.mean() - empty) / (full - empty)) == pytest.approx(first.value, abs=1e-5)


def test_moved_edges_give_each_edge_another_receiver_of_its_kind_and_edges_into_the_logits_stay(induction_2l, task):
    power = cc.mutation_score(cc.check_sufficient(INDUCTION_EDGES, min_recovery=0.9, model=induction_2l, task=task))
    moved = [o for o in power.mutations if o.family == "moved edges"]
    assert len(moved) == power_module.SET_SWAPS and all(o.killed for o in moved)
    own = _edges_of(INDUCTION_EDGES)
    variants = []
    for outcome in moved:
        assert outcome.name.startswith("move 18 of the 22 edges to another receiver: "), outcome.name
        edges = _edges_of(outcome.name.split(": ", 1)[1])
        variants.append(frozenset(edges))
        assert len(set(edges)) == len(own) and not set(edges) & {e for e in own if not e.endswith("-> logits")}
        for before, after in zip(own, edges):
            sender, receiver = before.split(" -> ")
            new_sender, new_receiver = after.split(" -> ")
            assert new_sender == sender  # the same write, read by another receiver of its kind
            if receiver == "logits":
                assert new_receiver == "logits"
            else:
                assert new_receiver != receiver and new_receiver[-2:] in (".q", ".k", ".v")
    assert len(variants) == len(set(variants))
    assert ("moving the circuit's edges leaves those into the logits in place: L1H0 -> logits, L1H1 -> logits, "
            "L1H2 -> logits, L1H3 -> logits") in power.notes


def test_a_vacuous_edge_claim_survives_random_edge_circuits_and_moved_edges(induction_2l, task):
    power = cc.mutation_score(cc.check_sufficient(INDUCTION_EDGES, min_recovery=-1.0, model=induction_2l, task=task))
    assert power.cannot_fail and power.score == 0.0
    assert {o.family for o in power.survivors} == {"swap heads", "moved edges", "random circuit"}
    assert [o.name for o in power.undecided_mutations] == ["shuffle the checkpoint (seed 0)"]  # no gap: not a survivor


def test_an_edge_minimality_claim_is_tested_edge_by_edge(induction_2l, task):
    result = cc.check_minimal(CHAIN, min_contribution=0.005, model=induction_2l, task=task)
    power = cc.mutation_score(result, max_mutations=16)
    assert result.passed and power.score >= 0.75
    names = {o.name: o for o in power.mutations}
    # zeroing what an edge carries: its sender's output, or for an edge out of the embeddings the receiver's read of it
    silenced = {"zero OV of L0H0 (what embed -> L0H0.v, L0H0 -> L1H3.k carry)",
                "zero OV of L1H3 (what embed -> L1H3.v, L1H3 -> logits carry)",
                "zero QK of L1H3 (what embed -> L1H3.q carries)"}
    assert silenced <= set(names)
    for name in silenced:  # the silenced edges carry nothing: ablating them changes nothing, their contribution is 0
        assert names[name].killed and abs(names[name].value) < 1e-6
    moves = [o for o in power.mutations if o.family == "moved edges"]
    assert moves and all(o.killed for o in moves)
    for outcome in moves:  # "move embed -> L1H3.q to L0H1.k": one edge of the chain, the rest as it was
        edge, receiver = outcome.name.removeprefix("move ").split(" to ")
        assert edge in _edges_of(CHAIN) and receiver != edge.split(" -> ")[1]


def test_zeroing_what_an_edge_circuits_edges_carry_makes_its_drop_zero(induction_2l, task):
    power = cc.mutation_score(cc.check_necessary(INDUCTION_EDGES, min_drop=0.7, model=induction_2l, task=task))
    (zeroed,) = [o for o in power.mutations if o.name.startswith("zero what the circuit's edges carry: ")]
    assert zeroed.name == ("zero what the circuit's edges carry: zero OV of L0H0, zero OV of L0H2, zero QK of L1H0, "
                           "zero OV of L1H0, zero QK of L1H1, zero OV of L1H1, zero QK of L1H2, zero OV of L1H2, "
                           "zero QK of L1H3, zero OV of L1H3")
    assert zeroed.killed and abs(zeroed.value) < 1e-6  # M \ C is M: the circuit's edges carry nothing
    assert all(o.killed for o in power.mutations if o.family == "random circuit")
    # what survives: the swaps of layer 0's heads and the moved edges leave the four edges into the logits in place,
    # and ablating them alone removes the task (a set claim carried by part of the set)
    assert {o.family for o in power.survivors} <= {"swap heads", "moved edges"}
    assert cc.check_necessary("L1H0 -> logits, L1H1 -> logits, L1H2 -> logits, L1H3 -> logits", min_drop=0.7,
                              model=induction_2l, task=task).passed


def test_a_not_necessary_edge_claim_is_falsified_by_swapping_a_head_that_matters_into_its_edges(induction_2l, task):
    power = cc.mutation_score(cc.check_necessary("L0H1 -> L1H3.k", max_drop=0.1, model=induction_2l, task=task))
    assert power.status == "measured" and power.score == 1.0
    assert sorted(o.name for o in power.mutations) == ["swap L0H1 and L0H0", "swap L0H1 and L0H2"]
    # a swap relabels the two heads: the swapped model's claim is the claim about the relabelled edge on the model
    for outcome in power.mutations:
        other = outcome.name.split(" and ")[1]
        relabelled = cc.check_necessary(f"{other} -> L1H3.k", max_drop=0.1, model=induction_2l, task=task)
        assert outcome.value == pytest.approx(relabelled.value, abs=1e-5) and not relabelled.passed
    assert any(note.startswith("not swapped in: L0H3 for L0H1, L1H0 for L1H3") for note in power.notes)


def test_a_not_claim_about_edges_that_name_no_head_is_not_measured(induction_2l, task):
    power = cc.mutation_score(cc.check_necessary("embed -> logits", max_drop=0.5, model=induction_2l, task=task))
    assert (power.status, power.total) == ("not measured", 0)
    assert power.reason.startswith("embed -> logits names no single head: nothing can be swapped into its edges")


# Guarantees ---------------------------------------------------------------------------------------


def test_the_users_model_is_never_touched(induction_2l, task):
    before = session_of(induction_2l).fingerprint()
    weights = [p.detach().clone() for p in induction_2l.parameters()]
    cc.mutation_score(cc.check_sufficient(CARD, min_recovery=0.9, model=induction_2l, task=task), max_mutations=4)
    cc.mutation_score(cc.check_head(0, 2, "previous_token", min_score=0.7, model=induction_2l))
    assert session_of(induction_2l).fingerprint() == before
    assert all(p.equal(w) for p, w in zip(induction_2l.parameters(), weights))


def test_scores_are_seeded(induction_2l, task):
    result = cc.check_sufficient(CARD, min_recovery=0.9, model=induction_2l, task=task)
    first = cc.mutation_score(result, seed=1).to_dict()
    again = cc.mutation_score(result, seed=1).to_dict()
    other = cc.mutation_score(result, seed=2).to_dict()
    assert _without_timing(first) == _without_timing(again)
    assert [m["name"] for m in first["mutations"]] != [m["name"] for m in other["mutations"]]


def test_the_cap_takes_every_family_in_turn(induction_2l, task):
    power = cc.mutation_score(cc.check_sufficient(CARD, min_recovery=0.9, model=induction_2l, task=task), max_mutations=3)
    assert power.total == 3 and len({o.family for o in power.mutations}) == 3
    assert f"3 of {power.catalogue} candidate mutations run (max_mutations=3)" in power.notes


SHARED = {  # claims whose random circuits are measured together before their replays (the subsets their checks start from)
    "necessary": lambda m, t: cc.check_necessary(CARD, min_drop=0.7, model=m, task=t),
    "complete": lambda m, t: cc.check_complete("L0H2 L1H1 L1H3", max_incompleteness=0.9, model=m, task=t),  # 0.63
    "minimal": lambda m, t: cc.check_minimal("L0H2 L1H1 L1H3", min_contribution=0.05, method="ioi", model=m, task=t),
    "sufficient (edges)": lambda m, t: cc.check_sufficient(INDUCTION_EDGES, min_recovery=0.9, model=m, task=t),
}


@pytest.mark.parametrize("kind", sorted(SHARED))
def test_shared_batched_and_gap_first_runs_give_the_numbers_of_plain_replays(kind, induction_2l, task, monkeypatch):
    result = SHARED[kind](induction_2l, task)
    assert result.passed
    session_of(induction_2l).forget("power")  # fresh private copies: nothing measured on them yet
    batched = cc.mutation_score(result, max_mutations=7).to_dict()
    again = cc.mutation_score(result, max_mutations=7).to_dict()  # the reference copy's work is found measured
    session_of(induction_2l).forget("power")
    monkeypatch.setattr(power_module, "_prewarm_sets", lambda *args, **kwargs: None)
    monkeypatch.setattr(power_module, "_without_gap", lambda *args, **kwargs: None)
    alone = cc.mutation_score(result, max_mutations=7).to_dict()  # every replay measures everything itself
    assert sum(m["family"] == "random circuit" for m in batched["mutations"]) >= 2
    assert any(m["verdict"] == "undecided" for m in batched["mutations"])  # the shuffle: the gap measured first
    assert _without_timing(batched) == _without_timing(alone) == _without_timing(again)


def test_a_second_power_run_of_a_claim_runs_nothing_on_the_unmutated_copy(induction_2l, task):
    from circuitcheck.engine.patcher import shared_patcher

    result = cc.check_necessary(CARD, min_drop=0.7, model=induction_2l, task=task)
    cc.mutation_score(result, max_mutations=6)
    reference = power_module._mutator_for(induction_2l).reference
    before = shared_patcher(reference).forward_passes
    cc.mutation_score(result, max_mutations=6)
    assert power_module._mutator_for(induction_2l).reference is reference
    assert shared_patcher(reference).forward_passes == before  # the control and the random circuits were measured before


def test_bad_arguments_are_clear_errors(induction_2l):
    result = cc.check_head(1, 3, "induction", min_score=0.7, model=induction_2l)
    with pytest.raises(CircuitCheckError, match=r"max_mutations=0 is not valid: it must be a whole number >= 1 \(default 12\)"):
        cc.mutation_score(result, max_mutations=0)
    with pytest.raises(CircuitCheckError, match="is not a claim: give a CheckResult"):
        cc.mutation_score("L1H3")


def test_the_score_travels_in_the_results_dict_and_frame(induction_2l):
    result = cc.check_head(1, 3, "induction", min_score=0.7, model=induction_2l)
    power = cc.mutation_score(result, max_mutations=2)
    assert result.power is power
    data = result.to_dict()["power"]
    assert json.loads(json.dumps(data)) == data
    assert set(data) == {"status", "reason", "score", "killed", "decided", "undecided", "total", "cannot_fail", "catalogue",
                         "max_mutations", "seed", "seconds", "mutations", "notes"}
    assert set(data["mutations"][0]) == {"name", "family", "verdict", "killed", "passed", "value", "decided_on", "bound", "error"}
    assert result.to_frame()["mutation_score"].iloc[0] == power.score
    frame = power.to_frame()
    assert isinstance(frame, pd.DataFrame) and list(frame["name"]) == [o.name for o in power.mutations]
    assert "power" not in cc.check_head(1, 3, "induction", min_score=0.7, model=induction_2l).to_dict()  # only when measured


def test_a_claim_call_can_be_scored_directly(induction_2l):
    call = cc.check_head(1, 3, "induction", min_score=0.7, model=induction_2l).call
    assert isinstance(call, cc.ClaimCall)
    assert cc.mutation_score(call, max_mutations=2).total == 2


# A kind a plugin declares: generic mutations ------------------------------------------------------


def check_embedding_norm(*, min_norm=None, max_norm=None, model=None):
    """The mean L2 norm of the token embeddings (weights only): a plugin's claim kind."""
    from circuitcheck.model import context

    model = context.resolve_model(model)
    value = float(model.W_E.detach().norm(dim=-1).mean())
    return cc.CheckResult(kind="embedding_norm", claim="the token embeddings have a moderate norm", value=value,
                          passed=within(value, min_norm, max_norm), n=1, metric="mean embedding norm",
                          min_value=min_norm, max_value=max_norm, decided_on="value")


def assert_embedding_norm(tolerance=None, **kwargs):
    __tracebackhide__ = True
    return conclude(check_embedding_norm(**kwargs), tolerance)


def test_a_plugin_kind_is_replayed_with_the_generic_mutations(induction_2l):
    kind = cc.ClaimKind(name="embedding_norm", check=check_embedding_norm, assertion=assert_embedding_norm,
                        metric="mean embedding norm", params=(cc.Param("min_norm", "number"), cc.Param("max_norm", "number")),
                        thresholds=("min_norm", "max_norm"), definition="the mean L2 norm of W_E's rows", section="weights")
    plugin = types.SimpleNamespace(circuitcheck_claim_kinds=cc.hookimpl(lambda: [kind]))
    cc.register(plugin)
    try:
        registry.kinds()  # reading the kinds records the plugin check's calls
        result = assert_embedding_norm(min_norm=0.01, max_norm=1000.0, model=induction_2l)
    finally:
        cc.unregister(plugin)
    assert result.call is not None
    power = cc.mutation_score(result)
    assert {o.name for o in power.mutations} == {"shuffle the checkpoint (seed 0)", "scramble the OV of every head"}
    assert "generic mutations only" in power.notes[0]
    assert power.cannot_fail  # a wide threshold on the embeddings' norm: nothing falsifies it


# pytest and the command line --------------------------------------------------------------------------

SUITE = textwrap.dedent(
    """
    import circuitcheck as cc

    CARD = "L0H0 L0H2 L1H0 L1H1 L1H2 L1H3"


    def test_heads(model):
        cc.assert_induction_head(1, 3, min_score=0.7)


    def test_circuit(model, induction_task):
        cc.assert_sufficient(CARD, min_recovery=0.9)


    def test_lens_with_thresholds_nothing_breaks(model, induction_task):
        cc.assert_logit_lens_converges_by(0, max_kl=50.0, min_agreement=0.0)
    """
)

SPEC = textwrap.dedent(
    """\
    model: zoo:induction-2l
    claims:
      - kind: previous_token_head
        layer: 0
        head: 2
        min_score: 0.7
    """
)


def test_circuitcheck_power_records_scores_in_the_terminal_the_json_and_the_report(pytester):
    pytester.makepyfile(test_suite=SUITE)
    (pytester.path / "heads.circuit.yaml").write_text(SPEC)
    result = pytester.runpytest("-p", "no:cacheprovider", "--circuitcheck-power", "--circuitcheck-power-mutations=6",
                                "--circuitcheck-json=out.json", "--circuitcheck-report=out.html")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines([
        "circuitcheck: measuring test power (at most 6 mutations per claim)",
        "*circuitcheck power*",
        "4 claims measured: 1 cannot fail, mean score *",
        "*0.00     0/2  the logit lens converges by layer 0  CANNOT FAIL",
    ])
    claims = {c["kind"]: c for test in json.loads((pytester.path / "out.json").read_text())["tests"] for c in test["claims"]}
    assert set(claims) == {"induction_head", "sufficient", "logit_lens", "previous_token_head"}  # the spec claim too
    assert claims["sufficient"]["power"]["total"] == 6 and claims["sufficient"]["power"]["score"] >= 0.9
    assert claims["logit_lens"]["power"]["cannot_fail"] is True
    html = (pytester.path / "out.html").read_text()
    assert '<section id="power">' in html and "cannot fail</span>" in html
    assert '"cannot_fail"' not in html  # the power object is shown in its section, not dumped as text under the claim

    plain = pytester.runpytest("-p", "no:cacheprovider", "--circuitcheck-json=plain.json", "test_suite.py::test_heads")
    plain.assert_outcomes(passed=1)
    assert "circuitcheck power" not in plain.stdout.str()
    (claim,) = json.loads((pytester.path / "plain.json").read_text())["tests"][0]["claims"]
    assert "power" not in claim


def _power_command(pytester, *args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # two xdist workers on two cores
    return subprocess.run([sys.executable, "-m", "circuitcheck", "power", *args], cwd=pytester.path, env=env,
                          capture_output=True, text=True, timeout=300)


def test_the_power_command_lists_each_claims_score_and_fails_on_a_claim_that_cannot_fail(pytester):
    pytester.makepyfile(test_suite=SUITE)
    done = _power_command(pytester, "-p", "no:cacheprovider", "-n", "2", "--circuitcheck-power-mutations=4",
                          "--circuitcheck-json=out.json", "--circuitcheck-report=out.html")
    assert done.returncode == 1, done.stdout + done.stderr
    out = done.stdout
    assert "3 passed" in out
    assert "circuitcheck power: mutation score per claim" in out
    assert "  1.00    4/4  L1H3 is an induction head  [test_suite.py::test_heads]" in out
    assert "the logit lens converges by layer 0  CANNOT FAIL  [test_suite.py::test_lens_with_thresholds_nothing_breaks]" in out
    assert "survived: shuffle the checkpoint (seed 0)" in out
    assert out.rstrip().endswith("exit status 1: 1 claim cannot fail")
    claims = [c for test in json.loads((pytester.path / "out.json").read_text())["tests"] for c in test["claims"]]
    assert all("power" in c for c in claims)  # from the xdist workers
    assert '<section id="power">' in (pytester.path / "out.html").read_text()



def test_undecided_mutations_are_shown_apart_in_the_terminal_the_command_and_the_report():
    from circuitcheck.pytest_plugin.power import detailed_lines, power_counts, power_lines
    from circuitcheck.report.claim_view import ClaimView
    from circuitcheck.report.power_sections import power as power_section

    gap = "GapError: the gap m(M) - m(∅) on task 'induction' with resample ablation is 0.00"
    result = power_module.PowerResult("C is sufficient for induction", "sufficient", "measured", mutations=[
        power_module.Outcome("swap every head of the circuit out: L0H0 with L0H1", "swap heads", killed=True, passed=False),
        power_module.Outcome("random circuit L0H0 L3H0", "random circuit", killed=False, passed=True, value=0.95),
        power_module.Outcome("shuffle the checkpoint (seed 0)", "shuffle checkpoint", killed=False, error=gap),
    ])
    data = result.to_dict()
    assert (data["score"], data["killed"], data["decided"], data["undecided"], data["total"]) == (0.5, 1, 2, 1, 3)
    claims = [{"claim": "C is sufficient for induction", "kind": "sufficient", "power": data}]
    assert power_counts(claims)["undecided"] == 1
    lines = [line for line, _ in power_lines(claims, survivors=True)]
    assert lines[0] == "1 claims measured: 0 cannot fail, mean score 0.50; 1 undecided mutation (left out of the scores)"
    assert "    0.50     1/2  C is sufficient for induction  (+1 undecided)" in lines
    assert "                  survived: random circuit L0H0 L3H0" in lines
    assert f"                  undecided: shuffle the checkpoint (seed 0): {gap}" in lines
    command = detailed_lines([{"nodeid": "t.py::test_c", "claims": claims}])
    assert command[0] == "  0.50    1/2  C is sufficient for induction  (+1 undecided)  [t.py::test_c]"
    assert f"               undecided: shuffle the checkpoint (seed 0): {gap}" in command
    # long errors are cut on the terminal (the JSON and the report keep them whole)
    assert power_module.undecided_texts(data, limit=20) == ["shuffle the checkpoint (seed 0): GapError: the gap m…"]
    view = ClaimView(index=0, nodeid="t.py::test_c", outcome="passed", raw=claims[0], evidence={})
    (row,) = power_section([(view, data)])["rows"]
    assert (row["score"], row["ratio"], row["survivors"]) == ("0.50", "1/2 +1 undecided", ["random circuit L0H0 L3H0"])
    assert [r[2] for r in row["table"].data] == ["killed", "survived", "undecided"]
    # a power object written before undecided mutations existed: a mutation with an error is read as undecided
    old = {"status": "measured", "score": 1.0, "killed": 2, "total": 2, "cannot_fail": False,
           "mutations": [{"name": "a", "killed": True, "error": None}, {"name": "b", "killed": True, "error": gap}]}
    assert power_module.summary_text(old) == "score 1.00 (1/1 killed, 1 undecided)"


def test_the_power_command_flags_claims_below_min_score_and_refuses_a_bad_one(pytester):
    from circuitcheck.pytest_plugin.power import detailed_lines, weak_claims

    def claim(text, killed, total):
        mutations = [{"name": f"m{i}", "killed": i < killed} for i in range(total)]
        power = {"status": "measured", "score": killed / total, "killed": killed, "total": total,
                 "cannot_fail": killed == 0, "mutations": mutations}
        return {"claim": text, "power": power}

    tests = [{"nodeid": "t.py::test_x", "claims": [claim("strong", 4, 4), claim("weak", 1, 4), claim("vacuous", 0, 2)]},
             {"nodeid": "t.py::test_y", "claims": [{"claim": "failed", "power": {"status": "not measured", "reason": "r"}}]}]
    assert [(c["claim"], why) for _, c, why in weak_claims(tests)] == [("vacuous", "cannot fail")]
    assert [(c["claim"], why) for _, c, why in weak_claims(tests, 0.5)] == [("weak", "scores below --min-score 0.5"),
                                                                           ("vacuous", "cannot fail")]
    lines = detailed_lines(tests, 0.5)
    assert "  0.25    1/4  weak  BELOW 0.5  [t.py::test_x]" in lines
    assert "  0.00    0/2  vacuous  CANNOT FAIL  [t.py::test_x]" in lines
    assert "               not measured: r" in lines

    bad = _power_command(pytester, "--min-score", "1.5")
    assert bad.returncode == 2
    assert "circuitcheck power: error: --min-score='1.5' is not valid: it must be a number from 0 to 1" in bad.stderr
