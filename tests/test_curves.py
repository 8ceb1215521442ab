"""Faithfulness curves (CPR, CMD): every point equals an independent measurement, the areas MIB's formula.

Oracles: node circuits are re-run with plain TransformerLens hooks (every head
outside the top n has its ``hook_z`` replaced by the corrupted run's); edge
circuits with TransformerLens 4.3's own ``faithfulness`` (as in
tests/test_edge_circuits.py); the areas with a transcription of MIB's
``evaluate_area_under_curve`` loop; the intervals with a bootstrap written here.
"""

from __future__ import annotations

import json
import math
import random
import textwrap

import numpy as np
import pytest
import torch

import circuitcheck as cc
from circuitcheck import report, tasks
from circuitcheck.claims import curves, stats
from circuitcheck.engine import edges
from circuitcheck.errors import ArgumentError, CircuitAssertionError, ComponentError

from test_edge_circuits import gpt2_mlp, transformer_lens_faithfulness  # noqa: F401 (gpt2_mlp is a fixture)


@pytest.fixture(scope="module")
def task(induction_2l):
    return tasks.induction(induction_2l, n_prompts=12, seq_len=8, seed=3)


def model_task(model, n, seq, seed=0):
    """Random clean and corrupted tokens; the answer is the model's top token on the clean input, the wrong answer its top
    token on the corrupted one (so the clean - corrupted gap is clear on a random model)."""
    g = torch.Generator().manual_seed(seed)
    clean, corrupt = (torch.randint(3, model.cfg.d_vocab, (n, seq), generator=g) for _ in range(2))
    with torch.no_grad():
        answers, wrong = model(clean)[:, -1].argmax(-1), model(corrupt)[:, -1].argmax(-1)
    keep = answers != wrong
    return tasks.from_tokens(clean[keep], corrupt[keep], answers=answers[keep], wrong_answers=wrong[keep], d_vocab=model.cfg.d_vocab)


def head_scores(model, seed=0) -> dict:
    rng = random.Random(seed)
    return {f"L{layer}H{head}": rng.uniform(-1, 1) for layer in range(model.cfg.n_layers) for head in range(model.cfg.n_heads)}


def mib_areas(percentages, faithfulnesses, log_scale=False):
    """MIB's evaluate_area_under_curve, its area loop as the benchmark writes it."""
    area_under, area_from_1 = 0.0, 0.0
    for i in range(len(faithfulnesses) - 1):
        x_1, x_2 = percentages[i], percentages[i + 1]
        if log_scale:
            x_1, x_2 = math.log(x_1), math.log(x_2)
        area_from_1 += (x_2 - x_1) * ((abs(1.0 - faithfulnesses[i]) + abs(1.0 - faithfulnesses[i + 1])) / 2)
        area_under += (x_2 - x_1) * ((faithfulnesses[i] + faithfulnesses[i + 1]) / 2)
    return area_under, area_from_1


def hook_metrics(model, task, kept_heads) -> np.ndarray:
    """Per-example metric with every head not in ``kept_heads`` resample-ablated at ``hook_z`` (plain hooks)."""
    names = [f"blocks.{layer}.attn.hook_z" for layer in range(model.cfg.n_layers)]
    with torch.no_grad():
        _, cache = model.run_with_cache(task.corrupt, names_filter=lambda name: name in names)

        def patch_of(layer):
            def patch(z, hook):
                z = z.clone()
                for head in range(model.cfg.n_heads):
                    if (layer, head) not in kept_heads:
                        z[:, :, head] = cache[names[layer]][:, :, head]
                return z
            return patch

        logits = model.run_with_hooks(task.clean, fwd_hooks=[(name, patch_of(layer)) for layer, name in enumerate(names)])
        return task.metric(logits, task).double().numpy()


# Points and areas against independent computations ---------------------------------------------


