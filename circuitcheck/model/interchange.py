"""Edge circuits in other libraries' naming: TransformerLens 4.3, auto-circuit, and EAP-IG / MIB.

circuitcheck names an edge ``SENDER -> RECEIVER`` (:mod:`.components`):
senders ``embed``, ``pos_embed``, ``L0H2``, ``L0.mlp``; receivers ``L1H3.q`` /
``.k`` / ``.v``, ``L1.mlp`` (the MLP's input), ``logits`` (the final residual
stream); either end optionally narrowed to positions. The graph is the one of
:mod:`circuitcheck.engine.edges`: a receiver reads every sender that writes the
residual stream before it (a layer's heads write before its MLP reads). The
other libraries name the same graph as follows; each format was read from the
file cited, not guessed.

**TransformerLens 4.3** (``transformer_lens/tools/analysis/attribution_patching.py``:
``Node``, ``enumerate_edges``, ``faithfulness``): an edge is a ``(writer, reader)``
pair of ``Node(kind, position, layer, head)``, one pair per position.

=====================================  ================================================
circuitcheck                           TransformerLens ``Node``
=====================================  ================================================
``embed``                              ``Node("embed", p)`` (``hook_embed``)
``L0H2``                               ``Node("attn_head_out", p, 0, 2)``
``L0.mlp`` (sender)                    ``Node("mlp_out", p, 0)``
``L1H3.q`` / ``.k`` / ``.v``           ``Node("q_input" / "k_input" / "v_input", p, 1, 3)``
``L1.mlp`` (receiver)                  ``Node("mlp_in", p, 1)``
``logits``                             ``Node("logits", p, n_layers - 1)``
=====================================  ================================================

**auto-circuit** (github UFO-101/auto-circuit at 98db58c:
``auto_circuit/model_utils/transformer_lens_utils.py`` ``factorized_src_nodes`` /
``factorized_dest_nodes``; ``auto_circuit/types.py`` ``Edge.name`` =
``f"{src.name}->{dest.name}"`` and ``Edge.seq_idx``; circuits are sets of edge
names or ``{edge name: [token positions]}``, as its official circuits write them
in ``auto_circuit/metrics/official_circuits/circuits/greaterthan_official.py``
and ``docstring_official.py``):

=====================================  ================================================
circuitcheck                           auto-circuit
=====================================  ================================================
``embed`` and ``pos_embed`` together   ``Resid Start`` (``blocks.0.hook_resid_pre``)
``L0H2``                               ``A0.2`` (``attn.hook_result``)
``L0.mlp`` (sender / receiver)         ``MLP 0`` (``hook_mlp_out`` / ``hook_mlp_in``)
``L1H3.q`` / ``.k`` / ``.v``           ``A1.3.Q`` / ``A1.3.K`` / ``A1.3.V`` (``separate_qkv=True``)
``L1H3.q``, ``.k`` and ``.v`` together ``A1.3`` as a destination (``separate_qkv=False``, ``hook_attn_in``)
``logits``                             ``Resid End`` (the last ``hook_resid_post``)
=====================================  ================================================

``Resid Start`` is the residual stream before block 0, the token and the
positional embedding summed: ``Resid Start->A1.3.Q`` reads as the two edges
``embed -> L1H3.q`` and ``pos_embed -> L1H3.q`` (just ``embed`` on a model
without a learned positional embedding), and writing it needs both.

**EAP-IG / MIB** (github hannamw/EAP-IG at 795f560, ``src/eap/graph.py``:
``InputNode``, ``AttentionNode``, ``MLPNode``, ``LogitNode``, ``Edge.name``,
``Graph.from_model``, ``to_json`` / ``from_json``, ``to_pt`` / ``from_pt``,
``apply_topn``, ``apply_threshold``, ``prune``; the MIB circuit track,
github hannamw/MIB-circuit-track at b759df3, submits these files: its
``README.md`` "Submitting to the MIB Leaderboard", its loader
``MIB_circuit_track/circuit_loading.py`` and its example
``circuits/ioi-eap-ig.json``): a JSON object ``{"cfg": {n_layers, n_heads,
parallel_attn_mlp, d_model}, "nodes": {name: {"in_graph"}}, "edges": {name:
{"score", "in_graph"}}}`` listing every edge of the model's graph, or the same
graph as tensors in a ``.pt`` file (``src_nodes``, ``dst_nodes``,
``edges_scores``, ``edges_in_graph``, ``nodes_in_graph``). No positions.

=====================================  ================================================
circuitcheck                           EAP-IG
=====================================  ================================================
``embed``                              ``input`` (``hook_embed``)
``L0H2``                               ``a0.h2`` (``attn.hook_result``)
``L0.mlp`` (sender / receiver)         ``m0`` (``hook_mlp_out`` / ``hook_mlp_in``)
``L1H3.q`` / ``.k`` / ``.v``           ``a1.h3<q>`` / ``<k>`` / ``<v>`` (edge ``a0.h2->a1.h3<q>``)
``logits``                             ``logits``
=====================================  ================================================

The positional embedding. TransformerLens's and EAP-IG's graphs have the token
embedding (``hook_embed``) as their only input sender: the positional
embedding is outside their graph, a constant that their ablations never touch.
In circuitcheck's graph that is every ``pos_embed -> R`` edge kept, so with
``pos_embed="kept"`` (the default) reading one of their circuits adds every
``pos_embed`` edge of the model, and writing a circuit requires it to keep them
all and writes none (a circuit that ablates some of them has no equivalent
there: the error says which). ``pos_embed="omitted"`` reads no ``pos_embed``
edge and writes circuits without theirs. Models without a learned positional
embedding (rotary) have no ``pos_embed`` edges either way.

Round trips are exact on the canonical form that reading returns: edges in the
graph's order (receivers as the residual stream reads them, then senders as
they write), an edge covering every position without positions, otherwise
narrowed on its receiver to non-negative positions, one edge per contiguous
run (``L0H1 -> L1H2.k@3``, ``L0H1 -> L1H2.k@2:5``); ``L0.attn`` senders are
written out head by head.

MIB's evaluation (``eap.evaluate.evaluate_graph``) first prunes the graph
(``Graph.prune``: it drops edges out of nodes that no kept edge reaches from
the input, and edges into nodes with no kept edge out); circuitcheck measures
the edges as given. ``from_eap_graph(..., prune=True)`` applies the same rule.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Union

from ..errors import ArgumentError, ComponentError
from .circuit import Circuit
from .components import LOGITS, Component, Edge, Positions, model_label, parse_edges

#: How the positional embedding maps where the other graph has none (see the module docstring).
POS_EMBED_MODES = ("kept", "omitted")

EdgesLike = Union[Circuit, str, Edge, Iterable[Union[str, Edge]]]

TL_EXAMPLE = "(Node('attn_head_out', 0, layer=0, head=1), Node('k_input', 0, layer=1, head=2))"
AUTO_CIRCUIT_EXAMPLE = "'A0.1->A1.2.Q', 'Resid Start->MLP 0', 'MLP 1->Resid End'"
EAP_EXAMPLE = "'a0.h1->a1.h2<q>', 'input->m0', 'm1->logits'"

_TL_READERS = {"q_input": "q", "k_input": "k", "v_input": "v"}
_TL_WRITERS = ("embed", "attn_head_out", "mlp_out")


# The model's edge graph (the rule of circuitcheck.engine.edges, which the model layer cannot import) ----


@dataclass(frozen=True)
class _Graph:
    """Senders, receivers and edges of a model's config, as whole components (no positions)."""

    n_layers: int
    n_heads: int
    attn_only: bool
    pos_embed: bool
    d_model: int
    name: str

    @classmethod
    def of(cls, model) -> "_Graph":
        cfg = model.cfg
        if getattr(cfg, "parallel_attn_mlp", False):
            raise ComponentError(f"model {model_label(model)} runs attention and MLP in parallel (cfg.parallel_attn_mlp): "
                                 "circuitcheck's edge graph has a layer's heads write before its MLP reads")
        return cls(int(cfg.n_layers), int(cfg.n_heads), bool(getattr(cfg, "attn_only", False)),
                   (getattr(cfg, "positional_embedding_type", "standard") or "standard") == "standard",
                   int(cfg.d_model), model_label(model))

    def senders(self) -> list[Component]:
        out = [Component("embed")] + [Component("pos_embed")] * self.pos_embed
        for layer in range(self.n_layers):
            out += [Component("head", layer, h) for h in range(self.n_heads)]
            out += [Component("mlp", layer)] * (not self.attn_only)
        return out

    def receivers(self) -> list[Component]:
        out = []
        for layer in range(self.n_layers):
            out += [Component("head", layer, h, port) for port in ("q", "k", "v") for h in range(self.n_heads)]
            out += [Component("mlp", layer)] * (not self.attn_only)
        return out + [Component(LOGITS)]

    def senders_into(self, receiver: Component) -> list[Component]:
        """The senders that write the residual stream before ``receiver`` reads it, in writing order."""
        return [s for s in self.senders() if _write_order(s) < _read_order(receiver)]

    def pairs(self) -> list[tuple[Component, Component]]:
        """Every (sender, receiver) of the graph, receivers in reading order, then senders in writing order."""
        return [(s, r) for r in self.receivers() for s in self.senders_into(r)]


