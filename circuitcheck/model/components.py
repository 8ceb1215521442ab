"""Components: the nodes of a model that claims talk about.

Syntax (DESIGN.md "Words")::

    L1H3            output of head 3 in layer 1 (its ``hook_z`` slice)
    L1H3.q          the head's query input (also .k, .v)
    L2.attn         layer 2's attention output
    L2.mlp          layer 2's MLP output
    embed           token embedding
    pos_embed       positional embedding
    L1H3@-1         narrowed to one position (negative counts from the end)
    L0.mlp@3:7      narrowed to positions 3..6 (Python slice, either end optional)

Edges (DESIGN.md "Words"): ``SENDER -> RECEIVER``, the part of the receiver's
input written by the sender at the same position. Senders are outputs
(``embed``, ``pos_embed``, ``L0H2``, ``L0.attn`` for every head of a layer,
``L0.mlp``); receivers are inputs (``L1H3.q`` / ``.k`` / ``.v``, ``L1.mlp`` for
the MLP's input, ``logits`` for the final residual stream the unembedding
reads). Either end may be narrowed to positions; the edge is then the
positions both ends select.

Parsing needs no model; :meth:`Component.validate` checks a parsed component
against a model's config and names the valid range when it does not fit.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass
from typing import Iterable, Union

from ..errors import ComponentError

HEAD_INPUTS = ("q", "k", "v")
KINDS = ("head", "attn", "mlp", "embed", "pos_embed")
#: The final residual stream, read by the unembedding: a receiver of edges only, never a node of a circuit.
LOGITS = "logits"
SENDER_HELP = "senders are outputs: embed, pos_embed, L{layer}H{head}, L{layer}.attn (every head of the layer), L{layer}.mlp"
RECEIVER_HELP = "receivers are inputs: L{layer}H{head}.q, .k or .v, L{layer}.mlp (the MLP's input), or logits"

_HEAD = re.compile(r"^L(?P<layer>\d+)H(?P<head>\d+)(?:\.(?P<port>[a-z_]+))?$")
_LAYER = re.compile(r"^L(?P<layer>\d+)\.(?P<part>[a-z_]+)$")
_POSITIONS = re.compile(r"^(?P<start>-?\d+)?(?P<colon>:)?(?P<stop>-?\d+)?$")

SYNTAX_HELP = (
    "valid forms: L{layer}H{head}, L{layer}H{head}.q/.k/.v, L{layer}.attn, L{layer}.mlp, "
    "embed, pos_embed, each optionally narrowed with @pos or @start:stop"
)


@dataclass(frozen=True)
class Positions:
    """A position or half-open range of positions; ``stop=None`` means to the end."""

    start: int | None
    stop: int | None
    single: bool = False

    @classmethod
    def parse(cls, text: str, whole: str) -> "Positions":
        match = _POSITIONS.match(text)
        if not text or not match or (match["start"] is None and match["stop"] is None and not match["colon"]):
            raise ComponentError(f"bad position {text!r} in component {whole!r}: use @pos (e.g. @-1) or @start:stop (e.g. @3:7)")
        start = int(match["start"]) if match["start"] is not None else None
        stop = int(match["stop"]) if match["stop"] is not None else None
        if not match["colon"]:
            return cls(start, None, single=True)
        return cls(start, stop)

    def indices(self, seq_len: int) -> list[int]:
        """The positions selected in a sequence of ``seq_len`` tokens; a ComponentError if none is."""
        from .inputs import InputError, resolve_positions  # torch: not at import time

        try:
            return resolve_positions(self.start if self.single else slice(self.start, self.stop), seq_len)
        except InputError as error:
            raise ComponentError(f"{error} (component positions @{self})") from None

    def __str__(self) -> str:
        if self.single:
            return str(self.start)
        return f"{'' if self.start is None else self.start}:{'' if self.stop is None else self.stop}"


@dataclass(frozen=True)
class Component:
    """One node of the model.

    ``kind`` is one of ``head``, ``attn``, ``mlp``, ``embed``, ``pos_embed``;
    ``port`` is ``q``/``k``/``v`` for a head's input, None for an output.
    """

    kind: str
    layer: int | None = None
    head: int | None = None
    port: str | None = None
    positions: Positions | None = None

    def __post_init__(self):
        # Every check builds its components here (``Component("head", layer, head)``): one place that
        # turns a str/float/bool layer or head into an error naming it, before any indexing.
        if self.kind not in KINDS and self.kind != LOGITS:
            raise ComponentError(f"component kind {self.kind!r} is not valid: use one of {', '.join(KINDS)}")
        for name in ("layer", "head"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not hasattr(value, "__index__"):
                raise ComponentError(f"{name} {value!r} is not valid: a {name} is an integer index such as 0 or 1, "
                                     f"got {type(value).__name__}")
            object.__setattr__(self, name, operator.index(value))
        needed = {"head": ("layer", "head"), "attn": ("layer",), "mlp": ("layer",)}.get(self.kind, ())
        missing = [name for name in needed if getattr(self, name) is None]
        if missing:
            raise ComponentError(f"a {self.kind} component needs a {' and a '.join(missing)}, got {self!r}")
        if self.port is not None and (self.kind != "head" or self.port not in HEAD_INPUTS):
            raise ComponentError(f"port {self.port!r} is not valid: only heads have inputs, .q, .k and .v")

    @classmethod
    def parse(cls, text: Union[str, "Component"]) -> "Component":
        if isinstance(text, Component):
            return text
        if not isinstance(text, str):
            raise ComponentError(f"a component is a string such as 'L1H3', got {text!r} ({type(text).__name__})")
        whole = text.strip()
        body, _, pos_text = whole.partition("@")
        positions = Positions.parse(pos_text, whole) if "@" in whole else None
        if body in ("embed", "pos_embed"):
            return cls(body, positions=positions)
        match = _HEAD.match(body)
        if match:
            port = match["port"]
            if port is not None and port not in HEAD_INPUTS:
                raise ComponentError(f"bad head input {port!r} in {whole!r}: a head's inputs are .q, .k and .v")
            return cls("head", int(match["layer"]), int(match["head"]), port, positions)
        match = _LAYER.match(body)
        if match:
            if match["part"] not in ("attn", "mlp"):
                raise ComponentError(f"bad layer part {match['part']!r} in {whole!r}: use L{{layer}}.attn or L{{layer}}.mlp")
            return cls(match["part"], int(match["layer"]), positions=positions)
        raise ComponentError(f"cannot parse component {whole!r}: {SYNTAX_HELP}")

    # The hook whose activation this component is -------------------------------

    @property
    def hook_name(self) -> str:
        """The TransformerLens hook holding this component's activation."""
        if self.kind == "embed":
            return "hook_embed"
        if self.kind == "pos_embed":
            return "hook_pos_embed"
        if self.kind == LOGITS:
            raise ComponentError("logits is the final residual stream (an edge's receiver), not one activation's hook")
        if self.kind == "attn":
            return f"blocks.{self.layer}.hook_attn_out"
        if self.kind == "mlp":
            return f"blocks.{self.layer}.hook_mlp_out"
        return f"blocks.{self.layer}.attn.hook_{self.port or 'z'}"

    @property
    def is_head(self) -> bool:
        return self.kind == "head"

    def without_positions(self) -> "Component":
        return Component(self.kind, self.layer, self.head, self.port)

    def validate(self, model, model_name: str | None = None) -> "Component":
        """Check the component exists in ``model``; returns it, or raises :class:`ComponentError`."""
        cfg = model.cfg
        name = model_name or model_label(model)
        if self.layer is not None and not 0 <= self.layer < cfg.n_layers:
            raise ComponentError(f"layer {self.layer} does not exist in {self}: model {name} has layers 0-{cfg.n_layers - 1}")
        if self.head is not None and not 0 <= self.head < cfg.n_heads:
            raise ComponentError(f"head {self.head} does not exist in {self}: model {name} has heads 0-{cfg.n_heads - 1} in each layer")
        if self.kind == "mlp" and getattr(cfg, "attn_only", False):
            raise ComponentError(f"{self} does not exist: model {name} is attention-only and has no MLPs")
        if self.kind == "pos_embed" and getattr(cfg, "positional_embedding_type", "standard") != "standard":
            raise ComponentError(
                f"{self} does not exist: model {name} uses {cfg.positional_embedding_type} positions, not a learned positional embedding"
            )
        return self

    def sort_key(self) -> tuple:
        order = {"embed": 0, "pos_embed": 1, "head": 2, "attn": 3, "mlp": 4, LOGITS: 5}
        layer = (1 << 30 if self.kind == LOGITS else -1) if self.layer is None else self.layer
        return (layer, order[self.kind], -1 if self.head is None else self.head, self.port or "", str(self.positions or ""))

    def __str__(self) -> str:
        if self.kind in ("embed", "pos_embed", LOGITS):
            text = self.kind
        elif self.kind == "head":
            text = f"L{self.layer}H{self.head}" + (f".{self.port}" if self.port else "")
        else:
            text = f"L{self.layer}.{self.kind}"
        return text if self.positions is None else f"{text}@{self.positions}"


