"""Minimality by leave-one-out, IOI-style and Shapley, against brute force written here from the definitions.

The brute force runs the model once per subset with plain TransformerLens hooks
(resample ablation: a head outside the kept set reads its corrupted-run
``hook_z``), independently of the batched engine.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

import circuitcheck as cc
from circuitcheck.claims import minimality, subsets
from circuitcheck.errors import CircuitAssertionError
from circuitcheck.model import tasks

SIX = "L0H0 L0H2 L1H0 L1H1 L1H2 L1H3"  # both backup heads: L1H1 and L1H2 back each other up


@pytest.fixture(scope="module")
def small_task(induction_2l):
    return tasks.induction(induction_2l, n_prompts=8, seq_len=8, seed=3)


@pytest.fixture(scope="module")
def default_task(induction_2l):
    return tasks.induction(induction_2l)


def heads_of(text: str) -> list[tuple[int, int]]:
    return [(int(h[1]), int(h[3])) for h in text.split()]


def brute_metric(model, task, kept: set[tuple[int, int]]) -> float:
    """Mean metric with only ``kept`` heads intact (every other head's z from the corrupted run)."""
    _, corrupt = model.run_with_cache(task.corrupt, names_filter=lambda name: name.endswith("hook_z"))

    def hook_for(layer):
        def hook(z, hook):
            z = z.clone()
            for head in range(model.cfg.n_heads):
                if (layer, head) not in kept:
                    z[:, :, head] = corrupt[f"blocks.{layer}.attn.hook_z"][:, :, head]
            return z
        return hook

    with torch.no_grad():
        logits = model.run_with_hooks(task.clean, fwd_hooks=[(f"blocks.{l}.attn.hook_z", hook_for(l)) for l in range(model.cfg.n_layers)])
    return float(task.metric(logits, task).float().mean())


@pytest.fixture(scope="module")
def brute_recovery(induction_2l, small_task):
    """recovery(S) for every subset S of the five-head circuit, one forward each."""
    circuit = heads_of("L0H0 L0H2 L1H0 L1H1 L1H2")
    everything = {(l, h) for l in range(2) for h in range(4)}
    full = brute_metric(induction_2l, small_task, everything)
    empty = brute_metric(induction_2l, small_task, set())
    values = {}
    for r in range(len(circuit) + 1):
        for kept in itertools.combinations(circuit, r):
            values[frozenset(kept)] = (brute_metric(induction_2l, small_task, set(kept)) - empty) / (full - empty)
    return circuit, values


def brute_scores(circuit, recovery, method: str) -> dict:
    whole = frozenset(circuit)
    n = len(circuit)
    out = {}
    for v in circuit:
        others = [u for u in circuit if u != v]
        if method == "leave-one-out":
            out[v] = recovery[whole] - recovery[whole - {v}]
        elif method == "ioi":
            out[v] = max(recovery[whole - set(k)] - recovery[whole - set(k) - {v}]
                         for r in range(n) for k in itertools.combinations(others, r))
        else:
            out[v] = sum(math.factorial(r) * math.factorial(n - r - 1) / math.factorial(n)
                         * (recovery[frozenset(s) | {v}] - recovery[frozenset(s)])
                         for r in range(n) for s in itertools.combinations(others, r))
    return {f"L{l}H{h}": value for (l, h), value in out.items()}


@pytest.mark.parametrize("method", minimality.METHODS)
def test_each_method_equals_brute_force_over_every_subset(induction_2l, small_task, brute_recovery, method):
    circuit, recovery = brute_recovery
    result = cc.check_minimal("L0H0 L0H2 L1H0 L1H1 L1H2", method=method, model=induction_2l, task=small_task, min_contribution=0.0)
    table = result.evidence["minimality"].set_index("component")
    expected = brute_scores(circuit, recovery, method)
    for component, value in expected.items():
        assert table.loc[component, "contribution"] == pytest.approx(value, abs=1e-4)
        assert table.loc[component, "ci_low"] <= table.loc[component, "contribution"] <= table.loc[component, "ci_high"]


def test_the_ioi_method_reports_a_k_that_attains_the_score(induction_2l, small_task, brute_recovery):
    circuit, recovery = brute_recovery
    table = cc.check_minimal("L0H0 L0H2 L1H0 L1H1 L1H2", method="ioi", model=induction_2l, task=small_task).evidence["minimality"]
    whole = frozenset(circuit)
    for row in table.itertuples():
        v = heads_of(row.component)[0]
        k = set() if row.K == "∅" else set(heads_of(row.K))
        assert v not in k
        assert recovery[whole - k] - recovery[whole - k - {v}] == pytest.approx(row.contribution, abs=1e-4)


def test_greedy_ioi_beyond_exact_size_scores_its_k_and_never_beats_the_exhaustive_max(induction_2l, small_task, brute_recovery, monkeypatch):
    circuit, recovery = brute_recovery
    monkeypatch.setattr(subsets, "MAX_EXACT_PLAYERS", 3)
    result = cc.check_minimal("L0H0 L0H2 L1H0 L1H1 L1H2", method="ioi", max_k=2, model=induction_2l, task=small_task, min_contribution=0.0)
    exhaustive = brute_scores(circuit, recovery, "ioi")
    whole = frozenset(circuit)
    assert "greedily" in result.notes[0] or any("greedily" in note for note in result.notes)
    for row in result.evidence["minimality"].itertuples():
        v = heads_of(row.component)[0]
        k = set() if row.K == "∅" else set(heads_of(row.K))
        assert len(k) <= 2
        assert row.contribution == pytest.approx(recovery[whole - k] - recovery[whole - k - {v}], abs=1e-4)
        assert row.contribution <= exhaustive[row.component] + 1e-6
        assert row.contribution >= recovery[whole] - recovery[whole - {v}] - 1e-6  # K = ∅ is always a candidate


def test_sampled_shapley_averages_the_sampled_orders_and_its_interval_includes_their_spread(induction_2l, small_task, brute_recovery, monkeypatch):
    circuit, recovery = brute_recovery
    monkeypatch.setattr(subsets, "MAX_EXACT_PLAYERS", 3)
    result = cc.check_minimal("L0H0 L0H2 L1H0 L1H1 L1H2", method="shapley", permutations=6, seed=5,
                              model=induction_2l, task=small_task, min_contribution=0.0)
    orders = np.random.default_rng(5)  # the same seeded orders, drawn here the way the definition says
    orders = [orders.permutation(len(circuit)) for _ in range(6)]
    table = result.evidence["minimality"].set_index("component")
    exact = brute_scores(circuit, recovery, "shapley")
    fixed_example_spread = []
    for i, (l, h) in enumerate(circuit):
        marginals = []
        for order in orders:
            before = frozenset(circuit[j] for j in order[: list(order).index(i)])
            marginals.append(recovery[before | {(l, h)}] - recovery[before])
        name = f"L{l}H{h}"
        assert table.loc[name, "contribution"] == pytest.approx(np.mean(marginals), abs=1e-4)
        fixed_example_spread.append(np.std(marginals) / math.sqrt(len(marginals)))
        assert table.loc[name, "ci_low"] <= table.loc[name, "contribution"] <= table.loc[name, "ci_high"]
    widths = (table["ci_high"] - table["ci_low"]).to_numpy()
    # resampling the orders widens the interval to about the orders' own standard error (at least half of 2 x 1.96 se)
    spread = np.array(fixed_example_spread)[[list(table.index).index(f"L{l}H{h}") for l, h in circuit]]
    assert (widths[[list(table.index).index(f"L{l}H{h}") for l, h in circuit]] >= 1.96 * spread - 1e-9).all()
    assert sum(abs(table.loc[k, "contribution"] - v) for k, v in exact.items()) > 0  # sampled, not the exact values


def test_the_two_backup_heads_pass_ioi_and_shapley_minimality_and_fail_leave_one_out_named(induction_2l, default_task):
    ioi = cc.assert_minimal(SIX, min_contribution=0.05, method="ioi", model=induction_2l, task=default_task)
    table = ioi.evidence["minimality"].set_index("component")
    assert table.loc["L1H1", "contribution"] == pytest.approx(0.362, abs=0.002)
    assert table.loc["L1H2", "contribution"] == pytest.approx(0.327, abs=0.002)
    assert table.loc["L1H1", "K"] == "L1H0 L1H2 L1H3"
    shapley = cc.assert_minimal(SIX, min_contribution=0.05, method="shapley", model=induction_2l, task=default_task)
    table = shapley.evidence["minimality"].set_index("component")
    assert table.loc["L1H1", "contribution"] == pytest.approx(0.096, abs=0.002)
    assert table.loc["L1H2", "contribution"] == pytest.approx(0.077, abs=0.002)
    assert sum(table["contribution"]) == pytest.approx(cc.check_sufficient(SIX, model=induction_2l, task=default_task).value, abs=1e-6)
    with pytest.raises(CircuitAssertionError) as info:
        cc.assert_minimal(SIX, min_contribution=0.05, model=induction_2l, task=default_task)
    message = str(info.value)
    assert "L1H1 and L1H2 back each other up: alone -0.01 / -0.01, together 0.07" in message
    assert "method='ioi'" in message
    groups = info.value.result.evidence["redundancy"]
    assert list(groups["group"]) == ["L1H1 L1H2"] and groups["ci_low"].iloc[0] >= 0.05


def test_a_head_that_adds_nothing_fails_every_method(induction_2l, default_task):
    expected = {"leave-one-out": 0.015, "ioi": 0.047, "shapley": 0.008}
    for method, value in expected.items():
        result = cc.check_minimal(SIX + " L0H3", min_contribution=0.05, method=method, model=induction_2l, task=default_task)
        assert not result.passed
        table = result.evidence["minimality"].set_index("component")
        assert table.loc["L0H3", "contribution"] == pytest.approx(value, abs=0.002)
        assert table.loc["L0H3", "ci_low"] < 0.05
        if method != "leave-one-out":
            assert result.evidence["minimality"]["component"].iloc[0] == "L0H3"


def test_claims_on_one_circuit_share_their_runs(induction_2l, small_task, monkeypatch):
    from circuitcheck.engine.patcher import Patcher

    ran = []
    original = Patcher.run
    monkeypatch.setattr(Patcher, "run", lambda self, task, variants, **kw: ran.append(len(variants)) or original(self, task, variants, **kw))
    circuit = "L0H0 L0H2 L1H0 L1H3"
    common = dict(model=induction_2l, task=small_task, seed=11)
    cc.check_minimal(circuit, method="shapley", **common)  # every subset of the circuit
    first = sum(ran)
    assert first == 2 ** 4 - 0  # 16 keep runs (the full model is the cached clean run)
    cc.check_minimal(circuit, method="ioi", **common)
    cc.check_minimal(circuit, **common)
    cc.check_sufficient(circuit, **common)
    assert sum(ran) == first  # nothing ran again
    cc.check_necessary(circuit, **common)
    assert sum(ran) == first + 5  # C ablated and each component ablated alone (∅ was run)
    cc.check_minimal(circuit, ablation="zero", **common)
    assert sum(ran) == first + 5 + 6  # another ablation is another measurement


@pytest.mark.parametrize("bad, match", [
    (dict(method="greedy"), "method='greedy' is not valid: use one of 'leave-one-out', 'ioi', 'shapley'"),
    (dict(permutations=0), "permutations=0 is not valid"),
    (dict(max_k=1.5), "max_k=1.5 is not valid"),
])
def test_bad_minimality_options_name_the_value_and_what_is_valid(induction_2l, small_task, bad, match):
    with pytest.raises(ValueError, match=match.replace("(", r"\(").replace(")", r"\)")):
        cc.check_minimal("L0H0 L1H0", model=induction_2l, task=small_task, **bad)


def test_minimality_results_are_json_safe_with_the_method_and_k(induction_2l, small_task):
    import json

    result = cc.check_minimal("L0H0 L1H0", method="ioi", model=induction_2l, task=small_task)
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert data["evidence"]["minimality"]["columns"] == ["component", "contribution", "ci_low", "ci_high", "K"]
    assert "ioi" in data["claim"] and data["p_value"] is not None
