"""Minimality of a circuit C: does every component contribute? Three methods.

With recovery(X) = (m(X) - m(∅)) / (m(M) - m(∅)) (DESIGN.md):

- ``"leave-one-out"`` (default): contribution(v) = recovery(C) - recovery(C \\ {v}).
- ``"ioi"`` (Wang et al. 2022, IOI-style): contribution(v) = max over K in C \\ {v}
  of recovery(C \\ K) - recovery(C \\ (K + v)); the K is reported. Exhaustive
  over K for circuits up to :data:`subsets.MAX_EXACT_PLAYERS` components, greedy
  beyond (K grown one component at a time, at most ``max_k``).
- ``"shapley"``: the Shapley value of v among the players C for the game
  recovery(S) (S kept, every other head and MLP output ablated): exact by
  enumerating the 2^n subsets up to :data:`subsets.MAX_EXACT_PLAYERS`
  components, else the mean over ``permutations`` seeded random orders.
  Shapley values add up to recovery(C), so they are shares, smaller than the
  other two methods' values: choose the threshold for that scale.

Leave-one-out is the default because it is the strictest (its score is the
IOI score's K = ∅ term, so a circuit minimal by leave-one-out is minimal by
the IOI method too), the cheapest (n + 2 runs instead of 2^n) and the
meaning every claim written before the other methods had. It fails for
components that back each other up; such a failure names the redundancy
groups it finds (each member alone below the threshold, the group together
clearly above it) and points at ``method="ioi"``.

Intervals: every score is a ratio of means; examples are resampled jointly
(seeded bootstrap). The IOI method's K is chosen on the point estimates and
the interval is that K's (the choice of K is not re-made per resample); the
sampled Shapley interval resamples the permutations as well as the examples,
so it includes the sampling of orders. A claim holds when every component's
lower bound is at least ``min_contribution``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from . import causal, robustness, stats, subsets
from .causal import Components, _base, _circuit, _label, _lines, _setup
from .decision import ThresholdError, check_thresholds, conclude
from .lattice import CircuitLattice, Samples, bootstrap, full_metric
from .result import CheckResult
from ..model.tasks import Task

METHODS = ("leave-one-out", "ioi", "shapley")
DEFAULT_METHOD = "leave-one-out"
#: Sampled orders for Shapley values of circuits above subsets.MAX_EXACT_PLAYERS components.
DEFAULT_PERMUTATIONS = 10
#: The greedy IOI search beyond exact size: the largest K, and how many components extend K after the first step.
DEFAULT_MAX_K = 2
GREEDY_WIDTH = 4
#: Redundancy groups are looked for among at most this many of the weakest failing components (pairs: k(k-1)/2 runs).
MAX_GROUP_SEARCH = 8


def lattice_of(setup, comps) -> CircuitLattice:
    """The keep/drop runs of ``comps`` (components, or the edges of an edge circuit) under ``setup``, shared with every causal claim."""
    ablate_all_but, ablate = causal.builders(setup, comps)
    return CircuitLattice(setup, comps, ablate_all_but=ablate_all_but, ablate=ablate)


def _check_method(method, permutations, max_k) -> None:
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not valid: use one of {', '.join(repr(m) for m in METHODS)}")
    for name, value in (("permutations", permutations), ("max_k", max_k)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{name}={value!r} is not valid: it must be a positive whole number")


@robustness.over_ablations
def check_minimal(
    circuit: Components,
    *,
    min_contribution: float = 0.05,
    method: str = DEFAULT_METHOD,
    permutations: int | None = None,
    max_k: int | None = None,
    model=None,
    task: Task | None = None,
    ablation=None,
    keep=None,
    confidence: float = stats.DEFAULT_CONFIDENCE,
    seed: int | None = None,
) -> CheckResult:
    """Measure every component's contribution by ``method`` and decide (never raises on a failed claim).

    ``permutations`` (sampled Shapley, default 10) and ``max_k`` (greedy IOI,
    default 2) apply only to circuits above the exact size (12 components).
    """
    if min_contribution is None:
        raise ThresholdError("min_contribution=None is not valid: a minimality claim needs a number, e.g. min_contribution=0.05")
    check_thresholds(min_contribution, None, names=("min_contribution", "max"))
    _check_method(method, permutations, max_k)
    setup = _setup(model, task, ablation, seed, confidence, keep)
    comps, name = _circuit(circuit, setup.model)
    lattice = lattice_of(setup, comps)
    n, everything = len(comps), subsets.full(len(comps))
    exact = n <= subsets.MAX_EXACT_PLAYERS
    if method == "leave-one-out":
        masks = [everything, 0, *[everything & ~(1 << i) for i in range(n)]]
    elif exact:
        masks = list(range(1 << n))
    elif method == "shapley":
        orders = subsets.sample_permutations(n, permutations or DEFAULT_PERMUTATIONS, setup.seed)
        masks = subsets.prefix_masks(orders)
    else:
        masks = [everything, 0, *[everything & ~(1 << i) for i in range(n)]]
    keep_runs = lattice.keep(masks, desc=f"minimality ({method})")
    empty = keep_runs[0]
    causal._check_gap(full_metric(setup), empty, setup)
    samples = Samples(full_metric(setup), empty, {("keep", m): v for m, v in keep_runs.items()})

    chosen_k: list[int | None] = [None] * n
    if method == "leave-one-out":
        scores = _leave_one_out(samples, n, setup)
    elif method == "ioi":
        if not exact:
            keep_runs.update(_greedy_ioi(lattice, samples, n, max_k or DEFAULT_MAX_K))
            samples = Samples(full_metric(setup), empty, {("keep", m): v for m, v in keep_runs.items()})
            candidates = _greedy_candidates
        else:
            candidates = None
        scores, chosen_k = _ioi(samples, n, setup, candidates)
    else:
        scores = _shapley(samples, n, setup, None if exact else orders)
    recovery = bootstrap(samples.data, lambda m: samples.recovery(m)[:, samples.columns([("keep", everything)])],
                         confidence=setup.confidence, seed=setup.seed)[0]

    order = sorted(range(n), key=lambda i: scores[i].mean)
    failing = [i for i in order if scores[i].low < min_contribution]
    table = {
        "component": [str(comps[i]) for i in order],
        "contribution": [scores[i].mean for i in order],
        "ci_low": [scores[i].low for i in order],
        "ci_high": [scores[i].high for i in order],
    }
    if method == "leave-one-out":
        table["recovery_without"] = [recovery.mean - scores[i].mean for i in order]
    if method == "ioi":
        table["K"] = [_label(lattice.members(chosen_k[i])) or "∅" for i in order]
    evidence = {"minimality": pd.DataFrame(table)}
    label = _label(comps, name)
    how = _describe_method(method, n, exact, permutations, max_k)
    notes = [f"method: {how}", f"recovery of the whole circuit: {recovery.describe()}",
             "contributions, weakest first: " + ", ".join(
                 f"{comps[i]} {scores[i].mean:.3f} [{scores[i].low:.3f}, {scores[i].high:.3f}]"
                 + (f" (K = {' '.join(map(str, lattice.members(chosen_k[i]))) or '∅'})" if method == "ioi" else "")
                 for i in order)]
    if failing:
        notes.insert(0, f"below the threshold: {', '.join(str(comps[i]) for i in failing)}")
        if method == "leave-one-out" and len(failing) > 1:
            groups, frame = _redundancy_groups(lattice, samples, failing, scores, min_contribution, setup)
            if groups:
                evidence["redundancy"] = frame
                notes[1:1] = groups + ["components that back each other up are each unnecessary alone and needed together: "
                                       "method='ioi' or method='shapley' credits each of them"]
    notes.append(f"runs: {lattice.variants_used} circuit subsets ({lattice.variants_run} run by this claim, the rest shared)")
    weakest = scores[order[0]]
    p = stats.combine(s.p_value(min_contribution, None) for s in scores)
    return CheckResult(
        **_base(setup, label, "minimal", f"contribution of the weakest component ({comps[order[0]]}, {method})"),
        claim=f"{label} is minimal for {setup.task.name} (every component contributes, {method})",
        value=weakest.mean,
        passed=not failing,
        **weakest.interval_fields(),
        min_value=min_contribution,
        decided_on="lower bound of every component",
        evidence=evidence,
        notes=notes + _lines(setup),
        **p.fields(),
    )


def _describe_method(method: str, n: int, exact: bool, permutations, max_k) -> str:
    if method == "leave-one-out":
        return "leave-one-out: contribution(v) = recovery(C) - recovery(C \\ {v})"
    if method == "ioi":
        search = f"exhaustive over the {1 << (n - 1)} K of each component" if exact else \
            f"K grown greedily (at most {max_k or DEFAULT_MAX_K} components)"
        return f"IOI-style: max over K in C \\ {{v}} of recovery(C \\ K) - recovery(C \\ (K + v)), {search}"
    search = f"exact over all {1 << n} subsets" if exact else \
        f"{permutations or DEFAULT_PERMUTATIONS} sampled orders (the interval resamples orders and examples)"
    return f"Shapley value of v among the players C for recovery(S), {search}"


def _leave_one_out(samples: Samples, n: int, setup) -> list[stats.Estimate]:
    everything = subsets.full(n)
    whole = samples.columns([("keep", everything)])
    without = samples.columns([("keep", everything & ~(1 << i)) for i in range(n)])

    def statistic(means):
        r = samples.recovery(means)
        return r[:, whole] - r[:, without]

    return bootstrap(samples.data, statistic, confidence=setup.confidence, seed=setup.seed)


def _ioi(samples: Samples, n: int, setup, candidates) -> tuple[list[stats.Estimate], list[int]]:
    """IOI scores: K chosen on the point estimates (among ``candidates(v)``, default every K), its interval by bootstrap."""
    point = _keep_recovery(samples)
    pool = None if candidates is None else {v: candidates(v, n, point) for v in range(n)}
    best = subsets.ioi_scores(point, n, pool)
    everything = subsets.full(n)
    kept = samples.columns([("keep", everything & ~b.mask) for b in best])
    kept_without = samples.columns([("keep", everything & ~(b.mask | 1 << b.player)) for b in best])

    def statistic(means):
        r = samples.recovery(means)
        return r[:, kept] - r[:, kept_without]

    return bootstrap(samples.data, statistic, confidence=setup.confidence, seed=setup.seed), [b.mask for b in best]


def _greedy_candidates(v: int, n: int, point: dict) -> list[int]:
    """Every K measured (both C \\ K and C \\ (K + v) were run) that does not contain v."""
    everything = subsets.full(n)
    bit = 1 << v
    ks = [everything & ~kept for kept in point if not (everything & ~kept) & bit]
    return [k for k in ks if (everything & ~(k | bit)) in point]


def _greedy_ioi(lattice: CircuitLattice, samples: Samples, n: int, max_k: int) -> dict:
    """Grow each component's K greedily on point estimates; every step of every component in one batched run.

    Step 1 tries every single other component (all pairs); later steps extend
    each component's best K by the :data:`GREEDY_WIDTH` partners that scored
    best in step 1. A component stops when no extension raises its score.
    """
    everything = subsets.full(n)
    runs: dict[int, np.ndarray] = {}
    recovery = _keep_recovery(samples)

    def measure(masks):
        fresh = [m for m in dict.fromkeys(masks) if m not in recovery]
        if fresh:
            runs.update(lattice.keep(fresh, desc="minimality (ioi, greedy)"))
            recovery.update(_keep_recovery(_with(samples, runs)))

    def score(v, k):
        return recovery[everything & ~k] - recovery[everything & ~(k | 1 << v)]

    pairs = [everything & ~(1 << u | 1 << v) for v in range(n) for u in range(v + 1, n)]
    measure(pairs)
    state = {v: (0, score(v, 0)) for v in range(n)}
    partners = {}
    for v in range(n):
        ranked = sorted((u for u in range(n) if u != v), key=lambda u: -score(v, 1 << u))
        partners[v] = ranked[:GREEDY_WIDTH]
        best_u = ranked[0] if ranked else None
        if best_u is not None and score(v, 1 << best_u) > state[v][1]:
            state[v] = (1 << best_u, score(v, 1 << best_u))
    active = {v for v in range(n) if state[v][0]}
    for _ in range(1, max_k):
        options = {v: [state[v][0] | 1 << u for u in partners[v] if not state[v][0] >> u & 1] for v in active}
        measure([everything & ~k for ks in options.values() for k in ks]
                + [everything & ~(k | 1 << v) for v, ks in options.items() for k in ks])
        still = set()
        for v, ks in options.items():
            if not ks:
                continue
            k = max(ks, key=lambda k: score(v, k))
            if score(v, k) > state[v][1]:
                state[v] = (k, score(v, k))
                still.add(v)
        active = still
        if not active:
            break
    return runs


def _runs_of(samples: Samples) -> dict:
    """The keep runs of ``samples`` by mask."""
    return {key[1]: samples.data[row] for key, row in samples.rows.items() if isinstance(key, tuple)}


def _with(samples: Samples, runs: dict) -> Samples:
    """``samples`` with more keep runs (by mask)."""
    return Samples(samples.data[0], samples.data[1], {("keep", m): v for m, v in {**_runs_of(samples), **runs}.items()})


def _keep_recovery(samples: Samples) -> dict[int, float]:
    """Point recovery of every keep run, by mask."""
    return {key[1]: value for key, value in samples.point_recovery().items() if isinstance(key, tuple)}


def _shapley(samples: Samples, n: int, setup, orders) -> list[stats.Estimate]:
    """Exact Shapley values (``orders`` None) or the permutation estimate with orders resampled per bootstrap replicate."""
    if orders is None:
        coefficients = subsets.shapley_coefficients(n)  # [n, 2^n]
        columns = samples.columns([("keep", m) for m in range(1 << n)])

        def statistic(means):
            return samples.recovery(means)[:, columns] @ coefficients.T

        return bootstrap(samples.data, statistic, confidence=setup.confidence, seed=setup.seed)
    masks = subsets.prefix_masks(orders)
    index = {mask: i for i, mask in enumerate(masks)}
    coefficients = subsets.permutation_coefficients(orders, index)  # [P, n, masks]
    columns = samples.columns([("keep", m) for m in masks])
    count = len(orders)
    picks = np.random.default_rng([setup.seed, 1]).integers(0, count, size=(stats.DEFAULT_RESAMPLES, count))

    def statistic(means):
        r = samples.recovery(means)[:, columns]  # [R, masks]
        per_order = np.einsum("pnk,rk->rpn", coefficients, r)  # [R, P, n]
        if len(means) == 1:
            return per_order.mean(axis=1)
        chosen = np.take_along_axis(per_order, picks[:, :, None], axis=1)
        return chosen.mean(axis=1)

    return bootstrap(samples.data, statistic, confidence=setup.confidence, seed=setup.seed)


def _redundancy_groups(lattice, samples: Samples, failing: Sequence[int], scores, min_contribution, setup):
    """Groups among the failing components that are needed together: lines for the lab note and a table.

    Pairs first (each alone below the threshold, the pair's joint contribution
    recovery(C) - recovery(C \\ {u, v}) with its lower bound at or above it);
    overlapping pairs merge into one group, whose joint contribution is then
    measured; without any such pair, all the failing components together.
    """
    n = lattice.n
    everything = subsets.full(n)
    weakest = list(failing)[:MAX_GROUP_SEARCH]
    pairs = [(u, v) for a, u in enumerate(weakest) for v in weakest[a + 1:]]
    runs = lattice.keep([everything & ~(1 << u | 1 << v) for u, v in pairs] + [everything & ~sum(1 << i for i in weakest)],
                        desc="minimality (redundancy)")
    extended = _with(samples, runs)

    def joint(groups):
        whole = extended.columns([("keep", everything)])
        without = extended.columns([("keep", everything & ~sum(1 << i for i in g)) for g in groups])
        return bootstrap(extended.data, lambda m: extended.recovery(m)[:, whole] - extended.recovery(m)[:, without],
                         confidence=setup.confidence, seed=setup.seed)

    pair_estimates = joint(pairs) if pairs else []
    linked = [pair for pair, e in zip(pairs, pair_estimates) if e.low >= min_contribution]
    groups: list[set[int]] = []
    for u, v in linked:
        touching = [g for g in groups if u in g or v in g]
        merged = {u, v}.union(*touching)
        groups = [g for g in groups if g not in touching] + [merged]
    if not groups and len(weakest) > 2:
        (together,) = joint([weakest])
        if together.low >= min_contribution:
            groups = [set(weakest)]
    if not groups:
        return [], None
    groups = [sorted(g) for g in groups]
    extra = [everything & ~sum(1 << i for i in g) for g in groups if len(g) > 2]  # merged groups: their joint run
    if extra:
        extended = _with(extended, lattice.keep(extra, desc="minimality (redundancy)"))
    estimates = joint(groups)
    comps = lattice.components
    lines, rows = [], []
    for group, together in zip(groups, estimates):
        names = [str(comps[i]) for i in group]
        alone = " / ".join(f"{scores[i].mean:.2f}" for i in group)
        lines.append(f"{_and(names)} back each other up: alone {alone}, together {together.mean:.2f} "
                     f"[{together.low:.3f}, {together.high:.3f}]")
        rows.append({"group": _label([comps[i] for i in group]), "alone": alone, "together": together.mean,
                     "ci_low": together.low, "ci_high": together.high})
    return lines, pd.DataFrame(rows)


def _and(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + f" and {names[-1]}"


def assert_minimal(circuit: Components, min_contribution: float = 0.05, **kwargs) -> CheckResult:
    """Assert that every component of the circuit contributes at least ``min_contribution`` of recovery.

    ``method="leave-one-out"`` (default), ``"ioi"`` or ``"shapley"`` (module
    docstring); passes when every component's lower confidence bound is >=
    ``min_contribution``. All subsets run as batched variants, shared with
    the other causal claims on the same circuit and task; the result's
    ``evidence["minimality"]`` lists every component, weakest first (with K
    for the IOI method), and a failing leave-one-out claim names the
    redundancy groups it finds (``evidence["redundancy"]``).
    """
    __tracebackhide__ = True
    tolerance = kwargs.pop("tolerance", None)
    return conclude(check_minimal(circuit, min_contribution=min_contribution, **kwargs), tolerance)


# The claim kind (circuitcheck.claims.registry) ---------------------------------------------

from .registry import ClaimKind, Param, declare  # noqa: E402

MINIMAL = declare(ClaimKind(
    name="minimal",
    check=check_minimal,
    assertion=assert_minimal,
    metric="contribution",
    params=(causal._CIRCUIT,
            Param("min_contribution", "number", 0.05, doc="every component's lower bound must be >= it"),
            Param("method", "choice", DEFAULT_METHOD, choices=METHODS,
                  doc="leave-one-out (strictest, fails for backups), ioi (max over K of recovery(C\\K) - recovery(C\\(K+v))) "
                      "or shapley (shares of recovery(C))"),
            Param("permutations", "positive", DEFAULT_PERMUTATIONS, doc="sampled orders for Shapley values above 12 components"),
            Param("max_k", "positive", DEFAULT_MAX_K, doc="largest K of the greedy IOI search above 12 components"),
            *causal._CAUSAL_PARAMS),
    thresholds=("min_contribution", None),
    evidence=("minimality", "redundancy"),
    definition="Every member v of C must contribute: leave-one-out (default) contribution(v) = recovery(C) − recovery(C \\ {v}); "
    "IOI-style: max over K ⊆ C \\ {v} of recovery(C \\ K) − recovery(C \\ (K ∪ {v})), K reported; Shapley: v's Shapley value "
    "for the game recovery(S) over subsets S of C. For an edge circuit the members v are its edges and recovery(S) keeps "
    "only the edges in S (every other edge ablated, as in sufficiency). The circuit is minimal when every member's lower "
    "bound clears the threshold. Members are sorted, weakest first; a failing leave-one-out claim names the members that "
    "back each other up.",
    section="minimality",
    needs_task=True,
    spec_call=causal._spec_circuit,
    subject=causal._circuit_subject,
))