def model_label(model) -> str:
    """How messages name a model: its spec when loaded by circuitcheck, else its config name."""
    return getattr(model, "circuitcheck_spec", None) or getattr(model.cfg, "model_name", None) or type(model).__name__


def model_checkpoint(model) -> str | None:
    """The checkpoint a model was loaded at, when circuitcheck loaded it at one."""
    return getattr(model, "circuitcheck_checkpoint", None)


def parse_components(components: Union[str, Component, Iterable[Union[str, Component]]]) -> list[Component]:
    """Parse a space/comma separated string, a component, or an iterable of either."""
    if isinstance(components, Component):
        return [components]
    if isinstance(components, str):
        items: list = [c for c in re.split(r"[\s,]+", components.strip()) if c]
    elif isinstance(components, Iterable) and not isinstance(components, (bytes, dict)):
        items = list(components)
    else:
        raise ComponentError(f"components {components!r} are not valid: give a string such as 'L0H2 L1H3', "
                             f"a Component or a list of them, got {type(components).__name__}")
    return [Component.parse(item) for item in items]


def _receiver(text: str, whole: str) -> Component:
    """An edge's receiver: a head input, an MLP's input, or ``logits`` (optionally narrowed to positions)."""
    body, _, pos_text = text.strip().partition("@")
    if body.strip() == LOGITS:
        return Component(LOGITS, positions=Positions.parse(pos_text, whole) if "@" in text else None)
    receiver = Component.parse(text)
    if not ((receiver.kind == "head" and receiver.port is not None) or receiver.kind == "mlp"):
        hint = f" (a head reads its input through {receiver.without_positions()}.q, .k or .v)" if receiver.kind == "head" else ""
        raise ComponentError(f"edge {whole!r}: {receiver} cannot receive an edge{hint}; {RECEIVER_HELP}")
    return receiver