def _write_order(sender: Component) -> int:
    return -1 if sender.layer is None else 2 * sender.layer + (sender.kind == "mlp")


def _read_order(receiver: Component) -> float:
    return float("inf") if receiver.kind == LOGITS else 2 * receiver.layer + (receiver.kind == "mlp")


# Circuits as (sender, receiver) -> positions ------------------------------------------------------------

#: positions an edge covers: None for every position, else a sorted tuple.
_Atoms = dict  # {(sender, receiver): tuple[int, ...] | None}


def _edges_of(circuit: EdgesLike) -> list[Edge]:
    if isinstance(circuit, Circuit):
        if circuit.components:
            raise ComponentError(
                f"circuit {circuit.label} lists components ({' '.join(map(str, circuit.components))}): the interchange formats "
                "hold edge circuits; circuitcheck.engine.edges.node_edges(model, components) gives the edge circuit that runs like it")
        return list(circuit.edges)
    return parse_edges(circuit)


def _atoms(circuit: EdgesLike, model, seq_len: int | None, target: str) -> tuple[_Graph, _Atoms]:
    """The circuit's edges checked against ``model``, ``L0.attn`` written out per head, positions merged."""
    graph = _Graph.of(model)
    atoms: _Atoms = {}
    for edge in _edges_of(circuit):
        edge.validate(model)
        if seq_len is None:
            if edge.sender.positions is not None or edge.receiver.positions is not None:
                raise ComponentError(f"edge {edge} is narrowed to positions: {target} has no positions"
                                     + ("" if target == "EAP-IG" else " unless given seq_len=") + "; write it without @positions")
            positions = None
        else:
            positions = edge.positions(seq_len)
        sender, receiver = edge.sender.without_positions(), edge.receiver.without_positions()
        heads = [Component("head", sender.layer, h) for h in range(graph.n_heads)] if sender.kind == "attn" else [sender]
        for one in heads:
            key = (one, receiver)
            if positions is None or (key in atoms and atoms[key] is None):
                atoms[key] = None
            else:
                merged = set(atoms.get(key) or ()) | set(positions)
                atoms[key] = None if len(merged) == seq_len else tuple(sorted(merged))
    return graph, atoms


