"""Edge ablation: every receiver's input rebuilt from its kept senders and the ablated values of the rest.

The graph (TransformerLens 4.3's ``attribution_patching.enumerate_edges``, plus
the positional embedding as a sender where the model has a learned one):

- senders write the residual stream: ``embed``, ``pos_embed``, every head's
  output (``L0H2``: its ``z @ W_O``, no bias), every MLP's output (``L0.mlp``);
- receivers read it: every head's query, key and value input (``L1H3.q`` / ``.k``
  / ``.v``, each head's own copy, before its LayerNorm), every MLP's input
  (``L1.mlp``), and ``logits`` (the final residual stream, before ``ln_final``);
- ``sender -> receiver`` is an edge at each position where the receiver reads
  the residual after the sender writes it (a layer's heads write before its
  MLP reads, and every sender writes before the logits read).

An edge variant ablates a set of edges. In its forward (on the base input,
clean for the causal claims) each receiver r reads

    resid_r - sum over ablated edges s -> r of (live_s - ablated_s)

through its own LayerNorm and projection, where ``resid_r`` is the residual r
reads in this forward, ``live_s`` the sender's output in this forward (itself
computed from rebuilt inputs) and ``ablated_s`` the ablation's value of the
sender (resample: its output on the corrupted input; mean: its per-position
mean over the reference set; zero: zeros), exactly as for node ablation. The
residual stream is a sum of the senders' writes plus constants (biases), so
this is the receiver's input with the ablated edges' contributions swapped,
and nothing else changes. It is TransformerLens's ``_ablate_edges`` rule.

Two kinds of variant (:class:`EdgeAblation`), made by a :class:`Graph`:

- ``graph.keep(edges)``: every edge *not* listed is ablated (sufficiency's m(C);
  ``keep([])`` ablates every edge: ∅, which under resample ablation is the
  corrupted run itself). A receiver's input is then built from the all-ablated
  residual (the base run's residual with every sender's write swapped, from the
  cached runs) plus the kept senders' live-minus-ablated writes.
- ``graph.drop(edges)``: the listed edges are ablated, the rest run
  (necessity's m(M \\ C)); receivers with no dropped edge are left alone.

A variant is a list of ordinary :class:`~circuitcheck.engine.patches.Patch` es
whose source is the variant itself: capture points (``hook_resid_pre``,
``attn.hook_z``, ``hook_resid_mid``, ``hook_mlp_out``) record the live values,
rewrite points (``attn.hook_q/k/v``, ``mlp.hook_in``, the last block's
``hook_resid_post``) write the rebuilt inputs. So edge variants run through
:meth:`Patcher.run` like any other: batched (many variants per forward, one
hook per point writing each variant's slice), chunked, on the fast path where
it applies (verified against the general path on first use, as every patch)
and memoised by the causal claims' lattice. Recomputing a receiver's input
from the residual is verified once per model and weights against the model's
own activation (:func:`verify_receiver`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import torch

from ..errors import CircuitCheckError, ComponentError
from ..model.components import LOGITS, Component, Edge, model_label, parse_edges
from . import fastpath as _fastpath
from . import paths as _paths
from .patches import Patch
from .session import session_of

#: What a receiver key's first element means.
HEAD_PORTS = ("q", "k", "v")


def _sender_key(component: Component) -> tuple:
    if component.kind in ("embed", "pos_embed"):
        return (component.kind,)
    if component.kind == "head":
        return ("head", component.layer, component.head)
    return ("mlp", component.layer)


def _receiver_key(component: Component) -> tuple:
    if component.kind == LOGITS:
        return (LOGITS,)
    if component.kind == "head":
        return (component.port, component.layer, component.head)
    return ("mlp", component.layer)


def _write_order(sender: tuple) -> int:
    if sender[0] in ("embed", "pos_embed"):
        return -1
    return 2 * sender[1] + (sender[0] == "mlp")


def _read_order(receiver: tuple) -> float:
    if receiver[0] == LOGITS:
        return float("inf")
    return 2 * receiver[1] + (receiver[0] == "mlp")


def sender_component(key: tuple) -> Component:
    """The component a sender key names (``("head", 0, 2)`` -> ``L0H2``)."""
    if key[0] == "head":
        return Component("head", key[1], key[2])
    if key[0] == "mlp":
        return Component("mlp", key[1])
    return Component(key[0])


def receiver_component(key: tuple) -> Component:
    """The component a receiver key names (``("k", 1, 3)`` -> ``L1H3.k``, ``("logits",)`` -> logits)."""
    if key[0] in HEAD_PORTS:
        return Component("head", key[1], key[2], key[0])
    if key[0] == "mlp":
        return Component("mlp", key[1])
    return Component(LOGITS)


@dataclass(frozen=True)
class Graph:
    """The edge graph of a model's config at one input length: its senders, receivers and edges.

    ``Graph.of(model, seq_len)``; :meth:`keep` and :meth:`drop` make the variants
    the patcher runs. Hashable: variants made from equal graphs are equal.
    """

    n_layers: int
    n_heads: int
    attn_only: bool
    pos_embed: bool
    seq_len: int
    model_name: str = ""

    @classmethod
    def of(cls, model, seq_len: int) -> "Graph":
        """The graph of ``model``; a grouped-query model is refused (its heads share their key and value inputs)."""
        cfg = model.cfg
        n_kv = getattr(cfg, "n_key_value_heads", None)
        if n_kv is not None and int(n_kv) != int(cfg.n_heads):
            # hook_k / hook_v hold one input per key-value head, read by all heads of its group: there is
            # no per-head key or value input to rebuild (TransformerLens's enumerate_edges refuses these too).
            raise CircuitCheckError(
                f"edge circuits cannot be built on model {model_label(model)}: it has grouped-query attention "
                f"({cfg.n_heads} query heads share {n_kv} key-value heads), so a head's key and value inputs are not its own "
                f"receivers; use node circuits, or path patching into a head's input (Patcher.path_patch, e.g. into L1H0.k)"
            )
        return cls(
            n_layers=int(cfg.n_layers),
            n_heads=int(cfg.n_heads),
            attn_only=bool(getattr(cfg, "attn_only", False)),
            pos_embed=(getattr(cfg, "positional_embedding_type", "standard") or "standard") == "standard",
            seq_len=int(seq_len),
            model_name=model_label(model),
        )

    # The graph ------------------------------------------------------------------------------

    def senders(self) -> list[tuple]:
        keys: list[tuple] = [("embed",)] + [("pos_embed",)] * self.pos_embed
        for layer in range(self.n_layers):
            keys += [("head", layer, h) for h in range(self.n_heads)]
            if not self.attn_only:
                keys.append(("mlp", layer))
        return keys

    def receivers(self) -> list[tuple]:
        keys: list[tuple] = []
        for layer in range(self.n_layers):
            keys += [(port, layer, h) for port in HEAD_PORTS for h in range(self.n_heads)]
            if not self.attn_only:
                keys.append(("mlp", layer))
        return keys + [(LOGITS,)]

    def senders_into(self, receiver: tuple) -> list[tuple]:
        """Every sender with an edge into ``receiver``, in the residual stream's order."""
        order = _read_order(receiver)
        return [s for s in self.senders() if _write_order(s) < order]

    def edges(self) -> list[Edge]:
        """Every edge of the graph (all positions), senders in the residual stream's order within each receiver."""
        return [Edge(sender_component(s), receiver_component(r)) for r in self.receivers() for s in self.senders_into(r)]

    @property
    def n_edges(self) -> int:
        """Edges per position (TransformerLens's ``total_edges`` is this times the input length, less the pos_embed edges)."""
        return sum(len(self.senders_into(r)) for r in self.receivers())

    # Edges as (sender, receiver, positions) atoms -----------------------------------------

    def atoms(self, edges) -> tuple[tuple, ...]:
        """Edges as sorted ``(sender key, receiver key, positions or None)``, ``L0.attn`` expanded to its heads, checked against the graph."""
        merged: dict[tuple, set | None] = {}
        for edge in parse_edges(edges) if not isinstance(edges, (list, tuple)) else [Edge.parse(e) for e in edges]:
            self._check(edge)
            positions = edge.positions(self.seq_len)
            sender = edge.sender
            heads = [Component("head", sender.layer, h) for h in range(self.n_heads)] if sender.kind == "attn" else [sender]
            for one in heads:
                key = (_sender_key(one), _receiver_key(edge.receiver))
                if key in merged and merged[key] is None or positions is None:
                    merged[key] = None
                else:
                    merged[key] = merged.get(key, set()) | set(positions)
        out = []
        for (s, r), positions in merged.items():
            if positions is not None and len(positions) == self.seq_len:
                positions = None
            out.append((s, r, None if positions is None else tuple(sorted(positions))))
        return tuple(sorted(out, key=lambda a: (_read_order(a[1]), str(a[1]), _write_order(a[0]), str(a[0]))))

    def _check(self, edge: Edge) -> None:
        name = self.model_name or "this model"
        for end in (edge.sender, edge.receiver):
            if end.layer is not None and not 0 <= end.layer < self.n_layers:
                raise ComponentError(f"edge {edge}: layer {end.layer} does not exist: model {name} has layers 0-{self.n_layers - 1}")
            if end.head is not None and not 0 <= end.head < self.n_heads:
                raise ComponentError(f"edge {edge}: head {end.head} does not exist: model {name} has heads 0-{self.n_heads - 1} in each layer")
            if end.kind == "mlp" and self.attn_only:
                raise ComponentError(f"edge {edge}: {end} does not exist: model {name} is attention-only and has no MLPs")
            if end.kind == "pos_embed" and not self.pos_embed:
                raise ComponentError(f"edge {edge}: model {name} has no learned positional embedding to send")

    # Variants ----------------------------------------------------------------------------------

    def keep(self, edges: Iterable = ()) -> "EdgeAblation":
        """The variant that keeps ``edges`` and ablates every other edge (``keep()``: every edge ablated)."""
        return EdgeAblation(self, "keep", self.atoms(list(edges)))

    def drop(self, edges: Iterable = ()) -> "EdgeAblation":
        """The variant that ablates ``edges`` and keeps every other edge (``drop()``: the full model)."""
        return EdgeAblation(self, "drop", self.atoms(list(edges)))


