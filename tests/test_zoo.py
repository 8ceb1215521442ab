"""The bundled zoo: shipped weights, cards and the claims the cards make."""

from __future__ import annotations

import functools
import json
import subprocess
import sys

import pytest

from circuitcheck import zoo
from circuitcheck.zoo import circuits as zoo_circuits
from circuitcheck.errors import ModelSpecError
from circuitcheck.engine.heads import head_scores

TOLERANCE = 1e-5
MAX_ZOO_BYTES = 5 * 1024 * 1024
EXPECTED = ("induction-1l", "induction-2l")


@functools.lru_cache(maxsize=None)
def loaded(name: str, checkpoint: str | None = None):
    return zoo.load(name, checkpoint)


def all_checkpoints():
    return [(name, ck) for name in EXPECTED for ck in zoo.checkpoints(name)]


def test_zoo_lists_its_models():
    assert set(EXPECTED) <= set(zoo.names())
    for name in EXPECTED:
        ckpts = zoo.checkpoints(name)
        steps = [int(c.removeprefix("step")) for c in ckpts]
        assert steps == sorted(steps) and steps[0] == 0
        assert zoo.card(name)["final_checkpoint"] == ckpts[-1]
        assert (zoo.model_dir(name) / "CARD.md").is_file()


def test_importing_zoo_is_light():
    code = "import sys, circuitcheck.zoo as z; z.names(); z.card('induction-2l'); print('torch' in sys.modules, 'transformer_lens' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


def test_zoo_size_under_limit():
    total = sum(p.stat().st_size for p in zoo.MODELS_DIR.rglob("*") if p.is_file())
    assert total < MAX_ZOO_BYTES, f"zoo models take {total} bytes"


@pytest.mark.parametrize("name,checkpoint", all_checkpoints())
def test_card_matches_weights(name, checkpoint):
    card = zoo.card(name)
    entry = next(c for c in card["checkpoints"] if c["name"] == checkpoint)
    measured = zoo.measure_card_scores(loaded(name, checkpoint))
    assert set(measured) == set(zoo.CARD_KINDS) == set(entry["scores"])
    for kind in zoo.CARD_KINDS:
        for layer, (got_row, card_row) in enumerate(zip(measured[kind], entry["scores"][kind], strict=True)):
            for head, (got, want) in enumerate(zip(got_row, card_row, strict=True)):
                assert abs(got - want) <= TOLERANCE, f"{name} {checkpoint} {kind} L{layer}H{head}: {got} vs card {want}"
    if checkpoint == card["final_checkpoint"]:
        assert card["scores"] == entry["scores"]


def test_card_lists_every_checkpoint():
    for name in EXPECTED:
        assert [c["name"] for c in zoo.card(name)["checkpoints"]] == zoo.checkpoints(name)


def test_induction_2l_final_has_the_circuit():
    model = loaded("induction-2l")
    prev = head_scores(model, "previous_token")
    ind = head_scores(model, "induction")
    assert prev.loc[0].max() >= 0.8
    assert ind.loc[1].max() >= 0.8


def test_induction_2l_circuit_string():
    card = zoo.card("induction-2l")
    scores = card["scores"]
    candidates = zoo.heads_above(scores["previous_token"], 0.5, layer=0) + zoo.heads_above(scores["induction"], 0.5, layer=1)
    assert card["circuits"]["induction_attention_candidates"] == " ".join(candidates)
    parts = card["circuits"]["induction"].split()
    assert set(parts) <= set(candidates)
    assert any(p.startswith("L0H") for p in parts) and any(p.startswith("L1H") for p in parts)
    assert card["circuit_rule"] == zoo_circuits.RULE


def test_induction_2l_checkpoints_span_the_phase_change():
    ckpts = zoo.checkpoints("induction-2l")
    assert len(ckpts) >= 5
    first = loaded("induction-2l", ckpts[0])
    assert head_scores(first, "induction").to_numpy().max() < 0.3
    assert head_scores(first, "previous_token").to_numpy().max() < 0.3
    last = loaded("induction-2l", ckpts[-1])
    assert head_scores(last, "induction").to_numpy().max() >= 0.8


def test_induction_1l_has_no_induction_head():
    model = loaded("induction-1l")
    assert head_scores(model, "induction").to_numpy().max() < 0.3


def test_tokenizer_round_trip():
    model = loaded("induction-2l")
    tokens = model.to_tokens("a b c a b")
    assert tokens.tolist() == [[0, 3, 4, 5, 3, 4]]
    assert model.tokenizer.decode(tokens[0, 1:]) == "a b c a b"
    assert model.cfg.d_vocab == len(model.tokenizer) == 64


def test_unknown_name_lists_models():
    with pytest.raises(ModelSpecError) as info:
        zoo.load("no-such-model")
    for name in EXPECTED:
        assert name in str(info.value)


def test_unknown_checkpoint_lists_checkpoints():
    with pytest.raises(ModelSpecError) as info:
        zoo.load("induction-2l", "step999999")
    for ck in zoo.checkpoints("induction-2l"):
        assert ck in str(info.value)


def test_loaded_model_is_frozen_and_in_eval_mode():
    model = zoo.load("induction-1l")
    assert not model.training
    assert all(not m.training for m in model.modules())
    assert all(not p.requires_grad for p in model.parameters())


def test_loading_twice_gives_identical_weights():
    name = "induction-2l"
    ck = zoo.checkpoints(name)[1]
    a, b = zoo.load(name, ck).state_dict(), zoo.load(name, ck).state_dict()
    assert a.keys() == b.keys()
    assert all(a[k].equal(b[k]) for k in a)


def test_config_json_round_trips():
    for name in EXPECTED:
        config = json.loads((zoo.model_dir(name) / "config.json").read_text())
        model = loaded(name)
        assert model.cfg.n_layers == config["n_layers"] == zoo.card(name)["config"]["n_layers"]
