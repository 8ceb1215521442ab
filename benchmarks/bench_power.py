"""Test power of circuitcheck's claims: false-pass and true-pass rates on the planted-circuit models.

Run on demand (not part of CI):

    python benchmarks/bench_power.py                     # 50 seeds, both planted models, 2 torch threads
    python benchmarks/bench_power.py --seeds 5 --quick   # a smoke test
    python benchmarks/bench_power.py --json benchmarks/results/power-<machine>-<date>.json

Ground truth comes from the models' cards (``circuitcheck/zoo/models/planted-*/card.json``),
measured exhaustively with plain TransformerLens hooks on 256 prompts
(``circuitcheck.zoo.ground_truth``); random circuits of the true circuit's size
are measured here the same way. A claim is *true* when its true value clears
circuitcheck's default threshold, *false* when it misses it; claims within the
card's margin of the threshold (borderline) are left out, since no finite
sample can be asked to decide them.

For every seed s the claims are checked at their **default settings** on a
fresh task, ``tasks.induction(model, seed=s)`` (32 prompts, the default), with
bootstrap seed s; head claims on the default head-score prompts drawn with
seed s. Per claim kind (minimality per method) the benchmark reports the share
of false claims that passed (false-pass) and of true claims that passed
(true-pass), each with a 95% Wilson interval over every (claim, seed) trial.
Targets: false-pass <= 5%, true-pass >= 95%.

False claims include, on purpose: random circuits of the true size and
the circuits one swap from the true circuit whose recovery misses the
threshold (sufficiency), the distractor heads (necessity, sufficiency, minimality), the
circuit without the backup head (completeness) and without the negative head
(faithfulness, completeness), single heads of a redundant pair (necessity).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

from circuitcheck import zoo
from circuitcheck.claims import causal, completeness, faithfulness, heads, minimality
from circuitcheck.errors import CircuitCheckError
from circuitcheck.model import tasks
from circuitcheck.model.circuit import Circuit
from circuitcheck.zoo import ground_truth

MODELS = ("planted-4l", "planted-redundant-2l")
TARGET_FALSE_PASS = 0.05
TARGET_TRUE_PASS = 0.95
TARGET_SECONDS = 15 * 60


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The 95% Wilson score interval of a proportion k / n."""
    if n == 0:
        return (math.nan, math.nan)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def random_circuit_claims(model, card: dict, n: int, seed: int) -> list[dict]:
    """Sufficiency claims on ``n`` random circuits of the true size, with their true recovery (plain hooks)."""
    meas = ground_truth.measurer(model)
    true = card["true_circuit"].split()
    rng = random.Random(seed)
    limit = ground_truth._defaults()["min_recovery"]
    claims, seen = [], {frozenset(true)}
    while len(claims) < n:
        circuit = frozenset(rng.sample(meas.all, len(true)))
        if circuit in seen:
            continue
        seen.add(circuit)
        ordered = [c for c in meas.all if c in circuit]
        value = meas.recovery(ordered)
        claims.append({
            "kind": "sufficient", "args": {"circuit": " ".join(ordered)}, "claim": f"random circuit {' '.join(ordered)} is sufficient",
            "value": round(value, 4), "threshold": f"min_recovery >= {limit:g}", "true": value >= limit,
            "borderline": abs(value - limit) < ground_truth.MARGIN, "random": True,
        })
    return claims


def one_swap_claims(card: dict) -> list[dict]:
    """Sufficiency claims on every circuit one swap from the true circuit (the card's recoveries): the near misses."""
    limit = ground_truth._defaults()["min_recovery"]
    true = card["true_circuit"].split()
    claims = []
    for swap, value in card["ground_truth"]["one_swap_recovery"].items():
        member, other = swap.split(" -> ")
        circuit = " ".join(other if c == member else c for c in true)
        claims.append({
            "kind": "sufficient", "args": {"circuit": circuit}, "claim": f"{circuit} (true circuit, {swap}) is sufficient",
            "value": value, "threshold": f"min_recovery >= {limit:g}", "true": value >= limit,
            "borderline": abs(value - limit) < ground_truth.MARGIN, "one_swap": True,
        })
    return claims


def group_of(claim: dict) -> str:
    if claim["kind"] == "minimal":
        return f"minimal ({claim['args']['method']})"
    if claim["kind"].endswith("_head"):
        return "head claims"
    return claim["kind"]