def all_edges(model, seq_len: int = 1) -> list[Edge]:
    """Every edge of ``model``'s graph (all positions): the edge circuit that is the whole model."""
    return Graph.of(model, seq_len).edges()


def node_edges(model, components: Sequence, seq_len: int = 1) -> list[Edge]:
    """The edge circuit that runs like the node circuit ``components`` (heads, attention layers, MLPs).

    Every edge out of the embeddings and out of the components, into every
    receiver. Its m(C) equals the node circuit's m(C) (a node circuit ablates a
    sender's output for every receiver, which is ablating every edge out of it;
    edges into an ablated node do not matter, since nothing reads its output).
    Its recovery does not: the node circuit's ∅ keeps the embeddings, the edge
    circuit's ∅ ablates them too (see :mod:`circuitcheck.claims.causal`).
    """
    graph = Graph.of(model, seq_len)
    kept = {("embed",), ("pos_embed",)}
    for c in components:
        c = Component.parse(c)
        if c.port is not None or c.positions is not None or c.kind not in ("head", "attn", "mlp"):
            raise ComponentError(f"{c}: node_edges takes whole head outputs, attention layers and MLPs (no ports or positions)")
        kept |= {("head", c.layer, h) for h in range(graph.n_heads)} if c.kind == "attn" else {_sender_key(c)}
    return [Edge(sender_component(s), receiver_component(r))
            for r in graph.receivers() for s in graph.senders_into(r) if s in kept]