def test_node_curve_points_equal_plain_hook_recovery_and_the_areas_equal_mibs_formula(induction_2l, task):
    scores = head_scores(induction_2l)
    counts = [0, 1, 2, 3, 5, 8]
    curve = cc.faithfulness_curve(scores, counts=counts, model=induction_2l, task=task)
    order = sorted(scores, key=lambda label: -abs(scores[label]))
    assert [str(c) for c in curve.ranking.items] == order  # attention-only: the graph's nodes are the 8 heads

    heads = [cc.Component.parse(label) for label in order]
    full = hook_metrics(induction_2l, task, {(c.layer, c.head) for c in heads})
    empty = hook_metrics(induction_2l, task, set())
    recoveries = []
    for n in counts:
        kept = hook_metrics(induction_2l, task, {(c.layer, c.head) for c in heads[:n]})
        recoveries.append((kept.mean() - empty.mean()) / (full.mean() - empty.mean()))
    got = curve.frame()
    np.testing.assert_allclose(got["recovery"], recoveries, atol=1e-4, rtol=0)
    assert list(got["n"]) == counts and list(got["fraction"]) == [n / 8 for n in counts]
    cpr, cmd = mib_areas([n / 8 for n in counts], recoveries)
    assert curve.cpr.mean == pytest.approx(cpr, abs=1e-4) and curve.cmd.mean == pytest.approx(cmd, abs=1e-4)
    # log scale (fractions above 0 only)
    logged = cc.faithfulness_curve(scores, counts=counts[1:], log_scale=True, model=induction_2l, task=task)
    assert logged.cpr.mean == pytest.approx(mib_areas([n / 8 for n in counts[1:]], recoveries[1:], log_scale=True)[0], abs=1e-4)


def test_the_intervals_equal_a_bootstrap_of_the_hook_runs_written_here(induction_2l, task):
    scores = head_scores(induction_2l, seed=1)
    counts = [0, 2, 4, 8]
    curve = cc.faithfulness_curve(scores, counts=counts, model=induction_2l, task=task, seed=7, confidence=0.9)
    heads = [cc.Component.parse(label) for label in sorted(scores, key=lambda label: -abs(scores[label]))]
    full = hook_metrics(induction_2l, task, {(c.layer, c.head) for c in heads})
    empty = hook_metrics(induction_2l, task, set())
    runs = np.stack([hook_metrics(induction_2l, task, {(c.layer, c.head) for c in heads[:n]}) for n in counts])
    n = task.n_examples
    rng = np.random.default_rng(7)
    index = rng.integers(0, n, size=(stats.DEFAULT_RESAMPLES, n))
    cprs, recoveries = [], []
    for rows in index:
        gap = full[rows].mean() - empty[rows].mean()
        r = (runs[:, rows].mean(1) - empty[rows].mean()) / gap
        recoveries.append(r)
        cprs.append(mib_areas([k / 8 for k in counts], list(r))[0])
    low, high = np.quantile(cprs, [0.05, 0.95])
    assert (curve.cpr.low, curve.cpr.high) == pytest.approx((low, high), abs=1e-4)
    point_low = np.quantile(np.array(recoveries)[:, 2], 0.05)
    assert curve.recovery[2].low == pytest.approx(point_low, abs=1e-4)


def test_edge_curve_points_equal_transformer_lens_faithfulness(gpt2_mlp):  # noqa: F811
    task = model_task(gpt2_mlp, n=5, seq=5)
    universe = edges.all_edges(gpt2_mlp, task.seq_len)
    rng = random.Random(5)
    scores = {str(edge): rng.uniform(-1, 1) for edge in universe if edge.sender.kind != "pos_embed"}
    counts = [0, 4, 16, 40, len(universe)]
    curve = cc.faithfulness_curve(scores, counts=counts, model=gpt2_mlp, task=task)
    assert curve.level == "edges" and curve.n_items == len(universe)
    theirs = []
    for n in counts[1:]:
        circuit = curve.circuit(n)
        rows = transformer_lens_faithfulness(gpt2_mlp, task, circuit)
        clean, corrupt, kept = rows[:, :3].mean(0)
        theirs.append((kept - corrupt) / (clean - corrupt))  # circuitcheck's recovery: a ratio of means
    np.testing.assert_allclose(curve.frame()["recovery"][1:], theirs, atol=1e-4, rtol=0)
    assert curve.frame()["recovery"][0] == 0.0
    assert theirs[-1] == pytest.approx(1.0, abs=1e-4)  # every edge kept: the full model
    # the unscored positional-embedding edges rank last, and the notes say so
    assert all(edge.sender.kind == "pos_embed" for edge in curve.ranking.items[len(scores):])
    assert any("have no score" in note for note in curve.ranking.notes)


