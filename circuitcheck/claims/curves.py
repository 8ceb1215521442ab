"""Faithfulness curves: recovery as the top-n nodes or edges by a score are kept, and the areas under them (CPR, CMD).

Given a score for every node (head output, MLP output) or every edge of the
residual-stream graph (attribution patching, exact patching, or the user's
own), rank the items by score (by magnitude with ``absolute=True``, the
default, as MIB ranks them) and keep the top n: the circuit C_n of the n
best. For each n the curve has

    recovery(C_n) = (m(C_n) − m(∅)) / (m(M) − m(∅))

measured exactly as :func:`~circuitcheck.claims.causal.check_sufficient`
measures it (a node circuit: every other head and MLP output ablated; an edge
circuit: every other edge ablated, each receiver's input rebuilt from its
kept senders). The points are the fractions of the graph kept (MIB's
``0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1`` by default;
``n = floor(fraction x N)`` items of the N in the graph) or counts given
directly. The areas, by the trapezoid rule over the fraction kept (MIB's
``evaluate_area_under_curve``, linear x unless ``log_scale=True``):

- **CPR** (circuit performance ratio): the area under recovery; higher is
  better (a ranking that recovers the model with few items);
- **CMD** (circuit-model difference): the area under |1 − recovery|; lower is
  better (it counts over-recovery too, as the faithfulness error does).

Every point is one variant of the circuit lattice (:mod:`.lattice`), so all of
them run in one batched call through the patcher and are shared with the
causal claims on the same circuits. Intervals come from the same paired
bootstrap over examples as every causal claim: each resample's means give the
whole curve, so CPR and CMD get intervals too. A claim on CPR is decided on
its lower bound, one on CMD on its upper bound.

Items the scores leave out (a user's scores of a few heads, the positional
embedding's edges, which attribution does not score) rank after every scored
item, in the graph's order, and the notes count them. The token embedding is
not a node of a node circuit (embeddings always run), so a node sweep's
``embed`` score is left out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ..errors import ArgumentError, CircuitCheckError, ComponentError
from ..model.circuit import Circuit
from ..model.components import Component, Edge, model_label
from ..model.tasks import Task
from . import causal, robustness, stats
from .causal import _base, _lines, _setup
from .decision import conclude
from .lattice import Samples, bootstrap, full_metric
from .minimality import lattice_of
from .result import CheckResult

#: MIB's points (``evaluate_area_under_curve``): fractions of the graph's nodes or edges kept.
MIB_FRACTIONS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
LEVELS = ("nodes", "edges")
#: score methods a spec file (or a call) may name instead of giving scores: computed on the claim's task
SCORE_METHODS = ("eap", "eap-ig", "node", "patching")
#: ranked items shown in a result's evidence
SHOWN_ITEMS = 30


# Ranking ---------------------------------------------------------------------------------


@dataclass
class Ranking:
    """Every node or edge of the graph, best first by score, and what the scores were."""

    level: str  # "nodes" or "edges"
    items: list  # Components or Edges, best first (unscored items last, in graph order)
    scores: np.ndarray  # [n_scored]: the score of items[:n_scored] (signed, as given)
    source: str  # what made the scores: "attribution (EAP)", "user scores", ...
    absolute: bool
    notes: list[str] = field(default_factory=list)

    @property
    def n_scored(self) -> int:
        return len(self.scores)

    def top(self, n: int) -> list:
        return self.items[:n]


def _universe(model, seq_len: int, level: str) -> list:
    """Every item of the graph at ``level``: head and MLP outputs, or every edge."""
    if level == "nodes":
        cfg = model.cfg
        items: list = []
        for layer in range(cfg.n_layers):
            items += [Component("head", layer, h) for h in range(cfg.n_heads)]
            if not getattr(cfg, "attn_only", False):
                items.append(Component("mlp", layer))
        return items
    from ..engine import edges as _edges

    return list(_edges.Graph.of(model, seq_len).edges())


def _oriented(sweep) -> np.ndarray:
    """A sweep's per-item score: the share of the clean - corrupted gap it accounts for (positive = towards the clean run)."""
    clean, corrupt = float(sweep.clean_metric.mean()), float(sweep.corrupt_metric.mean())
    if clean == corrupt:
        raise CircuitCheckError("the scores' sweep has equal clean and corrupted means: its effects cannot be ranked as shares of a gap")
    share = sweep.effects.mean(1).double().numpy() / (clean - corrupt)
    return share if sweep.direction == "denoise" else -share


