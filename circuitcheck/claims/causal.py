"""Causal claims: necessity, sufficiency and paths (minimality, completeness and faithfulness beside them).

Definitions (DESIGN.md "Metric definitions"). Let m(X) be the mean task metric
when only X runs intact and every other head and MLP output is ablated; M the
full model, ∅ everything ablated, M\\C the model with C ablated.

Edge circuits (``Circuit.parse("L0H0 -> L1H0.k, L1H0 -> logits")``) take the
same definitions over edges (:mod:`circuitcheck.engine.edges`): m(C) keeps only
C's edges (every receiver's input rebuilt from its kept senders and the ablated
values of the others), M\\C ablates C's edges, and ∅ ablates every edge, the
embeddings' too. Under resample ablation ∅ is then the corrupted run, and
recovery(C) = (m(C) - m(corrupt)) / (m(clean) - m(corrupt)) is exactly
TransformerLens 4.3's ``faithfulness(...).recovered`` for the same edges
(averaged as a ratio of means over examples; TransformerLens measures one
pair at a time). Under mean ablation TransformerLens still divides by the
clean-corrupt gap, circuitcheck by m(M) - m(∅) (every edge mean-ablated); the
two are related by recovery_TL = (m(∅) - m(corrupt) + recovery · (m(M) - m(∅)))
/ (m(M) - m(corrupt)), and m(C) itself is the same number in both. A node
circuit's ∅ keeps the embeddings, so the edge circuit with every edge out of the
embeddings and the circuit's nodes (:func:`circuitcheck.engine.edges.node_edges`)
has the node circuit's m(C) but its own, larger, gap.

- necessity:   drop(C)         = (m(M) - m(M\\C)) / (m(M) - m(∅))
- sufficiency: recovery(C)     = (m(C) - m(∅)) / (m(M) - m(∅))
- minimality, completeness, faithfulness: claims/minimality.py, completeness.py, faithfulness.py
- path (noise, default):  effect(s -> r) = (m(clean) - m(path noised)) / (m(clean) - m(corrupt))
- path (denoise):         effect(s -> r) = (m(path denoised) - m(corrupt)) / (m(clean) - m(corrupt))

Every quantity is a ratio of means over examples; its confidence interval is
a seeded bootstrap over examples (all variants resampled together), and the
claim is decided on the interval's bound, so it does not flip between runs.
All variants of one check run in the same batched forward passes, and a
variant measured by one claim is not run again by another on the same circuit,
task and ablation (claims/lattice.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence, Union

import numpy as np
import pandas as pd

from ..engine import ablation as _ablation
from ..engine import edges as _edges
from ..model import context
from ..model.kinds import require_language_model
from . import lattice, robustness, stats
from ..model.circuit import Circuit
from ..model.components import Component, Edge, model_checkpoint, model_label, parse_components
from ..errors import CircuitCheckError, ComponentError
from ..engine.patcher import Patch, Patcher, component_patch, shared_patcher
from .result import CheckResult
from ..model.tasks import Task
from .decision import check_thresholds, conclude

Components = Union[str, Component, Circuit, Iterable[Union[str, Component]]]


def get_patcher(model, max_batch: int | None = None) -> Patcher:
    """The patcher of ``model`` shared by every check (its cached runs are reused): the running test's, else the model session's."""
    context_patcher = context.current_patcher(model)
    if context_patcher is not None:
        return context_patcher
    return shared_patcher(model, max_batch)


@dataclass
class _Setup:
    model: object
    task: Task
    patcher: Patcher
    ablation: _ablation.Ablation
    seed: int
    confidence: float
    keep: tuple[Component, ...] = ()  # components left intact outside the circuit (keep=)


def _setup(model, task, ablation, seed, confidence, keep=None) -> _Setup:
    """Resolve a single-ablation check's inputs (a check taking several ablations is wrapped in ``robustness.over_ablations``)."""
    model = context.resolve_model(model)
    require_language_model(model, "causal claims (necessity, sufficiency, minimality, completeness, faithfulness, paths)")
    task = context.resolve_task(task, model)
    task.validate(model)
    chosen = robustness.ablations(ablation)
    if len(chosen) > 1:
        raise CircuitCheckError(
            f"this check takes one ablation, got {', '.join(a.name for a in chosen)}: wrap it in robustness.over_ablations to decide on the worst"
        )
    return _Setup(
        model=model,
        task=task,
        patcher=get_patcher(model),
        ablation=chosen[0],
        seed=context.resolve_seed(seed),
        confidence=stats.check_confidence(confidence),
        keep=_keep_components(keep, model),
    )