def _pos_embed_out(graph: _Graph, atoms: _Atoms, pos_embed: str, target: str) -> _Atoms:
    """``atoms`` without the pos_embed edges, after checking that ``pos_embed="kept"`` can say what they mean."""
    _check_mode(pos_embed)
    pos = [(s, r) for s, r in atoms if s.kind == "pos_embed"]
    if pos_embed == "kept" and graph.pos_embed:
        missing = [(s, r) for s, r in graph.pairs() if s.kind == "pos_embed" and atoms.get((s, r), ()) is not None]
        if missing:
            s, r = missing[0]
            partly = atoms.get((s, r))
            what = f"keeps {s} -> {r} only at positions {list(partly)}" if partly else f"ablates {s} -> {r}"
            raise ComponentError(
                f"the circuit {what} ({len(missing)} of the model's {sum(s.kind == 'pos_embed' for s, _ in graph.pairs())} "
                f"pos_embed edges are not kept at every position): {target}'s graph has no positional-embedding sender "
                "and never ablates it, so it can only hold circuits that keep every pos_embed edge; add them, "
                "or pass pos_embed='omitted' to write the circuit without its pos_embed edges")
    return {key: value for key, value in atoms.items() if key not in pos}


def _check_mode(pos_embed: str) -> None:
    if pos_embed not in POS_EMBED_MODES:
        raise ArgumentError(f"pos_embed={pos_embed!r} is not valid: use 'kept' (the other graph never ablates the positional "
                            "embedding: every pos_embed edge kept) or 'omitted' (no pos_embed edges)")


def _circuit(graph: _Graph, atoms: _Atoms, pos_embed: str, name: str | None) -> Circuit:
    """The canonical edge circuit of ``atoms`` (plus every pos_embed edge when ``pos_embed="kept"``)."""
    _check_mode(pos_embed)
    if pos_embed == "kept":
        atoms = {**atoms, **{(s, r): None for s, r in graph.pairs() if s.kind == "pos_embed"}}
    edges: list[Edge] = []
    for s, r in graph.pairs():
        if (s, r) not in atoms:
            continue
        positions = atoms[(s, r)]
        if positions is None:
            edges.append(Edge(s, r))
            continue
        for start, stop in _runs(positions):
            narrowed = Positions(start, None, single=True) if stop == start + 1 else Positions(start, stop)
            edges.append(Edge(s, Component(r.kind, r.layer, r.head, r.port, narrowed)))
    return Circuit.of((), edges, name=name)