# The variant: a patch source that rebuilds receivers' inputs -----------------------------------


def _resid_hook(graph: Graph, receiver: tuple) -> str:
    """Where the live residual a receiver reads is captured (for logits: the rewrite point itself)."""
    if receiver[0] in HEAD_PORTS:
        return f"blocks.{receiver[1]}.hook_resid_pre"
    if receiver[0] == "mlp":
        return f"blocks.{receiver[1]}.hook_resid_mid"
    return f"blocks.{graph.n_layers - 1}.hook_resid_post"


def _rewrite_hook(graph: Graph, receiver: tuple) -> str:
    if receiver[0] in HEAD_PORTS:
        return f"blocks.{receiver[1]}.attn.hook_{receiver[0]}"
    if receiver[0] == "mlp":
        return f"blocks.{receiver[1]}.mlp.hook_in"
    return f"blocks.{graph.n_layers - 1}.hook_resid_post"


def _sender_hook(sender: tuple) -> str:
    if sender[0] == "embed":
        return "hook_embed"
    if sender[0] == "pos_embed":
        return "hook_pos_embed"
    if sender[0] == "head":
        return f"blocks.{sender[1]}.attn.hook_z"
    return f"blocks.{sender[1]}.hook_mlp_out"


@dataclass(frozen=True)
class EdgeAblation:
    """One edge variant: ``mode="keep"`` ablates every edge but ``atoms``, ``"drop"`` ablates exactly ``atoms``.

    ``atoms``: ``(sender key, receiver key, positions or None)`` from :meth:`Graph.atoms`.
    Use :meth:`patches` as the variant given to :meth:`Patcher.run`.
    """

    graph: Graph
    mode: str
    atoms: tuple

    #: The lattice of the causal claims may remember this variant's runs (it is hashable and holds no tensor).
    memoisable = True

    def __post_init__(self):
        if self.mode not in ("keep", "drop"):
            raise ValueError(f"mode={self.mode!r} is not valid: use 'keep' (ablate every other edge) or 'drop' (ablate these edges)")

    @property
    def edges(self) -> list[Edge]:
        """The atoms as edges (heads of an expanded ``L0.attn`` listed one by one)."""
        edges = [(Edge(sender_component(s), receiver_component(r)), positions) for s, r, positions in self.atoms]
        return [edge if positions is None else _narrowed(edge, positions) for edge, positions in edges]

    # What the variant touches -----------------------------------------------------------------

    def corrections(self) -> dict[tuple, tuple]:
        """receiver key -> its atoms' ``(sender key, positions)``; in keep mode every receiver (most with none)."""
        out: dict[tuple, list] = {r: [] for r in self.graph.receivers()} if self.mode == "keep" else {}
        for s, r, positions in self.atoms:
            out.setdefault(r, []).append((s, positions))
        return {r: tuple(c) for r, c in out.items()}

    def live_senders(self) -> set[tuple]:
        return {s for s, _, _ in self.atoms}

    def patches(self) -> list[Patch]:
        """The variant as patches for :meth:`Patcher.run` (capture points first, in the forward's order)."""
        graph = self.graph
        hooks: list[str] = []
        for s in sorted(self.live_senders(), key=_write_order):
            if s[0] in ("head", "mlp"):
                hooks.append(_sender_hook(s))
        for r in self.corrections():
            if self.mode == "drop" and r[0] != LOGITS:
                hooks.append(_resid_hook(graph, r))
            hooks.append(_rewrite_hook(graph, r))
        return [Patch(hook, (), self) for hook in dict.fromkeys(hooks)]

    def needs(self) -> dict[str, set[str]]:
        """Cached activations the variant reads: ``"ablated"`` (the ablation's values) and ``"base"`` (the base run's)."""
        graph = self.graph
        if self.mode == "keep":
            senders = set(graph.senders())
            base = {_sender_hook(s) for s in senders} | {_resid_hook(graph, r) for r in graph.receivers()}
        else:
            senders = self.live_senders()
            base = {_sender_hook(s) for s in senders if s[0] in ("embed", "pos_embed")}
        return {"ablated": {_sender_hook(s) for s in senders}, "base": base}

    @staticmethod
    def prepare(model, runs, variants: Sequence["EdgeAblation"]) -> None:
        """Check once per model and weights that each input the ``variants`` rewrite is recomputed exactly from its residual."""
        kinds = {(r[0] if r[0] in HEAD_PORTS + ("mlp",) else LOGITS, None if r[0] == LOGITS else r[1])
                 for variant in variants for r in variant.corrections()}
        verified = _verified_receivers(model)
        todo = sorted(kinds - verified, key=str)
        if todo:  # every activation the checks read, in one forward of the corrupted input (not one per receiver)
            runs.corrupt.ensure({hook for kind, layer in todo for hook in _verification_hooks(model, kind, layer)})
        for kind, layer in todo:
            verify_receiver(model, runs, kind, layer)

    # The chunk's hooks ---------------------------------------------------------------------------

    @staticmethod
    def apply(hook: str, acts: torch.Tensor, entries: Sequence[tuple[int, "EdgeAblation"]], shared: dict) -> torch.Tensor:
        """At ``hook``, with ``acts`` ``[variants, batch, ...]``: record live values, rewrite the entries' receivers.

        ``shared`` (one dict per forward of a chunk) holds ``model``, ``base`` and
        ``ablated`` (hook name -> cached tensor) and what earlier hooks recorded.
        Every rebuilt input of the hook goes through its LayerNorm and projection
        in one call; receivers whose every edge is ablated share one input.
        """
        live = shared.setdefault("live", {})
        if hook.endswith(("hook_resid_pre", "attn.hook_z", "hook_resid_mid", "hook_mlp_out")):
            live[hook] = acts  # read by later hooks of this forward only (nothing writes it in place)
            return acts
        empty: list[tuple[int, list]] = []  # (row, heads) reading the all-ablated residual
        rebuilt: list[tuple[int, list, torch.Tensor]] = []  # (row, heads, residual)
        kind = layer = None
        for v, variant in entries:
            for kind, layer, groups in variant._plan(shared).get(hook, ()):
                for corrections, heads in groups:
                    if variant.mode == "keep" and not corrections:
                        empty.append((v, heads))
                    else:
                        rebuilt.append((v, heads, variant._residual(kind, layer, corrections, acts, v, shared)))
        if kind is None:
            return acts
        graph = entries[0][1].graph
        out = acts.clone()
        if empty:
            read = _read_input(kind, layer, _empty_resid(graph, kind, layer, shared)[None], shared)
            _put(out, [(v, heads, 0) for v, heads in empty], read)
        if rebuilt:
            reads = _read_input(kind, layer, torch.stack([x.expand(acts.shape[1], *x.shape[1:]) for _, _, x in rebuilt]), shared)
            _put(out, [(v, heads, t) for t, (v, heads, _) in enumerate(rebuilt)], reads)
        return out

    def _residual(self, kind: str, layer, corrections, acts: torch.Tensor, v: int, shared: dict) -> torch.Tensor:
        """The residual one receiver of row ``v`` reads, ``[batch, pos, d_model]``: its ablated edges' writes swapped."""
        if self.mode == "keep":
            x, sign = _empty_resid(self.graph, kind, layer, shared), 1.0
        else:
            x = acts[v] if kind == LOGITS else shared["live"][_resid_hook(self.graph, (kind, layer))][v]
            sign = -1.0
        for s, positions in corrections:
            d = _sender_delta(s, v, shared)
            if positions is not None:
                d = d * _position_mask(positions, self.graph.seq_len, d, shared)[None, :, None]
            x = x + sign * d
        return x

    def _plan(self, shared: dict) -> dict:
        """rewrite hook -> [(receiver kind, layer, [(corrections, heads)])]: heads with equal corrections share one input."""
        cache = shared.setdefault("plans", {})
        if self in cache:
            return cache[self]
        by_hook: dict[str, dict] = {}
        for r, corrections in self.corrections().items():
            hook = _rewrite_hook(self.graph, r)
            layer = None if r[0] == LOGITS else r[1]
            groups = by_hook.setdefault(hook, {}).setdefault((r[0], layer), {})
            groups.setdefault(corrections, []).append(r[2] if r[0] in HEAD_PORTS else None)
        plan = {hook: [(kind, layer, list(groups.items())) for (kind, layer), groups in entries.items()]
                for hook, entries in by_hook.items()}
        cache[self] = plan
        return plan