#: keep= words for whole component types, and what each keeps.
KEEP_TYPES = {"mlp": "every MLP output", "heads": "every head output"}


def _keep_components(keep, model) -> tuple[Component, ...]:
    """The components ``keep=`` leaves intact outside the circuit: type words (``"mlp"``, ``"heads"``) and components (``"L0.mlp"``, ``"L1H2"``)."""
    if keep is None:
        return ()
    items = [keep] if isinstance(keep, (str, Component)) else list(keep)
    kept: list[Component] = []
    for item in items:
        word = item.strip().lower() if isinstance(item, str) else None
        if word in ("mlp", "mlps"):
            if getattr(model.cfg, "attn_only", False):
                raise CircuitCheckError(f"keep={keep!r}: the model is attention-only, it has no MLPs to keep")
            kept += [Component("mlp", layer) for layer in range(model.cfg.n_layers)]
        elif word in ("heads", "attn"):
            kept += [Component("head", layer, head) for layer in range(model.cfg.n_layers) for head in range(model.cfg.n_heads)]
        else:
            try:
                component = Component.parse(item).validate(model)
            except ComponentError as error:
                raise ComponentError(
                    f"keep={keep!r}: {item!r} is neither a component type ({', '.join(KEEP_TYPES)}) nor a valid component: {error}"
                ) from None
            if component.kind not in ("head", "attn", "mlp") or component.port is not None:
                raise ComponentError(f"keep={keep!r}: {component} cannot be kept; keep takes head outputs, attention layers, MLPs, or {', '.join(KEEP_TYPES)}")
            kept.append(component)
    return tuple(kept)


def _require_outside(components: Sequence[Component], keep: Sequence[Component], model, seq_len: int) -> None:
    """A kept component cannot be part of the circuit: it would be ablated and kept at once."""
    if not keep:
        return
    kept = _kept_sets(keep, model, seq_len)
    for c in components:
        keys = [(c.layer, "head", h) for h in range(model.cfg.n_heads)] if c.kind == "attn" else [
            (c.layer, "head", c.head) if c.kind == "head" else (c.layer, "mlp")]
        if any(kept.get(key) for key in keys):
            raise CircuitCheckError(
                f"{c} is in the circuit and also kept intact by keep= ({' '.join(map(str, keep))}): "
                "keep names components outside the circuit; remove it from one of them"
            )


def _components(components: Components, model) -> list[Component]:
    """The components of a node circuit (or a path's senders), validated; edges are refused."""
    if isinstance(components, Circuit):
        if components.edges:
            raise CircuitCheckError(
                f"circuit {components.label} has edges; a path's senders are components (e.g. 'L0H0 L0H2'): "
                "check an edge circuit with assert_sufficient, assert_necessary or assert_faithful"
            )
        items = list(components.components)
    else:
        items = parse_components(components)
    if not items:
        raise ComponentError("no components given: list at least one, e.g. 'L1H3'")
    return [c.validate(model) for c in items]


def _edge_text(item) -> bool:
    return isinstance(item, Edge) or (isinstance(item, str) and "->" in item)


def _members(circuit: Components, model) -> list:
    """A causal claim's members: the components of a node circuit, or the edges of an edge circuit (validated)."""
    if not isinstance(circuit, Circuit) and (
        _edge_text(circuit) or (isinstance(circuit, (list, tuple)) and any(_edge_text(item) for item in circuit))
    ):
        circuit = Circuit.parse(circuit if not isinstance(circuit, Edge) else [circuit])
    if isinstance(circuit, Circuit) and circuit.edges:
        if circuit.components:
            raise CircuitCheckError(
                f"circuit {circuit.label} lists components ({' '.join(map(str, circuit.components))}) and edges: a causal claim "
                "takes a node circuit or an edge circuit; write the components' edges out "
                "(circuitcheck.engine.edges.node_edges gives the edges that run like a node circuit)"
            )
        return [edge.validate(model) for edge in circuit.edges]
    return _components(circuit, model)