def _runs(positions: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted positions as half-open contiguous runs: (1, 2, 3, 7) -> [(1, 4), (7, 8)]."""
    runs: list[list[int]] = []
    for p in sorted(positions):
        if runs and runs[-1][1] == p:
            runs[-1][1] = p + 1
        else:
            runs.append([p, p + 1])
    return [(a, b) for a, b in runs]


def _add(atoms: _Atoms, graph: _Graph, sender: Component, receiver: Component, position: int | None,
         seq_len: int | None, text: str, library: str, example: str) -> None:
    """Record one edge read from another library, checked against the model's graph."""
    try:
        edge = Edge(sender, receiver)
    except ComponentError as error:
        raise ComponentError(f"{library} edge {text}: {error}") from None
    for end in (sender, receiver):
        if end.layer is not None and not 0 <= end.layer < graph.n_layers:
            raise ComponentError(f"{library} edge {text}: layer {end.layer} does not exist: model {graph.name} has layers "
                                 f"0-{graph.n_layers - 1}; valid edges look like {example}")
        if end.head is not None and not 0 <= end.head < graph.n_heads:
            raise ComponentError(f"{library} edge {text}: head {end.head} does not exist: model {graph.name} has heads "
                                 f"0-{graph.n_heads - 1} in each layer; valid edges look like {example}")
        if end.kind == "mlp" and graph.attn_only:
            raise ComponentError(f"{library} edge {text}: model {graph.name} is attention-only and has no MLPs")
    if sender.kind == "pos_embed" and not graph.pos_embed:
        raise ComponentError(f"{library} edge {text}: model {graph.name} has no learned positional embedding")
    key = (edge.sender, edge.receiver)
    if position is None:
        atoms[key] = None
        return
    if seq_len is None:
        raise ArgumentError(f"{library} edge {text} is at token position {position}: give seq_len= (the input length) "
                            "to read edges by position")
    if not 0 <= position < seq_len:
        raise ComponentError(f"{library} edge {text}: position {position} is outside an input of seq_len={seq_len} "
                             f"(positions 0-{seq_len - 1})")
    if key in atoms and atoms[key] is None:
        return
    merged = set(atoms.get(key) or ()) | {position}
    atoms[key] = None if len(merged) == seq_len else tuple(sorted(merged))


def _covers(positions, p: int) -> bool:
    return positions is None or p in positions


# TransformerLens 4.3 ----------------------------------------------------------------------------------


def to_transformer_lens(circuit: EdgesLike, model, seq_len: int, *, pos_embed: str = "kept") -> list[tuple]:
    """The edge circuit as TransformerLens 4.3's ``(writer, reader)`` Node pairs at every position it covers.

    The list is in ``attribution_patching.enumerate_edges``'s order (position by
    position) and goes straight into ``attribution_patching.faithfulness(...,
    circuit)``. ``seq_len``: the input length (TransformerLens's edges are per
    position; an edge without positions covers all of them).
    """
    from transformer_lens.tools.analysis.attribution_patching import Node

    _check_seq_len(seq_len)
    graph, atoms = _atoms(circuit, model, seq_len, "TransformerLens")
    atoms = _pos_embed_out(graph, atoms, pos_embed, "TransformerLens")
    pairs = [(s, r) for s, r in graph.pairs() if (s, r) in atoms]
    return [(_tl_writer(Node, s, p), _tl_reader(Node, r, p, graph)) for p in range(seq_len)
            for s, r in pairs if _covers(atoms[(s, r)], p)]


def from_transformer_lens(edges: Iterable, model, seq_len: int, *, pos_embed: str = "kept", name: str | None = None) -> Circuit:
    """The edge circuit of TransformerLens 4.3 edges: ``(writer, reader)`` Node pairs or ``top_edges``' ``(writer, reader, score)``.

    Scores are dropped (as ``faithfulness`` drops them); duplicates count once.
    ``seq_len``: the input length, so that an edge given at every position
    becomes one edge without positions.
    """
    _check_seq_len(seq_len)
    graph = _Graph.of(model)
    atoms: _Atoms = {}
    for item in edges:
        if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
            raise ComponentError(f"TransformerLens edge {item!r} is not a (writer, reader) or (writer, reader, score) tuple; "
                                 f"e.g. {TL_EXAMPLE}")
        writer, reader = item[0], item[1]
        text = f"({_tl_text(writer)}, {_tl_text(reader)})"
        sender, p_w = _tl_sender(writer, text)
        receiver, p_r = _tl_receiver(reader, text, graph)
        if p_w != p_r:
            raise ComponentError(f"TransformerLens edge {text}: writer and reader are at different positions ({p_w}, {p_r}); "
                                 "an edge joins a writer and a reader at the same position")
        _add(atoms, graph, sender, receiver, p_w, seq_len, text, "TransformerLens", TL_EXAMPLE)
    return _circuit(graph, atoms, pos_embed, name)


def _check_seq_len(seq_len) -> None:
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
        raise ArgumentError(f"seq_len={seq_len!r} is not valid: the input length, an integer >= 1")


def _tl_writer(Node, sender: Component, p: int):
    if sender.kind == "embed":
        return Node("embed", p)
    if sender.kind == "head":
        return Node("attn_head_out", p, sender.layer, sender.head)
    return Node("mlp_out", p, sender.layer)


def _tl_reader(Node, receiver: Component, p: int, graph: _Graph):
    if receiver.kind == LOGITS:
        return Node("logits", p, graph.n_layers - 1)
    if receiver.kind == "head":
        return Node(f"{receiver.port}_input", p, receiver.layer, receiver.head)
    return Node("mlp_in", p, receiver.layer)


def _tl_text(node) -> str:
    if not all(hasattr(node, a) for a in ("kind", "position", "layer", "head")):
        return repr(node)
    return f"Node({node.kind!r}, {node.position}, layer={node.layer}, head={node.head})"


def _tl_fields(node, text: str) -> tuple[str, int, Any, Any]:
    try:
        kind, position, layer, head = node.kind, node.position, node.layer, node.head
    except AttributeError:
        raise ComponentError(f"TransformerLens edge {text}: {node!r} is not an attribution_patching.Node "
                             f"(kind, position, layer, head); e.g. {TL_EXAMPLE}") from None
    if isinstance(position, bool) or not isinstance(position, int):
        raise ComponentError(f"TransformerLens edge {text}: position {position!r} is not an integer")
    return kind, position, layer, head


def _tl_sender(node, text: str) -> tuple[Component, int]:
    kind, position, layer, head = _tl_fields(node, text)
    if kind == "embed":
        return Component("embed"), position
    if kind == "attn_head_out":
        return Component("head", layer, head), position
    if kind == "mlp_out":
        return Component("mlp", layer), position
    raise ComponentError(f"TransformerLens edge {text}: the writer's kind {kind!r} is not a writer: writers are "
                         f"{', '.join(_TL_WRITERS)}; e.g. {TL_EXAMPLE}")


def _tl_receiver(node, text: str, graph: _Graph) -> tuple[Component, int]:
    kind, position, layer, head = _tl_fields(node, text)
    if kind in _TL_READERS:
        return Component("head", layer, head, _TL_READERS[kind]), position
    if kind == "mlp_in":
        return Component("mlp", layer), position
    if kind == "logits":
        if layer != graph.n_layers - 1:
            raise ComponentError(f"TransformerLens edge {text}: the logits reader sits at the last layer, "
                                 f"layer={graph.n_layers - 1} for model {graph.name}, not layer={layer}")
        return Component(LOGITS), position
    raise ComponentError(f"TransformerLens edge {text}: the reader's kind {kind!r} is not a reader: readers are "
                         f"{', '.join(_TL_READERS)}, mlp_in, logits; e.g. {TL_EXAMPLE}")


# auto-circuit ------------------------------------------------------------------------------------------

_AC_HEAD = re.compile(r"^A(?P<layer>\d+)\.(?P<head>\d+)$")
_AC_HEAD_INPUT = re.compile(r"^A(?P<layer>\d+)\.(?P<head>\d+)\.(?P<port>[QKV])$")
_AC_MLP = re.compile(r"^MLP (?P<layer>\d+)$")


def to_auto_circuit(circuit: EdgesLike, model, *, seq_len: int | None = None, separate_qkv: bool = True):
    """The edge circuit as auto-circuit edge names, in the graph's order.

    Without ``seq_len``: a list of names (``"A0.1->A1.2.Q"``), the edges of a
    ``PatchableModel`` built with ``seq_len=None`` (every position ablated at
    once); an edge narrowed to positions is an error. With ``seq_len``:
    ``{name: [token positions]}``, the form of auto-circuit's official
    circuits, matched against a ``PatchableModel`` built with that ``seq_len``
    (``edge.seq_idx in positions[edge.name]``). ``separate_qkv=False`` names a
    head's three inputs together (``A1.2``), as a ``PatchableModel`` built with
    ``separate_qkv=False`` does; the circuit must then hold all three.
    """
    if seq_len is not None:
        _check_seq_len(seq_len)
    graph, atoms = _atoms(circuit, model, seq_len, "auto-circuit")
    names: dict[str, Any] = {}
    parts: dict[str, list[tuple[Component, Component]]] = {}
    for s, r in graph.pairs():
        src = "Resid Start" if s.kind in ("embed", "pos_embed") else _ac_src(s)
        dest = _ac_dest(r, separate_qkv)
        parts.setdefault(f"{src}->{dest}", []).append((s, r))
    for name, members in parts.items():
        present = [(s, r) for s, r in members if (s, r) in atoms]
        if not present:
            continue
        spans = {atoms[m] for m in present}
        if len(present) < len(members) or len(spans) > 1:
            have = ", ".join(f"{s} -> {r}" + ("" if atoms[(s, r)] is None else f" at {list(atoms[(s, r)])}") for s, r in present)
            need = ", ".join(f"{s} -> {r}" for s, r in members)
            why = []
            if len({s for s, _ in members}) > 1:
                why.append("Resid Start is the token and positional embeddings together (blocks.0.hook_resid_pre)")
            if len({r for _, r in members}) > 1:
                why.append("with separate_qkv=False a head's q, k and v inputs are one destination (hook_attn_in)")
            raise ComponentError(f"auto-circuit edge {name} is {need} at the same positions in circuitcheck's graph ({'; '.join(why)}); "
                                 f"the circuit has {have}")
        span = spans.pop()
        names[name] = span
    if seq_len is None:
        return list(names)
    return {name: list(range(seq_len)) if span is None else list(span) for name, span in names.items()}


def from_auto_circuit(edges, model, *, seq_len: int | None = None, name: str | None = None) -> Circuit:
    """The edge circuit of auto-circuit edges.

    ``edges``: edge names (``"A0.1->A1.2.Q"``); ``{name: [token positions]}`` (read
    by position when ``seq_len`` is given, an empty list then meaning no edge;
    without ``seq_len`` every named edge at every position, as auto-circuit's
    official circuits read it with ``token_positions=False``); or auto-circuit
    ``Edge`` objects / ``(name, seq_idx)`` pairs (``seq_idx=None``: every
    position). A destination ``A1.2`` (``separate_qkv=False``) reads as the
    head's q, k and v inputs; ``Resid Start`` as ``embed`` and ``pos_embed``.
    """
    if seq_len is not None:
        _check_seq_len(seq_len)
    graph = _Graph.of(model)
    atoms: _Atoms = {}
    for text, position in _ac_items(edges, seq_len):
        senders, receivers = _ac_parse(text, graph)
        for sender in senders:
            for receiver in receivers:
                _add(atoms, graph, sender, receiver, position, seq_len, repr(text), "auto-circuit", AUTO_CIRCUIT_EXAMPLE)
    return _circuit(graph, atoms, "omitted", name)


def _ac_src(sender: Component) -> str:
    return f"A{sender.layer}.{sender.head}" if sender.kind == "head" else f"MLP {sender.layer}"


def _ac_dest(receiver: Component, separate_qkv: bool) -> str:
    if receiver.kind == LOGITS:
        return "Resid End"
    if receiver.kind == "mlp":
        return f"MLP {receiver.layer}"
    return f"A{receiver.layer}.{receiver.head}" + (f".{receiver.port.upper()}" if separate_qkv else "")


def _ac_items(edges, seq_len: int | None):
    """(name, position or None) for every edge given."""
    if isinstance(edges, str):
        edges = [edges]
    if isinstance(edges, Mapping):
        for text, positions in edges.items():
            if seq_len is None:
                yield text, None
                continue
            if isinstance(positions, (str, bytes)) or not isinstance(positions, Iterable):
                raise ComponentError(f"auto-circuit edge {text!r}: its token positions {positions!r} are not a list of integers")
            for p in positions:
                yield text, _ac_position(text, p)
        return
    if not isinstance(edges, Iterable):
        raise ComponentError(f"auto-circuit edges {edges!r} are not valid: give edge names such as {AUTO_CIRCUIT_EXAMPLE}, "
                             "{name: [positions]}, or auto-circuit Edge objects")
    for item in edges:
        if isinstance(item, str):
            yield item, None
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
            yield item[0], None if item[1] is None else _ac_position(item[0], item[1])
        elif hasattr(item, "name") and hasattr(item, "seq_idx"):
            yield str(item.name), None if item.seq_idx is None else _ac_position(item.name, item.seq_idx)
        else:
            raise ComponentError(f"auto-circuit edge {item!r} is not an edge name, a (name, seq_idx) pair or an auto-circuit "
                                 f"Edge; e.g. {AUTO_CIRCUIT_EXAMPLE}")


def _ac_position(text: str, p) -> int:
    if isinstance(p, bool) or not hasattr(p, "__index__"):
        raise ComponentError(f"auto-circuit edge {text!r}: token position {p!r} is not an integer")
    return int(p)


def _ac_parse(text: str, graph: _Graph) -> tuple[list[Component], list[Component]]:
    src, arrow, dest = str(text).partition("->")
    src, dest = src.strip(), dest.strip()
    if not arrow or "->" in dest:
        raise ComponentError(f"cannot read auto-circuit edge {text!r}: write 'SRC->DEST', e.g. {AUTO_CIRCUIT_EXAMPLE}")
    if src == "Resid Start":
        senders = [Component("embed")] + [Component("pos_embed")] * graph.pos_embed
    elif _AC_HEAD.match(src):
        m = _AC_HEAD.match(src)
        senders = [Component("head", int(m["layer"]), int(m["head"]))]
    elif _AC_MLP.match(src):
        senders = [Component("mlp", int(_AC_MLP.match(src)["layer"]))]
    else:
        raise ComponentError(f"cannot read auto-circuit edge {text!r}: source {src!r} is not 'Resid Start', 'A{{layer}}.{{head}}' "
                             f"or 'MLP {{layer}}'; e.g. {AUTO_CIRCUIT_EXAMPLE}")
    if dest == "Resid End":
        receivers = [Component(LOGITS)]
    elif _AC_HEAD_INPUT.match(dest):
        m = _AC_HEAD_INPUT.match(dest)
        receivers = [Component("head", int(m["layer"]), int(m["head"]), m["port"].lower())]
    elif _AC_HEAD.match(dest):
        m = _AC_HEAD.match(dest)
        receivers = [Component("head", int(m["layer"]), int(m["head"]), port) for port in ("q", "k", "v")]
    elif _AC_MLP.match(dest):
        receivers = [Component("mlp", int(_AC_MLP.match(dest)["layer"]))]
    else:
        raise ComponentError(f"cannot read auto-circuit edge {text!r}: destination {dest!r} is not 'A{{layer}}.{{head}}.Q' "
                             f"(or .K, .V), 'A{{layer}}.{{head}}', 'MLP {{layer}}' or 'Resid End'; e.g. {AUTO_CIRCUIT_EXAMPLE}")
    return senders, receivers


# EAP-IG / MIB ------------------------------------------------------------------------------------------

_EAP_HEAD = re.compile(r"^a(?P<layer>\d+)\.h(?P<head>\d+)$")
_EAP_HEAD_INPUT = re.compile(r"^a(?P<layer>\d+)\.h(?P<head>\d+)<(?P<port>[qkv])>$")
_EAP_MLP = re.compile(r"^m(?P<layer>\d+)$")


def to_eap_graph(circuit: EdgesLike, model, *, scores: Mapping | None = None, pos_embed: str = "kept",
                 path: str | os.PathLike | None = None) -> dict:
    """The edge circuit as an EAP-IG graph, the file format of MIB's circuit track.

    Returns the object EAP-IG's ``Graph.to_json`` writes: ``cfg``, ``nodes``
    (``in_graph``) and every edge of the model's graph (``score``, ``in_graph``),
    in EAP-IG's order. ``scores``: ``{edge: score}`` in circuitcheck's naming
    (``Edge`` or ``"L0H1 -> L1H2.q"``), e.g. ``dict(zip(sweep.index,
    sweep.effects.mean(1).tolist()))`` of an ``attribution_sweep``; an edge
    without one gets 0.0, as in a graph EAP-IG never scored (MIB's loader reads
    a score for every edge). A node is ``in_graph`` when a kept edge leaves it
    and (except ``input``) one enters it, EAP-IG's rule after ``apply_topn``;
    ``logits`` always is. Attention-only models keep EAP-IG's MLP nodes, with
    no edge of theirs in the graph (EAP-IG's graph always has them).
    ``path``: also write it there, as JSON or, for a ``.pt`` path, as the
    tensors of ``Graph.to_pt``.
    """
    graph, atoms = _atoms(circuit, model, None, "EAP-IG")
    atoms = _pos_embed_out(graph, atoms, pos_embed, "EAP-IG")
    given = _eap_scores_in(scores, model, graph)
    kept = {_eap_edge_name(s, r) for s, r in atoms}
    table = _eap_table(graph)
    edges = {name: {"score": given.get(name, 0.0), "in_graph": name in kept} for name, _, _ in table}
    nodes = {name: {"in_graph": flag} for name, flag in _eap_nodes_in_graph(graph, kept).items()}
    out = {"cfg": _eap_cfg(graph), "nodes": nodes, "edges": edges}
    if path is not None:
        _eap_write(out, graph, Path(path))
    return out


def from_eap_graph(source, model, *, top_n: int | None = None, threshold: float | None = None, absolute: bool = True,
                   prune: bool = False, pos_embed: str = "kept", name: str | None = None) -> Circuit:
    """The edge circuit of an EAP-IG graph (an MIB circuit file).

    ``source``: a path to a ``.json`` (``Graph.to_json``) or ``.pt``
    (``Graph.to_pt``) file, the parsed JSON object, or its text. The circuit is
    the edges marked ``in_graph``; or, as EAP-IG selects them, the ``top_n``
    edges by score (``apply_topn``; ties in the file's order) or every edge whose
    score is at least ``threshold`` (``apply_threshold``), by absolute value
    unless ``absolute=False``. ``prune=True`` then drops what EAP-IG's
    ``Graph.prune`` drops before MIB evaluates a circuit. The file's ``cfg``
    must match ``model`` (layers, heads, d_model); neuron-level circuits (a node
    keeping only some neurons) are not edge circuits and are refused.
    """
    if top_n is not None and threshold is not None:
        raise ArgumentError(f"top_n={top_n!r} and threshold={threshold!r}: give one of them (or neither, to read in_graph)")
    graph = _Graph.of(model)
    edges = _eap_read(source, graph)
    if top_n is not None or threshold is not None:
        unscored = [e for e, (score, _) in edges.items() if score is None]
        if unscored:
            raise ArgumentError(f"EAP-IG edge {unscored[0]!r} has no score: top_n and threshold select edges by score")
        value = (lambda s: abs(s)) if absolute else (lambda s: s)
        if top_n is not None:
            if isinstance(top_n, bool) or not isinstance(top_n, int) or not 0 <= top_n <= len(edges):
                raise ArgumentError(f"top_n={top_n!r} is not valid: the graph has {len(edges)} edges (0-{len(edges)})")
            ranked = sorted(edges, key=lambda e: -value(edges[e][0]))
            chosen = set(ranked[:top_n])
        else:
            chosen = {e for e, (score, _) in edges.items() if value(score) >= float(threshold)}
    else:
        chosen = {e for e, (_, in_graph) in edges.items() if in_graph}
    if prune:
        chosen = _eap_prune(chosen)
    atoms: _Atoms = {}
    for text in edges:
        if text in chosen:
            sender, receiver = _eap_parse(text)
            _add(atoms, graph, sender, receiver, None, None, repr(text), "EAP-IG", EAP_EXAMPLE)
    if name is None and isinstance(source, (str, os.PathLike)) and not _is_json_text(source):
        name = Path(source).stem
    return _circuit(graph, atoms, pos_embed, name)


def eap_scores(source, model) -> dict[Edge, float]:
    """Every scored edge of an EAP-IG graph, in circuitcheck's naming: ``{Edge: score}`` (``source`` as for :func:`from_eap_graph`)."""
    graph = _Graph.of(model)
    out: dict[Edge, float] = {}
    for text, (score, _) in _eap_read(source, graph).items():
        if score is not None:
            sender, receiver = _eap_parse(text)
            out[Edge(sender, receiver)] = score
    return out


def _eap_node(c: Component) -> str:
    if c.kind == "embed":
        return "input"
    if c.kind == LOGITS:
        return "logits"
    return f"a{c.layer}.h{c.head}" if c.kind == "head" else f"m{c.layer}"


def _eap_edge_name(s: Component, r: Component) -> str:
    return f"{_eap_node(s)}->{_eap_node(r)}" + (f"<{r.port}>" if r.kind == "head" else "")


def _eap_cfg(graph: _Graph) -> dict:
    return {"n_layers": graph.n_layers, "n_heads": graph.n_heads, "parallel_attn_mlp": False, "d_model": graph.d_model}


def _eap_table(graph: _Graph) -> list[tuple[str, Component, Component]]:
    """Every edge of EAP-IG's graph in ``Graph.from_model``'s order (sender by sender into each layer).

    With MLPs even when the model has none: EAP-IG's graph always has them.
    """
    full = _Graph(graph.n_layers, graph.n_heads, False, False, graph.d_model, graph.name)
    stream = [Component("embed")]
    out = []
    for layer in range(full.n_layers):
        heads = [Component("head", layer, h) for h in range(full.n_heads)]
        for s in stream:
            out += [(s, Component("head", layer, h.head, port)) for h in heads for port in ("q", "k", "v")]
        stream += heads
        out += [(s, Component("mlp", layer)) for s in stream]
        stream.append(Component("mlp", layer))
    out += [(s, Component(LOGITS)) for s in stream]
    return [(_eap_edge_name(s, r), s, r) for s, r in out]


def _eap_node_names(graph: _Graph) -> list[str]:
    names = ["input"]
    for layer in range(graph.n_layers):
        names += [f"a{layer}.h{h}" for h in range(graph.n_heads)] + [f"m{layer}"]
    return names + ["logits"]


def _eap_split(text: str) -> tuple[str, str]:
    """An EAP-IG edge name as (parent node, child node)."""
    parent, _, child = text.partition("->")
    return parent, child.split("<")[0]


def _eap_nodes_in_graph(graph: _Graph, kept: set[str]) -> dict[str, bool]:
    out_of = {_eap_split(e)[0] for e in kept}
    into = {_eap_split(e)[1] for e in kept} | {"input"}
    return {n: n == "logits" or (n in out_of and n in into) for n in _eap_node_names(graph)}


def _eap_prune(kept: set[str]) -> set[str]:
    """EAP-IG's ``Graph.prune`` on edge names: until nothing changes, a node stays when a kept edge leaves it and one
    enters it (``input`` needs none entering), and an edge stays when its parent stays and its child stays or is ``logits``."""
    while True:
        out_of = {_eap_split(e)[0] for e in kept}
        into = {_eap_split(e)[1] for e in kept} | {"input"}
        nodes = out_of & into
        pruned = {e for e in kept if _eap_split(e)[0] in nodes and (_eap_split(e)[1] in nodes or _eap_split(e)[1] == "logits")}
        if pruned == kept:
            return kept
        kept = pruned


def _eap_parse(text: str) -> tuple[Component, Component]:
    parent, arrow, child = text.partition("->")
    if not arrow or "->" in child:
        raise ComponentError(f"cannot read EAP-IG edge {text!r}: write 'PARENT->CHILD', e.g. {EAP_EXAMPLE}")
    if parent == "input":
        sender = Component("embed")
    elif _EAP_HEAD.match(parent):
        m = _EAP_HEAD.match(parent)
        sender = Component("head", int(m["layer"]), int(m["head"]))
    elif _EAP_MLP.match(parent):
        sender = Component("mlp", int(_EAP_MLP.match(parent)["layer"]))
    else:
        raise ComponentError(f"cannot read EAP-IG edge {text!r}: parent {parent!r} is not 'input', 'a{{layer}}.h{{head}}' "
                             f"or 'm{{layer}}'; e.g. {EAP_EXAMPLE}")
    if child == "logits":
        receiver = Component(LOGITS)
    elif _EAP_HEAD_INPUT.match(child):
        m = _EAP_HEAD_INPUT.match(child)
        receiver = Component("head", int(m["layer"]), int(m["head"]), m["port"])
    elif _EAP_MLP.match(child):
        receiver = Component("mlp", int(_EAP_MLP.match(child)["layer"]))
    else:
        hint = " (an edge into a head names its input: <q>, <k> or <v>)" if _EAP_HEAD.match(child) else ""
        raise ComponentError(f"cannot read EAP-IG edge {text!r}: child {child!r} is not 'a{{layer}}.h{{head}}<q>' "
                             f"(or <k>, <v>), 'm{{layer}}' or 'logits'{hint}; e.g. {EAP_EXAMPLE}")
    return sender, receiver


def _eap_scores_in(scores: Mapping | None, model, graph: _Graph) -> dict[str, float]:
    """``{edge: score}`` in circuitcheck's naming as ``{EAP-IG edge name: float}``."""
    if scores is None:
        return {}
    if not isinstance(scores, Mapping):
        raise ArgumentError(f"scores={type(scores).__name__} is not valid: give a mapping {{edge: score}}, "
                            "e.g. {'L0H1 -> L1H2.q': 0.25}")
    out: dict[str, float] = {}
    for key, value in scores.items():
        edge = Edge.parse(key).validate(model)
        if edge.sender.positions is not None or edge.receiver.positions is not None:
            raise ComponentError(f"score for edge {edge}: EAP-IG scores whole edges; write it without @positions")
        if edge.sender.kind in ("pos_embed", "attn"):
            what = ("the positional embedding is outside EAP-IG's graph" if edge.sender.kind == "pos_embed"
                    else f"EAP-IG scores head by head; give L{edge.sender.layer}H0 ... instead of {edge.sender}")
            raise ComponentError(f"score for edge {edge} has no place in an EAP-IG graph: {what}")
        try:
            out[_eap_edge_name(edge.sender, edge.receiver)] = float(value)
        except (TypeError, ValueError):
            raise ArgumentError(f"score {value!r} for edge {edge} is not a number") from None
    return out


def _is_json_text(source) -> bool:
    return isinstance(source, str) and source.lstrip().startswith("{")


def _eap_read(source, graph: _Graph) -> dict[str, tuple[float | None, bool]]:
    """``{EAP-IG edge name: (score or None, in_graph)}`` of a graph file, checked against the model's config."""
    where = "the EAP-IG graph"
    if isinstance(source, Mapping):
        data = source
    elif _is_json_text(source):
        data = json.loads(source)
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        where = str(path)
        if not path.is_file():
            raise ArgumentError(f"EAP-IG graph file {str(path)!r} does not exist: give a .json or .pt path, "
                                "the parsed JSON object, or its text")
        if path.suffix == ".pt":
            import torch

            data = torch.load(path, map_location="cpu", weights_only=True)
        else:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
    else:
        raise ArgumentError(f"source {type(source).__name__} is not valid: give a path to an EAP-IG .json or .pt file, "
                            "the parsed JSON object, or its text")
    if not isinstance(data, Mapping):
        raise ArgumentError(f"{where} is not an EAP-IG graph: expected an object with cfg, nodes and edges, got {type(data).__name__}")
    pt = "edges_in_graph" in data
    needed = ("cfg", "src_nodes", "dst_nodes", "edges_scores", "edges_in_graph") if pt else ("cfg", "nodes", "edges")
    missing = [k for k in needed if k not in data]
    if missing:
        raise ArgumentError(f"{where} is not an EAP-IG graph: missing {', '.join(missing)} (Graph.to_json writes cfg, nodes "
                            "and edges; Graph.to_pt writes cfg, src_nodes, dst_nodes, edges_scores, edges_in_graph, nodes_in_graph)")
    _eap_check_cfg(data["cfg"], graph, where)
    if pt:
        return _eap_from_tensors(data, graph, where)
    for node, info in data["nodes"].items():
        neurons = info.get("neurons") if isinstance(info, Mapping) else None
        if neurons is not None and not all(neurons):
            raise ComponentError(f"{where}: node {node!r} keeps only some of its neurons: a neuron-level circuit is not an edge "
                                 "circuit, and circuitcheck's edges keep whole components")
    out: dict[str, tuple[float | None, bool]] = {}
    for text, info in data["edges"].items():
        _eap_parse(text)
        if not isinstance(info, Mapping) or "in_graph" not in info:
            raise ArgumentError(f"{where}: edge {text!r} is {info!r}: an EAP-IG edge is {{'score': float, 'in_graph': bool}}")
        score = info.get("score")
        out[text] = (None if score is None else float(score), bool(info["in_graph"]))
    return out


def _eap_check_cfg(cfg, graph: _Graph, where: str) -> None:
    if not isinstance(cfg, Mapping):
        raise ArgumentError(f"{where}: cfg {cfg!r} is not an object with n_layers, n_heads, parallel_attn_mlp, d_model")
    if cfg.get("parallel_attn_mlp"):
        raise ComponentError(f"{where} is a graph of a parallel attention/MLP model (cfg parallel_attn_mlp=True): circuitcheck's "
                             "edge graph has a layer's heads write before its MLP reads")
    for key, ours in (("n_layers", graph.n_layers), ("n_heads", graph.n_heads), ("d_model", graph.d_model)):
        if key in cfg and int(cfg[key]) != ours:
            raise ComponentError(f"{where} is a graph of another model: its cfg has {key}={cfg[key]}, model {graph.name} "
                                 f"has {key}={ours}")


def _eap_dst(r: Component) -> str:
    """EAP-IG's name of a destination (``Graph.get_dst_nodes``): ``a1.h2<q>``, ``m1``, ``logits``."""
    return f"{_eap_node(r)}<{r.port}>" if r.kind == "head" else _eap_node(r)


def _eap_from_tensors(data: Mapping, graph: _Graph, where: str) -> dict[str, tuple[float | None, bool]]:
    src = {name: i for i, name in enumerate(data["src_nodes"])}
    dst = {name: j for j, name in enumerate(data["dst_nodes"])}
    scores, in_graph = data["edges_scores"], data["edges_in_graph"]
    if tuple(scores.shape) != (len(src), len(dst)) or tuple(in_graph.shape) != (len(src), len(dst)):
        raise ArgumentError(f"{where}: edges_scores {tuple(scores.shape)} and edges_in_graph {tuple(in_graph.shape)} must both "
                            f"be [src_nodes, dst_nodes] = [{len(src)}, {len(dst)}]")
    out: dict[str, tuple[float | None, bool]] = {}
    for text, s, r in _eap_table(graph):
        i, j = src.get(_eap_node(s)), dst.get(_eap_dst(r))
        if i is None or j is None:
            raise ArgumentError(f"{where}: node {_eap_node(s) if i is None else _eap_dst(r)!r} of edge {text!r} is not among "
                                "its src_nodes / dst_nodes")
        out[text] = (float(scores[i, j]), bool(in_graph[i, j]))
    return out


def _eap_write(out: dict, graph: _Graph, path: Path) -> None:
    if path.suffix != ".pt":
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(out, handle)
        return
    import torch

    sources = _eap_node_names(graph)[:-1]
    table = _eap_table(graph)
    dests = list(dict.fromkeys(_eap_dst(r) for r in _eap_order_of_dests(graph)))
    src, dst = {n: i for i, n in enumerate(sources)}, {n: j for j, n in enumerate(dests)}
    scores = torch.zeros(len(sources), len(dests))
    in_graph = torch.zeros(len(sources), len(dests), dtype=torch.bool)
    for text, s, r in table:
        i, j = src[_eap_node(s)], dst[_eap_dst(r)]
        scores[i, j] = out["edges"][text]["score"]
        in_graph[i, j] = out["edges"][text]["in_graph"]
    nodes = torch.tensor([out["nodes"][n]["in_graph"] for n in sources], dtype=torch.bool)
    torch.save({"cfg": out["cfg"], "src_nodes": sources, "dst_nodes": dests, "edges_scores": scores,
                "edges_in_graph": in_graph, "nodes_in_graph": nodes}, path)


def _eap_order_of_dests(graph: _Graph) -> list[Component]:
    """Destinations in ``Graph.get_dst_nodes``'s order: per layer every head's q, then k, then v input, then the MLP; logits last."""
    out = []
    for layer in range(graph.n_layers):
        out += [Component("head", layer, h, port) for port in ("q", "k", "v") for h in range(graph.n_heads)]
        out.append(Component("mlp", layer))
    return out + [Component(LOGITS)]
