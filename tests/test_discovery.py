"""Discovery: ``python -m circuitcheck discover`` finds the card's induction circuit and writes a spec that passes.

The cut and the pruning are checked against runs written here (plain
TransformerLens hooks, as in tests/test_curves.py): the cut is the first n
whose recovery is within the tolerance of the best, and no member of the
pruned circuit can go without recovery falling below the target.
"""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import yaml

import circuitcheck as cc
from circuitcheck import tasks
from circuitcheck.__main__ import main
from circuitcheck.claims.discovery import _grid, discover
from circuitcheck.errors import ArgumentError, CircuitCheckError
from circuitcheck.spec import discovered, load_spec

from test_curves import hook_metrics

CARD_TASK = "{name: induction, n_prompts: 32, seq_len: 20}"


@pytest.fixture(scope="module")
def small_task(induction_2l):
    return tasks.induction(induction_2l, n_prompts=16, seq_len=10, seed=0)


def hook_recovery(model, task, heads) -> float:
    full = hook_metrics(model, task, {(layer, head) for layer in range(model.cfg.n_layers) for head in range(model.cfg.n_heads)})
    empty = hook_metrics(model, task, set())
    kept = hook_metrics(model, task, {(c.layer, c.head) for c in heads})
    return float((kept.mean() - empty.mean()) / (full.mean() - empty.mean()))


# The search against runs written here --------------------------------------------------------------


def test_the_cut_is_where_recovery_stops_rising_and_no_member_of_the_pruned_circuit_can_go(induction_2l, small_task):
    found = discover(induction_2l, small_task, method="patching", level="nodes", tolerance=0.02, seed=0)
    ranked = found.curve.ranking.items
    assert found.budget == 8 and found.curve.counts == list(range(9))
    recoveries = [hook_recovery(induction_2l, small_task, ranked[:n]) if n else 0.0 for n in range(9)]
    np.testing.assert_allclose([e.mean for e in found.curve.recovery], recoveries, atol=1e-4)
    best = max(recoveries)
    assert found.best == pytest.approx(best, abs=1e-4)
    assert found.cut == next(n for n, r in enumerate(recoveries) if r >= best - 0.02)
    members = list(found.circuit.components)
    assert set(members) <= set(ranked[: found.cut])
    assert hook_recovery(induction_2l, small_task, members) >= found.target - 1e-4
    for member in members:  # locally minimal: without any one member, recovery falls below the target
        assert hook_recovery(induction_2l, small_task, [m for m in members if m != member]) < found.target + 1e-4, member
    assert found.checks["sufficient"].value == pytest.approx(hook_recovery(induction_2l, small_task, members), abs=1e-4)


def test_the_grid_covers_every_n_up_to_48_then_a_geometric_grid():
    assert _grid(5) == [0, 1, 2, 3, 4, 5]
    grid = _grid(1000)
    assert grid[0] == 0 and grid[1] == 1 and grid[-1] == 1000 and len(grid) <= 50 and grid == sorted(set(grid))


def test_bad_options_are_named(induction_2l, small_task):
    kw = dict(model=induction_2l, task=small_task)
    with pytest.raises(ArgumentError, match="method='acdc'"):
        discover(method="acdc", **kw)
    with pytest.raises(ArgumentError, match="budget=500.*1 to 8 nodes"):
        discover(method="patching", level="nodes", budget=500, **kw)
    with pytest.raises(ArgumentError, match="steps=3 is only for method='eap-ig'"):
        discover(method="eap", steps=3, **kw)
    with pytest.raises(ArgumentError, match="tolerance=1.5"):
        discover(tolerance=1.5, **kw)


# The spec ------------------------------------------------------------------------------------------