def is_edges(members: Sequence) -> bool:
    """Whether a claim's members are edges (an edge circuit) rather than components."""
    return bool(members) and isinstance(members[0], Edge)


def builders(setup, members: Sequence):
    """``(ablate_all_but, ablate)``: the variant builders of ``members`` (the lattice's ``keep`` and ``drop``).

    Components: every other head and MLP output ablated / these ablated (with
    ``keep=``). Edges: every other edge ablated / these edges ablated.
    """
    seq_len = setup.task.seq_len
    if is_edges(members):
        if setup.keep:
            raise CircuitCheckError(
                f"keep={' '.join(map(str, setup.keep))!r} applies to node circuits; an edge circuit keeps exactly its edges "
                "(list the edges out of a component to keep it)"
            )
        graph = _edges.Graph.of(setup.model, seq_len)
        for edge in members:
            edge.positions(seq_len)  # an edge narrowed to no position is an error here, not an empty patch
        return (lambda kept: graph.keep(kept).patches(), lambda ablated: graph.drop(ablated).patches())
    return (lambda kept: _ablate_all_but(kept, setup.model, seq_len, keep=setup.keep),
            lambda ablated: _ablate(ablated, seq_len))


# The node universe: every head output and MLP output ---------------------------------


def _kept_sets(components: Sequence[Component], model, seq_len: int):
    """Per (layer, 'head', h) / (layer, 'mlp'): the set of kept positions."""
    kept: dict[tuple, set[int]] = {}
    everywhere = set(range(seq_len))
    for c in components:
        positions = set(c.positions.indices(seq_len)) if c.positions is not None else everywhere
        if c.kind == "head" and c.port is None:
            kept.setdefault((c.layer, "head", c.head), set()).update(positions)
        elif c.kind == "attn":
            for h in range(model.cfg.n_heads):
                kept.setdefault((c.layer, "head", h), set()).update(positions)
        elif c.kind == "mlp":
            kept.setdefault((c.layer, "mlp"), set()).update(positions)
        elif c.kind in ("embed", "pos_embed"):
            raise ComponentError(
                f"{c} cannot be part of a node circuit: sufficiency keeps or ablates head and MLP outputs, and embeddings always run"
            )
        else:
            raise ComponentError(f"{c} is a head input; node circuits are made of head outputs, attention layers and MLPs")
    return kept


def _ablate_all_but(components: Sequence[Component], model, seq_len: int, keep: Sequence[Component] = ()) -> list[Patch]:
    """Patches that ablate every head and MLP output except ``components`` and the ``keep=`` components (``_Setup.keep``)."""
    _require_outside(components, keep, model, seq_len)
    kept = _kept_sets([*components, *keep], model, seq_len)
    everywhere = set(range(seq_len))
    patches: list[Patch] = []
    for layer in range(model.cfg.n_layers):
        full_heads = [h for h in range(model.cfg.n_heads) if not kept.get((layer, "head", h))]
        if full_heads:
            patches.append(Patch.at(f"blocks.{layer}.attn.hook_z", "ablated", h=full_heads))
        for h in range(model.cfg.n_heads):
            partial = kept.get((layer, "head", h))
            if partial and partial != everywhere:
                patches.append(Patch.at(f"blocks.{layer}.attn.hook_z", "ablated", p=sorted(everywhere - partial), h=[h]))
        if not getattr(model.cfg, "attn_only", False):
            mlp_kept = kept.get((layer, "mlp"), set())
            if mlp_kept != everywhere:
                patches.append(Patch.at(f"blocks.{layer}.hook_mlp_out", "ablated", p=sorted(everywhere - mlp_kept)))
    return patches


def _ablate(components: Sequence[Component], seq_len: int) -> list[Patch]:
    return [component_patch(c, "ablated", seq_len) for c in components]