def _narrowed(edge: Edge, positions: tuple) -> Edge:
    """``edge`` with its receiver narrowed to ``positions`` (one position or a contiguous range; else its own text)."""
    from ..model.components import Positions

    first, last = positions[0], positions[-1]
    if len(positions) == 1:
        narrowed = Positions(first, None, single=True)
    elif list(positions) == list(range(first, last + 1)):
        narrowed = Positions(first, last + 1)
    else:
        raise ComponentError(f"edge {edge} at positions {list(positions)}: not one position or range; list one edge per position")
    r = edge.receiver
    return Edge(edge.sender, Component(r.kind, r.layer, r.head, r.port, narrowed))


# Tensors of one forward -------------------------------------------------------------------------


def _read_input(kind: str, layer, resid: torch.Tensor, shared: dict) -> torch.Tensor:
    """What receivers of ``kind`` read from residuals ``[n, batch, pos, d_model]``: every head's q/k/v ``[n, batch, pos, heads, d_head]``, an MLP's input, or the residual itself (logits)."""
    model = shared["model"]
    if kind in HEAD_PORTS:
        W, b = _projection(model, layer, kind, shared)
        normed = _norm(model, layer, "ln1", shared)(resid)
        read = torch.einsum("nbpd,hde->nbphe", normed, W.to(resid.dtype))
        return read if b is None else read + b.to(resid.dtype)
    if kind == "mlp":
        return _norm(model, layer, "ln2", shared)(resid)
    return resid


