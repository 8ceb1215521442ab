"""Completeness (max over K of |recovery(C \\ K) - recovery(M \\ K)|) and faithfulness both ways, against brute force."""

from __future__ import annotations

import itertools

import pytest
import torch

import circuitcheck as cc
from circuitcheck.claims import subsets
from circuitcheck.errors import CircuitAssertionError
from circuitcheck.model import tasks

SIX = "L0H0 L0H2 L1H0 L1H1 L1H2 L1H3"
HEADS = [(l, h) for l in range(2) for h in range(4)]


@pytest.fixture(scope="module")
def small_task(induction_2l):
    return tasks.induction(induction_2l, n_prompts=8, seq_len=8, seed=4)


@pytest.fixture(scope="module")
def default_task(induction_2l):
    return tasks.induction(induction_2l)


def brute_metric(model, task, ablated: set) -> float:
    """Mean metric with the ``ablated`` heads reading their corrupted-run z (plain TransformerLens hooks)."""
    _, corrupt = model.run_with_cache(task.corrupt, names_filter=lambda name: name.endswith("hook_z"))

    def hook_for(layer):
        def hook(z, hook):
            z = z.clone()
            for head in range(model.cfg.n_heads):
                if (layer, head) in ablated:
                    z[:, :, head] = corrupt[f"blocks.{layer}.attn.hook_z"][:, :, head]
            return z
        return hook

    with torch.no_grad():
        logits = model.run_with_hooks(task.clean, fwd_hooks=[(f"blocks.{l}.attn.hook_z", hook_for(l)) for l in range(model.cfg.n_layers)])
    return float(task.metric(logits, task).float().mean())


def brute_incompleteness(model, task, circuit):
    full = brute_metric(model, task, set())
    empty = brute_metric(model, task, set(HEADS))

    def recovery(ablated):
        return (brute_metric(model, task, ablated) - empty) / (full - empty)

    outside = set(HEADS) - set(circuit)
    scores = {}
    for r in range(len(circuit) + 1):
        for k in itertools.combinations(circuit, r):
            scores[frozenset(k)] = abs(recovery(outside | set(k)) - recovery(set(k)))
    return scores


def test_incompleteness_equals_brute_force_over_every_k(induction_2l, small_task):
    circuit = [(0, 0), (0, 2), (1, 0), (1, 3)]
    expected = brute_incompleteness(induction_2l, small_task, circuit)
    result = cc.check_complete("L0H0 L0H2 L1H0 L1H3", model=induction_2l, task=small_task, max_incompleteness=1.0)
    worst = max(expected, key=expected.get)
    assert result.value == pytest.approx(expected[worst], abs=1e-4)
    table = result.evidence["completeness"]
    assert table["K"].iloc[0] == (" ".join(f"L{l}H{h}" for l, h in sorted(worst)) or "∅")
    for row in table.itertuples():
        k = frozenset() if row.K == "∅" else frozenset((int(c[1]), int(c[3])) for c in row.K.split())
        assert row.incompleteness == pytest.approx(expected[k], abs=1e-4)
    assert result.ci_high >= table["ci_high"].iloc[0] - 1e-9  # the max's interval is at least the worst K's own


def test_greedy_completeness_beyond_exact_size_reports_a_k_it_measured(induction_2l, small_task, monkeypatch):
    circuit = [(0, 0), (0, 2), (1, 0), (1, 3)]
    expected = brute_incompleteness(induction_2l, small_task, circuit)
    monkeypatch.setattr(subsets, "MAX_EXACT_PLAYERS", 2)
    result = cc.check_complete("L0H0 L0H2 L1H0 L1H3", max_k=2, model=induction_2l, task=small_task, max_incompleteness=1.0)
    assert any("greedily" in note for note in result.notes)
    for row in result.evidence["completeness"].itertuples():
        k = frozenset() if row.K == "∅" else frozenset((int(c[1]), int(c[3])) for c in row.K.split())
        assert len(k) <= 2 or k == frozenset(circuit)
        assert row.incompleteness == pytest.approx(expected[k], abs=1e-4)
    assert result.value <= max(expected.values()) + 1e-6