def test_the_spec_sets_each_threshold_a_margin_outside_the_measured_bound(induction_2l, small_task, tmp_path):
    found = discover(induction_2l, small_task, method="patching", level="nodes", seed=0)
    text = discovered.spec_text(found, "{name: induction, n_prompts: 16, seq_len: 10}", margin=0.05)
    data = yaml.safe_load(text)
    assert data["model"] == "zoo:induction-2l" and data["circuits"]["found"] == " ".join(map(str, found.circuit.components))
    claims = {claim["kind"]: claim for claim in data["claims"]}
    checks = found.checks
    floor = lambda v: np.floor(v * 100 + 1e-9) / 100  # noqa: E731
    ceil = lambda v: np.ceil(v * 100 - 1e-9) / 100  # noqa: E731
    assert claims["sufficient"]["min_recovery"] == pytest.approx(floor(checks["sufficient"].ci_low - 0.05))
    assert claims["sufficient"]["min_recovery"] <= checks["sufficient"].ci_low - 0.05 + 1e-9
    expected = {
        "necessary": ("min_drop", floor(checks["necessary"].ci_low - 0.05), lambda t: t >= 0.5),
        "faithful": ("max_error", ceil(checks["faithful"].ci_high + 0.05), lambda t: t <= 0.1),
        "complete": ("max_incompleteness", ceil(checks["complete"].ci_high + 0.05), lambda t: t <= 0.2),
        "minimal": ("min_contribution", floor(checks["minimal"].ci_low - 0.05), lambda t: t >= 0.05),
    }
    for kind, (key, threshold, useful) in expected.items():
        if useful(threshold):
            assert claims[kind][key] == pytest.approx(threshold), kind
        else:  # too weak to be the claim its name makes: a comment with the numbers instead
            assert kind not in claims and f"not claimed ({kind})" in text, kind
    assert claims["faithfulness_curve"]["scores"] == "patching" and claims["faithfulness_curve"]["level"] == "nodes"
    # the written file is a valid spec, and is never overwritten
    path = discovered.write_spec(found, tmp_path / "found.circuit.yaml", "{name: induction, n_prompts: 16, seq_len: 10}")
    assert load_spec(path).circuits["found"].components == found.circuit.components
    path.write_text("# my notes\n")
    with pytest.raises(CircuitCheckError, match="never overwrites"):
        discovered.write_spec(found, path, "induction")
    assert path.read_text() == "# my notes\n"
    with pytest.raises(CircuitCheckError, match=r"ends in \.circuit\.yaml"):
        discovered.write_spec(found, tmp_path / "found.yaml", "induction")


def test_discover_on_the_zoo_finds_the_card_circuit_and_its_spec_passes(pytester, capsys):
    out = pytester.path / "found.circuit.yaml"
    status = main(["discover", "zoo:induction-2l", "--task", CARD_TASK, "--method", "eap", "-o", str(out)])
    printed = capsys.readouterr().out
    assert status == 0, printed
    assert "card circuit 'induction' (L0H0 L0H2 L1H0 L1H1 L1H2 L1H3): the same heads and MLPs" in printed
    spec = load_spec(out)
    circuit = spec.circuits["found"]
    heads = {f"L{end.layer}H{end.head}" for edge in circuit.edges for end in (edge.sender, edge.receiver) if end.kind == "head"}
    assert heads == {"L0H0", "L0H2", "L1H0", "L1H1", "L1H2", "L1H3"}
    assert {claim.kind for claim in spec.claims} >= {"sufficient", "faithfulness_curve"}
    result = pytester.runpytest(str(out), "--circuitcheck-json=out.json")
    assert result.ret == 0, result.stdout.str()
    tests = json.loads((pytester.path / "out.json").read_text())["tests"]
    assert tests and all(test["outcome"] == "passed" for test in tests)


def test_the_command_refuses_an_existing_output_and_a_bad_task(tmp_path, capsys):
    out = tmp_path / "mine.circuit.yaml"
    out.write_text("claims: []\n")
    assert main(["discover", "zoo:induction-2l", "--task", "induction", "-o", str(out)]) == 2
    assert "never overwrites" in capsys.readouterr().err and out.read_text() == "claims: []\n"
    assert main(["discover", "zoo:induction-2l", "--task", "copying", "-o", str(tmp_path / "a.circuit.yaml")]) == 2
    assert "'copying' is not a built-in task" in capsys.readouterr().err
    assert main(["discover", "zoo:induction-2l", "--task", "{name: induction, n_prompt: 3}", "-o", str(tmp_path / "b.circuit.yaml")]) == 2
    assert "n_prompt" in capsys.readouterr().err
    assert not (tmp_path / "a.circuit.yaml").exists() and not (tmp_path / "b.circuit.yaml").exists()