def _put(out: torch.Tensor, items: list[tuple[int, list, int]], reads: torch.Tensor) -> None:
    """Write each item ``(row v, heads, t)``: row v's input is ``reads[t]`` (for a head port, at ``heads`` only), in one indexed write."""
    if items[0][1][0] is None:  # an MLP's input or the logits' residual: the whole row
        out[[v for v, _, _ in items]] = reads[[t for _, _, t in items]]
        return
    rows = [v for v, heads, _ in items for _ in heads]
    heads = [h for _, hs, _ in items for h in hs]
    sources = [t for _, hs, t in items for _ in hs]
    # [n, batch, pos, heads, d_head] seen as [n, heads, batch, pos, d_head]: (row, head) pairs index its first two dims.
    out.permute(0, 3, 1, 2, 4)[rows, heads] = reads.permute(0, 3, 1, 2, 4)[sources, heads]


def _position_mask(positions: tuple, seq_len: int, like: torch.Tensor, shared: dict) -> torch.Tensor:
    memo = shared.setdefault("memo", {})
    key = ("positions", positions)
    if key not in memo:
        mask = torch.zeros(seq_len, dtype=like.dtype, device=like.device)
        mask[list(positions)] = 1
        memo[key] = mask
    return memo[key]


def _batched(t: torch.Tensor, seq_len: int) -> torch.Tensor:
    """A cached activation as ``[batch or 1, pos, ...]`` (a positional embedding may come without a batch dim)."""
    return t.unsqueeze(0) if t.shape[0] == seq_len and t.ndim == 2 else t