def run_claim(claim: dict, model, task, seed: int) -> bool:
    """Check one claim at its default settings; True when it holds."""
    kind, args = claim["kind"], claim["args"]
    if kind.endswith("_head"):
        return heads.check_head(args["layer"], args["head"], kind.removesuffix("_head"), model=model, seed=seed).passed
    circuit = Circuit.parse(args["circuit"])
    common = {"model": model, "task": task, "seed": seed}
    if kind == "necessary":
        return causal.check_necessary(circuit, **common).passed
    if kind == "sufficient":
        return causal.check_sufficient(circuit, **common).passed
    if kind == "minimal":
        return minimality.check_minimal(circuit, method=args["method"], **common).passed
    if kind == "complete":
        return completeness.check_complete(circuit, **common).passed
    if kind == "faithful":
        return faithfulness.check_faithful(circuit, **common).passed
    raise ValueError(f"unknown claim kind {kind!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=50, help="task and bootstrap seeds per claim (default 50)")
    parser.add_argument("--random-circuits", type=int, default=12, help="random circuits of the true size per model")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="planted-redundant-2l only")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    trials: dict[tuple[str, str, bool], list[int]] = defaultdict(lambda: [0, 0])  # (model, group, true) -> [passed, n]
    per_claim = []
    errors = []
    borderline = []
    for name in MODELS[1:] if args.quick else MODELS:
        model, card = zoo.load(name), zoo.card(name)
        every = card["claims"] + one_swap_claims(card) + random_circuit_claims(model, card, args.random_circuits, seed=0)
        borderline += [dict(c, model=name) for c in every if c["borderline"]]
        claims = [c for c in every if not c["borderline"]]
        print(f"{name}: {len(claims)} claims ({sum(c['true'] for c in claims)} true) x {args.seeds} seeds", flush=True)
        outcomes = defaultdict(list)
        for seed in range(args.seeds):
            task = tasks.induction(model, seed=seed)
            for i, claim in enumerate(claims):
                try:
                    passed = run_claim(claim, model, task, seed)
                except CircuitCheckError as error:  # e.g. a gap not distinguishable from zero: the claim did not hold
                    passed = False
                    errors.append(f"{name} seed {seed}: {claim['claim']}: {str(error).splitlines()[0]}")
                outcomes[i].append(passed)
            print(f"  seed {seed}: {time.perf_counter() - started:.0f} s", flush=True)
        for i, claim in enumerate(claims):
            group = group_of(claim)
            cell = trials[(name, group, claim["true"])]
            cell[0] += sum(outcomes[i])
            cell[1] += len(outcomes[i])
            per_claim.append({"model": name, "group": group, "claim": claim["claim"], "true": claim["true"],
                              "true_value": claim["value"], "threshold": claim["threshold"],
                              "passed": sum(outcomes[i]), "trials": len(outcomes[i])})
    elapsed = time.perf_counter() - started

    groups = sorted({g for _, g, _ in trials})
    summary = []
    print(f"\n{'claim kind (default settings)':34} {'false-pass':>22} {'true-pass':>22}")
    for group in groups:
        row = {"kind": group}
        for truth, label in ((False, "false_pass"), (True, "true_pass")):
            k = sum(trials[(m, group, truth)][0] for m in MODELS if (m, group, truth) in trials)
            n = sum(trials[(m, group, truth)][1] for m in MODELS if (m, group, truth) in trials)
            low, high = wilson(k, n)
            row[label] = {"passed": k, "trials": n, "rate": (k / n) if n else None, "ci95": [low, high]}
        target_ok = ((row["false_pass"]["rate"] is None or row["false_pass"]["rate"] <= TARGET_FALSE_PASS)
                     and (row["true_pass"]["rate"] is None or row["true_pass"]["rate"] >= TARGET_TRUE_PASS))
        row["meets_targets"] = target_ok
        summary.append(row)

        def show(cell):
            if not cell["trials"]:
                return "-"
            return f"{cell['rate']:.3f} [{cell['ci95'][0]:.3f}, {cell['ci95'][1]:.3f}] n={cell['trials']}"

        print(f"{group:34} {show(row['false_pass']):>22} {show(row['true_pass']):>22} {'' if target_ok else ' MISSES TARGET'}")
    misses = [c for c in per_claim if (c["passed"] and not c["true"]) or (c["passed"] < c["trials"] and c["true"])]
    if misses:
        print("\nclaims that were decided wrongly at least once:")
        for c in misses:
            print(f"  {c['model']}: {c['claim']} (true value {c['true_value']}, {c['threshold']}; "
                  f"{'true' if c['true'] else 'false'}): passed {c['passed']}/{c['trials']}")
    print(f"\nleft out as borderline (true value within the margin of the threshold): "
          + "; ".join(f"{c['model']}: {c['claim']} ({c['value']}, {c['threshold']})" for c in borderline))
    print(f"\n{elapsed:.0f} s on {args.threads} threads (target {TARGET_SECONDS} s)")
    result = {
        "benchmark": "power",
        "machine": {"processor": platform.processor() or platform.machine(), "threads": args.threads,
                    "python": platform.python_version(), "torch": torch.__version__},
        "settings": {"seeds": args.seeds, "random_circuits": args.random_circuits, "models": list(MODELS[1:] if args.quick else MODELS),
                     "targets": {"false_pass_at_most": TARGET_FALSE_PASS, "true_pass_at_least": TARGET_TRUE_PASS}},
        "seconds": round(elapsed, 1),
        "summary": summary,
        "claims": per_claim,
        "left_out_borderline": [{"model": c["model"], "claim": c["claim"], "true_value": c["value"], "threshold": c["threshold"]}
                                for c in borderline],
        "errors": errors,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