def _check_gap(full, empty, setup: _Setup) -> stats.Estimate:
    """The gap m(M) - m(∅) from per-example metrics ``[n]``; a :class:`robustness.GapError` when its interval includes zero."""
    if np.ndim(full) == 0 or np.ndim(empty) == 0:
        raise TypeError("_check_gap takes the per-example metrics of M and ∅ (arrays [n]), not their means: its interval needs them")
    return robustness.require_gap(
        full, empty, confidence=setup.confidence, seed=setup.seed, ablation=str(setup.ablation), task=setup.task.name
    )


def _base(setup: _Setup, components_label: str, kind: str, metric_name: str) -> dict:
    return {
        "model": model_label(setup.model),
        "checkpoint": model_checkpoint(setup.model),
        "parameters": {
            "components": components_label,
            "task": setup.task.name,
            "task_description": setup.task.describe(),
            "metric": str(setup.task.metric),
            "ablation": str(setup.ablation),
            "ablation_detail": _ablation.describe(setup.ablation, setup.task),
            **({"keep": " ".join(map(str, setup.keep))} if setup.keep else {}),
            "seed": setup.seed,
            "aggregation": "per-example metric, mean over examples, ratio of means",
        },
        "metric": metric_name,
        "kind": kind,
    }


def _decide(estimate: stats.Estimate, minimum, maximum) -> tuple[stats.Decision, float]:
    """Decide on the interval (the lower bound must clear a minimum, the upper bound stay under a maximum), with its p-value."""
    return stats.decide(estimate, minimum, maximum), estimate.mean


def _label(components: Sequence, circuit_name: str | None = None) -> str:
    text = (", " if is_edges(components) else " ").join(map(str, components))
    return f"{circuit_name!r} ({text})" if circuit_name else text


def _lines(setup: _Setup) -> list[str]:
    lines = [f"task:     {setup.task.describe()}",
             f"ablation: {setup.ablation} ({_ablation.describe(setup.ablation, setup.task)}); seed {setup.seed}"]
    if setup.keep:
        lines.append(f"kept intact outside the circuit: {' '.join(map(str, setup.keep))}")
    return lines


# Necessity -----------------------------------------------------------------------------


@robustness.over_ablations
def check_necessary(
    components: Components,
    *,
    min_drop: float | None = None,
    max_drop: float | None = None,
    model=None,
    task: Task | None = None,
    ablation=None,
    keep=None,
    confidence: float = stats.DEFAULT_CONFIDENCE,
    seed: int | None = None,
) -> CheckResult:
    """Measure drop(C) = (m(M) - m(M\\C)) / (m(M) - m(∅)) and decide (never raises on failure).

    Also measures each component's own drop, for the evidence table.
    """
    if min_drop is None and max_drop is None:
        min_drop = 0.5
    check_thresholds(min_drop, max_drop, names=("min_drop", "max_drop"))
    setup = _setup(model, task, ablation, seed, confidence, keep)
    comps = _members(components, setup.model)
    name = components.name if isinstance(components, Circuit) else None
    seq_len = setup.task.seq_len
    if not is_edges(comps):
        _require_outside(comps, setup.keep, setup.model, seq_len)
    ablate_all_but, ablate = builders(setup, comps)
    variants = [ablate(comps), ablate_all_but([])]
    if len(comps) > 1:
        variants += [ablate([c]) for c in comps]
    values, _ = lattice.run_variants(setup, variants, desc="necessity")  # shared with the other claims on this circuit
    full = lattice.full_metric(setup)
    samples = np.stack([full, values[1], values[0], *values[2:]])
    _check_gap(samples[0], samples[1], setup)

    def drops(means):
        gap = means[..., 0] - means[..., 1]
        return np.stack([(means[..., 0] - means[..., j]) / gap for j in range(2, samples.shape[0])], axis=-1)

    estimates = stats.bootstrap_statistics(samples, drops, confidence=setup.confidence, seed=setup.seed)
    total = estimates[0]
    decision, value = _decide(total, min_drop, max_drop)
    table = pd.DataFrame(
        {
            "ablated": [_label(comps)] + ([str(c) for c in comps] if len(comps) > 1 else []),
            "drop": [e.mean for e in estimates],
            "ci_low": [e.low for e in estimates],
            "ci_high": [e.high for e in estimates],
            "metric_ablated": [float(samples[j].mean()) for j in range(2, samples.shape[0])],
        }
    )
    means = pd.DataFrame({"run": ["full model m(M)", "ablated m(M\\C)", "everything ablated m(∅)"],
                          "mean_metric": [float(samples[0].mean()), float(samples[2].mean()), float(samples[1].mean())]})
    notes = [f"m(M) = {samples[0].mean():.4g}, m(M\\C) = {samples[2].mean():.4g}, m(∅) = {samples[1].mean():.4g} ({setup.task.metric})"]
    if len(comps) > 1:
        ranked = sorted(zip(comps, estimates[1:]), key=lambda item: item[1].mean)
        notes.append("drop when ablated alone: " + ", ".join(f"{c} {e.mean:.3f}" for c, e in ranked))
    negative = min_drop is None
    label = _label(comps, name)
    return CheckResult(
        **_base(setup, label, "necessary", "drop"),
        claim=f"{label} {'are' if len(comps) > 1 else 'is'} {'not ' if negative else ''}necessary for {setup.task.name}",
        value=value,
        **decision.fields(),
        **total.interval_fields(),
        min_value=min_drop,
        max_value=max_drop,
        evidence={"necessity": table, "means": means},
        notes=notes + _edge_lines(setup, comps) + _lines(setup),
    )