def _norm(model, layer: int, which: str, shared: dict | None = None):
    """A block's LayerNorm as a plain function (calling the bridge's module inside a hook would fire its hooks)."""
    memo = {} if shared is None else shared.setdefault("memo", {})
    key = ("norm", layer, which)
    if key not in memo:
        try:
            memo[key] = _fastpath._norm(getattr(model.blocks[layer], which, None))
        except _fastpath.Unsupported as error:
            raise CircuitCheckError(f"edge circuits cannot rebuild a receiver's input on model {model_label(model)}: "
                                    f"layer {layer}'s {which} is a {error} this version does not read") from None
    return memo[key]


def verify_receiver(model, runs, kind: str, layer: int | None = None) -> None:
    """Check (once per model and weights) that a receiver's input is recomputed exactly from the residual it reads.

    ``kind``: ``q``/``k``/``v`` (LayerNorm 1 and each head's projection of ``hook_resid_pre``
    give ``attn.hook_{kind}``), ``mlp`` (LayerNorm 2 of ``hook_resid_mid`` gives
    ``mlp.hook_in``) or ``logits`` (``ln_final`` and the unembedding of the last
    ``hook_resid_post`` give the logits). A :class:`CircuitCheckError` naming the
    architecture where it does not hold, never a wrong number. Reads the cached
    corrupted run, so call it before a forward, not inside one.
    """
    verified = _verified_receivers(model)
    if (kind, layer) in verified:
        return  # nothing read: a fresh patcher's runs would otherwise compute the activations again
    corrupt = runs.corrupt
    if kind in HEAD_PORTS:
        W, b = _projection(model, layer, kind, {})
        if W.shape[0] != model.cfg.n_heads:
            raise CircuitCheckError(f"edge circuits need one {kind} projection per head; layer {layer} of model {model_label(model)} "
                                    f"has {W.shape[0]} for {model.cfg.n_heads} heads (grouped-query attention)")
        norm = _norm(model, layer, "ln1")

        def recompute():
            x = corrupt[f"blocks.{layer}.hook_resid_pre"]
            read = torch.einsum("bpd,hde->bphe", norm(x), W.to(x.dtype))
            return read if b is None else read + b.to(x.dtype)

        cached, what = corrupt[f"blocks.{layer}.attn.hook_{kind}"], f"the {kind} input of layer {layer}'s heads"
    elif kind == "mlp":
        norm = _norm(model, layer, "ln2")

        def recompute():
            return norm(corrupt[f"blocks.{layer}.hook_resid_mid"])

        cached, what = corrupt[f"blocks.{layer}.mlp.hook_in"], f"layer {layer}'s MLP input"
    else:
        last = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"

        def recompute():
            return model.unembed(model.ln_final(corrupt[last]))

        cached, what = corrupt.logits, "the unembedding"
    _paths._verify(model, ("edge", kind, layer), recompute, cached, what)
    verified.add((kind, layer))


