"""The planted-circuit zoo models: their cards' ground truth holds for the shipped weights.

The cards were measured by ``circuitcheck.zoo.ground_truth`` (plain
TransformerLens hooks, every subset enumerated). These tests re-measure them
from the shipped checkpoints, check the mechanisms the model cards describe
with hooks written here, and check that circuitcheck's engine gives the
card's numbers on the card's task.
"""

from __future__ import annotations

import functools

import pytest
import torch

import circuitcheck as cc
from circuitcheck import zoo
from circuitcheck.model import tasks
from circuitcheck.zoo import ground_truth, planted

PLANTED = tuple(planted.SPECS)
TOL = 2e-4  # the card rounds to 4 decimals


@functools.lru_cache(maxsize=None)
def model(name: str):
    return zoo.load(name)


@functools.lru_cache(maxsize=None)
def measurer(name: str) -> ground_truth.Measurer:
    return ground_truth.measurer(model(name))


def close(got: float, want: float, what: str) -> None:
    assert abs(got - want) <= TOL, f"{what}: measured {got:.5f}, card {want}"


def test_planted_models_are_in_the_zoo_with_cards():
    for name in PLANTED:
        assert name in zoo.names()
        card = zoo.card(name)
        assert card["planted"] and card["final_checkpoint"] == zoo.checkpoints(name)[-1] == "final"
        assert (zoo.model_dir(name) / "CARD.md").read_text().startswith(f"# {name}")
        assert set(card["roles"]) == set(ground_truth.components(model(name)))


@pytest.mark.parametrize("name", PLANTED)
def test_shipped_weights_are_the_generators_exactly(name):
    expected = planted.SPECS[name]["weights"]()
    loaded = model(name).state_dict()
    assert set(expected) <= set(loaded)
    for key, value in expected.items():
        assert torch.equal(loaded[key].float(), value), key