def assert_necessary(components: Components, min_drop: float | None = None, **kwargs) -> CheckResult:
    """Assert that ablating ``components`` removes at least ``min_drop`` of the task's performance.

    drop(C) = (m(M) - m(M\\C)) / (m(M) - m(∅)); passes when the lower confidence
    bound of drop is >= ``min_drop`` (default 0.5). ``max_drop=`` alone claims
    the components are *not* necessary (upper bound <= max_drop). Edges
    (``"L0H0 -> L1H0.k"``) are ablated as edges: only their receivers read the
    senders' ablated output, and ∅ ablates every edge. Keyword
    arguments: ``model``, ``task``, ``ablation`` (default resample),
    ``confidence`` (0.95), ``seed``.
    """
    __tracebackhide__ = True
    tolerance = kwargs.pop("tolerance", None)
    return conclude(check_necessary(components, min_drop=min_drop, **kwargs), tolerance)


# Sufficiency (minimality: claims/minimality.py) ---------------------------------------------------------------


def _circuit(circuit: Components, model) -> tuple[list, str | None]:
    """A circuit's members (components, or edges for an edge circuit) and its name."""
    comps = _members(circuit, model)
    return comps, circuit.name if isinstance(circuit, Circuit) else None


def _edge_lines(setup: _Setup, members: Sequence) -> list[str]:
    """What an edge circuit's runs mean, for the lab note (nothing for node circuits)."""
    if not is_edges(members):
        return []
    graph = _edges.Graph.of(setup.model, setup.task.seq_len)
    return [f"edge circuit: {len(members)} of the model's {graph.n_edges} edges per position; an ablated edge's receiver reads "
            "the sender's ablated output in place of its own; ∅ ablates every edge (the embeddings' too)"]