def _parse_item(label, level_hint: str | None):
    if isinstance(label, Edge):
        return label
    if isinstance(label, Component):
        return label
    if not isinstance(label, str):
        raise ArgumentError(f"a score's key must be a component ('L1H3', 'L0.mlp') or an edge ('L0H0 -> L1H3.k'), got {label!r}")
    return Edge.parse(label) if "->" in label else Component.parse(label)


def _scores_of(scores, model, task: Task, level: str | None):
    """``(level, {item: score}, source)`` from any accepted form of ``scores``."""
    from ..engine.attribution_patching import GraphSweep, attribution_sweep, patching_sweep

    if isinstance(scores, str):
        method = scores.strip().lower()
        if method not in SCORE_METHODS:
            raise ArgumentError(f"scores={scores!r} is not valid: give scores (a sweep, a mapping of components or edges to "
                                f"numbers) or a method, one of {', '.join(repr(m) for m in SCORE_METHODS)}")
        if method == "patching":
            what = level or "nodes"
            if what not in LEVELS:
                raise ArgumentError(f"level={level!r} is not valid: use 'nodes' or 'edges'")
            scores = patching_sweep(model, task, what=what, record=False)
        else:
            if method == "node" and level == "edges":
                raise ArgumentError("scores='node' (node attribution) gives node scores; for edges use 'eap' or 'eap-ig'")
            scores = attribution_sweep(model, task, method=method, record=False)
            if level == "nodes" and scores.what == "edges":
                scores = scores.nodes()
    if isinstance(scores, GraphSweep):
        if level is not None and level != scores.what:
            if level == "nodes" and scores.approximation:
                scores = scores.nodes()
            else:
                raise ArgumentError(f"level={level!r} but the sweep scores {scores.what}; "
                                    + ("exact edge effects do not add up to nodes: use patching_sweep(what='nodes')" if level == "nodes"
                                       else "node scores cannot rank edges: use an edge sweep (attribution_sweep(method='eap'))"))
        values = _oriented(scores)
        mapping = {}
        for label, value in zip(scores.index, values):
            if scores.what == "nodes" and label in ("embed", "pos_embed"):
                continue  # embeddings always run in a node circuit
            mapping[_parse_item(label, scores.what)] = float(value)
        return scores.what, mapping, scores.label
    if isinstance(scores, pd.Series):
        scores = scores.to_dict()
    if isinstance(scores, pd.DataFrame):
        raise ArgumentError("scores is a DataFrame: pass a Series (index: components or edges, values: scores), "
                            "a dict, or the sweep itself (attribution_sweep / patching_sweep)")
    if not isinstance(scores, Mapping):
        raise ArgumentError(f"scores must be a sweep (attribution_sweep / patching_sweep), a mapping of components or edges to "
                            f"numbers, or a method ({', '.join(SCORE_METHODS)}); got {type(scores).__name__}")
    if not scores:
        raise ArgumentError("scores is empty: score at least one component or edge")
    mapping = {}
    for key, value in scores.items():
        item = _parse_item(key, level)
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ArgumentError(f"the score of {key!r} is {value!r}: scores must be numbers") from None
        if not math.isfinite(number):
            raise ArgumentError(f"the score of {key!r} is {value!r}: scores must be finite numbers")
        if item in mapping:
            raise ArgumentError(f"{key!r} is scored twice (as {item})")
        mapping[item] = number
    kinds = {"edges" if isinstance(item, Edge) else "nodes" for item in mapping}
    if len(kinds) > 1:
        raise ArgumentError("scores mix components and edges: a curve ranks nodes or edges, not both")
    found = kinds.pop()
    if level is not None and level != found:
        raise ArgumentError(f"level={level!r} but the scores are of {found}")
    return found, mapping, "user scores"