def _verified_receivers(model) -> set:
    """The ``(kind, layer)`` receivers :func:`verify_receiver` has checked on ``model``'s current weights (dropped when they change)."""
    return session_of(model).derived("edge-receivers-verified", set)


def _verification_hooks(model, kind: str, layer: int | None) -> list[str]:
    """The corrupted run's activations :func:`verify_receiver` reads for one receiver kind and layer (logits: the logits)."""
    if kind in HEAD_PORTS:
        return [f"blocks.{layer}.hook_resid_pre", f"blocks.{layer}.attn.hook_{kind}"]
    if kind == "mlp":
        return [f"blocks.{layer}.hook_resid_mid", f"blocks.{layer}.mlp.hook_in"]
    return [f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"]


def _W_O(model, layer: int, shared: dict) -> torch.Tensor:
    memo = shared.setdefault("memo", {})
    key = ("W_O", layer)
    if key not in memo:
        memo[key] = model.blocks[layer].attn.W_O.detach()  # [heads, d_head, d_model]
    return memo[key]


def _projection(model, layer: int, port: str, shared: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
    memo = shared.setdefault("memo", {})
    key = ("W", layer, port)
    if key not in memo:
        attn = model.blocks[layer].attn
        b = getattr(attn, f"b_{port.upper()}", None)  # None: a projection without bias (Llama)
        memo[key] = (getattr(attn, f"W_{port.upper()}").detach(), None if b is None else b.detach())
    return memo[key]


def _write(s: tuple, value: torch.Tensor, model, shared: dict) -> torch.Tensor:
    """What sender ``s`` writes to the residual, from its hook's activation ``[..., pos, (heads, d_head) | d_model]``."""
    if s[0] == "head":
        return value[..., s[2], :] @ _W_O(model, s[1], shared)[s[2]].to(value.dtype)
    return value


def _sender_delta(s: tuple, v: int, shared: dict) -> torch.Tensor:
    """live_s - ablated_s for variant row ``v``: ``[batch, pos, d_model]``."""
    memo = shared.setdefault("memo", {})
    key = ("delta", s)
    if key not in memo:
        model, hook = shared["model"], _sender_hook(s)
        ablated = _write(s, _cached(shared, "ablated", hook), model, shared)
        if s[0] in ("embed", "pos_embed"):
            live = _write(s, _cached(shared, "base", hook), model, shared)[None]  # nothing upstream changes them
        else:
            if hook not in shared.get("live", {}):
                raise RuntimeError(f"edge ablation: {hook} was not recorded before it was needed")
            live = _write(s, shared["live"][hook], model, shared)
        memo[key] = live - ablated[None]
    delta = memo[key]
    return delta[0] if delta.shape[0] == 1 else delta[v]


def _empty_resid(graph: Graph, kind: str, layer, shared: dict) -> torch.Tensor:
    """The residual a receiver reads when every edge into it is ablated: the base run's, every sender's write swapped.

    ``[batch, pos, d_model]``, from the cached base and ablated runs (no live value needed).
    """
    memo = shared.setdefault("memo", {})
    receiver = (kind, layer, 0) if kind in HEAD_PORTS else ((kind, layer) if kind == "mlp" else (LOGITS,))
    order = _read_order(receiver)
    key = ("empty", order)
    if key not in memo:
        x = _cached(shared, "base", _resid_hook(graph, receiver))
        memo[key] = x - _swapped(graph, order, shared)
    return memo[key]


def _swapped(graph: Graph, order: float, shared: dict) -> torch.Tensor:
    """Sum over the senders written before read ``order`` of (base write - ablated write), ``[batch or 1, pos, d_model]``.

    Built from the previous read order's sum plus the senders written in between,
    so that a forward's receivers cost one pass over the senders, not one each.
    """
    memo = shared.setdefault("memo", {})
    key = ("swapped", order)
    if key in memo:
        return memo[key]
    earlier = [o for o in (_read_order(r) for r in graph.receivers()) if o < order]
    previous = max(earlier, default=None)
    total = _swapped(graph, previous, shared) if previous is not None else None
    low = previous if previous is not None else float("-inf")
    model = shared["model"]
    for s in graph.senders():
        if not low <= _write_order(s) < order or s[0] == "head":
            continue  # heads: summed per layer below (one matmul for all of its heads)
        hook = _sender_hook(s)
        diff = _write(s, _cached(shared, "base", hook), model, shared) - _write(s, _cached(shared, "ablated", hook), model, shared)
        total = diff if total is None else total + diff
    for layer in range(graph.n_layers):
        if not low <= _write_order(("head", layer, 0)) < order:
            continue
        hook = f"blocks.{layer}.attn.hook_z"
        diff = _cached(shared, "base", hook) - _cached(shared, "ablated", hook)
        W_O = _W_O(model, layer, shared)
        heads = diff.flatten(-2) @ W_O.reshape(-1, W_O.shape[-1]).to(diff.dtype)
        total = heads if total is None else total + heads
    memo[key] = total
    return total


def _cached(shared: dict, which: str, hook: str) -> torch.Tensor:
    """A cached activation of the base run (``which="base"``) or the ablation's value (``"ablated"``), ``[batch or 1, pos, ...]``.

    Looked up once per forward: each lookup through the patcher checks its runs against the model's weights.
    """
    memo = shared.setdefault("memo", {})
    key = (which, hook)
    if key not in memo:
        memo[key] = _batched(shared[which](hook), shared["seq_len"])
    return memo[key]
