"""How the zoo's recorded circuits are found: attention-score candidates, pruned causally.

Attention patterns alone over-claim: a head can attend like an induction head
and still write nothing that matters. The recorded ``induction`` circuit is
therefore the candidate set (layer-0 previous-token heads and layer-1
induction heads scoring >= 0.5) pruned by IOI-style minimality on
``tasks.induction``: while some component's IOI contribution (max over K of
recovery(C \\ K) - recovery(C \\ (K + v))) has a lower confidence bound below
``MIN_CONTRIBUTION``, the weakest is removed. Leave-one-out would not do:
the backup heads L1H1 and L1H2 each add about 0 given the other, so pruning by
it drops one of them on a difference of noise, and the result misses a
parallel path (it is incomplete). The result is checked to be necessary,
sufficient and complete; training fails loudly if it is not. The card also
records the redundancy groups leave-one-out finds and, for each, the circuit
without one of its members, with that circuit's incompleteness.
"""

from __future__ import annotations

#: The task and thresholds of the recorded circuit (also what the tests assert).
TASK = {"n_prompts": 32, "seq_len": 20, "seed": 0}
MIN_CONTRIBUTION = 0.05
MIN_RECOVERY = 0.9
MIN_DROP = 0.7
MAX_INCOMPLETENESS = 0.2
MINIMALITY_METHOD = "ioi"
RULE = (
    "induction: start from the layer-0 heads with previous_token score >= 0.5 and the layer-1 heads with induction "
    f"score >= 0.5 (recorded as induction_attention_candidates); on tasks.induction(n_prompts={TASK['n_prompts']}, "
    f"seq_len={TASK['seq_len']}, seed={TASK['seed']}) with resample ablation, repeatedly drop the component whose "
    f"IOI-style minimality contribution has the lowest 95% lower bound while that bound is below {MIN_CONTRIBUTION}; the "
    f"result is required to be sufficient (recovery lower bound >= {MIN_RECOVERY}), necessary (drop lower bound >= "
    f"{MIN_DROP}) and complete (incompleteness upper bound <= {MAX_INCOMPLETENESS})"
)


def find_induction_circuit(model, candidates: list[str]) -> dict:
    """Prune ``candidates`` to the causal induction circuit; returns the card's ``circuits`` entries and evidence."""
    from ..model import tasks
    from ..claims.causal import check_necessary, check_sufficient
    from ..claims.completeness import check_complete
    from ..claims.minimality import check_minimal
    from ..model.circuit import Circuit

    task = tasks.induction(model, **TASK)
    circuit = Circuit.parse(" ".join(candidates), name="induction")
    dropped = []
    while len(circuit) > 1:
        result = check_minimal(circuit, min_contribution=MIN_CONTRIBUTION, method=MINIMALITY_METHOD, model=model, task=task)
        weakest = result.evidence["minimality"].sort_values("ci_low").iloc[0]
        if weakest["ci_low"] >= MIN_CONTRIBUTION:
            break
        dropped.append(f"{weakest['component']} (IOI contribution {weakest['contribution']:.3f})")
        circuit = circuit.without(weakest["component"])
    sufficient = check_sufficient(circuit, min_recovery=MIN_RECOVERY, model=model, task=task)
    necessary = check_necessary(circuit, min_drop=MIN_DROP, model=model, task=task)
    complete = check_complete(circuit, max_incompleteness=MAX_INCOMPLETENESS, model=model, task=task)
    if not (sufficient.passed and necessary.passed and complete.passed):
        raise RuntimeError(f"the pruned induction circuit {circuit} does not hold:\n"
                           + "\n".join(r.message() for r in (sufficient, necessary, complete) if not r.passed))
    weakest = result.evidence["minimality"].iloc[0]
    leave_one_out = check_minimal(circuit, min_contribution=MIN_CONTRIBUTION, model=model, task=task)
    redundancy, without_backup = [], {}
    if "redundancy" in leave_one_out.evidence:
        for group in leave_one_out.evidence["redundancy"].itertuples():
            redundancy.append(f"{group.group}: each alone {group.alone}, together {group.together:.3f}")
            for member in group.group.split():
                smaller = circuit.without(member)
                incomplete = check_complete(smaller, max_incompleteness=MAX_INCOMPLETENESS, model=model, task=task)
                recovery = check_sufficient(smaller, min_recovery=MIN_RECOVERY, model=model, task=task)
                without_backup[" ".join(map(str, smaller))] = {
                    "without": member, "recovery": round(recovery.value, 4), "incompleteness": round(incomplete.value, 4),
                    "incompleteness_ci": [round(incomplete.ci_low, 4), round(incomplete.ci_high, 4)],
                    "complete": bool(incomplete.passed),
                }
    return {
        "circuits": {"induction": " ".join(map(str, circuit)), "induction_attention_candidates": " ".join(candidates)},
        "circuit_rule": RULE,
        "circuit_evidence": {
            "dropped": dropped,
            "recovery": round(sufficient.value, 4),
            "recovery_ci": [round(sufficient.ci_low, 4), round(sufficient.ci_high, 4)],
            "drop": round(necessary.value, 4),
            "drop_ci": [round(necessary.ci_low, 4), round(necessary.ci_high, 4)],
            "minimality_method": MINIMALITY_METHOD,
            "weakest": f"{weakest['component']} {weakest['contribution']:.3f} (K = {weakest['K']})",
            "weakest_ci": [round(float(weakest["ci_low"]), 4), round(float(weakest["ci_high"]), 4)],
            "incompleteness": round(complete.value, 4),
            "incompleteness_ci": [round(complete.ci_low, 4), round(complete.ci_high, 4)],
            "worst_k": complete.evidence["completeness"]["K"].iloc[0],
            "redundancy": redundancy,
            "without_backup": without_backup,
        },
    }


def refresh_card(name: str = "induction-2l") -> dict:
    """Recompute the circuit entries of a shipped card from its final weights (no retraining)."""
    import json

    from . import card, heads_above, load, model_dir
    from .cards import card_markdown

    data = card(name)
    scores = data["scores"]
    candidates = heads_above(scores["previous_token"], 0.5, layer=0) + heads_above(scores["induction"], 0.5, layer=1)
    data.update(find_induction_circuit(load(name), candidates))
    directory = model_dir(name)
    (directory / "card.json").write_text(json.dumps(data, indent=2) + "\n")
    (directory / "CARD.md").write_text(card_markdown(data))
    return data


if __name__ == "__main__":  # python -m circuitcheck.zoo.circuits: refresh the shipped card's circuits
    print(refresh_card()["circuits"])