@robustness.over_ablations
def check_sufficient(
    circuit: Components,
    *,
    min_recovery: float | None = None,
    max_recovery: float | None = None,
    model=None,
    task: Task | None = None,
    ablation=None,
    keep=None,
    confidence: float = stats.DEFAULT_CONFIDENCE,
    seed: int | None = None,
) -> CheckResult:
    """Measure recovery(C) = (m(C) - m(∅)) / (m(M) - m(∅)) and decide (never raises on failure)."""
    if min_recovery is None and max_recovery is None:
        min_recovery = 0.8
    check_thresholds(min_recovery, max_recovery, names=("min_recovery", "max_recovery"))
    setup = _setup(model, task, ablation, seed, confidence, keep)
    comps, name = _circuit(circuit, setup.model)
    ablate_all_but, _ = builders(setup, comps)
    variants = [ablate_all_but(comps), ablate_all_but([])]
    values, _ = lattice.run_variants(setup, variants, desc="sufficiency")  # shared with the other claims on this circuit
    full = lattice.full_metric(setup)
    samples = np.stack([full, values[1], values[0]])
    _check_gap(samples[0], samples[1], setup)
    (estimate,) = stats.bootstrap_statistics(
        samples, lambda m: ((m[..., 2] - m[..., 1]) / (m[..., 0] - m[..., 1]))[..., None], confidence=setup.confidence, seed=setup.seed
    )
    decision, value = _decide(estimate, min_recovery, max_recovery)
    label = _label(comps, name)
    means = pd.DataFrame({"run": ["full model m(M)", "circuit only m(C)", "everything ablated m(∅)"],
                          "mean_metric": [float(samples[0].mean()), float(samples[2].mean()), float(samples[1].mean())]})
    recovery = pd.DataFrame({"circuit": [label], "recovery": [estimate.mean], "ci_low": [estimate.low], "ci_high": [estimate.high]})
    negative = min_recovery is None
    return CheckResult(
        **_base(setup, label, "sufficient", "recovery"),
        claim=f"{label} {'is not' if negative else 'is'} sufficient for {setup.task.name}",
        value=value,
        **decision.fields(),
        **estimate.interval_fields(),
        min_value=min_recovery,
        max_value=max_recovery,
        evidence={"sufficiency": recovery, "means": means},
        notes=[f"m(M) = {samples[0].mean():.4g}, m(C) = {samples[2].mean():.4g}, m(∅) = {samples[1].mean():.4g} ({setup.task.metric})",
               "every edge outside the circuit is ablated" if is_edges(comps) else
               "every head and MLP output outside the circuit is ablated" + (" except the kept ones" if setup.keep else "")]
        + _edge_lines(setup, comps) + _lines(setup),
    )


def assert_sufficient(circuit: Components, min_recovery: float | None = None, **kwargs) -> CheckResult:
    """Assert that the circuit alone recovers at least ``min_recovery`` of the task's performance.

    Every head and MLP output outside the circuit is ablated; recovery(C) =
    (m(C) - m(∅)) / (m(M) - m(∅)) (faithfulness, as in the IOI paper and MIB);
    passes when its lower confidence bound is >= ``min_recovery`` (default 0.8).

    An edge circuit (``"L0H0 -> L1H0.k, embed -> L1H0.q, L1H0 -> logits"``) keeps
    only its edges: every other edge's receiver reads the sender's ablated
    output, and ∅ ablates every edge. Under resample ablation its recovery is
    TransformerLens's ``faithfulness(...).recovered`` (see the module docstring).
    """
    __tracebackhide__ = True
    tolerance = kwargs.pop("tolerance", None)
    return conclude(check_sufficient(circuit, min_recovery=min_recovery, **kwargs), tolerance)


# Paths --------------------------------------------------------------------------------------