def rank(scores, model, task: Task, *, level: str | None = None, absolute: bool = True) -> Ranking:
    """Rank every node or edge of ``model``'s graph by ``scores`` (see :func:`faithfulness_curve`)."""
    if level is not None and level not in LEVELS:
        raise ArgumentError(f"level={level!r} is not valid: use 'nodes' or 'edges' (or leave it out: the scores say)")
    if not isinstance(absolute, bool):
        raise ArgumentError(f"absolute={absolute!r} is not valid: True (rank by |score|, MIB's default) or False (by signed score)")
    level, mapping, source = _scores_of(scores, model, task, level)
    universe = _universe(model, task.seq_len, level)
    position = {item: i for i, item in enumerate(universe)}
    canonical = {}
    for item, value in mapping.items():
        if level == "nodes":
            if item.kind not in ("head", "mlp") or item.port is not None or item.positions is not None:
                raise ComponentError(f"{item} cannot be kept in a node circuit: node curves rank head outputs ('L1H3') and MLPs ('L0.mlp')")
            try:
                item.validate(model)
            except ComponentError as error:
                raise ComponentError(f"scored component {item}: {error}") from None
        if item not in position:
            example = ", ".join(map(str, universe[:3]))
            raise ComponentError(f"{item} is not a {level[:-1]} of this model's graph ({len(universe)} {level}, e.g. {example})")
        canonical[item] = value
    scored = sorted(canonical, key=lambda item: (-(abs(canonical[item]) if absolute else canonical[item]), position[item]))
    rest = [item for item in universe if item not in canonical]
    notes = []
    if rest:
        notes.append(f"{len(rest)} of the {len(universe)} {level} have no score; they rank after every scored one, in graph order")
    return Ranking(level, scored + rest, np.array([canonical[item] for item in scored]), source, absolute, notes)


# The curve ---------------------------------------------------------------------------------


def _points(n_items: int, fractions, counts) -> tuple[list[float], list[int]]:
    """``(x, n)``: the fraction of the graph and the number of items kept at each point."""
    if fractions is not None and counts is not None:
        raise ArgumentError("give fractions= or counts=, not both")
    if counts is not None:
        values = list(counts) if not isinstance(counts, (int, np.integer)) else [counts]
        if not values:
            raise ArgumentError("counts= is empty: give at least two numbers of items to keep")
        for n in values:
            if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 0 <= n <= n_items:
                raise ArgumentError(f"counts= holds {n!r}: each count is a whole number of items from 0 to {n_items} (the graph's size)")
        ns = sorted({int(n) for n in values})
        return [n / n_items for n in ns], ns
    values = list(MIB_FRACTIONS if fractions is None else fractions)
    for f in values:
        if isinstance(f, bool) or not isinstance(f, (int, float, np.floating, np.integer)) or not 0 <= f <= 1:
            raise ArgumentError(f"fractions= holds {f!r}: each fraction of the graph kept is a number in [0, 1]")
    xs = sorted({float(f) for f in values})
    return xs, [int(math.floor(x * n_items + 1e-9)) for x in xs]