def test_a_circuit_without_its_backup_heads_is_incomplete_and_the_six_head_circuit_is_complete(induction_2l, default_task):
    with pytest.raises(CircuitAssertionError, match="is complete for induction"):
        cc.assert_complete("L0H0 L0H2 L1H0 L1H3", max_incompleteness=0.2, model=induction_2l, task=default_task)
    four = cc.check_complete("L0H0 L0H2 L1H0 L1H3", model=induction_2l, task=default_task)
    assert four.value == pytest.approx(0.573, abs=0.002)
    five = cc.check_complete("L0H0 L0H2 L1H0 L1H2 L1H3", max_incompleteness=0.2, model=induction_2l, task=default_task)
    assert not five.passed and five.value == pytest.approx(0.368, abs=0.002)
    assert any("a path for the task that the circuit lacks" in note for note in five.notes)
    six = cc.assert_complete(SIX, max_incompleteness=0.2, model=induction_2l, task=default_task)
    assert six.value == pytest.approx(0.095, abs=0.002) and six.ci_high <= 0.2
    assert six.evidence["completeness"]["K"].iloc[0] == "L0H0"
    assert six.decided_on == "upper bound"


def test_completeness_rejects_a_bad_threshold(induction_2l, small_task):
    with pytest.raises(ValueError, match="max_incompleteness=-0.1 is not valid"):
        cc.check_complete("L0H0", max_incompleteness=-0.1, model=induction_2l, task=small_task)


def test_faithfulness_fails_under_and_over_recovery_that_sufficiency_lets_pass(induction_2l, default_task):
    under = cc.check_faithful("L0H0 L0H2 L1H0 L1H3", max_error=0.05, model=induction_2l, task=default_task)
    assert not under.passed and under.value == pytest.approx(1 - 0.901, abs=0.002)
    assert "under-recovers" in under.notes[0]
    # zero ablation: the six-head circuit recovers more than the model (measured 1.027)
    assert cc.check_sufficient(SIX, min_recovery=0.95, ablation="zero", model=induction_2l, task=default_task).passed
    over = cc.check_faithful(SIX, max_error=0.01, ablation="zero", model=induction_2l, task=default_task)
    assert not over.passed and over.ci_high > 0.01 and "over-recovers" in over.notes[0]
    assert over.evidence["faithfulness"]["recovery"].iloc[0] > 1
    held = cc.assert_faithful(SIX, max_error=0.1, model=induction_2l, task=default_task)
    assert held.decided_on == "upper bound" and held.ci_high <= 0.1


def test_completeness_and_faithfulness_claims_are_drawn_in_their_report_section(induction_2l, small_task, tmp_path):
    import json
    import re
    import sys

    from circuitcheck import report

    common = {"model": induction_2l, "task": small_task}
    claims = [cc.check_complete("L0H0 L1H3", **common), cc.check_faithful("L0H0 L1H3", **common),
              cc.check_minimal("L0H0 L1H3", method="ioi", **common)]
    document = report.new_document({"python": sys.version.split()[0]})
    document["complete"] = True
    document["tests"] = [{"nodeid": "t::c", "outcome": "failed", "duration": 1.0, "claims": [c.to_dict() for c in claims]}]
    html = report.write_html(tmp_path / "report.html", json.loads(json.dumps(document))).read_text()
    found = re.search(r'<section id="completeness">(.*?)</section>', html, re.S).group(1)
    assert found.count("<svg") == 2 and "K = " in found and "|1 − recovery|" in found
    assert "incompleteness(C) = max over K" in found  # the kind's definition from the registry
    assert "other" not in re.findall(r'<section id="(\w+)">', html)