def check_path(
    sender: Components,
    receiver: "str | Component",
    *,
    min_effect: float | None = None,
    max_effect: float | None = None,
    direction: str = "noise",
    model=None,
    task: Task | None = None,
    confidence: float = stats.DEFAULT_CONFIDENCE,
    seed: int | None = None,
) -> CheckResult:
    """Measure the share of the clean-corrupt gap that the path sender -> receiver carries, and decide.

    ``direction="noise"`` (default, the IOI paper's path patching): on the clean
    input only the receiver reads the senders' corrupted output;
    effect = (m(clean) - m(path)) / (m(clean) - m(corrupt)), the performance the
    path is responsible for. ``"denoise"`` (TransformerLens's direct path
    patching): on the corrupted input only the receiver reads the clean output;
    effect = (m(path) - m(corrupt)) / (m(clean) - m(corrupt)), what it restores alone.
    """
    if min_effect is None and max_effect is None:
        min_effect = 0.1
    check_thresholds(min_effect, max_effect, names=("min_effect", "max_effect"))
    setup = _setup(model, task, None, seed, confidence)
    senders = _components(sender, setup.model)
    target = "logits" if isinstance(receiver, str) and receiver.strip() == "logits" else Component.parse(receiver).validate(setup.model)
    values = setup.patcher.path_patch(setup.task, senders, [target], direction)
    runs = setup.patcher.runs(setup.task)
    samples = np.stack([runs.clean_metric.numpy(), runs.corrupt_metric.numpy(), values[0].numpy()])
    robustness.require_gap(
        samples[0], samples[1], confidence=setup.confidence, seed=setup.seed, ablation=None, task=setup.task.name,
        gap="m(clean) - m(corrupt)", sides="clean and corrupted inputs", undefined="a path effect is",
        hint="Use corrupted inputs that change what the model computes, or more examples.",
    )
    if direction == "noise":
        def effect(m):
            return ((m[..., 0] - m[..., 2]) / (m[..., 0] - m[..., 1]))[..., None]
    else:
        def effect(m):
            return ((m[..., 2] - m[..., 1]) / (m[..., 0] - m[..., 1]))[..., None]

    (estimate,) = stats.bootstrap_statistics(samples, effect, confidence=setup.confidence, seed=setup.seed)
    decision, value = _decide(estimate, min_effect, max_effect)
    sender_label = " + ".join(map(str, senders))
    negative = min_effect is None
    base = _base(setup, f"{sender_label} -> {target}", "path", "path effect")
    base["parameters"].pop("ablation")
    base["parameters"]["direction"] = direction
    base["parameters"]["definition"] = (
        "path patching (noise): on the clean input only the receiver reads the senders' corrupted output"
        if direction == "noise"
        else "direct path patching (denoise): on the corrupted input only the receiver reads the senders' clean output"
    )
    table = pd.DataFrame({"run": ["clean", "corrupted", f"path patched ({direction})"], "mean_metric": [float(s.mean()) for s in samples]})
    return CheckResult(
        **base,
        claim=f"the path {sender_label} -> {target} {'does not carry' if negative else 'carries'} the effect on {setup.task.name}",
        value=value,
        **decision.fields(),
        **estimate.interval_fields(),
        min_value=min_effect,
        max_value=max_effect,
        evidence={"path": table},
        notes=[f"m(clean) = {samples[0].mean():.4g}, m(corrupt) = {samples[1].mean():.4g}, m(path) = {samples[2].mean():.4g} ({setup.task.metric})",
               base["parameters"]["definition"],
               f"task:     {setup.task.describe()}"],
    )


def assert_path(sender: Components, receiver: "str | Component", min_effect: float | None = None, **kwargs) -> CheckResult:
    """Assert that the direct path sender -> receiver restores at least ``min_effect`` of the clean-corrupt gap.

    Path patching: only the receiver (``L1H3.k``, ``L2.mlp`` or ``"logits"``)
    reads the sender's other-input output; every other path keeps its value.
    ``direction="noise"`` (default) measures what the path carries on the clean
    input; ``"denoise"`` what it restores alone on the corrupted input (as
    TransformerLens's ``get_act_patch_direct_path``). Passes when the lower
    confidence bound of the normalised effect is >= ``min_effect`` (default 0.1).
    """
    __tracebackhide__ = True
    tolerance = kwargs.pop("tolerance", None)
    return conclude(check_path(sender, receiver, min_effect=min_effect, **kwargs), tolerance)


# The claim kinds (circuitcheck.claims.registry) ---------------------------------------------

from .registry import ClaimKind, Param, declare  # noqa: E402

_CAUSAL_PARAMS = (
    Param("ablation", "ablation", "resample",
          doc="resample, mean (over the task's reference set, else its corrupted inputs), mean(corrupt), mean(clean), zero, "
          "noise(STD), one a plugin provides, or a list of them (the claim is decided on the worst)"),
    Param("confidence", "probability", stats.DEFAULT_CONFIDENCE, doc="of the bootstrap interval over examples"),
    Param("seed", "seed", doc="default: --circuitcheck-seed"),
)
#: keep=: left intact outside the circuit (the IOI paper kept MLPs); not for paths, which ablate nothing.
_KEEP = Param("keep", "strings", doc="component types (mlp, heads) or components left intact outside the circuit, e.g. mlp")
_CIRCUIT = Param("circuit", "components", required=True,
                 doc="a circuit name of the spec, a component string or a list; or edges (an edge circuit): 'L0H0 -> L1H0.k, L1H0 -> logits'")