def _trapezoid(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Trapezoid areas of ``y`` ``[R, k]`` over ``x`` ``[k]``: ``[R]``."""
    widths = np.diff(x)
    return ((y[:, 1:] + y[:, :-1]) / 2 * widths).sum(axis=1)


@dataclass
class FaithfulnessCurve:
    """Recovery of the top-n circuits of a ranking, with intervals, and the areas under the curve.

    ``frame()`` has one row per point (fraction, n, recovery and its interval);
    ``cpr`` and ``cmd`` are :class:`~circuitcheck.claims.stats.Estimate` s;
    ``circuit(n)`` is the top-n circuit as a :class:`~circuitcheck.Circuit`.
    """

    ranking: Ranking
    x: list[float]
    counts: list[int]
    recovery: list[stats.Estimate]
    cpr: stats.Estimate
    cmd: stats.Estimate
    log_scale: bool
    task: str
    model: str
    ablation: str
    full: float  # m(M)
    empty: float  # m(∅)

    @property
    def level(self) -> str:
        return self.ranking.level

    @property
    def n_items(self) -> int:
        return len(self.ranking.items)

    def circuit(self, n: int, name: str | None = None) -> Circuit:
        """The circuit of the top ``n`` items."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 0 < n <= self.n_items:
            raise ArgumentError(f"n={n!r} is not valid: a circuit keeps 1 to {self.n_items} items")
        top = self.ranking.top(int(n))
        return Circuit.of([], top, name=name) if self.level == "edges" else Circuit.of(top, name=name)

    def frame(self) -> pd.DataFrame:
        frame = pd.DataFrame({
            "fraction": self.x,
            "n": self.counts,
            "recovery": [e.mean for e in self.recovery],
            "ci_low": [e.low for e in self.recovery],
            "ci_high": [e.high for e in self.recovery],
        })
        frame.attrs.update({"level": self.level, "scores": self.ranking.source, "cpr": self.cpr.mean, "cmd": self.cmd.mean})
        return frame

    def ranking_frame(self, k: int = SHOWN_ITEMS) -> pd.DataFrame:
        """The ``k`` best-ranked items and their scores."""
        k = min(k, self.ranking.n_scored)
        return pd.DataFrame({"rank": range(1, k + 1), self.level[:-1]: [str(i) for i in self.ranking.items[:k]],
                             "score": self.ranking.scores[:k]})

    def __repr__(self) -> str:
        return (f"FaithfulnessCurve({self.level}, {len(self.x)} points, scores: {self.ranking.source}, "
                f"CPR {self.cpr.mean:.3f}, CMD {self.cmd.mean:.3f}, model {self.model}, task {self.task})")


def _measure(ranking: Ranking, setup, *, fractions, counts, log_scale: bool) -> FaithfulnessCurve:
    n_items = len(ranking.items)
    xs, ns = _points(n_items, fractions, counts)
    if len(xs) < 2:
        raise ArgumentError(f"a curve needs at least two points; got {len(xs)} (fractions/counts {xs})")
    if log_scale and xs[0] <= 0:
        raise ArgumentError("log_scale=True needs every fraction above 0 (log 0 is undefined): drop the 0 point")
    lattice = lattice_of(setup, ranking.items)
    masks = [(1 << n) - 1 for n in ns]
    runs = lattice.keep([*masks, 0], desc="faithfulness curve")
    full = full_metric(setup)
    causal._check_gap(full, runs[0], setup)
    samples = Samples(full, runs[0], {f"n={n}": runs[mask] for n, mask in zip(ns, masks)})
    columns = samples.columns([f"n={n}" for n in ns])
    x = np.log(np.asarray(xs)) if log_scale else np.asarray(xs)

    def statistic(means):
        recovery = samples.recovery(means)[:, columns]
        return np.concatenate([recovery, _trapezoid(x, recovery)[:, None], _trapezoid(x, np.abs(1 - recovery))[:, None]], axis=1)

    estimates = bootstrap(samples.data, statistic, confidence=setup.confidence, seed=setup.seed)
    return FaithfulnessCurve(
        ranking=ranking, x=xs, counts=ns, recovery=estimates[:-2], cpr=estimates[-2], cmd=estimates[-1], log_scale=log_scale,
        task=setup.task.name, model=model_label(setup.model), ablation=str(setup.ablation),
        full=float(full.mean()), empty=float(runs[0].mean()),
    )


def faithfulness_curve(
    scores,
    *,
    level: str | None = None,
    fractions: Sequence[float] | None = None,
    counts: Sequence[int] | None = None,
    absolute: bool = True,
    log_scale: bool = False,
    model=None,
    task: Task | None = None,
    ablation=None,
    confidence: float = stats.DEFAULT_CONFIDENCE,
    seed: int | None = None,
) -> FaithfulnessCurve:
    """The faithfulness curve of a ranking of nodes or edges (see the module docstring).

    ``scores``: a :class:`~circuitcheck.engine.attribution_patching.GraphSweep`
    (``cc.attribution_sweep(...)``, ``cc.patching_sweep(...)``), a mapping or
    Series of components or edges to numbers, or a method computed on the task
    (``"eap"``, ``"eap-ig"``, ``"node"``, ``"patching"``). ``level``: ``"nodes"``
    or ``"edges"`` (default: what the scores score; an edge attribution sweep
    summed per sender gives node scores). ``fractions`` of the graph kept
    (default MIB's) or ``counts`` of items. ``absolute``: rank by |score|
    (MIB's default). ``log_scale``: areas over log(fraction).
    """
    setup = _setup(model, task, ablation, seed, confidence)
    ranking = rank(scores, setup.model, setup.task, level=level, absolute=absolute)
    return _measure(ranking, setup, fractions=fractions, counts=counts, log_scale=log_scale)


# The claim ---------------------------------------------------------------------------------


@robustness.over_ablations
def check_faithfulness_curve(
    scores,
    *,
    min_cpr: float | None = None,
    max_cmd: float | None = None,
    level: str | None = None,
    fractions: Sequence[float] | None = None,
    counts: Sequence[int] | None = None,
    absolute: bool = True,
    log_scale: bool = False,
    model=None,
    task: Task | None = None,
    ablation=None,
    confidence: float = stats.DEFAULT_CONFIDENCE,
    seed: int | None = None,
) -> CheckResult:
    """Measure a ranking's faithfulness curve and decide CPR (lower bound >= ``min_cpr``) or CMD (upper bound <= ``max_cmd``)."""
    if (min_cpr is None) == (max_cmd is None):
        raise ArgumentError(
            "give one threshold: min_cpr= (the area under recovery must be at least it) or max_cmd= (the area of "
            "|1 - recovery| at most it); for both, write two claims" if min_cpr is None else
            f"min_cpr={min_cpr!r} and max_cmd={max_cmd!r}: a claim decides one area; write two claims for both")
    for name, value in (("min_cpr", min_cpr), ("max_cmd", max_cmd)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)):
            raise ArgumentError(f"{name}={value!r} is not valid: it must be a finite number")
    setup = _setup(model, task, ablation, seed, confidence)
    ranking = rank(scores, setup.model, setup.task, level=level, absolute=absolute)
    curve = _measure(ranking, setup, fractions=fractions, counts=counts, log_scale=log_scale)
    on_cpr = min_cpr is not None
    estimate = curve.cpr if on_cpr else curve.cmd
    decision = stats.decide(estimate, min_cpr, max_cmd)
    area = "CPR" if on_cpr else "CMD"
    subject = f"the {ranking.source} ranking of {ranking.level}"
    x_words = "log(fraction)" if log_scale else "fraction"
    base = _base(setup, subject, "faithfulness_curve", f"{area} (area under {'recovery' if on_cpr else '|1 - recovery|'} over the {x_words} kept)")
    base["parameters"].update({"scores": ranking.source, "level": ranking.level, "absolute": absolute, "log_scale": log_scale,
                               "points": len(curve.x), "items": curve.n_items})
    claim = (f"keeping the top {ranking.level} by {ranking.source} recovers the model on {setup.task.name}: "
             + (f"CPR >= {min_cpr:g}" if on_cpr else f"CMD <= {max_cmd:g}"))
    best = max(range(len(curve.x)), key=lambda i: curve.recovery[i].mean)
    notes = [
        f"CPR {curve.cpr.describe()}; CMD {curve.cmd.describe()} (trapezoids over the {x_words} kept, "
        f"{curve.x[0]:g} to {curve.x[-1]:g}, {len(curve.x)} points)",
        f"ranked {curve.n_items} {ranking.level} by {'|score|' if absolute else 'signed score'} ({ranking.source}); "
        f"highest recovery {curve.recovery[best].mean:.3f} with the top {curve.counts[best]}",
        *ranking.notes,
        f"m(M) = {curve.full:.4g}, m(∅) = {curve.empty:.4g} ({setup.task.metric})",
        *_lines(setup),
    ]
    return CheckResult(
        **base,
        claim=claim,
        value=estimate.mean,
        **estimate.interval_fields(),
        min_value=min_cpr,
        max_value=max_cmd,
        evidence={"curve": curve.frame(), "ranking": curve.ranking_frame()},
        notes=notes,
        **decision.fields(),
    )