def test_a_point_equals_check_sufficient_on_the_same_top_n_circuit(induction_2l, task):
    sweep = cc.attribution_sweep(induction_2l, task, method="eap", record=False)
    curve = cc.faithfulness_curve(sweep, counts=[0, 6, 12, 30], model=induction_2l, task=task)
    for n, estimate in zip(curve.counts[1:], curve.recovery[1:]):
        result = cc.check_sufficient(curve.circuit(n), model=induction_2l, task=task, min_recovery=0.0)
        assert result.value == pytest.approx(estimate.mean, abs=1e-9)
        assert (result.ci_low, result.ci_high) == pytest.approx((estimate.low, estimate.high), abs=1e-9)


# Ranking --------------------------------------------------------------------------------------------


def test_ranking_by_magnitude_or_signed_score_and_from_sweeps(induction_2l, task):
    scores = {"L1H0": 0.5, "L0H1": -0.9, "L1H3": 0.1}
    by_size = curves.rank(scores, induction_2l, task)
    assert [str(c) for c in by_size.items[:3]] == ["L0H1", "L1H0", "L1H3"]
    signed = curves.rank(scores, induction_2l, task, absolute=False)
    assert [str(c) for c in signed.items[:3]] == ["L1H0", "L1H3", "L0H1"]
    assert [str(c) for c in by_size.items[3:]] == ["L0H0", "L0H2", "L0H3", "L1H1", "L1H2"]  # unscored: graph order
    sweep = cc.attribution_sweep(induction_2l, task, method="eap", record=False)
    nodes = curves.rank(sweep, induction_2l, task, level="nodes")
    assert nodes.level == "nodes" and "embed" not in [str(c) for c in nodes.items] and len(nodes.items) == 8
    shares = curves._oriented(sweep.nodes())
    labels = sweep.nodes().index
    assert str(nodes.items[0]) == labels[int(np.argmax(np.abs(np.where([l == "embed" for l in labels], 0, shares))))]
    # either direction orients a score as the share of the gap it moves towards the clean run: the signed ranking's
    # best head is a circuit head with a positive share, whether the patch goes into the corrupted or the clean run
    for direction in ("denoise", "noise"):
        exact = cc.patching_sweep(induction_2l, task, what="nodes", direction=direction, record=False)
        ranked = curves.rank(exact, induction_2l, task, absolute=False)
        assert str(ranked.items[0]) in ("L1H0", "L1H1", "L1H2", "L1H3") and ranked.scores[0] > 0.05, direction
        assert ranked.source == "activation patching (exact)"


