"""Ablation robustness (several ablations, decided on the worst), the mean-ablation reference, keep=, and gap significance.

The oracles here are written independently of the engine: hand-written
TransformerLens hooks that replace head outputs with the per-position mean of
a hand-cached run, and a simulation of the gap test on synthetic data.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import circuitcheck as cc
from circuitcheck import tasks
from circuitcheck.claims import robustness
from circuitcheck.claims.robustness import GapError
from circuitcheck.errors import CircuitCheckError, ComponentError
from circuitcheck.spec import schema

README_CIRCUIT = "L0H0 L0H2 L1H0 L1H2 L1H3"  # the README's circuit (it leaves out the backup head L1H1)
ABLATIONS = ["resample", "mean", "zero"]


@pytest.fixture(scope="module")
def task(induction_2l):
    return tasks.induction(induction_2l, n_prompts=32, seq_len=20, seed=0)


# Oracle: recovery with hand-written hooks ------------------------------------------------


def _per_position_mean(model, tokens: torch.Tensor, hook: str) -> torch.Tensor:
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens)
    return cache[hook].mean(0, keepdim=True)


def _hand_recovery(model, task, kept_heads: set[tuple[int, int]], replacement, always: set[tuple[int, int]] = frozenset()) -> float:
    """recovery(C) = (m(C) - m(∅)) / (m(M) - m(∅)), every head outside ``kept_heads`` set to ``replacement(hook)`` by hand.

    ``always``: heads intact in every run, ∅ included (what keep= means).
    """
    values = {layer: replacement(f"blocks.{layer}.attn.hook_z") for layer in range(model.cfg.n_layers)}
    with torch.no_grad():
        clean_logits = model(task.clean)

    def run(kept):
        def hook_for(layer):
            def hook(z, hook):
                z = z.clone()
                value = values[layer].expand_as(z)
                for head in range(model.cfg.n_heads):
                    if (layer, head) not in kept:
                        z[:, :, head] = value[:, :, head]
                return z

            return hook

        hooks = [(f"blocks.{layer}.attn.hook_z", hook_for(layer)) for layer in range(model.cfg.n_layers)]
        with torch.no_grad():
            logits = model.run_with_hooks(task.clean, fwd_hooks=hooks)
        return float(task.metric(logits, task, clean_logits).mean())

    full = float(task.metric(clean_logits, task, clean_logits).mean())
    empty = run(set(always))
    return (run(set(kept_heads) | set(always)) - empty) / (full - empty)


def _heads(text: str) -> set[tuple[int, int]]:
    return {(c.layer, c.head) for c in cc.Circuit.parse(text).components}


# The mean reference ------------------------------------------------------------------------


def test_mean_ablation_averages_over_the_corrupted_inputs_by_default(induction_2l, task):
    result = cc.check_sufficient(README_CIRCUIT, model=induction_2l, task=task, ablation="mean")
    expected = _hand_recovery(induction_2l, task, _heads(README_CIRCUIT), lambda hook: _per_position_mean(induction_2l, task.corrupt, hook))
    assert result.value == pytest.approx(expected, abs=1e-4)
    assert "corrupted inputs" in result.parameters["ablation_detail"]
    assert any("per-position mean over the task's corrupted inputs" in note for note in result.notes)


def test_mean_clean_is_the_old_clean_input_reference_and_differs(induction_2l, task):
    old = cc.check_sufficient(README_CIRCUIT, model=induction_2l, task=task, ablation="mean(clean)")
    expected = _hand_recovery(induction_2l, task, _heads(README_CIRCUIT), lambda hook: _per_position_mean(induction_2l, task.clean, hook))
    assert old.value == pytest.approx(expected, abs=1e-4)
    assert "clean inputs being measured" in old.parameters["ablation_detail"]
    new = cc.check_sufficient(README_CIRCUIT, model=induction_2l, task=task, ablation="mean")
    assert abs(new.value - old.value) > 1e-3


def test_a_tasks_reference_set_is_what_mean_ablation_averages_over(induction_2l, task):
    reference = cc.tasks.induction(induction_2l, n_prompts=48, seq_len=20, seed=7).corrupt
    with_reference = tasks.Task(clean=task.clean, corrupt=task.corrupt, metric=task.metric, name="induction", reference=reference)
    result = cc.check_sufficient(README_CIRCUIT, model=induction_2l, task=with_reference, ablation="mean")
    expected = _hand_recovery(induction_2l, with_reference, _heads(README_CIRCUIT), lambda hook: _per_position_mean(induction_2l, reference, hook))
    assert result.value == pytest.approx(expected, abs=1e-4)
    assert "reference set (48 inputs)" in result.parameters["ablation_detail"]
    over_corrupt = cc.check_sufficient(README_CIRCUIT, model=induction_2l, task=with_reference, ablation="mean(corrupt)")
    plain = cc.check_sufficient(README_CIRCUIT, model=induction_2l, task=task, ablation="mean")
    assert over_corrupt.value == pytest.approx(plain.value, abs=1e-6)


def test_an_unknown_mean_set_is_an_error_naming_the_valid_ones():
    with pytest.raises(CircuitCheckError, match="mean ablation over 'test' is not valid: valid sets are reference, corrupt, clean"):
        cc.ablation.mean("test")
    with pytest.raises(CircuitCheckError, match=r"unknown ablation 'mean\(train\)'"):
        cc.ablation.parse("mean(train)")


# Several ablations, decided on the worst -----------------------------------------------------


def _separately(check, circuit, model, task, names, **kwargs):
    return [check(circuit, model=model, task=task, ablation=name, **kwargs) for name in names]


@pytest.mark.parametrize(
    "check, thresholds",
    [
        (cc.check_necessary, {"min_drop": 0.9}),
        (cc.check_sufficient, {"min_recovery": 0.95}),
        (cc.check_sufficient, {"min_recovery": 0.5}),
        (cc.check_necessary, {"max_drop": 1.2}),
    ],
)
def test_the_worst_ablation_decides_as_running_each_ablation_separately_would(induction_2l, task, check, thresholds):
    alone = _separately(check, README_CIRCUIT, induction_2l, task, ABLATIONS, **thresholds)
    together = check(README_CIRCUIT, model=induction_2l, task=task, ablation=ABLATIONS, **thresholds)
    assert together.passed == all(r.passed for r in alone)
    # The deciding ablation, chosen by hand: a failing one first, then the one whose bound clears the threshold by least.
    (low, high) = (thresholds.get(next(k for k in thresholds if k.startswith("min")), None) if any(k.startswith("min") for k in thresholds) else None,
                   thresholds.get(next(k for k in thresholds if k.startswith("max")), None) if any(k.startswith("max") for k in thresholds) else None)
    slack = [(r.ci_low - low) if low is not None else (high - r.ci_high) for r in alone]
    worst = min(range(3), key=lambda i: (alone[i].passed, slack[i]))
    assert together.parameters["deciding_ablation"] == ABLATIONS[worst]
    assert (together.value, together.ci_low, together.ci_high) == (alone[worst].value, alone[worst].ci_low, alone[worst].ci_high)
    table = together.evidence["ablations"]
    assert list(table["ablation"]) == ABLATIONS
    assert np.allclose(table["value"], [r.value for r in alone]) and np.allclose(table["ci_low"], [r.ci_low for r in alone])
    assert list(table["verdict"]) == [("held" if r.passed else "failed") for r in alone]
    assert list(table["decided the claim"]) == [i == worst for i in range(3)]
    assert together.notes[0].startswith(f"decided on {ABLATIONS[worst]} ablation, the worst of resample, mean, zero")
    assert f"under {ABLATIONS[worst]} ablation" in together.decided_on
    assert together.claim.endswith("under resample, mean and zero ablation")


def test_the_readme_circuits_minimality_fails_under_resample_mean_and_zero_and_shows_the_mean_value(induction_2l, task):
    alone = _separately(cc.check_minimal, README_CIRCUIT, induction_2l, task, ABLATIONS, min_contribution=0.05)
    together = cc.check_minimal(README_CIRCUIT, model=induction_2l, task=task, ablation=ABLATIONS, min_contribution=0.05)
    assert not together.passed and not alone[1].passed
    row = together.evidence["ablations"].set_index("ablation").loc["mean"]
    assert row["value"] == pytest.approx(alone[1].value) and row["verdict"] == "failed"
    assert "corrupted inputs" in row["replaced by"]
    message = together.message()
    assert "mean " + cc.claims.format.number(alone[1].value) in message  # the lab note shows the mean-ablation value
    assert f"decided on {together.parameters['deciding_ablation']} ablation" in message
    # every ablation's own tables travel with it
    assert any(key.endswith("(mean)") for key in together.evidence) or together.parameters["deciding_ablation"] == "mean"


def test_assert_raises_the_lab_note_naming_the_deciding_ablation(induction_2l, task):
    with pytest.raises(cc.CircuitAssertionError, match=r"decided on (mean|zero) ablation, the worst of resample, mean, zero"):
        cc.assert_minimal(README_CIRCUIT, model=induction_2l, task=task, ablation=ABLATIONS, min_contribution=0.05)


def test_one_ablation_in_a_list_gives_the_plain_result(induction_2l, task):
    listed = cc.check_necessary(README_CIRCUIT, model=induction_2l, task=task, ablation=["zero"])
    plain = cc.check_necessary(README_CIRCUIT, model=induction_2l, task=task, ablation="zero")
    assert listed.to_dict() == plain.to_dict()


def test_an_empty_or_repeated_ablation_list_is_an_error(induction_2l, task):
    with pytest.raises(CircuitCheckError, match=r"ablation=\[\] names no ablation"):
        cc.check_necessary(README_CIRCUIT, model=induction_2l, task=task, ablation=[])
    with pytest.raises(CircuitCheckError, match="names mean more than once"):
        cc.check_necessary(README_CIRCUIT, model=induction_2l, task=task, ablation=["mean", "zero", "mean"])


def test_spec_files_take_a_list_of_ablations():
    assert schema.ablation(["resample", "mean", "mean(corrupt)", "noise(0.5)"]) == ["resample", "mean", "mean(corrupt)", "noise(0.5)"]
    with pytest.raises(schema.Bad, match="more than once"):
        schema.ablation(["mean", "mean"])
    with pytest.raises(schema.Bad, match="names no ablation"):
        schema.ablation([])


# keep= -----------------------------------------------------------------------------------------


def test_keep_mlp_leaves_every_mlp_intact_outside_the_circuit(random_model):
    g = torch.Generator().manual_seed(3)
    clean, corrupt = torch.randint(3, 64, (48, 7), generator=g), torch.randint(3, 64, (48, 7), generator=g)
    # KL to the clean output: 0 for the full model, clearly above it with heads zeroed (a significant gap)
    task = tasks.from_tokens(clean, corrupt, metric=cc.metrics.kl_to_clean(-1), d_vocab=64)
    circuit = "L0H1 L1H2"
    result = cc.check_sufficient(circuit, model=random_model, task=task, ablation="zero", keep="mlp")
    # by hand: zero every head output outside the circuit; MLPs run untouched
    expected = _hand_recovery(random_model, task, _heads(circuit), lambda hook: torch.zeros(1, 1, 1, 1))
    assert result.value == pytest.approx(expected, abs=1e-4)
    assert result.parameters["keep"] == "L0.mlp L1.mlp"
    without_keep = cc.check_sufficient(circuit, model=random_model, task=task, ablation="zero")
    assert abs(without_keep.value - result.value) > 1e-3


def test_kept_components_stay_intact_in_every_run_including_the_fully_ablated_one(induction_2l, task):
    kept = cc.check_sufficient("L0H2 L1H3", model=induction_2l, task=task, keep=["L0H0", "L1H0"])
    expected = _hand_recovery(induction_2l, task, _heads("L0H2 L1H3"), lambda hook: _corrupt_run(induction_2l, task, hook),
                              always=_heads("L0H0 L1H0"))
    assert kept.value == pytest.approx(expected, abs=1e-4)
    assert any("kept intact outside the circuit: L0H0 L1H0" in note for note in kept.notes)


def _corrupt_run(model, task, hook):
    with torch.no_grad():
        _, cache = model.run_with_cache(task.corrupt)
    return cache[hook]


def test_a_kept_component_inside_the_circuit_is_an_error(induction_2l, task):
    with pytest.raises(CircuitCheckError, match="L1H3 is in the circuit and also kept intact by keep="):
        cc.check_sufficient("L0H2 L1H3", model=induction_2l, task=task, keep="L1H3")
    with pytest.raises(CircuitCheckError, match="L1H3 is in the circuit and also kept intact"):
        cc.check_necessary("L1H3", model=induction_2l, task=task, keep="heads")


def test_bad_keep_values_are_errors_naming_what_is_valid(induction_2l, task):
    with pytest.raises(ComponentError, match="'mlps please' is neither a component type \\(mlp, heads\\) nor a valid component"):
        cc.check_sufficient("L1H3", model=induction_2l, task=task, keep="mlps please")
    with pytest.raises(CircuitCheckError, match="the model is attention-only, it has no MLPs to keep"):
        cc.check_sufficient("L1H3", model=induction_2l, task=task, keep="mlp")
    with pytest.raises(ComponentError, match="cannot be kept"):
        cc.check_sufficient("L1H3", model=induction_2l, task=task, keep="L1H0.q")


# Gap significance --------------------------------------------------------------------------------


def test_tiny_noise_necessity_of_the_readme_circuit_is_an_error_about_the_gap(induction_2l, task):
    # Before: drop 5.1 [-30.1, 27.3], a number over a gap of about 3e-5.
    with pytest.raises(GapError) as error:
        cc.check_necessary(README_CIRCUIT, model=induction_2l, task=task, ablation="noise(1e-3)")
    text = str(error.value)
    assert "the gap m(M) - m(∅) on task 'induction' with noise(0.001) ablation" in text
    assert "95% interval [" in text and "includes zero" in text
    assert "resample, mean or zero" in text and "more examples" in text
    assert isinstance(error.value, CircuitCheckError) and not isinstance(error.value, AssertionError)


def test_a_gap_error_in_one_of_several_ablations_is_an_error(induction_2l, task):
    with pytest.raises(GapError, match=r"noise\(0.001\) ablation"):
        cc.check_sufficient(README_CIRCUIT, model=induction_2l, task=task, ablation=["resample", "noise(1e-3)"])


def test_the_gap_test_refuses_most_zero_gaps_and_accepts_clear_ones_in_simulation():
    rng = np.random.default_rng(0)
    refused_null, refused_clear = 0, 0
    trials = 200
    for trial in range(trials):
        base = rng.normal(size=32)
        null = base + rng.normal(scale=1.0, size=32)  # true gap 0
        clear = base + 1.0 + rng.normal(scale=1.0, size=32)  # true gap 1 sd: about 5.7 standard errors
        for high, counter in ((null, "null"), (clear, "clear")):
            try:
                robustness.require_gap(high, base, confidence=0.95, seed=trial, ablation="zero", task="sim")
            except GapError:
                if counter == "null":
                    refused_null += 1
                else:
                    refused_clear += 1
    # A 95% interval covers the true gap 0 about 95% of the time (a percentile bootstrap on 32 examples runs a little narrow).
    assert refused_null / trials >= 0.88
    assert refused_clear == 0


def test_an_exactly_zero_gap_is_still_named_a_zero_gap():
    same = np.linspace(0, 1, 8)
    with pytest.raises(GapError, match="zero gap: the full model and the fully ablated model score the same mean metric"):
        robustness.require_gap(same, same.copy(), confidence=0.95, seed=0, ablation="zero", task="t")


def test_a_spec_claim_with_several_ablations_runs_and_reports_each(pytester):
    import json
    import textwrap

    (pytester.path / "robust.circuit.yaml").write_text(textwrap.dedent("""\
        model: zoo:induction-2l
        task:
          name: induction
          n_prompts: 8
          seq_len: 10
        circuits:
          readme: L0H0 L0H2 L1H0 L1H2 L1H3
        claims:
          - kind: necessary
            circuit: readme
            min_drop: 0.5
            ablation: [resample, mean, zero]
        """))
    result = pytester.runpytest("-v", "--circuitcheck-json=out.json")
    result.assert_outcomes(passed=1)
    (test,) = json.loads((pytester.path / "out.json").read_text())["tests"]
    (claim,) = test["claims"]
    assert claim["parameters"]["ablation"] == "resample, mean, zero"
    assert claim["parameters"]["deciding_ablation"] in ABLATIONS
    assert claim["evidence"]["ablations"]["data"] and len(claim["evidence"]["ablations"]["data"]) == 3
