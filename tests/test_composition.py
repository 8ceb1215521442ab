"""QK/OV circuits, copying scores and composition scores, checked against TransformerLens."""

import json

import pytest
import torch

from circuitcheck import CircuitAssertionError, ComponentError
from circuitcheck.claims.attribution import assert_composition, assert_copying_head, check_composition
from circuitcheck.engine.composition import (
    composition_score,
    composition_scores,
    composition_tensor,
    copying_score,
    copying_scores,
    eigenvalue_copying_score,
    ov_circuit,
    qk_circuit,
    random_composition_baseline,
)

from conftest import build_native


@pytest.mark.parametrize("kind", ["Q", "K", "V"])
def test_composition_equals_transformer_lens(induction_2l, random_model, kind):
    for model in (induction_2l, random_model):
        expected = model.all_composition_scores(kind).scores
        torch.testing.assert_close(composition_tensor(model, kind.lower()), expected, atol=1e-5, rtol=0)
        frame = composition_scores(model, kind.lower())
        assert frame.loc["L0H1", "L1H3"] == pytest.approx(float(expected[0, 1, 1, 3]), abs=1e-5)
        assert composition_score(model, "L0H1", "L1H3", kind) == pytest.approx(float(expected[0, 1, 1, 3]), abs=1e-5)
        assert frame.loc["L1H0", "L0H0":"L1H3"].isna().all()  # no receiver at or before the sender's layer


def test_circuits_equal_the_dense_products(induction_2l):
    attn = induction_2l.blocks[1].attn
    W_E, W_U = induction_2l.W_E, induction_2l.W_U
    torch.testing.assert_close(ov_circuit(induction_2l, 1, 2).AB, W_E @ attn.W_V[2] @ attn.W_O[2] @ W_U, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(qk_circuit(induction_2l, 1, 2).AB, W_E @ attn.W_Q[2] @ attn.W_K[2].T @ W_E.T, atol=1e-4, rtol=1e-4)
    dense = (W_E @ attn.W_V[2] @ attn.W_O[2] @ W_U).double()
    assert copying_score(induction_2l, 1, 2) == pytest.approx(eigenvalue_copying_score(dense), abs=1e-4)


def test_copying_score_of_identity_like_and_negated_ov():
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(12, 3, generator=generator)
    assert eigenvalue_copying_score(a @ a.T) == pytest.approx(1.0, abs=1e-6)
    assert eigenvalue_copying_score(-(a @ a.T)) == pytest.approx(-1.0, abs=1e-6)
    assert eigenvalue_copying_score(torch.eye(5)) == pytest.approx(1.0)
    rotation = torch.tensor([[0.0, -1.0], [1.0, 0.0]])  # eigenvalues ±i: no copying
    assert eigenvalue_copying_score(rotation) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="square"):
        eigenvalue_copying_score(torch.ones(2, 3))

    # a model whose OV circuit is W_E A A^T W_E^T (W_O = W_V^T, W_U = W_E^T): PSD, so the head copies
    model = build_native(n_layers=1, n_heads=2, d_model=16, d_vocab=20, attn_only=True, seed=1)
    attn = model.blocks[0].attn
    with torch.no_grad():
        attn.o.weight.copy_(attn.v.weight.T)  # nn.Linear weights are [out, in]: W_O[h] = W_V[h]^T
        model.unembed.weight.copy_(model.embed.weight)
    torch.testing.assert_close(model.W_U, model.W_E.T)
    assert copying_score(model, 0, 1) == pytest.approx(1.0, abs=1e-4)
    with torch.no_grad():
        attn.o.weight.mul_(-1)
    assert copying_score(model, 0, 1) == pytest.approx(-1.0, abs=1e-4)
    assert (copying_scores(model) < -0.99).all().all()


def test_the_previous_token_heads_k_compose_with_the_induction_head_above_random(induction_2l):
    baseline = random_composition_baseline(induction_2l, "k", seed=0)
    for sender in ("L0H0", "L0H2"):
        k_score = composition_score(induction_2l, sender, "L1H0", "k")
        assert k_score > baseline.quantile_value
        assert composition_score(induction_2l, sender, "L1H0.q") < k_score  # Q-composition is lower
    result = assert_composition("L0H2", "L1H0.k", above_random=True, model=induction_2l)
    assert result.kind == "composition" and result.passed
    assert result.parameters["random_quantile_value"] == pytest.approx(baseline.quantile_value)
    assert result.evidence["k_composition"].shape == (8, 8)
    json.dumps(result.to_dict())
    with pytest.raises(CircuitAssertionError, match="not above its 95% quantile"):
        assert_composition("L0H2", "L1H0", "q", above_random=True, model=induction_2l)


def test_random_baseline_is_seeded(induction_2l):
    a = random_composition_baseline(induction_2l, "k", n_samples=50, seed=3)
    b = random_composition_baseline(induction_2l, "k", n_samples=50, seed=3)
    c = random_composition_baseline(induction_2l, "k", n_samples=50, seed=4)
    assert a.mean == b.mean and a.mean != c.mean
    assert 0 < a.mean < a.quantile_value < 1 and a.n_samples == 50


def test_composition_errors(induction_2l):
    with pytest.raises(ComponentError, match="not after sender L1H0"):
        composition_score(induction_2l, "L1H0", "L1H2", "k")
    with pytest.raises(ComponentError, match="not after sender L1H0"):
        composition_score(induction_2l, "L1H0", "L0H2", "k")
    with pytest.raises(ComponentError, match="head 7 does not exist"):
        composition_score(induction_2l, "L0H7", "L1H0", "k")
    with pytest.raises(ComponentError, match="layer 3 does not exist"):
        composition_score(induction_2l, (0, 0), (3, 0), "k")
    with pytest.raises(ValueError, match="say which composition"):
        composition_score(induction_2l, "L0H0", "L1H0")
    with pytest.raises(ValueError, match="must agree"):
        composition_score(induction_2l, "L0H0", "L1H0.q", "k")
    with pytest.raises(ValueError, match="'q', 'k' or 'v'"):
        composition_score(induction_2l, "L0H0", "L1H0", "x")
    with pytest.raises(ComponentError, match="not an attention head"):
        composition_score(induction_2l, "L0.attn", "L1H0", "k")
    with pytest.raises(ComponentError, match="layer 2 does not exist"):
        copying_score(induction_2l, 2, 0)
    with pytest.raises(ValueError, match="above_random"):
        check_composition("L0H0", "L1H0.k", model=induction_2l)


def test_copying_head_claims(induction_2l):
    scores = copying_scores(induction_2l)
    (layer, head) = scores.stack().idxmax()
    result = assert_copying_head(layer, head, min_score=0.8, model=induction_2l)
    assert result.kind == "copying_head" and result.value == pytest.approx(scores.loc[layer, head])
    json.dumps(result.to_dict())
    with pytest.raises(CircuitAssertionError, match="is a copying head"):
        assert_copying_head(layer, head, min_score=0.999, model=induction_2l)
