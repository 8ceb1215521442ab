"""Discovery: find a circuit with a fast score, prune it with exact runs, verify it with the claims that will keep it.

:func:`discover` runs the loop researchers run by hand:

1. **Score** every edge (or node) of the model's graph: edge attribution
   (``method="eap"``), EAP-IG (``"eap-ig"``), or exact patching (``"patching"``:
   path patching of every edge, activation patching of every node), on the task.
2. **Rank and cut**: the faithfulness curve of that ranking (:mod:`.curves`)
   at every n up to ``budget`` (a geometric grid of 48 points when the budget
   is larger), in one batched run. ``best`` is the highest recovery on it; the
   cut is the smallest n whose recovery is within ``tolerance`` of ``best``:
   where recovery stops rising.
3. **Prune**: from the top-n circuit, remove members while recovery stays at
   or above the target ``best - tolerance``: first each member in turn,
   lowest-ranked first (one exact run each), then greedy leave-one-out rounds
   over what is left (one batched run per round) until no member can go.
4. **Verify** the pruned circuit with the exact checks: sufficiency,
   necessity, faithfulness, minimality (the IOI method up to 12 members,
   leave-one-out beyond) and completeness, plus the curve claim of the
   ranking (CPR at MIB's fractions). Their measured values and intervals are
   what :mod:`circuitcheck.spec.discovered` turns into a spec whose claims hold
   with stated margins.

Every run goes through the causal claims' lattice, so the verification reuses
the runs of the search where they coincide.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from ..errors import ArgumentError
from ..model.circuit import Circuit
from ..model.components import Component, Edge, model_label
from ..model.tasks import Task
from . import causal, curves, stats
from .lattice import full_metric
from .minimality import lattice_of

METHODS = ("eap", "eap-ig", "patching")
#: curve points when the budget is larger than this (a geometric grid)
MAX_GRID = 48
DEFAULT_TOLERANCE = 0.01
DEFAULT_BUDGET = 100


@dataclass
class Pruned:
    """One pruning step: what was removed and the circuit's recovery afterwards."""

    removed: list
    recovery: float


@dataclass
class Discovery:
    """What :func:`discover` found: the circuit, how it was cut and pruned, and the exact checks of it."""

    model: str
    task: Task
    method: str
    level: str
    budget: int
    tolerance: float
    ablation: str
    seed: int
    confidence: float
    steps: int | None
    scores: object  # the GraphSweep
    curve: curves.FaithfulnessCurve
    best: float
    target: float
    cut: int
    circuit: Circuit
    pruning: list[Pruned] = field(default_factory=list)
    checks: dict = field(default_factory=dict)  # name -> CheckResult
    seconds: dict = field(default_factory=dict)

    @property
    def members(self) -> list:
        return list(self.circuit.edges) if self.level == "edges" else list(self.circuit.components)

    def nodes(self) -> list[Component]:
        """The heads and MLPs the circuit uses: its members, or for an edge circuit every head or MLP at either end of an edge."""
        if self.level == "nodes":
            return list(self.circuit.components)
        found: dict[tuple, Component] = {}
        for edge in self.circuit.edges:
            for end in (edge.sender, edge.receiver):
                if end.kind == "head":
                    found[("head", end.layer, end.head)] = Component("head", end.layer, end.head)
                elif end.kind == "mlp":
                    found[("mlp", end.layer)] = Component("mlp", end.layer)
        return [found[key] for key in sorted(found, key=lambda k: (k[1], 0 if k[0] == "head" else 1, k[2] if len(k) > 2 else 0))]

    def summary(self) -> list[str]:
        """The lines the command prints."""
        lines = [
            f"scores: {self.scores.label} of every {self.level[:-1]} ({len(self.curve.ranking.items)} {self.level}) "
            f"in {self.seconds.get('scores', 0):.1f} s",
            f"curve: recovery of the top n for {len(self.curve.counts)} values of n up to {self.budget}: best "
            f"{self.best:.3f}; cut at n = {self.cut} (first within {self.tolerance:g} of the best)",
        ]
        removed = sum(len(step.removed) for step in self.pruning)
        if removed:
            lines.append(f"pruned {removed} member{'s' if removed != 1 else ''} in {len(self.pruning)} step"
                         f"{'s' if len(self.pruning) != 1 else ''}; {len(self.members)} left, recovery "
                         f"{self.pruning[-1].recovery:.3f} (target {self.target:.3f})")
        else:
            lines.append(f"pruning removed nothing: every member of the top {self.cut} is needed to stay at {self.target:.3f}")
        lines.append(f"found: {len(self.members)} {self.level}" + (f" touching {' '.join(map(str, self.nodes()))}" if self.level == "edges" else ""))
        for name, result in self.checks.items():
            interval = f" [{result.ci_low:.3f}, {result.ci_high:.3f}]" if result.ci_low is not None else ""
            lines.append(f"  {name:<13} {result.metric.split(' (')[0]} {result.value:.3f}{interval}")
        return lines