def _circuit_subject(params: dict) -> str:
    circuit = params["circuit"]
    return circuit.name or (str(circuit) if circuit.edges else " ".join(map(str, circuit.components)))


def _spec_circuit(assertion, params: dict, *, model, task=None):
    __tracebackhide__ = True
    return assertion(params.pop("circuit"), model=model, task=task, **params)


def _spec_path(assertion, params: dict, *, model, task=None):
    __tracebackhide__ = True
    return assertion(list(params.pop("sender").components), params.pop("receiver"), model=model, task=task, **params)


def _path_subject(params: dict) -> str:
    return f"{' + '.join(map(str, params['sender'].components))} -> {params['receiver']}"


NECESSARY = declare(ClaimKind(
    name="necessary",
    check=check_necessary,
    assertion=assert_necessary,
    metric="drop",
    params=(_CIRCUIT,
            Param("min_drop", "number", doc="passes when the lower bound of drop is >= it (default 0.5 when no threshold is given)"),
            Param("max_drop", "number", doc='with only max_drop, a "not necessary" claim (upper bound <= it)'),
            *_CAUSAL_PARAMS, _KEEP),
    thresholds=("min_drop", "max_drop"),
    evidence=("necessity", "means"),
    definition="drop(C) = (m(M) − m(M\\C)) / (m(M) − m(∅)): the share of the task's performance lost when C is ablated. "
    "A node circuit: M\\C ablates C's head and MLP outputs, ∅ every head and MLP output. An edge circuit: M\\C ablates only "
    "C's edges (through an edge of C the receiver reads the sender's ablated output, through every other edge the live one), "
    "∅ ablates every edge, the embeddings' too. A claim holds when the lower bound of its interval clears the threshold.",
    section="necessity",
    needs_task=True,
    spec_call=_spec_circuit,
    subject=_circuit_subject,
))
SUFFICIENT = declare(ClaimKind(
    name="sufficient",
    check=check_sufficient,
    assertion=assert_sufficient,
    metric="recovery",
    params=(_CIRCUIT,
            Param("min_recovery", "number", doc="passes when the lower bound of recovery is >= it (default 0.8 when no threshold is given)"),
            Param("max_recovery", "number", doc='with only max_recovery, a "not sufficient" claim'),
            *_CAUSAL_PARAMS, _KEEP),
    thresholds=("min_recovery", "max_recovery"),
    evidence=("sufficiency", "means"),
    definition="recovery(C) = (m(C) − m(∅)) / (m(M) − m(∅)): the share of performance the circuit recovers on its own "
    "(faithfulness as in the IOI paper and MIB). A node circuit keeps its components and ablates every other head and MLP "
    "output. An edge circuit keeps only its edges: every receiver's input (each head's q, k and v, each MLP's input, the "
    "logits) is rebuilt from its kept senders' live outputs and every other sender's ablated output; ∅ ablates every edge, "
    "the embeddings' too (under resample ablation: the corrupted run).",
    section="sufficiency",
    needs_task=True,
    spec_call=_spec_circuit,
    subject=_circuit_subject,
))
PATH = declare(ClaimKind(
    name="path",
    check=check_path,
    assertion=assert_path,
    metric="path effect",
    params=(Param("sender", "components", required=True, doc="a circuit name, component string or list (several senders)"),
            Param("receiver", "component", required=True, choices=("logits",), doc="one component (L1H0.k, L2.mlp) or logits"),
            Param("min_effect", "number", doc="passes when the lower bound is >= it (default 0.1 when no threshold is given)"),
            Param("max_effect", "number", doc='with only max_effect, a "does not carry" claim'),
            Param("direction", "choice", "noise", choices=("noise", "denoise"),
                  doc="noise: what the path carries on the clean input; denoise: what it restores alone on the corrupted input"),
            *_CAUSAL_PARAMS[1:]),
    thresholds=("min_effect", "max_effect"),
    evidence=("path",),
    definition="Path patching: the share of the clean-corrupt gap carried by the direct path from sender to receiver.",
    section="paths",
    needs_task=True,
    spec_call=_spec_path,
    subject=_path_subject,
))
