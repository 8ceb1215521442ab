"""Attribution patching: gradient estimates of activation patching for every node or every edge.

Activation patching measures the task metric with one activation replaced by its
value on the other input: one forward per patch. Attribution patching (Nanda,
2023) linearises that at the *base* run. With direction ``"denoise"`` (the
default, TransformerLens's convention) the base is the corrupted run and the
source the clean one; with ``"noise"`` (Nanda's original form) the base is the
clean run and the source the corrupted one. Summed over positions and taken at
the base run:

- **node attribution** (``method="node"``) of node n:
  ``sum_pos (a_n[source] - a_n[base]) . d metric / d a_n``, with ``a_n`` the
  node's output: a head's ``z`` (``[d_head]``), an MLP's output or the token
  embedding (``[d_model]``);
- **edge attribution** (``method="eap"``, Syed et al. 2023) of sender u ->
  receiver v: ``sum_pos (w_u[source] - w_u[base]) . d metric / d in_v``, with
  ``w_u`` the sender's write to the residual stream (a head's ``z @ W_O``, an
  MLP's output, the token embedding) and ``in_v`` the receiver's own copy of its
  input residual, before its LayerNorm: a head's query, key or value input
  (``L1H0.q``, ``.k``, ``.v``), an MLP's input (``L1.mlp``) or the unembedding's
  input (``logits``). A head writes to later layers and to its own layer's MLP.
  The positional embedding is no sender: it is the same on both inputs.
- **EAP-IG** (``method="eap-ig"``, Hanna et al. 2024): EAP with the base-run
  gradient replaced by its mean over ``steps`` points on the straight line
  between the two inputs' token embeddings (``ig="inputs"``), at
  ``t = k / steps`` for ``k = 0 .. steps - 1`` from the base (a left Riemann
  sum from the base, as Hanna et al.'s code, which starts at the corrupted
  input). At ``steps=1`` it is plain EAP at the base run. (Hanna et al.'s
  other variant interpolates each layer's output in turn, ``2 * n_layers + 1``
  times as many passes; it is not offered.)

Each estimate is also given per position (``position_mean``); TransformerLens's
``attribution_patch`` scores the same nodes and edges per position, and its
numbers equal these (tests/test_eap.py). Its sign convention is ``denoise``.

Cost: one forward without gradients on the source input (its activations) and
one forward and backward on the base input per chunk of examples (with
``steps`` interpolation points stacked along the batch for EAP-IG), not one per
edge: the gradient of every receiver's input is read from the backward of its
query, key and value (and MLP input), taken through its LayerNorm at the base
run. Examples are independent, so one backward of the summed metric gives each
example's own gradient.

Results are :class:`GraphSweep` objects, shaped like the exact sweeps
(:class:`~circuitcheck.engine.sweeps.Sweep`): per-example values ``[variants,
batch]`` of the (estimated) metric with that node or edge patched, its mean,
the normalised value (0 = corrupted run, 1 = clean run), a tidy ``frame()``, a
``matrix()`` for the heatmap and ``to_dict()`` for the report; estimates are
labelled (``"attribution (EAP)"``, ``"attribution (EAP-IG, 5 steps)"``) in the
frame's ``attrs`` and in the report. :func:`patching_sweep` gives the exact
counterparts (activation patching of each node, path patching of each edge,
through the patcher) and :func:`rank_agreement` compares the two.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
import numpy as np
import pandas as pd
import torch

from ..errors import ArgumentError, CircuitCheckError
from ..model import context
from ..model.components import Component, model_label
from ..model.tasks import Task
from .session import session_of
from .sweeps import report_view

METHODS = ("node", "eap", "eap-ig")
DIRECTIONS = ("denoise", "noise")
IG_MODES = ("inputs",)
DEFAULT_STEPS = 5
#: rows (examples x interpolation steps) per forward and backward
DEFAULT_MAX_BATCH = 64
#: an edge heatmap in the report keeps at most this many cells (the senders and receivers of the largest edges)
MAX_REPORT_CELLS = 4096
_TOLERANCE = 1e-4


# The graph ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Graph:
    """Senders, receivers and edges of a model's residual-stream graph, in a fixed order.

    Senders: ``embed``, then per layer its heads and its MLP. Receivers: per layer
    every head's q, then k, then v, then the MLP; last ``logits``. Edges go
    receiver by receiver, each with its senders in sender order: the senders of a
    layer's attention are the first ``available[layer]`` senders.
    """

    n_layers: int
    n_heads: int
    has_mlp: bool
    senders: tuple[str, ...]
    receivers: tuple[str, ...]
    groups: tuple[tuple[str, int, int, int], ...]  # (kind, layer, first receiver, n senders): kind attn/mlp/logits

    @classmethod
    def of(cls, model) -> "_Graph":
        cfg = model.cfg
        n_layers, n_heads = int(cfg.n_layers), int(cfg.n_heads)
        has_mlp = not getattr(cfg, "attn_only", False)
        senders = ["embed"]
        receivers: list[str] = []
        groups = []
        for layer in range(n_layers):
            groups.append(("attn", layer, len(receivers), len(senders)))
            receivers += [f"L{layer}H{head}.{port}" for port in ("q", "k", "v") for head in range(n_heads)]
            senders += [f"L{layer}H{head}" for head in range(n_heads)]
            if has_mlp:
                groups.append(("mlp", layer, len(receivers), len(senders)))
                receivers.append(f"L{layer}.mlp")
                senders.append(f"L{layer}.mlp")
        groups.append(("logits", n_layers - 1, len(receivers), len(senders)))
        receivers.append("logits")
        return cls(n_layers, n_heads, has_mlp, tuple(senders), tuple(receivers), tuple(groups))

    def edges(self) -> list[tuple[str, str]]:
        out = []
        for kind, _layer, first, n_senders in self.groups:
            n_receivers = 3 * self.n_heads if kind == "attn" else 1
            for receiver in self.receivers[first : first + n_receivers]:
                out += [(sender, receiver) for sender in self.senders[:n_senders]]
        return out


# Public entry points ------------------------------------------------------------


def attribution_sweep(
    model=None,
    task: Task | None = None,
    *,
    method: str = "eap",
    steps: int | None = None,
    ig: str = "inputs",
    direction: str = "denoise",
    max_batch: int | None = None,
    record: bool = True,
) -> "GraphSweep":
    """Attribution patching of every node (``method="node"``) or edge (``"eap"``, ``"eap-ig"``) of ``model`` on ``task``.

    ``model`` and ``task`` come from the running test when left out (its
    ``model`` fixture and task marker or fixture). ``steps``: EAP-IG's
    interpolation points (default 5; only for ``"eap-ig"``). ``ig``: what is
    interpolated, ``"inputs"`` (the token embeddings). ``direction``:
    ``"denoise"`` (linearise at the corrupted run, towards the clean one;
    TransformerLens's convention) or ``"noise"`` (at the clean run, towards the
    corrupted one). ``max_batch``: rows (examples x steps) per forward and
    backward (default 64). ``record``: attach the heatmap to the running test's
    report. See the module docstring for the definitions.
    """
    if method not in METHODS:
        raise ArgumentError(f"method={method!r} is not valid: use one of {', '.join(repr(m) for m in METHODS)}")
    if direction not in DIRECTIONS:
        raise ArgumentError(f"direction={direction!r} is not valid: use 'denoise' (at the corrupted run) or 'noise' (at the clean run)")
    if method == "eap-ig":
        steps = DEFAULT_STEPS if steps is None else steps
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
            raise ArgumentError(f"steps={steps!r} is not valid: EAP-IG takes a whole number of interpolation points, 1 or more")
        steps = int(steps)
        if ig not in IG_MODES:
            raise ArgumentError(f"ig={ig!r} is not valid: use one of {', '.join(repr(m) for m in IG_MODES)} (the token embeddings)")
    elif steps is not None:
        raise ArgumentError(f"steps={steps!r} is only for method='eap-ig' (integrated gradients); method={method!r} takes no steps")
    if max_batch is not None and (isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1):
        raise ArgumentError(f"max_batch={max_batch!r} is not valid: it must be a positive number of rows")

    model = context.resolve_model(model)
    task = context.resolve_task(task, model).validate(model)
    graph = _Graph.of(model)
    edges = method != "node"
    if edges:
        _check_edge_architecture(model)
    n_steps = steps if method == "eap-ig" else 1
    rows = max_batch or DEFAULT_MAX_BATCH
    per_chunk = max(1, rows // n_steps)

    totals, position_sums, metrics = [], None, {"clean": [], "corrupt": []}
    with session_of(model).exclusive():
        for start in range(0, task.n_examples, per_chunk):
            index = torch.arange(start, min(task.n_examples, start + per_chunk))
            scores, clean_metric, corrupt_metric = _chunk(model, graph, task, index, edges, n_steps, direction)
            totals.append(scores.sum(1))  # [b, variants]
            chunk_positions = scores.sum(0)  # [pos, variants]
            position_sums = chunk_positions if position_sums is None else position_sums + chunk_positions
            metrics["clean"].append(clean_metric)
            metrics["corrupt"].append(corrupt_metric)
    clean_metric, corrupt_metric = torch.cat(metrics["clean"]), torch.cat(metrics["corrupt"])
    base = corrupt_metric if direction == "denoise" else clean_metric
    effects = torch.cat(totals).T.contiguous()  # [variants, batch]
    if edges:
        pairs = graph.edges()
        index_labels = [f"{s} -> {r}" for s, r in pairs]
        senders, receivers = [s for s, _ in pairs], [r for _, r in pairs]
    else:
        index_labels, senders, receivers = list(graph.senders), None, None
    result = GraphSweep(
        method=method,
        what="edges" if edges else "nodes",
        index=index_labels,
        values=base[None, :] + effects,
        clean_metric=clean_metric,
        corrupt_metric=corrupt_metric,
        direction=direction,
        steps=steps if method == "eap-ig" else None,
        ig=ig if method == "eap-ig" else None,
        position_mean=(position_sums / task.n_examples).T.contiguous(),
        senders=senders,
        receivers=receivers,
        n_heads=graph.n_heads,
    )
    if record and context.current() is not None:  # a test is running: its report gets the heatmap
        context.record_sweep(result.to_dict(title=f"{result.label} of every {result.what[:-1]} ({direction}) on {task.name}, "
                                                  f"model {model_label(model)}"))
    return result


def patching_sweep(
    model=None, task: Task | None = None, *, what: str = "nodes", direction: str = "denoise", patcher=None, record: bool = True
) -> "GraphSweep":
    """The exact counterpart of :func:`attribution_sweep`: every node or edge of the same graph, patched.

    ``what="nodes"``: activation patching of each node's output at all positions
    (a head's ``z``, an MLP's output, the token embedding), one variant each.
    ``what="edges"``: path patching of each edge at all positions
    (:meth:`Patcher.path_patch`: only the receiver reads the sender's other
    output). Both run through the patcher (``patcher``: the running test's, else
    the model's shared one), batched, on its fast path where that applies.
    """
    from .patcher import shared_patcher
    from .patches import Patch, component_patch

    if what not in ("nodes", "edges"):
        raise ArgumentError(f"what={what!r} is not valid: use 'nodes' (activation patching) or 'edges' (path patching)")
    if direction not in DIRECTIONS:
        raise ArgumentError(f"direction={direction!r} is not valid: use 'denoise' (patch into the corrupted run) or "
                            "'noise' (into the clean run)")
    model = context.resolve_model(model if patcher is None else patcher.model)
    task = context.resolve_task(task, model)
    patcher = patcher or context.current_patcher(model) or shared_patcher(model)
    graph = _Graph.of(model)
    base_name, source = ("corrupt", "clean") if direction == "denoise" else ("clean", "corrupt")
    runs = patcher.runs(task)
    if what == "nodes":
        # The embedding in a run of its own: the fast path patches blocks, so a chunk holding it would take the general path.
        embed = patcher.run(task, [[Patch.at("hook_embed", source)]], base=base_name, desc="node patching")
        variants = [[component_patch(Component.parse(label), source)] for label in graph.senders[1:]]
        values = torch.cat([embed, patcher.run(task, variants, base=base_name, desc="node patching")])
        index, senders, receivers = list(graph.senders), None, None
    else:
        _check_edge_architecture(model)
        pairs = graph.edges()
        by_sender: dict[str, list[int]] = {}
        for i, (sender, _receiver) in enumerate(pairs):
            by_sender.setdefault(sender, []).append(i)
        values = torch.empty(len(pairs), task.n_examples)
        for sender, rows in by_sender.items():
            wanted = [pairs[i][1] for i in rows]
            values[rows] = patcher.path_patch(task, [Component.parse(sender)], wanted, direction=direction)
        index = [f"{s} -> {r}" for s, r in pairs]
        senders, receivers = [s for s, _ in pairs], [r for _, r in pairs]
    result = GraphSweep(
        method="patching",
        what=what,
        index=index,
        values=values,
        clean_metric=runs.clean_metric,
        corrupt_metric=runs.corrupt_metric,
        direction=direction,
        senders=senders,
        receivers=receivers,
        n_heads=graph.n_heads,
    )
    if record and context.current() is not None:
        context.record_sweep(result.to_dict(title=f"{result.label} of every {what[:-1]} ({direction}) on {task.name}, "
                                                  f"model {model_label(model)}"))
    return result


# The result ---------------------------------------------------------------------


@dataclass
class GraphSweep:
    """Every node or edge of the residual-stream graph, patched exactly or estimated by attribution patching.

    ``values``: per-example metric ``[variants, batch]`` with that node or edge
    patched (for an estimate: the base run's metric plus the estimated effect).
    ``index``: one label per variant, ``L1H3`` / ``L0.mlp`` / ``embed`` for nodes,
    ``L0H2 -> L1H3.k`` for edges (``senders`` and ``receivers`` hold the two ends).
    ``position_mean``: for estimates, the effect per position, mean over examples,
    ``[variants, pos]`` (they sum to the mean effect).
    """

    method: str
    what: str
    index: list[str]
    values: torch.Tensor
    clean_metric: torch.Tensor
    corrupt_metric: torch.Tensor
    direction: str
    steps: int | None = None
    ig: str | None = None
    position_mean: torch.Tensor | None = None
    senders: list[str] | None = None
    receivers: list[str] | None = None
    n_heads: int | None = None
    _position: dict = field(default_factory=dict, init=False, repr=False)

    # Words -------------------------------------------------------------------

    @property
    def approximation(self) -> bool:
        """True for attribution estimates, False for exact patching."""
        return self.method != "patching"

    @property
    def label(self) -> str:
        """What made these numbers, as the report shows it: ``attribution (EAP)``, ``attribution (EAP-IG, 5 steps)`` ..."""
        if self.method == "node":
            return "attribution (node)"
        if self.method == "eap":
            return "attribution (EAP)"
        if self.method == "eap-ig":
            return f"attribution (EAP-IG, {self.steps} step{'s' if self.steps != 1 else ''})"
        return "activation patching (exact)" if self.what == "nodes" else "path patching (exact)"

    @property
    def axes(self) -> tuple[str, str]:
        """The matrix's axes: ``(layer, head)`` for nodes, ``(sender, receiver)`` for edges."""
        return ("layer", "head") if self.what == "nodes" else ("sender", "receiver")

    # Numbers -----------------------------------------------------------------

    @property
    def base_metric(self) -> torch.Tensor:
        """Per-example metric of the run the patches go into: corrupted for ``denoise``, clean for ``noise``."""
        return self.corrupt_metric if self.direction == "denoise" else self.clean_metric

    @property
    def effects(self) -> torch.Tensor:
        """``values - base_metric``: the (estimated) change of the metric, ``[variants, batch]``."""
        return self.values - self.base_metric[None, :]

    @property
    def mean(self) -> torch.Tensor:
        """Mean metric per variant, ``[variants]``."""
        return self.values.mean(1)

    @property
    def normalized(self) -> torch.Tensor:
        """``(mean - corrupted) / (clean - corrupted)``: 0 = corrupted run, 1 = clean run, ``[variants]``."""
        clean, corrupt = float(self.clean_metric.mean()), float(self.corrupt_metric.mean())
        if clean == corrupt:
            raise CircuitCheckError("clean and corrupted runs score the same mean metric: a normalised sweep is undefined")
        return (self.mean - corrupt) / (clean - corrupt)

    def effect_of(self, label: str) -> float:
        """The mean (estimated) effect of one node or edge, by its label (``"L0H1 -> L1H0.k"``)."""
        if not self._position:
            self._position.update({name: i for i, name in enumerate(self.index)})
        if label not in self._position:
            near = [name for name in self.index if label.split("->")[0].strip() in name][:5]
            raise ArgumentError(f"{label!r} is not a {self.what[:-1]} of this sweep ({len(self.index)} {self.what}"
                                + (f"; e.g. {', '.join(near)}" if near else f"; e.g. {', '.join(self.index[:3])}") + ")")
        return float(self.effects[self._position[label]].mean())

    # Tables ------------------------------------------------------------------

    def frame(self) -> pd.DataFrame:
        """Tidy: one row per node or edge with ``value`` (mean metric), ``normalized`` and ``effect`` (mean change).

        ``attrs`` say what made the numbers: ``method``, ``label``, ``approximation``,
        ``direction``, ``steps``, ``ig``.
        """
        if self.what == "nodes":
            frame = pd.DataFrame({"component": self.index})
            parsed = [Component.parse(label) for label in self.index]
            frame["kind"] = [c.kind for c in parsed]
            frame["layer"] = pd.array([c.layer for c in parsed], dtype=object)
            frame["head"] = pd.array([c.head for c in parsed], dtype=object)
        else:
            frame = pd.DataFrame({"edge": self.index, "sender": self.senders, "receiver": self.receivers})
        frame["value"] = self.mean.numpy()
        clean, corrupt = float(self.clean_metric.mean()), float(self.corrupt_metric.mean())
        frame["normalized"] = (frame["value"] - corrupt) / (clean - corrupt) if clean != corrupt else np.nan
        frame["effect"] = self.effects.mean(1).numpy()
        frame.attrs.update(self._meta())
        return frame

    def top(self, k: int = 10) -> pd.DataFrame:
        """The ``k`` nodes or edges with the largest mean effect magnitude, largest first."""
        frame = self.frame()
        return frame.loc[frame["effect"].abs().sort_values(ascending=False, kind="stable").index[:k]].reset_index(drop=True)

    def matrix(self, normalized: bool = False) -> pd.DataFrame:
        """The heatmap: nodes as layer x head (and an ``mlp`` column; the embedding is in :meth:`frame`), edges as sender x receiver.

        Cells without a node or edge are NaN.
        """
        values = (self.normalized if normalized else self.mean).numpy()
        if self.what == "nodes":
            parsed = [Component.parse(label) for label in self.index]
            layers = sorted({c.layer for c in parsed if c.layer is not None})
            columns: list = list(range(self.n_heads or 0))
            if any(c.kind == "mlp" for c in parsed):
                columns.append("mlp")
            frame = pd.DataFrame(np.nan, index=layers, columns=columns)
            for c, value in zip(parsed, values):
                if c.kind == "head":
                    frame.loc[c.layer, c.head] = value
                elif c.kind == "mlp":
                    frame.loc[c.layer, "mlp"] = value
        else:
            senders = list(dict.fromkeys(self.senders))
            receivers = list(dict.fromkeys(self.receivers))
            frame = pd.DataFrame(np.nan, index=senders, columns=receivers)
            rows = {name: i for i, name in enumerate(senders)}
            cols = {name: i for i, name in enumerate(receivers)}
            grid = frame.to_numpy(copy=True)
            for sender, receiver, value in zip(self.senders, self.receivers, values):
                grid[rows[sender], cols[receiver]] = value
            frame = pd.DataFrame(grid, index=senders, columns=receivers)
        frame.index.name, frame.columns.name = self.axes
        return frame

    def nodes(self) -> "GraphSweep":
        """An edge estimate summed over each sender's outgoing edges: the node estimate of the same method.

        Every sender writes to ``logits`` too, so the sum is its whole effect to
        first order (for EAP it equals node attribution at ``z`` / the MLP output /
        the embedding). Exact edge effects do not add up, so an exact edge sweep
        has no node sweep: run :func:`patching_sweep` with ``what="nodes"``.
        """
        if self.what == "nodes":
            return self
        if not self.approximation:
            raise CircuitCheckError("exact edge effects do not add up to node effects: use patching_sweep(..., what='nodes')")
        order = list(dict.fromkeys(self.senders))
        position = {name: i for i, name in enumerate(order)}
        rows = torch.tensor([position[s] for s in self.senders])
        effects = torch.zeros(len(order), self.values.shape[1]).index_add_(0, rows, self.effects)
        per_position = None
        if self.position_mean is not None:
            per_position = torch.zeros(len(order), self.position_mean.shape[1]).index_add_(0, rows, self.position_mean)
        return dataclasses.replace(self, what="nodes", index=order, values=self.base_metric[None, :] + effects,
                                   position_mean=per_position, senders=None, receivers=None)

    def to_dict(self, title: str = "") -> dict:
        """JSON-safe, for the report: the mean and normalised matrices, and what made them.

        An edge matrix larger than :data:`MAX_REPORT_CELLS` keeps the senders and
        receivers of the largest edges (by mean effect magnitude), and says so.
        """
        from ..tables import frame_to_json, json_safe

        clean, corrupt = float(self.clean_metric.mean()), float(self.corrupt_metric.mean())
        matrix = self.matrix()
        normalized = self.matrix(normalized=True) if clean != corrupt else None
        title = title or f"{self.label} of every {self.what[:-1]} ({self.direction})"
        if matrix.size > MAX_REPORT_CELLS:
            matrix, normalized, shown = self._largest_cells(matrix, normalized)
            title += f" (the senders and receivers of the {shown} largest edges)"
        return {
            "what": f"{self.what} ({self.method})",
            "axes": list(self.axes),
            "direction": self.direction,
            "title": title,
            "matrix": frame_to_json(matrix),
            "normalized": frame_to_json(normalized) if normalized is not None else None,
            **json_safe(self._meta()),
        }

    def _largest_cells(self, matrix: pd.DataFrame, normalized: pd.DataFrame | None):
        order = self.effects.mean(1).abs().argsort(descending=True, stable=True).tolist()
        rows: dict[str, None] = {}
        cols: dict[str, None] = {}
        shown = 0
        for i in order:
            sender, receiver = self.senders[i], self.receivers[i]
            if len(rows | {sender: None}) * len(cols | {receiver: None}) > MAX_REPORT_CELLS:
                break
            rows[sender] = cols[receiver] = None
            shown += 1
        keep_rows = [r for r in matrix.index if r in rows]
        keep_cols = [c for c in matrix.columns if c in cols]
        pick = lambda frame: None if frame is None else frame.loc[keep_rows, keep_cols]  # noqa: E731
        return pick(matrix), pick(normalized), shown

    def _meta(self) -> dict:
        return {"method": self.method, "label": self.label, "approximation": self.approximation,
                "direction": self.direction, "steps": self.steps, "ig": self.ig}

    # Notebooks ---------------------------------------------------------------

    def __repr__(self) -> str:
        """One line: what made the numbers, how many nodes or edges, and the largest effect (not every label)."""
        text = f"<GraphSweep {self.label} of {len(self.index)} {self.what} ({self.direction}), {self.values.shape[1]} examples"
        if self.index:
            effects = self.effects.mean(1)
            largest = int(effects.abs().argmax())
            text += f"; largest effect {float(effects[largest]):+.3f} ({self.index[largest]})"
        return text + ">"

    def _repr_html_(self) -> str:
        """The report's heatmap of this sweep (the largest edges' senders and receivers for big edge sweeps)."""
        return report_view("sweep_html")(self)

    def plot(self, backend: str = "svg", *, normalized: bool | None = None, ax=None):
        """Draw the heatmap as :meth:`Sweep.plot <circuitcheck.engine.sweeps.Sweep.plot>` does (``"svg"`` or ``"matplotlib"``)."""
        return report_view("plot_sweep")(self, backend=backend, normalized=normalized, ax=ax)


@dataclass(frozen=True)
class RankAgreement:
    """How well an estimate ranks the nodes or edges that exact patching ranks.

    ``spearman``: rank correlation of the mean effects (signed); ``spearman_abs``:
    of their magnitudes; ``top_k_overlap``: the share of exact patching's ``k``
    largest effects (by magnitude) that are among the estimate's ``k`` largest;
    ``n``: nodes or edges compared.
    """

    estimate: str
    exact: str
    n: int
    k: int
    spearman: float
    spearman_abs: float
    top_k_overlap: float
    top_k_exact: tuple[str, ...]
    top_k_estimate: tuple[str, ...]

    def to_dict(self) -> dict:
        from ..tables import json_safe

        return json_safe(dataclasses.asdict(self))

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame([{key: value for key, value in self.to_dict().items() if not isinstance(value, list)}])


def rank_agreement(estimate: GraphSweep, exact: GraphSweep, k: int = 10) -> RankAgreement:
    """Compare two sweeps of the same nodes or edges (typically an attribution estimate and exact patching)."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ArgumentError(f"k={k!r} is not valid: top-k overlap takes a positive number of nodes or edges")
    if estimate.what != exact.what:
        raise ArgumentError(f"cannot compare a sweep of {estimate.what} with one of {exact.what}: use .nodes() of the edge sweep, "
                            "or sweeps of the same kind")
    if estimate.direction != exact.direction:
        raise ArgumentError(f"the sweeps patch in different directions ({estimate.direction!r} and {exact.direction!r}): "
                            "compare sweeps of the same direction")
    common = [label for label in exact.index if label in set(estimate.index)]
    if len(common) < 2:
        raise ArgumentError(f"the sweeps share {len(common)} {exact.what}: they must be of the same model's graph")
    a = pd.Series(estimate.effects.mean(1).numpy(), index=estimate.index).loc[common]
    b = pd.Series(exact.effects.mean(1).numpy(), index=exact.index).loc[common]
    k = min(k, len(common))
    top_a = list(a.abs().sort_values(ascending=False, kind="stable").index[:k])
    top_b = list(b.abs().sort_values(ascending=False, kind="stable").index[:k])
    return RankAgreement(
        estimate=estimate.label,
        exact=exact.label,
        n=len(common),
        k=k,
        spearman=float(a.corr(b, method="spearman")),
        spearman_abs=float(a.abs().corr(b.abs(), method="spearman")),
        top_k_overlap=len(set(top_a) & set(top_b)) / k,
        top_k_exact=tuple(top_b),
        top_k_estimate=tuple(top_a),
    )


# The computation ----------------------------------------------------------------


def _check_edge_architecture(model) -> None:
    cfg = model.cfg
    name = model_label(model)
    kv = getattr(cfg, "n_key_value_heads", None)
    if kv is not None and kv != cfg.n_heads:
        raise CircuitCheckError(
            f"edge attribution needs one key and value input per head; model {name} has {kv} key-value heads for "
            f"{cfg.n_heads} query heads (grouped-query attention): use method='node'"
        )
    if getattr(cfg, "parallel_attn_mlp", False):
        raise CircuitCheckError(f"model {name} runs attention and MLP in parallel, which edge attribution does not "
                                "support yet: use method='node'")


def _rows(task: Task, index: torch.Tensor) -> Task:
    """The task restricted to (and repeated as) the examples ``index``, for the metric of a chunk's rows."""
    pick = lambda tensor: None if tensor is None else tensor[index]  # noqa: E731
    return dataclasses.replace(task, clean=task.clean[index], corrupt=task.corrupt[index], answers=pick(task.answers),
                               wrong_answers=pick(task.wrong_answers))


def _score(metric_values: torch.Tensor, task: Task, label: str) -> torch.Tensor:
    bad = torch.nonzero(~torch.isfinite(metric_values.detach())).flatten()
    if len(bad):
        raise CircuitCheckError(f"metric {task.metric.name!r} gave NaN or infinite values on the {label} run for {len(bad)} of "
                                f"{len(metric_values)} rows (first: row {int(bad[0])})")
    return metric_values


def _sender_hooks(n_layers: int, has_mlp: bool) -> list[str]:
    names = ["hook_embed"] + [f"blocks.{layer}.attn.hook_z" for layer in range(n_layers)]
    return names + ([f"blocks.{layer}.hook_mlp_out" for layer in range(n_layers)] if has_mlp else [])


def _chunk(model, graph: _Graph, task: Task, index: torch.Tensor, edges: bool, steps: int, direction: str):
    """Scores ``[b, pos, variants]`` of examples ``index``, and their clean and corrupted metrics ``[b]``."""
    device = getattr(model.cfg, "device", None) or "cpu"
    n_layers, has_mlp = graph.n_layers, graph.has_mlp
    sub = _rows(task, index)
    base_tokens = (sub.corrupt if direction == "denoise" else sub.clean).to(device)
    source_tokens = (sub.clean if direction == "denoise" else sub.corrupt).to(device)
    b = len(index)

    # The source run: its activations (no gradients).
    source: dict[str, torch.Tensor] = {}
    keep = _keeper(source)
    with torch.no_grad(), model.hooks(fwd_hooks=[(name, keep(name)) for name in _sender_hooks(n_layers, has_mlp)]):
        source_logits = model(source_tokens)

    # The base run, ``steps`` interpolation points stacked along the batch: activations, and gradients by backward hooks.
    verify = edges and "edges" not in session_of(model).derived("attribution-patching-verified", set)
    fwd_names = _sender_hooks(n_layers, has_mlp)
    bwd_names: list[str] = []
    if edges:
        fwd_names += [f"blocks.{layer}.hook_resid_pre" for layer in range(n_layers)]
        bwd_names += [f"blocks.{layer}.attn.hook_{port}" for layer in range(n_layers) for port in ("q", "k", "v")]
        if has_mlp:
            fwd_names += [f"blocks.{layer}.hook_resid_mid" for layer in range(n_layers)]
            bwd_names += [f"blocks.{layer}.mlp.hook_in" for layer in range(n_layers)]
        bwd_names.append(f"blocks.{n_layers - 1}.hook_resid_post")
        if verify:
            fwd_names += _verification_hooks(model, n_layers, has_mlp)
    else:
        bwd_names += [f"blocks.{layer}.attn.hook_z" for layer in range(n_layers)]
        bwd_names += [f"blocks.{layer}.hook_mlp_out" for layer in range(n_layers)] if has_mlp else []

    t = (torch.arange(steps, dtype=torch.float32, device=device) / steps).repeat_interleave(b)  # row k*b + i: point k of example i
    leaf: list[torch.Tensor] = []

    def interpolate(embedding: torch.Tensor, hook=None) -> torch.Tensor:
        target = source["hook_embed"].to(embedding.dtype).repeat(steps, *([1] * (embedding.ndim - 1)))
        weight = t.to(embedding.dtype).reshape(-1, *([1] * (embedding.ndim - 1)))
        point = (embedding + weight * (target - embedding)).detach().requires_grad_(True)
        leaf.append(point)
        return point

    base: dict[str, torch.Tensor] = {}
    grads: dict[str, torch.Tensor] = {}
    keep = _keeper(base)
    fwd = [("hook_embed", interpolate)] + [(name, keep(name)) for name in fwd_names if name != "hook_embed"]
    bwd = [(name, _grabber(grads, name)) for name in bwd_names]
    rows_task = _rows(task, index.repeat(steps))
    with torch.enable_grad(), model.hooks(fwd_hooks=fwd, bwd_hooks=bwd):
        logits = model(base_tokens.repeat(steps, 1))
        # The metric's clean logits (for KL): the source run's when denoising, else the base run's own at t = 0.
        clean_logits = (source_logits if direction == "denoise" else logits.detach()[:b]).repeat(steps, 1, 1)
        values = _score(rows_task.metric(logits, rows_task, clean_logits), task, "base")
        if len(leaf) != 1:
            raise CircuitCheckError(f"hook_embed fired {len(leaf)} times in one forward of model {model_label(model)}: "
                                    "attribution patching needs the token embedding as the start of the residual stream")
        (embed_grad,) = torch.autograd.grad(values.sum(), leaf)
    base["hook_embed"] = leaf[0].detach()[:b]
    base_metric = values.detach()[:b].float().cpu()
    clean_for_source = logits.detach()[:b] if direction == "noise" else source_logits
    source_metric = _score(sub.metric(source_logits, sub, clean_for_source), task, "source").detach().float().cpu()
    clean_metric, corrupt_metric = (source_metric, base_metric) if direction == "denoise" else (base_metric, source_metric)
    missing = [name for name in bwd_names if name not in grads]
    if missing:
        raise CircuitCheckError(f"no gradient reached {missing[:3]} on model {model_label(model)}: attribution patching needs "
                                "these activations to lie on the metric's backward path")

    def step_mean(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.reshape(steps, b, *tensor.shape[1:]).mean(0)

    def delta(name: str) -> torch.Tensor:
        return (source[name] - base[name][:b]).float()

    if not edges:
        parts = [(delta("hook_embed") * step_mean(embed_grad).float()).sum(-1)[:, :, None]]
        for layer in range(n_layers):
            z = f"blocks.{layer}.attn.hook_z"
            parts.append((delta(z) * step_mean(grads[z]).float()).sum(-1))
            if has_mlp:
                mlp = f"blocks.{layer}.hook_mlp_out"
                parts.append((delta(mlp) * step_mean(grads[mlp]).float()).sum(-1)[:, :, None])
        return torch.cat(parts, dim=2).cpu(), clean_metric, corrupt_metric

    norms = _Norms(model)
    if verify:
        _verify_structure(model, base, n_layers, has_mlp)
        first = slice(0, 1)
        probe = torch.randn((1, base_tokens.shape[1], 2, model.cfg.d_model), generator=torch.Generator().manual_seed(0))
        blocks = [model.blocks[layer] for layer in range(n_layers)]
        checks = [(block.ln1, base[f"blocks.{layer}.hook_resid_pre"][first]) for layer, block in enumerate(blocks)]
        if has_mlp:
            checks += [(block.ln2, base[f"blocks.{layer}.hook_resid_mid"][first]) for layer, block in enumerate(blocks)]
        norms.verify(model, [n for n, _ in checks], [x for _, x in checks], [probe.to(x.device) for _, x in checks])
        session_of(model).derived("attribution-patching-verified", set).add("edges")

    # What each sender writes, source minus base: [b, pos, senders, d_model].
    writes = [delta("hook_embed")[:, :, None]]
    for layer in range(n_layers):
        W_O = model.blocks[layer].attn.W_O.detach().float()  # [head, d_head, d_model]
        writes.append(torch.einsum("bphe,hed->bphd", delta(f"blocks.{layer}.attn.hook_z"), W_O))
        if has_mlp:
            writes.append(delta(f"blocks.{layer}.hook_mlp_out")[:, :, None])
    writes = torch.cat(writes, dim=2)

    scores = []
    for kind, layer, _first, n_senders in graph.groups:
        if kind == "attn":
            attn = model.blocks[layer].attn
            cotangent = torch.cat([
                torch.einsum("rphe,hde->rphd", grads[f"blocks.{layer}.attn.hook_{port}"].float(),
                             getattr(attn, f"W_{port.upper()}").detach().float())
                for port in ("q", "k", "v")
            ], dim=2)  # [rows, pos, 3 heads, d_model]: d metric / d (the norm's output), per receiver
            received = norms.apply(model.blocks[layer].ln1, base[f"blocks.{layer}.hook_resid_pre"], cotangent)
        elif kind == "mlp":
            received = norms.apply(model.blocks[layer].ln2, base[f"blocks.{layer}.hook_resid_mid"],
                                     grads[f"blocks.{layer}.mlp.hook_in"].float()[:, :, None])
        else:
            received = grads[f"blocks.{layer}.hook_resid_post"].float()[:, :, None]
        received = step_mean(received)  # [b, pos, receivers, d_model]
        block = received @ writes[:, :, :n_senders].transpose(-1, -2)  # [b, pos, receivers, senders]
        scores.append(block.flatten(2))
    return torch.cat(scores, dim=2).cpu(), clean_metric, corrupt_metric


def _keeper(store: dict):
    def make(name: str):
        def hook(tensor, hook=None):
            store[name] = tensor.detach()

        return hook

    return make


def _grabber(store: dict, name: str):
    def hook(grad, hook=None):
        store[name] = grad.detach()

    return hook


class _Norms:
    """``d metric / d x`` for each of ``k`` readers of a block's norm ``norm(x)``, per reader.

    ``x`` ``[rows, pos, d]``, ``cotangent`` ``[rows, pos, k, d]`` (the gradient of
    each reader's copy of ``norm(x)``). For the norms TransformerLens names
    (``LN``, ``LNPre``, ``RMS``, ``RMSPre``, none) the Jacobian is applied in
    closed form, ``(u - mean(u) - x_hat * mean(u * x_hat)) / scale`` with
    ``u = w * cotangent`` (no centring for RMS); else, or where the closed form
    did not reproduce autograd through the model's own module on the first
    call, the module itself is differentiated on ``k`` copies of ``x``.
    """

    def __init__(self, model):
        self.kind = getattr(model.cfg, "normalization_type", None)
        self.eps = float(getattr(model.cfg, "eps", 1e-5))
        known = self.kind in (None, "LN", "LNPre", "RMS", "RMSPre")
        self.closed_form = session_of(model).derived("attribution-patching-norms", dict).get("closed_form", known) and known

    def apply(self, norm, x: torch.Tensor, cotangent: torch.Tensor) -> torch.Tensor:
        if self.closed_form:
            return self._closed(norm, x, cotangent)
        return self._autograd(norm, x, cotangent)

    def verify(self, model, norms, x_rows, cotangent_rows) -> None:
        """Check the closed form against autograd once per model and weights; fall back to autograd where it differs."""
        if not self.closed_form:
            return
        for norm, x, cotangent in zip(norms, x_rows, cotangent_rows):
            want = self._autograd(norm, x, cotangent)
            got = self._closed(norm, x, cotangent)
            if float((got - want).abs().max()) > _TOLERANCE * max(1.0, float(want.abs().max())):
                self.closed_form = False
                break
        session_of(model).derived("attribution-patching-norms", dict)["closed_form"] = self.closed_form

    def _closed(self, norm, x: torch.Tensor, cotangent: torch.Tensor) -> torch.Tensor:
        if self.kind is None:
            return cotangent.float()
        x = x.float()
        centred = self.kind.startswith("LN")
        c = x - x.mean(-1, keepdim=True) if centred else x
        scale = (c.pow(2).mean(-1, keepdim=True) + self.eps).sqrt()[:, :, None]  # [rows, pos, 1, 1]
        x_hat = c[:, :, None, :] / scale
        u = cotangent.float()
        weight = None if self.kind.endswith("Pre") else getattr(norm, "w", None)
        if weight is not None:
            u = u * weight.detach().float()
        out = u - x_hat * (u * x_hat).mean(-1, keepdim=True)
        if centred:
            out = out - u.mean(-1, keepdim=True)
        return out / scale

    @staticmethod
    def _autograd(norm, x: torch.Tensor, cotangent: torch.Tensor) -> torch.Tensor:
        rows, pos, k, d = cotangent.shape
        copies = x.detach()[:, :, None, :].expand(rows, pos, k, x.shape[-1]).reshape(rows, pos * k, x.shape[-1])
        copies = copies.clone().requires_grad_(True)
        with torch.enable_grad():
            out = norm(copies)
            (grad,) = torch.autograd.grad(out, copies, cotangent.reshape(rows, pos * k, d).to(out.dtype))
        return grad.reshape(rows, pos, k, x.shape[-1]).float()


def _verification_hooks(model, n_layers: int, has_mlp: bool) -> list[str]:
    names = [f"blocks.{layer}.attn.hook_{port}" for layer in range(n_layers) for port in ("q", "k", "v")]
    names += [f"blocks.{layer}.hook_attn_out" for layer in range(n_layers)]
    names += [f"blocks.{n_layers - 1}.hook_resid_post"]
    if has_mlp:
        names += [f"blocks.{layer}.mlp.hook_in" for layer in range(n_layers)]
    if "hook_pos_embed" in model.hook_dict:
        names.append("hook_pos_embed")
    return names


def _verify_structure(model, base: dict, n_layers: int, has_mlp: bool) -> None:
    """Check, once per model and weights, that the graph is the model: inputs recomputed from the residual, writes summing to it.

    On the first base row: each head's q/k/v is its norm of ``resid_pre`` times
    ``W_Q``/``W_K``/``W_V`` plus bias; each MLP reads its norm of ``resid_mid``;
    each attention output is the sum of its heads' ``z @ W_O`` plus ``b_O``; and
    the final residual is the sum of every sender's write plus the constants.
    """
    name = model_label(model)

    def close(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
        diff = float((got.float() - want.float()).abs().max())
        if diff > _TOLERANCE * max(1.0, float(want.float().abs().max())):
            raise CircuitCheckError(
                f"edge attribution cannot reach {what} on model {name}: recomputing it from the residual stream differs from "
                f"the model's own activation by {diff:.2e}, so this architecture is not supported (method='node' still is)"
            )

    with torch.no_grad():
        row = slice(0, 1)
        total = base["hook_embed"][row].float() + (base["hook_pos_embed"][row].float() if "hook_pos_embed" in base else 0.0)
        for layer in range(n_layers):
            block = model.blocks[layer]
            resid_pre = base[f"blocks.{layer}.hook_resid_pre"][row]
            normed = block.ln1(resid_pre)
            for port in ("q", "k", "v"):
                W, bias = getattr(block.attn, f"W_{port.upper()}"), getattr(block.attn, f"b_{port.upper()}", None)
                got = torch.einsum("bpd,hde->bphe", normed, W.to(normed.dtype)) + (0 if bias is None else bias.to(normed.dtype))
                close(got, base[f"blocks.{layer}.attn.hook_{port}"][row], f"the {port} input of layer {layer}'s heads")
            z = base[f"blocks.{layer}.attn.hook_z"][row]
            b_O = getattr(block.attn, "b_O", None)
            attn_out = torch.einsum("bphe,hed->bpd", z, block.attn.W_O.to(z.dtype)) + (0 if b_O is None else b_O.to(z.dtype))
            close(attn_out, base[f"blocks.{layer}.hook_attn_out"][row], f"layer {layer}'s attention output as a sum of its heads")
            total = total + attn_out.float()
            if has_mlp:
                resid_mid = base[f"blocks.{layer}.hook_resid_mid"][row]
                close(resid_pre + base[f"blocks.{layer}.hook_attn_out"][row], resid_mid, f"layer {layer}'s residual after attention")
                close(block.ln2(resid_mid), base[f"blocks.{layer}.mlp.hook_in"][row], f"layer {layer}'s MLP input")
                total = total + base[f"blocks.{layer}.hook_mlp_out"][row].float()
        close(total, base[f"blocks.{n_layers - 1}.hook_resid_post"][row], "the final residual stream as a sum of the senders' writes")