@dataclass(frozen=True)
class Edge:
    """``sender -> receiver``: the part of the receiver's input written by the sender.

    The sender is an output (``embed``, ``pos_embed``, ``L0H2``, ``L0.attn``,
    ``L0.mlp``), the receiver an input (``L1H3.q``/``.k``/``.v``, ``L1.mlp``,
    ``logits``); the receiver reads the residual stream after the sender writes
    it (a layer's heads write before its MLP reads). Positions on either end
    narrow the edge to the positions both select.
    """

    sender: Component
    receiver: Component

    def __post_init__(self):
        text = f"{self.sender} -> {self.receiver}"
        sender, receiver = self.sender, self.receiver
        if sender.port is not None or sender.kind == LOGITS:
            raise ComponentError(f"edge {text!r}: the sender must be an output (e.g. L0H2), not {sender}; {SENDER_HELP}")
        if not ((receiver.kind == "head" and receiver.port is not None) or receiver.kind in ("mlp", LOGITS)):
            raise ComponentError(f"edge {text!r}: {receiver} cannot receive an edge; {RECEIVER_HELP}")
        if receiver.kind == LOGITS:
            return
        sender_layer = -1 if sender.layer is None else sender.layer
        if receiver.layer < sender_layer or (
            receiver.layer == sender_layer and not (sender.kind in ("head", "attn") and receiver.kind == "mlp")
        ):
            raise ComponentError(f"edge {text!r}: the receiver must read the residual stream after the sender writes it "
                                 f"({receiver} reads before {sender} writes)")

    @classmethod
    def parse(cls, text: Union[str, "Edge"]) -> "Edge":
        if isinstance(text, Edge):
            return text
        if not isinstance(text, str):
            raise ComponentError(f"an edge is a string such as 'L0H2 -> L1H3.k', got {text!r} ({type(text).__name__})")
        sender_text, arrow, receiver_text = text.partition("->")
        if not arrow:
            raise ComponentError(f"cannot parse edge {text!r}: write 'SENDER -> RECEIVER', e.g. 'L0H2 -> L1H3.k'")
        if "->" in receiver_text:
            raise ComponentError(f"cannot parse edge {text!r}: an edge has one arrow; write a chain as separate edges "
                                 "('L0H2 -> L1H3.k, L1H3 -> logits')")
        if not sender_text.strip() or not receiver_text.strip():
            raise ComponentError(f"cannot parse edge {text!r}: write 'SENDER -> RECEIVER', e.g. 'L0H2 -> L1H3.k'; "
                                 f"{SENDER_HELP}; {RECEIVER_HELP}")
        if sender_text.strip().partition("@")[0].strip() == LOGITS:
            raise ComponentError(f"edge {text.strip()!r}: logits is a receiver only (the final residual stream); {SENDER_HELP}")
        try:
            sender = Component.parse(sender_text)
        except ComponentError as error:
            raise ComponentError(f"edge {text.strip()!r}: bad sender: {error}") from None
        return cls(sender, _receiver(receiver_text, text.strip()))

    def validate(self, model) -> "Edge":
        """Check both ends exist in ``model`` (and that the edge selects a position); returns it, or raises :class:`ComponentError`."""
        try:
            self.sender.validate(model)
            self.receiver.validate(model)
        except ComponentError as error:
            raise ComponentError(f"edge {self}: {error}") from None
        return self

    def positions(self, seq_len: int) -> list[int] | None:
        """The positions the edge covers in a ``seq_len``-token input: None for all, else the sorted list both ends select."""
        chosen = None
        for end in (self.sender, self.receiver):
            if end.positions is not None:
                selected = set(end.positions.indices(seq_len))
                chosen = selected if chosen is None else chosen & selected
        if chosen is not None and not chosen:
            raise ComponentError(f"edge {self} selects no position: its two ends are narrowed to disjoint positions "
                                 f"in a {seq_len}-token input")
        return None if chosen is None or len(chosen) == seq_len else sorted(chosen)

    def __str__(self) -> str:
        return f"{self.sender} -> {self.receiver}"


def parse_edges(edges) -> list[Edge]:
    """Parse a comma/newline separated string of edges, an edge, or an iterable of either."""
    if isinstance(edges, Edge):
        return [edges]
    if isinstance(edges, str):
        items: list = [e for e in re.split(r"[,;\n]+", edges) if e.strip()]
    elif isinstance(edges, Iterable) and not isinstance(edges, (bytes, dict)):
        items = list(edges)
    else:
        raise ComponentError(f"edges {edges!r} are not valid: give a string such as 'L0H2 -> L1H3.k, L1H3 -> logits', "
                             f"an Edge or a list of them, got {type(edges).__name__}")
    return [Edge.parse(item) for item in items]
