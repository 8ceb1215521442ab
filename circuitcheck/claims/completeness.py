"""Completeness of a circuit C (Wang et al. 2022): does it miss a parallel path?

incompleteness(C) = max over K ⊆ C of |recovery(C \\ K) - recovery(M \\ K)|

where recovery(C \\ K) keeps C without K (everything else ablated) and
recovery(M \\ K) ablates only K in the full model. A complete circuit behaves
like the model under every knock-out of its own components; a circuit that
misses a backup path recovers far less than the model once K removes the
path it does contain.

K ranges over every subset of C for circuits up to
:data:`subsets.MAX_EXACT_PLAYERS` components; beyond, over ∅, every single
component, C itself, and K grown greedily (on point estimates) from the worst
single component, one component at a time up to ``max_k`` components.

The claim "at most ``max_incompleteness``" is decided on the upper bound of
the interval of the maximum over the searched K (the worst K re-chosen in
every bootstrap resample, so the choice of K is part of the uncertainty and
the bound is at least the worst K's own). The worst K is reported.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import causal, robustness, stats, subsets
from .causal import Components, _base, _circuit, _label, _lines, _setup
from .decision import check_thresholds, conclude
from .lattice import Samples, bootstrap, full_metric
from .minimality import lattice_of
from .result import CheckResult
from ..model.tasks import Task

DEFAULT_MAX_INCOMPLETENESS = 0.2
#: The largest K of the greedy search above exact size.
DEFAULT_MAX_K = 4
#: Rows of the evidence table (the worst K first).
SHOWN = 12


@robustness.over_ablations
def check_complete(
    circuit: Components,
    *,
    max_incompleteness: float = DEFAULT_MAX_INCOMPLETENESS,
    max_k: int | None = None,
    model=None,
    task: Task | None = None,
    ablation=None,
    keep=None,
    confidence: float = stats.DEFAULT_CONFIDENCE,
    seed: int | None = None,
) -> CheckResult:
    """Measure incompleteness(C) = max over K of |recovery(C \\ K) - recovery(M \\ K)| and decide (never raises on failure)."""
    check_thresholds(None, max_incompleteness, low=0.0, names=("min", "max_incompleteness"))
    if max_k is not None and (isinstance(max_k, bool) or not isinstance(max_k, int) or max_k < 1):
        raise ValueError(f"max_k={max_k!r} is not valid: it must be a positive whole number")
    setup = _setup(model, task, ablation, seed, confidence, keep)
    comps, name = _circuit(circuit, setup.model)
    lattice = lattice_of(setup, comps)
    n, everything = len(comps), subsets.full(len(comps))
    exact = n <= subsets.MAX_EXACT_PLAYERS
    singles = [1 << i for i in range(n)]
    ks = list(range(1 << n)) if exact else list(dict.fromkeys([0, *singles, everything]))
    keep_runs = lattice.keep([everything & ~k for k in ks] + [0], desc="completeness")
    causal._check_gap(full_metric(setup), keep_runs[0], setup)
    drop_runs = lattice.drop(ks, desc="completeness")

    def samples_of():
        return Samples(full_metric(setup), keep_runs[0], {**{("keep", m): v for m, v in keep_runs.items()},
                                                           **{("drop", m): v for m, v in drop_runs.items()}})

    samples = samples_of()
    if not exact:
        ks = _greedy(lattice, samples, ks, n, max_k or DEFAULT_MAX_K, keep_runs, drop_runs)
        samples = samples_of()
    kept = samples.columns([("keep", everything & ~k) for k in ks])
    dropped = samples.columns([("drop", k) for k in ks])

    def per_k(means):
        r = samples.recovery(means)
        return np.abs(r[:, kept] - r[:, dropped])

    point = per_k(samples.data.mean(axis=1)[None, :])[0]
    ranked = sorted(range(len(ks)), key=lambda j: (-point[j], bin(ks[j]).count("1"), ks[j]))
    (worst,) = bootstrap(samples.data, lambda m: per_k(m).max(axis=1, keepdims=True), confidence=setup.confidence, seed=setup.seed)
    shown = ranked[:SHOWN]
    shown_ks = [ks[j] for j in shown]
    per_shown = bootstrap(samples.data, lambda m: per_k(m)[:, shown], confidence=setup.confidence, seed=setup.seed)
    recovery_point = samples.point_recovery()
    worst_k = ks[ranked[0]]
    worst_text = _label(lattice.members(worst_k)) or "∅"
    table = pd.DataFrame({
        "K": [_label(lattice.members(k)) or "∅" for k in shown_ks],
        "incompleteness": [e.mean for e in per_shown],
        "ci_low": [e.low for e in per_shown],
        "ci_high": [e.high for e in per_shown],
        "recovery_circuit_without_K": [recovery_point[("keep", everything & ~k)] for k in shown_ks],
        "recovery_model_without_K": [recovery_point[("drop", k)] for k in shown_ks],
    })
    decision = stats.decide(worst, None, max_incompleteness)
    label = _label(comps, name)
    search = f"every one of the {1 << n} K ⊆ C" if exact else \
        f"{len(ks)} K: ∅, each component, C, and K grown greedily up to {max_k or DEFAULT_MAX_K} components"
    r_c = recovery_point[("keep", everything & ~worst_k)]
    r_m = recovery_point[("drop", worst_k)]
    notes = [f"worst K = {{{worst_text}}}: recovery(C \\ K) = {r_c:.3f}, recovery(M \\ K) = {r_m:.3f}, incompleteness {point[ranked[0]]:.3f}",
             f"searched {search}; the interval is of the maximum over them (K re-chosen in every resample)"]
    if r_m > r_c + max_incompleteness:
        notes.append("the model without K does better than the circuit without K: the model has a path for the task "
                     "that the circuit lacks (a backup component outside C?)")
    notes.append(f"runs: {lattice.variants_used} subsets ({lattice.variants_run} run by this claim, the rest shared)")
    return CheckResult(
        **_base(setup, label, "complete", f"incompleteness (worst K = {{{worst_text}}})"),
        claim=f"{label} is complete for {setup.task.name} (it misses no parallel path)",
        value=worst.mean,
        **worst.interval_fields(),
        max_value=max_incompleteness,
        evidence={"completeness": table},
        notes=notes + _lines(setup),
        **decision.fields(),
    )


def _greedy(lattice, samples: Samples, ks: list[int], n: int, max_k: int, keep_runs: dict, drop_runs: dict) -> list[int]:
    """Grow K from the worst single component, adding the one that raises incompleteness most, up to ``max_k``."""
    everything = subsets.full(n)

    def point(k):
        r = Samples(samples.data[0], samples.data[1], {("keep", everything & ~k): keep_runs[everything & ~k],
                                                       ("drop", k): drop_runs[k]}).point_recovery()
        return abs(r[("keep", everything & ~k)] - r[("drop", k)])

    current = max((1 << i for i in range(n)), key=point)
    best = point(current)
    found = list(ks)
    while bin(current).count("1") < min(max_k, n - 1):
        options = [current | 1 << i for i in range(n) if not current >> i & 1]
        keep_runs.update(lattice.keep([everything & ~k for k in options], desc="completeness (greedy)"))
        drop_runs.update(lattice.drop(options, desc="completeness (greedy)"))
        found += [k for k in options if k not in found]
        top = max(options, key=point)
        if point(top) <= best:
            break
        current, best = top, point(top)
    return found


def assert_complete(circuit: Components, max_incompleteness: float = DEFAULT_MAX_INCOMPLETENESS, **kwargs) -> CheckResult:
    """Assert that the circuit misses no parallel path: incompleteness(C) <= ``max_incompleteness`` (upper bound).

    incompleteness(C) = max over K ⊆ C of |recovery(C \\ K) - recovery(M \\ K)|
    (the IOI paper's completeness); exhaustive over K up to 12 components,
    greedy beyond (``max_k``, default 4). The worst K is reported and
    ``evidence["completeness"]`` lists the worst K's, worst first.
    """
    __tracebackhide__ = True
    tolerance = kwargs.pop("tolerance", None)
    return conclude(check_complete(circuit, max_incompleteness=max_incompleteness, **kwargs), tolerance)


# The claim kind (circuitcheck.claims.registry) ---------------------------------------------

from .registry import ClaimKind, Param, declare  # noqa: E402

COMPLETE = declare(ClaimKind(
    name="complete",
    check=check_complete,
    assertion=assert_complete,
    metric="incompleteness",
    params=(causal._CIRCUIT,
            Param("max_incompleteness", "number", DEFAULT_MAX_INCOMPLETENESS, doc="the upper bound of the worst K's incompleteness must be <= it"),
            Param("max_k", "positive", DEFAULT_MAX_K, doc="largest K of the greedy search above 12 components"),
            *causal._CAUSAL_PARAMS),
    thresholds=(None, "max_incompleteness"),
    evidence=("completeness",),
    definition="incompleteness(C) = max over K ⊆ C of |recovery(C \\ K) − recovery(M \\ K)| (the IOI paper's completeness): "
    "knocking out K should hurt the circuit as much as it hurts the model; a circuit that misses a parallel path does worse "
    "than the model once K removes the path it has. For an edge circuit K is a set of its edges: recovery(C \\ K) keeps "
    "C's other edges (every other edge ablated, as in sufficiency), recovery(M \\ K) ablates only K's edges. Exhaustive "
    "over K up to 12 members, greedy beyond; the worst K is reported and the claim is decided on the upper bound of the maximum.",
    section="completeness",
    needs_task=True,
    spec_call=causal._spec_circuit,
    subject=causal._circuit_subject,
))