@pytest.mark.parametrize("name", PLANTED)
def test_card_necessity_and_recoveries_match_the_shipped_weights(name):
    card, meas = zoo.card(name)["ground_truth"], measurer(name)
    close(meas.full, card["m_full"], "m(M)")
    close(meas.empty, card["m_empty"], "m(∅)")
    for component, drop in card["necessity"].items():
        close(meas.drop([component]), drop, f"drop({component})")
    for circuit_name, truth in card["circuits"].items():
        comps = truth["components"].split()
        close(meas.recovery(comps), truth["recovery"], f"recovery({circuit_name})")
        close(meas.drop(comps), truth["drop"], f"drop({circuit_name})")
    true = zoo.card(name)["true_circuit"].split()
    swaps = card["one_swap_recovery"]
    assert len(swaps) == len(true) * (len(meas.all) - len(true))
    for key in sorted(swaps)[:: max(1, len(swaps) // 6)]:  # a spread of the one-swap circuits
        member, other = key.split(" -> ")
        close(meas.recovery([other if c == member else c for c in true]), swaps[key], f"recovery(swap {key})")


def test_card_minimality_and_completeness_match_the_shipped_weights():
    card, meas = zoo.card("planted-redundant-2l")["ground_truth"], measurer("planted-redundant-2l")
    for truth in card["circuits"].values():
        assert ground_truth.circuit_truth(meas, truth["components"].split()) == truth
    truth = zoo.card("planted-4l")["ground_truth"]["circuits"]["planted"]  # its subsets take a minute: leave-one-out only
    meas = measurer("planted-4l")
    comps = truth["components"].split()
    for v, value in truth["leave_one_out"].items():
        close(meas.recovery(comps) - meas.recovery([c for c in comps if c != v]), value, f"leave-one-out {v}")


@pytest.mark.parametrize("name", PLANTED)
def test_card_head_scores_match_transformer_lens_head_detector(name):
    card = zoo.card(name)["ground_truth"]["head_scores"]
    again = ground_truth.head_scores(model(name))
    for kind in card:
        for layer, (row, want_row) in enumerate(zip(again[kind], card[kind], strict=True)):
            for head, (got, want) in enumerate(zip(row, want_row, strict=True)):
                close(got, want, f"{kind} L{layer}H{head}")


def test_card_claims_state_true_and_false_claims_of_every_kind():
    for name in PLANTED:
        claims = zoo.card(name)["claims"]
        for kind in ("necessary", "sufficient", "minimal", "complete", "previous_token_head", "induction_head"):
            verdicts = {c["true"] for c in claims if c["kind"] == kind and not c["borderline"]}
            assert verdicts == {True, False}, f"{name}: {kind} claims are all {verdicts}"


# The mechanisms the card describes, with hooks written here -----------------------------------------------


def _clean_corrupt(name: str, n: int = 64):
    task = tasks.induction(model(name), n_prompts=n, seq_len=20, seed=7)
    return task.clean, task.corrupt


def test_backup_head_waits_on_bos_and_takes_over_when_the_induction_head_is_removed():
    m = model("planted-4l")
    clean, _ = _clean_corrupt("planted-4l")
    _, cache = m.run_with_cache(clean)
    main, backup = cache["blocks.2.attn.hook_pattern"][:, 2], cache["blocks.3.attn.hook_pattern"][:, 0]
    second = slice(21, 40)
    confident = main[:, second].max(-1).values > 0.99  # L2H2 found one earlier copy
    assert confident.float().mean() > 0.5
    assert (backup[:, second, 0][confident] > 0.99).all(), "the backup head should stay on BOS while L2H2 works"

    def remove_main(z, hook):
        z[:, :, 2] = 0.0
        return z

    with m.hooks(fwd_hooks=[("blocks.2.attn.hook_z", remove_main)]):
        _, ablated = m.run_with_cache(clean)
    taken_over = ablated["blocks.3.attn.hook_pattern"][:, 0]
    # Without L2H2's answer in CODE the backup attends where L2H2 did.
    agree = (taken_over[:, second].argmax(-1) == main[:, second].argmax(-1))[confident]
    assert agree.float().mean() > 0.99


def test_negative_head_lowers_the_answer_and_distractors_write_only_what_nothing_reads():
    m = model("planted-4l")
    junk = slice(planted.JUNK, planted.JUNK + planted.N_JUNK)
    out = slice(planted.OUT, planted.OUT + planted.V)
    # The negative head's OV maps each token to minus its own logit.
    ov = m.blocks[3].attn.W_V[3] @ m.blocks[3].attn.W_O[3] @ m.W_U  # [d_model, vocab]
    tokens = torch.arange(3, planted.V)
    assert torch.allclose(ov[planted.TOK + tokens, tokens], torch.full((len(tokens),), -planted.NEGATIVE_LOGITS))
    for layer, head in ((1, 1), (2, 1)):
        written = m.blocks[layer].attn.W_O[head]
        assert written[:, junk].abs().sum() > 0 and torch.count_nonzero(written[:, : planted.JUNK]) == 0
    readers = [m.W_U]
    for block in m.blocks:
        readers += [block.attn.W_Q.reshape(-1, planted.D_MODEL, planted.D_HEAD).permute(1, 0, 2).reshape(planted.D_MODEL, -1)]
        readers += [block.attn.W_K.permute(1, 0, 2).reshape(planted.D_MODEL, -1), block.attn.W_V.permute(1, 0, 2).reshape(planted.D_MODEL, -1)]
        readers += [block.mlp.W_in]
    assert all(torch.count_nonzero(w[junk]) == 0 for w in readers), "something reads JUNK"
    assert torch.count_nonzero(m.W_U[: planted.OUT]) == 0 and torch.count_nonzero(m.W_U[out]) == planted.V


def test_redundant_twins_each_alone_nearly_saturate_the_answer():
    meas = measurer("planted-redundant-2l")
    twins = ["L0H0", "L1H0", "L1H1"]
    assert meas.recovery(["L0H0", "L1H0"]) > 0.9 and meas.recovery(["L0H0", "L1H1"]) > 0.9
    assert meas.recovery(twins) - meas.recovery(["L0H0", "L1H0"]) < 0.05  # leave-one-out sees little
    assert meas.drop(["L1H0", "L1H1"]) > 0.9  # together they are the answer


# circuitcheck's engine agrees with the independent ground truth ----------------------------------------------


@pytest.mark.parametrize("name", PLANTED)
def test_engine_agrees_with_plain_hooks_on_every_circuit_definition(name):
    m = model(name)
    task = tasks.induction(m, n_prompts=16, seq_len=20, seed=3)  # the same inputs for both: equality needs few
    independent = ground_truth.Measurer(m, task.clean, task.corrupt, first=task.clean.shape[1] - 20)
    truth = ground_truth.circuit_truth(independent, zoo.card(name)["true_circuit"].split())
    circuit = cc.Circuit.parse(truth["components"])
    close(cc.check_sufficient(circuit, model=m, task=task).value, truth["recovery"], "engine recovery")
    close(cc.check_necessary(circuit, model=m, task=task).value, truth["drop"], "engine drop")
    close(cc.check_complete(circuit, model=m, task=task).value, truth["incompleteness"], "engine incompleteness")
    loo = cc.check_minimal(circuit, model=m, task=task).evidence["minimality"].set_index("component")["contribution"]
    for component, value in truth["leave_one_out"].items():
        close(float(loo[component]), value, f"engine leave-one-out {component}")
    shapley = cc.check_minimal(circuit, method="shapley", model=m, task=task).evidence["minimality"]
    for row in shapley.itertuples():
        close(float(row.contribution), truth["shapley"][row.component], f"engine Shapley {row.component}")
    ioi = cc.check_minimal(circuit, method="ioi", model=m, task=task).evidence["minimality"]
    for row in ioi.itertuples():  # a greedy K can only find less than the best K
        assert row.contribution <= truth["ioi"][row.component]["contribution"] + TOL