def _grid(budget: int) -> list[int]:
    if budget <= MAX_GRID:
        return list(range(0, budget + 1))
    points = {0, 1, budget}
    for i in range(MAX_GRID):
        points.add(int(round(math.exp(math.log(budget) * i / (MAX_GRID - 1)))))
    return sorted(p for p in points if p <= budget)


def _scores(method: str, level: str, model, task: Task, steps: int | None):
    from ..engine.attribution_patching import attribution_sweep, patching_sweep

    if method == "patching":
        return patching_sweep(model, task, what=level, record=False)
    sweep = attribution_sweep(model, task, method=method, steps=steps, record=False)
    return sweep.nodes() if level == "nodes" else sweep


def _circuit_of(items: list, level: str, name: str = "found") -> Circuit:
    return Circuit.of([], items, name=name) if level == "edges" else Circuit.of(items, name=name)


def _recoveries(setup, members: list, masks: list[int], desc: str) -> dict[int, float]:
    """Point recovery of each mask over ``members`` (the lattice's runs, memoised across calls)."""
    lattice = lattice_of(setup, members)
    runs = lattice.keep([*masks, 0], desc=desc)
    full, empty = float(full_metric(setup).mean()), float(runs[0].mean())
    return {mask: (float(runs[mask].mean()) - empty) / (full - empty) for mask in masks}


def _prune(setup, members: list, target: float) -> tuple[list, list[Pruned]]:
    """Remove members while recovery stays at or above ``target``.

    First pass, lowest-ranked first: each member in turn is dropped when the
    circuit without it still reaches the target (one exact run per member).
    Then greedy rounds of leave-one-out over what is left (one batched run per
    round): the member whose removal costs least goes while the target holds.
    """
    steps: list[Pruned] = []
    current = list(members)
    for item in reversed(list(members)):
        if len(current) == 1:
            break
        rest = [c for c in current if c != item]
        mask = (1 << len(rest)) - 1
        after = _recoveries(setup, rest, [mask], "pruning")[mask]
        if after >= target:
            steps.append(Pruned([item], after))
            current = rest
    while len(current) > 1:
        everything = (1 << len(current)) - 1
        masks = [everything ^ (1 << i) for i in range(len(current))]
        values = _recoveries(setup, current, masks, "pruning")
        without = [values[m] for m in masks]
        best = max(range(len(current)), key=lambda i: (without[i], -i))
        if without[best] < target:
            break
        steps.append(Pruned([current[best]], without[best]))
        current = current[:best] + current[best + 1:]
    return current, steps