def test_bad_scores_and_options_are_named(induction_2l, task):
    kw = dict(model=induction_2l, task=task)
    with pytest.raises(ArgumentError, match="mix components and edges"):
        cc.faithfulness_curve({"L0H0": 1.0, "L0H0 -> L1H0.k": 1.0}, **kw)
    with pytest.raises(ComponentError, match="L5H0"):
        cc.faithfulness_curve({"L5H0": 1.0}, **kw)
    with pytest.raises(ComponentError, match="cannot be kept in a node circuit"):
        cc.faithfulness_curve({"L1H0.k": 1.0}, **kw)
    with pytest.raises(ArgumentError, match="'nan'|nan"):
        cc.faithfulness_curve({"L0H0": float("nan")}, **kw)
    with pytest.raises(ArgumentError, match="level='heads'"):
        cc.faithfulness_curve({"L0H0": 1.0}, level="heads", **kw)
    with pytest.raises(ArgumentError, match=r"counts= holds 9"):
        cc.faithfulness_curve({"L0H0": 1.0}, counts=[0, 9], **kw)
    with pytest.raises(ArgumentError, match=r"fractions= holds 1.5"):
        cc.faithfulness_curve({"L0H0": 1.0}, fractions=[0.5, 1.5], **kw)
    with pytest.raises(ArgumentError, match="at least two points"):
        cc.faithfulness_curve({"L0H0": 1.0}, counts=[3], **kw)
    with pytest.raises(ArgumentError, match="log 0"):
        cc.faithfulness_curve({"L0H0": 1.0}, counts=[0, 8], log_scale=True, **kw)
    with pytest.raises(ArgumentError, match="'ablate'.*method"):
        cc.faithfulness_curve("ablate", **kw)
    with pytest.raises(ArgumentError, match="give one threshold"):
        cc.check_faithfulness_curve({"L0H0": 1.0}, **kw)
    with pytest.raises(ArgumentError, match="decides one area"):
        cc.check_faithfulness_curve({"L0H0": 1.0}, min_cpr=0.5, max_cmd=0.5, **kw)


# The claim, the spec and the report -----------------------------------------------------------------


def test_the_claim_is_decided_on_the_bound_of_its_area(induction_2l, task):
    kw = dict(model=induction_2l, task=task, counts=[0, 2, 4, 6, 8])
    scores = "patching"  # exact activation patching of every head
    held = cc.assert_faithfulness_curve(scores, min_cpr=0.2, **kw)
    assert held.passed and held.kind == "faithfulness_curve" and held.decided_on == "lower bound"
    assert held.ci_low >= 0.2 and held.min_value == 0.2
    with pytest.raises(CircuitAssertionError) as info:
        cc.assert_faithfulness_curve(scores, min_cpr=held.ci_low + 0.01, **kw)
    assert "CPR" in str(info.value) and "lower bound" in str(info.value)
    cmd = cc.check_faithfulness_curve(scores, max_cmd=held.value, **kw)
    assert cmd.metric.startswith("CMD") and cmd.decided_on == "upper bound"
    assert cmd.passed == (cmd.ci_high <= held.value)
    assert cmd.value == pytest.approx(1 - held.value, abs=1e-6)  # recovery stays in [0, 1] on this curve: CMD = span - CPR
    assert set(held.evidence) == {"curve", "ranking"}


def test_the_report_draws_the_curve(induction_2l, task):
    result = cc.check_faithfulness_curve("eap", min_cpr=0.1, model=induction_2l, task=task)
    document = report.new_document({})
    document["complete"] = True
    document["tests"] = [{"nodeid": "t.py::test_curve", "outcome": "passed", "duration": 1.0,
                          "claims": [json.loads(json.dumps(result.to_dict()))]}]
    html = report.render_html(document)
    assert '<section id="curves">' in html and 'class="chart curve-chart"' in html
    assert "CPR is the area under it" in html  # the section states the definition
    assert html.count("<circle") >= len(result.evidence["curve"])


def test_a_spec_claim_computes_its_scores_on_the_spec_task(pytester):
    from test_spec import SMALL_TASK, write_spec

    write_spec(pytester, "model: zoo:induction-2l\n" + SMALL_TASK + textwrap.dedent("""
        claims:
          - kind: faithfulness_curve
            scores: eap
            min_cpr: 0.1
          - kind: faithfulness_curve
            scores: {L1H0: 1.0, L0H0: 0.5}
            counts: [0, 1, 2, 8]
            max_cmd: 0.0001
        """))
    result = pytester.runpytest("-v")
    result.stdout.fnmatch_lines(["*faithfulness_curve eap PASSED*", "*faithfulness_curve scores FAILED*"])