def assert_faithfulness_curve(scores, min_cpr: float | None = None, max_cmd: float | None = None, **kwargs) -> CheckResult:
    """Assert that keeping the top nodes or edges by ``scores`` recovers the model: CPR >= ``min_cpr`` or CMD <= ``max_cmd``.

    CPR is decided on its interval's lower bound, CMD on its upper bound. See
    :func:`faithfulness_curve` for ``scores`` and the other options.
    """
    __tracebackhide__ = True
    tolerance = kwargs.pop("tolerance", None)
    return conclude(check_faithfulness_curve(scores, min_cpr=min_cpr, max_cmd=max_cmd, **kwargs), tolerance)


# The claim kind (circuitcheck.claims.registry) ---------------------------------------------

from .registry import ClaimKind, Param, declare  # noqa: E402


def _spec_curve(assertion, params: dict, *, model, task=None):
    return assertion(**params, model=model, task=task)


def _curve_subject(params: dict) -> str:
    scores = params["scores"]
    return scores if isinstance(scores, str) else "scores"


FAITHFULNESS_CURVE = declare(ClaimKind(
    name="faithfulness_curve",
    check=check_faithfulness_curve,
    assertion=assert_faithfulness_curve,
    metric="CPR or CMD",
    params=(Param("scores", "any", required=True,
                  doc="a method computed on the task (eap, eap-ig, node, patching) or a mapping of components or edges to scores"),
            Param("min_cpr", "number", doc="the lower bound of CPR (area under recovery) must be >= it"),
            Param("max_cmd", "number", doc="the upper bound of CMD (area under |1 - recovery|) must be <= it"),
            Param("level", "choice", choices=LEVELS, doc="rank nodes or edges (default: what the scores score)"),
            Param("fractions", "any", doc="fractions of the graph kept at each point (default MIB's 0.001 ... 1)"),
            Param("counts", "any", doc="numbers of items kept at each point, instead of fractions"),
            Param("absolute", "boolean", True, doc="rank by |score| (MIB's default) rather than the signed score"),
            Param("log_scale", "boolean", False, doc="areas over log(fraction) instead of the fraction"),
            *causal._CAUSAL_PARAMS),
    thresholds=("min_cpr", "max_cmd"),
    evidence=("curve", "ranking"),
    definition="Faithfulness curve: recovery(C_n) of the circuit C_n of the top n nodes or edges by a score, for a range of n "
    "(MIB's fractions 0.1% to 100% of the graph by default). CPR is the area under it and CMD the area under |1 − recovery(C_n)| "
    "(trapezoids over the fraction kept, as MIB); CPR is decided on its lower bound, CMD on its upper bound.",
    section="curves",
    needs_task=True,
    spec_call=_spec_curve,
    subject=_curve_subject,
))