def discover(
    model=None,
    task: Task | None = None,
    *,
    method: str = "eap",
    level: str = "edges",
    budget: int | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    steps: int | None = None,
    ablation="resample",
    confidence: float = stats.DEFAULT_CONFIDENCE,
    seed: int | None = None,
    prune: bool = True,
    verify: bool = True,
) -> Discovery:
    """Find a circuit on ``task``: score, cut where recovery stops rising, prune, verify (see the module docstring).

    ``method``: ``"eap"``, ``"eap-ig"`` (``steps`` interpolation points) or
    ``"patching"``; ``level``: ``"edges"`` or ``"nodes"``; ``budget``: the
    largest circuit considered (default: 100 or the whole graph if smaller);
    ``tolerance``: how far below the best recovery on the curve the circuit
    may stay. ``prune=False`` keeps the top-n cut as it is; ``verify=False``
    skips the exact checks (no spec can be written then).
    """
    if method not in METHODS:
        raise ArgumentError(f"method={method!r} is not valid: use one of {', '.join(repr(m) for m in METHODS)}")
    if level not in curves.LEVELS:
        raise ArgumentError(f"level={level!r} is not valid: use 'edges' or 'nodes'")
    if steps is not None and method != "eap-ig":
        raise ArgumentError(f"steps={steps!r} is only for method='eap-ig'")
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not 0 <= tolerance < 1:
        raise ArgumentError(f"tolerance={tolerance!r} is not valid: a recovery difference in [0, 1)")
    setup = causal._setup(model, task, ablation, seed, confidence)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    sweep = _scores(method, level, setup.model, setup.task, steps)
    timings["scores"] = time.perf_counter() - start
    ranking = curves.rank(sweep, setup.model, setup.task, level=level)
    n_items = len(ranking.items)
    if budget is None:
        budget = min(DEFAULT_BUDGET, ranking.n_scored or n_items)
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or not 1 <= budget <= n_items:
        raise ArgumentError(f"budget={budget!r} is not valid: the largest circuit to consider, 1 to {n_items} {level}")
    budget = int(budget)

    start = time.perf_counter()
    curve = curves._measure(ranking, setup, fractions=None, counts=_grid(budget), log_scale=False)
    timings["curve"] = time.perf_counter() - start
    values = [e.mean for e in curve.recovery]
    best = max(values)
    target = best - tolerance
    cut = next(n for n, v in zip(curve.counts, values) if v >= target)
    if cut == 0:
        raise ArgumentError(f"the empty circuit already recovers {values[0]:.3f}, within {tolerance:g} of the best: "
                            "the task's metric does not depend on what the graph carries under this ablation")
    members = ranking.top(cut)

    start = time.perf_counter()
    pruning: list[Pruned] = []
    if prune:
        members, pruning = _prune(setup, members, target)
    timings["pruning"] = time.perf_counter() - start
    found = Discovery(
        model=model_label(setup.model), task=setup.task, method=method, level=level, budget=budget, tolerance=float(tolerance),
        ablation=str(setup.ablation), seed=setup.seed, confidence=setup.confidence, steps=sweep.steps, scores=sweep,
        curve=curve, best=best, target=target, cut=cut, circuit=_circuit_of(members, level), pruning=pruning, seconds=timings,
    )
    if verify:
        start = time.perf_counter()
        found.checks = verify_circuit(found, setup)
        timings["verify"] = time.perf_counter() - start
    return found


def verify_circuit(found: Discovery, setup) -> dict:
    """The exact checks of the found circuit, at thresholds that only record the value (the spec sets the real ones)."""
    from .completeness import check_complete
    from .faithfulness import check_faithful
    from .minimality import check_minimal

    common = dict(model=setup.model, task=setup.task, ablation=found.ablation, seed=setup.seed, confidence=setup.confidence)
    circuit = found.circuit
    checks = {
        "sufficient": causal.check_sufficient(circuit, min_recovery=-1e9, **common),
        "necessary": causal.check_necessary(circuit, min_drop=-1e9, **common),
        "faithful": check_faithful(circuit, max_error=1e9, **common),
    }
    size = len(found.members)
    if size > 1:
        method = "ioi" if size <= 12 else "leave-one-out"
        checks["minimal"] = check_minimal(circuit, method=method, min_contribution=-1e9, **common)
        if size <= 12:
            checks["complete"] = check_complete(circuit, max_incompleteness=1e9, **common)
    scores = found.method
    checks["curve"] = curves.check_faithfulness_curve(scores, min_cpr=-1e9, level=found.level, **common)
    return checks
