"""Test power: how often a claim fails on models where it should not hold (its mutation score).

DESIGN.md, "Verdicts researchers can trust": a claim that survives every
mutation of the model that should falsify it cannot fail and says nothing.
:func:`mutation_score` re-runs a claim (its :class:`~circuitcheck.claims.registry.ClaimCall`,
recorded on every result as ``result.call``) on mutated copies of its model and
on altered versions of the claim, and reports:

- each mutation's outcome: the replayed claim *kills* the mutation when it does
  not hold; a replay that raises a circuitcheck error (for example the gap
  m(M) - m(∅) is no longer distinguishable from zero) kills it too, recorded as
  ``error: <message>``;
- the mutation score = killed / total;
- **cannot fail**: a score of 0 over at least one mutation.

A claim that fails on the model itself gets no score ("not measured"), and so
does a claim whose replay on an unmutated copy does not reproduce it (then the
replay would measure something else).

The catalogue: mutations chosen to falsify the claim's kind
(:func:`catalogue`). Weight mutations (:mod:`circuitcheck.engine.mutate`) run
on one private copy per model, restored and verified after each one; the
user's model is never touched, and its fingerprint is checked at the end.

- head kinds (``*_head``): scramble and zero the head's QK; swap it with each
  other head of its layer that does not satisfy the claim itself on the model
  (measured); shuffle the checkpoint. For "is not" claims only the swaps (with
  the heads that *are* such heads) apply. ``copying_head``: the same with OV.
- ``necessary`` (C): zero the outputs of all of C; swap each member head with
  each head of its layer outside C; random component sets of C's size; shuffle.
- ``sufficient``, ``faithful`` (C): swaps out of C, random circuits, shuffle
  (zeroing a member does not falsify sufficiency: it changes M and C alike).
- ``minimal`` (C): zero each member's output (one mutation each), swaps out,
  random circuits, shuffle.
- ``complete`` (C): copy each member head onto each head of its layer outside C
  (a parallel path the circuit misses), random circuits, shuffle.
- ``path`` (sender -> receiver): swap the receiver head with each other head of
  its layer that does not carry the path itself (measured): the path moves to
  another receiver; zero the senders' outputs; shuffle.
- ``logit_lens`` converging by L: scramble the outputs of every layer after L
  (one mutation per layer, and all of them at once): the lens reads the residual
  stream after block L, so only later blocks can move the prediction away
  from it. At the last layer nothing comes after: such a claim survives every
  mutation, and is flagged cannot fail.
- ``direct_effect``, ``top_direct_effects``: zero and scramble each claimed
  component's output, swaps (measured), shuffle. ``composition``: scramble the
  sender's OV and the receiver's QK (OV for V-composition), swaps (measured),
  shuffle. ``probe``: scramble the outputs of every layer upstream of the
  probed hook (per layer and all at once), shuffle.
- kinds a plugin declares: shuffle the checkpoint and scramble the OV of every head.

Claims of a kind's "not" form (only the upper threshold) other than head,
copying and direct-effect claims have no falsifying mutations: not measured.

A swap of two heads of one layer is a symmetry of the network: the swapped
model computes what the original computes, with the two heads' labels
exchanged. So a claim survives the swap of a member m with a head o exactly
when it holds on the model with o in m's place. For head claims the catalogue
swaps only with heads on which the claim fails (measured), so those swaps
check that the claim tells its head apart from the others of its layer; for
circuit claims every swap out of the circuit runs, and one that survives
means the claim holds just as well with that head instead (a backup head, or
a circuit whose claim is carried by its other members).

The number of mutations per claim is capped (:data:`DEFAULT_MAX_MUTATIONS`,
``max_mutations=``, ``--circuitcheck-power-mutations``): families are taken in
turn, each family's candidates in a seeded order, so a capped run keeps every
family.

**What is batched.** Random circuits of a necessity, sufficiency or
faithfulness claim are measured on the unmutated copy, so all of them share
the copy's cached clean and corrupted runs and the fully ablated run, and
their variants run in one batched engine call before the replays (which then
find them measured: :mod:`circuitcheck.claims.lattice`). Random circuits of
minimality and completeness claims share the cached runs and ∅ but run one
engine call each (their subsets are built inside the checks). Weight mutations
cannot share runs: each one changes every activation, so each replay runs its
claim from scratch on the mutated copy (within a replay, the claim's own
variants are batched as always).

This module imports nothing heavy at import time (torch and the engine load on
first use), so the report and the terminal summary can read its words.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from ..errors import CircuitCheckError
from . import format as claim_format
from . import registry

DEFAULT_MAX_MUTATIONS = 12
#: The family of claim alterations that replace the claim's circuit by a random one of the same size.
RANDOM_CIRCUIT = "random circuit"
#: Statuses of a :class:`PowerResult`.
MEASURED = "measured"
NOT_MEASURED = "not measured"
FAILS_ITSELF = "the claim fails on the model itself"
#: Relative tolerance of the control replay (an unmutated copy must give the claim's value).
CONTROL_TOLERANCE = 1e-4

HEAD_KINDS = ("previous_token_head", "duplicate_token_head", "induction_head", "bos_head", "pattern_head")
CIRCUIT_KINDS = ("necessary", "sufficient", "faithful", "minimal", "complete")


# Results -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """One mutation and what the claim did on it.

    Attributes:
        name: what the mutation did (``scramble QK of L1H3``, ``random circuit L0H1 L1H3``).
        family: its family (:data:`circuitcheck.engine.mutate.FAMILIES`, or ``"random circuit"``).
        killed: whether the claim failed (or raised) on it.
        passed: the replayed claim's verdict (None when it raised).
        value: the replayed claim's measured value (None when it raised).
        decided_on: the statistic the replay's decision was made on (``lower bound``).
        bound: that statistic's value (a ``[low, high]`` pair for ``interval``).
        error: ``"<ErrorType>: <message>"`` when the replay raised a circuitcheck error.
    """

    name: str
    family: str
    killed: bool
    passed: bool | None = None
    value: float | None = None
    decided_on: str | None = None
    bound: Any = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        from ..tables import json_number

        bound = [json_number(b) for b in self.bound] if isinstance(self.bound, (tuple, list)) else json_number(self.bound)
        return {"name": self.name, "family": self.family, "killed": bool(self.killed), "passed": self.passed,
                "value": json_number(self.value), "decided_on": self.decided_on, "bound": bound, "error": self.error}


@dataclass
class PowerResult:
    """A claim's mutation score: every mutation it was run on, and what it did there.

    Attributes:
        claim / kind: the claim in words and its kind.
        status: ``"measured"`` or ``"not measured"`` (then ``reason`` says why).
        mutations: one :class:`Outcome` per mutation run, in the order they ran.
        catalogue: how many mutations the kind's catalogue offered before the cap.
        max_mutations: the cap.
        seed: the seed of the mutations and of the choice among them.
        seconds: wall time of the measurement (the copy, the catalogue's measurements and the replays).
        notes: what the catalogue left out and why (heads that satisfy the claim themselves, ...).
    """

    claim: str
    kind: str
    status: str
    reason: str | None = None
    mutations: list[Outcome] = field(default_factory=list)
    catalogue: int = 0
    max_mutations: int = DEFAULT_MAX_MUTATIONS
    seed: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.mutations)

    @property
    def killed(self) -> int:
        return sum(outcome.killed for outcome in self.mutations)

    @property
    def score(self) -> float | None:
        """killed / total; None when not measured or no mutation ran."""
        if self.status != MEASURED or not self.mutations:
            return None
        return self.killed / self.total

    @property
    def cannot_fail(self) -> bool:
        """Whether the claim survived every one of at least one mutation."""
        return self.status == MEASURED and self.total >= 1 and self.killed == 0

    @property
    def survivors(self) -> list[Outcome]:
        """The mutations the claim survived (held on)."""
        return [outcome for outcome in self.mutations if not outcome.killed]

    def text(self) -> str:
        """One line: ``score 0.83 (10/12 killed)``, ``CANNOT FAIL (0/1 killed)``, ``not measured: ...``."""
        return summary_text(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: what ``CheckResult.to_dict()["power"]`` holds (report/SCHEMA.md)."""
        return {
            "status": self.status,
            "reason": self.reason,
            "score": self.score,
            "killed": self.killed,
            "total": self.total,
            "cannot_fail": self.cannot_fail,
            "catalogue": self.catalogue,
            "max_mutations": self.max_mutations,
            "seed": self.seed,
            "seconds": round(float(self.seconds), 4),
            "mutations": [outcome.to_dict() for outcome in self.mutations],
            "notes": list(self.notes),
        }

    def to_frame(self):
        """One row per mutation: ``name``, ``family``, ``killed``, ``passed``, ``value``, ``decided_on``, ``bound``, ``error``."""
        import pandas as pd

        columns = ["name", "family", "killed", "passed", "value", "decided_on", "bound", "error"]
        return pd.DataFrame([outcome.to_dict() for outcome in self.mutations], columns=columns)

    def __repr__(self) -> str:
        return f"<PowerResult {self.claim!r}: {self.text()}>"


def summary_text(power: dict) -> str:
    """A power dict (``PowerResult.to_dict()``) in words: ``score 0.83 (10/12 killed)``, ``CANNOT FAIL (0/1 killed)``."""
    if power.get("status") != MEASURED:
        return f"not measured: {power.get('reason') or 'no reason given'}"
    killed, total = power.get("killed", 0), power.get("total", 0)
    if not total:
        return "not measured: no mutation ran"
    if power.get("cannot_fail"):
        return f"CANNOT FAIL ({killed}/{total} killed)"
    return f"score {claim_format.number(power.get('score'), 2)} ({killed}/{total} killed)"


def survivor_names(power: dict) -> list[str]:
    """The names of the mutations a claim survived, from its power dict."""
    return [str(m.get("name")) for m in power.get("mutations") or [] if isinstance(m, dict) and not m.get("killed")]


# The catalogue -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """One mutation a claim could be run on: a weight mutation, or a change of the claim's arguments.

    ``mutation``: a :class:`circuitcheck.engine.mutate.Mutation` (run on the
    mutated copy); ``changes``: argument changes as ``(name, value)`` pairs (run
    on the unmutated copy), e.g. the claim's circuit replaced by a random one.
    """

    name: str
    family: str
    mutation: Any = None
    changes: tuple = ()


class _Catalogue:
    """What a kind's builder needs: the claim, the unmutated copy, and where to put candidates and notes."""

    def __init__(self, call: registry.ClaimCall, result, model, seed: int, max_mutations: int):
        self.call = call
        self.result = result
        self.model = model
        self.seed = seed
        self.max_mutations = max_mutations
        self.arguments = call.arguments
        self.candidates: list[Candidate] = []
        self.notes: list[str] = []
        self.reason: str | None = None
        kind = registry.find(result.kind)
        low = kind.thresholds[0] if kind is not None else None
        self.negative = low is not None and result.min_value is None and result.max_value is not None

    @property
    def n_heads(self) -> int:
        return int(self.model.cfg.n_heads)

    @property
    def has_mlps(self) -> bool:
        return not getattr(self.model.cfg, "attn_only", False)

    def add(self, mutation) -> None:
        self.candidates.append(Candidate(mutation.name, mutation.family, mutation=mutation))

    def alter(self, name: str, family: str, **changes) -> None:
        self.candidates.append(Candidate(name, family, changes=tuple(changes.items())))

    def holds_with(self, **changes) -> bool:
        """Whether the claim holds on the unmutated copy with ``changes`` to its arguments (an error: it does not)."""
        try:
            return bool(self.call.run(self.model, **changes).passed)
        except CircuitCheckError:
            return False

    def shuffle(self) -> None:
        from ..engine import mutate

        self.add(mutate.shuffle_checkpoint(self.seed))

    def swaps_measured(self, layer: int, head: int, change: Callable[[int], dict], skip: Iterable[int] = ()) -> None:
        """Swap the head with each other head of its layer on which the claim does not hold itself (measured)."""
        from ..engine import mutate

        kept = []
        for other in range(self.n_heads):
            if other == head or other in set(skip):
                continue
            if self.holds_with(**change(other)):
                kept.append(f"L{layer}H{other}")
            else:
                self.add(mutate.swap_heads(layer, head, other))
        if kept:
            self.notes.append(f"not swapped with {', '.join(kept)}: the claim holds for {'it' if len(kept) == 1 else 'them'} "
                              "on the model, so a swap would not falsify it")


def catalogue(call: registry.ClaimCall, result, model, *, seed: int = 0, max_mutations: int = DEFAULT_MAX_MUTATIONS):
    """The mutations meant to falsify ``result``'s claim, before the cap: ``(candidates, notes, reason)``.

    ``model`` is the unmutated copy the claim's measurements run on (head
    claims measure the other heads of the layer there). ``reason`` says why
    there is no candidate, when there is none.
    """
    found = _Catalogue(call, result, model, seed, max_mutations)
    builder = _BUILDERS.get(result.kind)
    if builder is None:
        found.notes.append(f"kind {result.kind!r} is not one of circuitcheck's: generic mutations only")
        builder = _generic
    builder(found)
    if not found.candidates and found.reason is None:
        found.reason = "no mutation in the catalogue applies to this claim"
    return found.candidates, found.notes, found.reason


def _not_form(found: _Catalogue) -> bool:
    if found.negative:
        found.reason = (f"no mutation in the catalogue is meant to falsify a 'not' claim of kind {found.result.kind!r} "
                        "(only the upper threshold is given)")
    return found.negative


def _head_claim(found: _Catalogue, qk: bool = True) -> None:
    from ..engine import mutate

    layer, head = found.arguments["layer"], found.arguments["head"]
    if not found.negative:
        if qk:
            found.add(mutate.scramble_qk(layer, head, found.seed))
            found.add(mutate.zero_qk(layer, head))
        else:
            found.add(mutate.scramble_ov(layer, head, found.seed))
            found.add(mutate.zero_ov(layer, head))
    found.swaps_measured(layer, head, lambda other: {"head": other})
    if not found.negative:
        found.shuffle()
    elif not found.candidates:
        found.reason = f"no other head of layer {layer} fails this 'not' claim on the model: no swap could falsify it"


def _copying_claim(found: _Catalogue) -> None:
    _head_claim(found, qk=False)


def _components(value, model) -> list:
    from ..model.circuit import Circuit
    from ..model.components import parse_components

    items = list(value.components) if isinstance(value, Circuit) else parse_components(value)
    return [component.validate(model) for component in items]


def _label(components) -> str:
    return " ".join(str(c) for c in components)


def _circuit_argument(found: _Catalogue) -> str:
    return "components" if found.result.kind == "necessary" else "circuit"


def _heads_outside(found: _Catalogue, layer: int, components) -> list[int]:
    inside = {c.head for c in components if c.kind == "head" and c.layer == layer}
    if any(c.kind == "attn" and c.layer == layer for c in components):
        return []
    return [h for h in range(found.n_heads) if h not in inside]


def _member_heads(components) -> list:
    seen, out = set(), []
    for c in components:
        if c.kind == "head" and (c.layer, c.head) not in seen:
            seen.add((c.layer, c.head))
            out.append(c)
    return out


def _swaps_out(found: _Catalogue, components) -> None:
    from ..engine import mutate

    for member in _member_heads(components):
        for other in _heads_outside(found, member.layer, components):
            found.add(mutate.swap_heads(member.layer, member.head, other))
    if _member_heads(components) and not any(_heads_outside(found, m.layer, components) for m in _member_heads(components)):
        found.notes.append("no swaps out of the circuit: every head of its layers is in it")


def _random_circuits(found: _Catalogue, components) -> None:
    """Alterations: the claim's circuit replaced by random ones of its size (seeded, never the circuit itself)."""
    import itertools

    import numpy as np

    from ..model.components import Component

    if any(c.positions is not None or c.port is not None or c.kind not in ("head", "mlp") for c in components):
        found.notes.append("no random circuits: the circuit has components narrowed to positions, head inputs or whole layers")
        return
    kept = set()
    if found.arguments.get("keep") is not None:
        from .causal import _keep_components

        kept = {c.without_positions() for c in _keep_components(found.arguments["keep"], found.model)}
    universe = [Component("head", layer, head) for layer in range(found.model.cfg.n_layers) for head in range(found.n_heads)]
    if any(c.kind == "mlp" for c in components) and found.has_mlps:
        universe += [Component("mlp", layer) for layer in range(found.model.cfg.n_layers)]
    universe = [c for c in universe if c not in kept]
    own = frozenset(c.without_positions() for c in components)
    size = len(own)
    if size >= len(universe):
        found.notes.append(f"no random circuits: the circuit has {size} of the {len(universe)} components they are drawn from")
        return
    rng = np.random.default_rng([found.seed, 0x5EED])
    wanted = found.max_mutations
    if math.comb(len(universe), size) <= 20_000:
        every = [frozenset(s) for s in itertools.combinations(universe, size)]
        every = [s for s in every if s != own]
        order = rng.permutation(len(every))[:wanted]
        chosen = [every[i] for i in order]
    else:
        chosen, seen = [], {own}
        while len(chosen) < wanted:
            pick = frozenset(universe[i] for i in rng.choice(len(universe), size=size, replace=False))
            if pick not in seen:
                seen.add(pick)
                chosen.append(pick)
    argument = _circuit_argument(found)
    for pick in chosen:
        text = _label(sorted(pick, key=Component.sort_key))
        found.alter(f"random circuit {text}", RANDOM_CIRCUIT, **{argument: text})


def _necessary(found: _Catalogue) -> None:
    from ..engine import mutate

    if _not_form(found):
        return
    components = _components(found.arguments["components"], found.model)
    zeroed = [m for c in components for m in mutate.component_mutation(c, found.model, "zero")]
    if zeroed:
        found.add(mutate.combined(f"zero the outputs of {_label(components)}", "zero OV", zeroed))
    _swaps_out(found, components)
    _random_circuits(found, components)
    found.shuffle()


def _sufficient(found: _Catalogue) -> None:
    if _not_form(found):
        return
    components = _components(found.arguments["circuit"], found.model)
    _swaps_out(found, components)
    _random_circuits(found, components)
    found.shuffle()


def _minimal(found: _Catalogue) -> None:
    from ..engine import mutate

    components = _components(found.arguments["circuit"], found.model)
    for component in components:
        zeroed = mutate.component_mutation(component, found.model, "zero")
        if zeroed:
            found.add(mutate.combined(f"zero the output of {component}", zeroed[0].family, zeroed))
    _swaps_out(found, components)
    _random_circuits(found, components)
    found.shuffle()


def _complete(found: _Catalogue) -> None:
    from ..engine import mutate

    components = _components(found.arguments["circuit"], found.model)
    for member in _member_heads(components):
        for other in _heads_outside(found, member.layer, components):
            found.add(mutate.copy_head(member.layer, member.head, other))
    _random_circuits(found, components)
    found.shuffle()


def _head_text(layer: int, head: int, like) -> str:
    """``L{layer}H{head}`` with the port and positions of the component ``like``."""
    port = f".{like.port}" if like.port else ""
    positions = f"@{like.positions}" if like.positions is not None else ""
    return f"L{layer}H{head}{port}{positions}"


def _path(found: _Catalogue) -> None:
    from ..engine import mutate
    from ..model.components import Component

    if _not_form(found):
        return
    senders = _components(found.arguments["sender"], found.model)
    receiver = found.arguments["receiver"]
    if not (isinstance(receiver, str) and receiver.strip() == "logits"):
        target = Component.parse(receiver).validate(found.model)
        if target.kind == "head":
            skip = [s.head for s in senders if s.kind == "head" and s.layer == target.layer]
            found.swaps_measured(target.layer, target.head,
                                 lambda other: {"receiver": _head_text(target.layer, other, target)}, skip=skip)
    zeroed = [m for s in senders for m in mutate.component_mutation(s, found.model, "zero")]
    if zeroed:
        found.add(mutate.combined(f"zero the outputs of {_label(senders)}", "zero OV", zeroed))
    found.shuffle()


def _layer_outputs(found: _Catalogue, layer: int, heads: bool = True, mlp: bool = True) -> list:
    from ..engine import mutate

    out = [mutate.scramble_ov(layer, h, found.seed) for h in range(found.n_heads)] if heads else []
    if mlp and found.has_mlps:
        out.append(mutate.scramble_mlp(layer, found.seed))
    return out


def _scramble_layers(found: _Catalogue, layers: Sequence[int], heads_in=None, mlps_in=None, where: str = "") -> None:
    """One mutation per layer (every head's OV and the MLP output scrambled), and one for all of them together."""
    from ..engine import mutate

    heads_in = set(layers) if heads_in is None else set(heads_in)
    mlps_in = set(layers) if mlps_in is None else set(mlps_in)
    every = []
    for layer in layers:
        parts = _layer_outputs(found, layer, heads=layer in heads_in, mlp=layer in mlps_in)
        if not parts:
            continue
        every += parts
        what = "every head's OV" if layer in heads_in else ""
        if layer in mlps_in and found.has_mlps:
            what = f"{what} and the MLP output" if what else "the MLP output"
        found.add(mutate.combined(f"scramble layer {layer} ({what})", "scramble OV", parts))
    if len(layers) > 1 and every:
        found.add(mutate.combined(f"scramble layers {layers[0]}-{layers[-1]}{where}", "scramble OV", every))


def _lens(found: _Catalogue) -> None:
    layer = int(found.arguments["layer"])
    later = list(range(layer + 1, int(found.model.cfg.n_layers)))
    if later:
        _scramble_layers(found, later, where=" (everything after the claimed layer)")
    else:
        found.notes.append(f"nothing comes after layer {layer}: no later block can move the prediction away from the lens")
    found.shuffle()


def _direct(found: _Catalogue) -> None:
    from ..engine import mutate
    from ..model.components import Component

    component = Component.parse(found.arguments["component"]).validate(found.model)
    if not found.negative:
        for how in ("zero", "scramble"):
            parts = mutate.component_mutation(component, found.model, how, found.seed)
            if parts:
                family = parts[0].family
                found.add(parts[0] if len(parts) == 1 else mutate.combined(f"{how} the output of {component}", family, parts))
    if component.kind == "head" and component.port is None:
        found.swaps_measured(component.layer, component.head, lambda other: {"component": _head_text(component.layer, other, component)})
    if not found.negative:
        found.shuffle()
    elif not found.candidates:
        found.reason = f"no swap could falsify this 'not' claim of {component}: no head of its layer has the effect on the model"


def _top_direct(found: _Catalogue) -> None:
    from ..engine import mutate

    components = _components(found.arguments["components"], found.model)
    for how in ("zero", "scramble"):
        for component in components:
            parts = mutate.component_mutation(component, found.model, how, found.seed)
            if parts:
                found.add(parts[0] if len(parts) == 1 else mutate.combined(f"{how} the output of {component}", parts[0].family, parts))
    listed = {(c.layer, c.head) for c in components if c.kind == "head"}
    for index, member in enumerate(components):
        if member.kind != "head":
            continue

        def change(other, index=index, member=member):
            replaced = [str(c) for c in components]
            replaced[index] = _head_text(member.layer, other, member)
            return {"components": " ".join(replaced)}

        skip = [h for (layer, h) in listed if layer == member.layer]
        found.swaps_measured(member.layer, member.head, change, skip=skip)
    found.shuffle()


def _composition(found: _Catalogue) -> None:
    from ..engine import mutate
    from ..model.components import Component

    sender_text, receiver_text = found.arguments["sender"], found.arguments["receiver"]
    sender = Component.parse(sender_text).validate(found.model)
    receiver = Component.parse(receiver_text).validate(found.model)
    port = found.result.parameters.get("composition") or receiver.port
    if not found.negative:
        if sender.kind == "head":
            found.add(mutate.scramble_ov(sender.layer, sender.head, found.seed))
        if receiver.kind == "head":
            found.add(mutate.scramble_qk(receiver.layer, receiver.head, found.seed) if port in ("q", "k")
                      else mutate.scramble_ov(receiver.layer, receiver.head, found.seed))
    if sender.kind == "head":
        found.swaps_measured(sender.layer, sender.head, lambda other: {"sender": _head_text(sender.layer, other, sender)},
                             skip=[receiver.head] if receiver.layer == sender.layer else [])
    if receiver.kind == "head":
        found.swaps_measured(receiver.layer, receiver.head, lambda other: {"receiver": _head_text(receiver.layer, other, receiver)},
                             skip=[sender.head] if receiver.layer == sender.layer else [])
    if not found.negative:
        found.shuffle()
    elif not found.candidates:
        found.reason = "no swap could falsify this 'not' composition claim: no other pair of heads composes on the model"


#: Hook points inside a block after which the block's heads (first set) or its MLP (second) have written.
_AFTER_HEADS = ("attn.hook_z", "attn.hook_result", "hook_attn_out", "hook_resid_mid", "mlp.hook_in", "mlp.hook_pre",
                "mlp.hook_pre_linear", "mlp.hook_post", "hook_mlp_out", "hook_resid_post", "ln2.hook_scale", "ln2.hook_normalized")
_AFTER_MLP = ("hook_mlp_out", "hook_resid_post")


def _probe(found: _Catalogue) -> None:
    import re

    if _not_form(found):
        return
    hook = str(found.arguments["hook"])
    match = re.match(r"^blocks\.(\d+)\.(.+)$", hook)
    if match:
        layer, point = int(match[1]), match[2]
        heads_in = list(range(layer)) + ([layer] if point in _AFTER_HEADS else [])
        mlps_in = list(range(layer)) + ([layer] if point in _AFTER_MLP else [])
        layers = sorted(set(heads_in) | set(mlps_in))
        if layers:
            _scramble_layers(found, layers, heads_in, mlps_in, where=f" (everything upstream of {hook})")
        else:
            found.notes.append(f"nothing upstream of {hook} but the embeddings: only the checkpoint shuffle applies")
    else:
        found.notes.append(f"{hook} is not inside a block: only the checkpoint shuffle applies")
    found.shuffle()


def _generic(found: _Catalogue) -> None:
    from ..engine import mutate

    found.shuffle()
    heads = [mutate.scramble_ov(layer, head, found.seed) for layer in range(found.model.cfg.n_layers) for head in range(found.n_heads)]
    found.add(mutate.combined("scramble the OV of every head", "scramble OV", heads))


_BUILDERS: dict[str, Callable[[_Catalogue], None]] = {
    **{kind: _head_claim for kind in HEAD_KINDS},
    "copying_head": _copying_claim,
    "necessary": _necessary,
    "sufficient": _sufficient,
    "faithful": _sufficient,
    "minimal": _minimal,
    "complete": _complete,
    "path": _path,
    "logit_lens": _lens,
    "direct_effect": _direct,
    "top_direct_effects": _top_direct,
    "composition": _composition,
    "probe": _probe,
}


def choose(candidates: Sequence[Candidate], max_mutations: int, seed: int) -> list[Candidate]:
    """At most ``max_mutations`` candidates: families in turn (in catalogue order), each family's in a seeded order."""
    import numpy as np

    families: dict[str, list[Candidate]] = {}
    for candidate in candidates:
        families.setdefault(candidate.family, []).append(candidate)
    rng = np.random.default_rng([seed, 0xC0DE])
    queues = [[members[i] for i in rng.permutation(len(members))] for members in families.values()]
    chosen: list[Candidate] = []
    while len(chosen) < max_mutations and any(queues):
        for queue in queues:
            if queue and len(chosen) < max_mutations:
                chosen.append(queue.pop(0))
    return chosen


# Measuring ---------------------------------------------------------------------------------------


def check_max_mutations(value) -> int:
    """``max_mutations`` must be a whole number >= 1 (a clear error naming it otherwise)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CircuitCheckError(f"max_mutations={value!r} is not valid: it must be a whole number >= 1 (default {DEFAULT_MAX_MUTATIONS})")
    return value


def mutation_score(claim, *, max_mutations: int = DEFAULT_MAX_MUTATIONS, seed: int | None = None) -> PowerResult:
    """Run a claim on the mutations meant to falsify it and return its :class:`PowerResult` (the mutation score).

    ``claim``: a :class:`~circuitcheck.claims.result.CheckResult` (any
    ``check_*`` / ``assert_*`` result: it carries its call as ``result.call``),
    or a :class:`~circuitcheck.claims.registry.ClaimCall` (run once first).
    ``max_mutations``: the cap on mutations per claim (default 12).
    ``seed``: the seed of scrambles, shuffles, random circuits and the choice
    among candidates (default: the claim's own seed, else 0).

    The user's model is never edited: the mutations run on a private copy,
    kept in the model's session for the next claim (freed with the model, made
    again when its weights change). Works the same inside and outside pytest.
    Also sets ``result.power`` on a given result. Raises
    :class:`~circuitcheck.engine.mutate.MutationError` if a mutation cannot be
    undone exactly or the model's weights changed meanwhile.
    """
    check_max_mutations(max_mutations)
    started = time.perf_counter()
    call, result = _call_and_result(claim)
    if seed is None:
        own = (result.parameters or {}).get("seed")
        seed = own if isinstance(own, int) and not isinstance(own, bool) else 0
    from ..model.seeds import check_seed

    seed = check_seed(seed)
    power = PowerResult(claim=result.claim, kind=result.kind, status=MEASURED, max_mutations=max_mutations, seed=seed)
    if not result.passed:
        power.status, power.reason = NOT_MEASURED, FAILS_ITSELF
    elif call is None:
        power.status = NOT_MEASURED
        power.reason = ("circuitcheck did not record how this claim was made (its kind's check does not go through the "
                        "registry of claim kinds, or its result was rebuilt from data)")
    else:
        _measure(power, call, result, max_mutations, seed)
    power.seconds = time.perf_counter() - started
    try:
        result.power = power
    except AttributeError:
        pass
    return power


def _call_and_result(claim):
    if isinstance(claim, registry.ClaimCall):
        result = claim.run()
        result.call = claim
        return claim, result
    if not all(hasattr(claim, name) for name in ("passed", "kind", "claim")):
        raise CircuitCheckError(f"{claim!r:.80} is not a claim: give a CheckResult (from a check_* or assert_* call) or a ClaimCall")
    return getattr(claim, "call", None), claim


def _mutator_for(model):
    """The model's private copy to mutate (in its session; made again when its weights changed)."""
    from ..engine.mutate import Mutator
    from ..engine.session import session_of

    held = session_of(model).derived("power", dict)  # dropped when the model's weights change
    mutator = held.get("mutator")
    if mutator is None or not mutator.source_unchanged(model):
        mutator = held["mutator"] = Mutator(model)
    return mutator


def _measure(power: PowerResult, call: registry.ClaimCall, result, max_mutations: int, seed: int) -> None:
    model = call.model
    if model is None:
        power.status, power.reason = NOT_MEASURED, "the model the claim was measured on is gone"
        return
    mutator = _mutator_for(model)
    with mutator.lock:
        copy = mutator.model
        call = _rebound(call, copy)
        control = _replay(call, copy, {})
        if control.error is not None or not control.passed or not _close(control.value, result.value):
            seen = control.error or f"{'held' if control.passed else 'failed'} with value {claim_format.number(control.value)}"
            power.status = NOT_MEASURED
            power.reason = (f"the claim run again on an unmutated copy of its model {seen}, where it measured "
                            f"{claim_format.number(result.value)}: it cannot be replayed faithfully")
            return
        candidates, notes, reason = catalogue(call, result, copy, seed=seed, max_mutations=max_mutations)
        power.notes = notes
        power.catalogue = len(candidates)
        if not candidates:
            power.status, power.reason = NOT_MEASURED, reason
            return
        chosen = choose(candidates, max_mutations, seed)
        if len(candidates) > len(chosen):
            power.notes.append(f"{len(chosen)} of {len(candidates)} candidate mutations run (max_mutations={max_mutations})")
        alterations = [c for c in chosen if c.mutation is None]
        _prewarm(call, result, copy, alterations)
        outcomes: dict[int, Outcome] = {}
        for index, candidate in enumerate(chosen):  # alterations first: they run on the unmutated copy's cached runs
            if candidate.mutation is None:
                outcomes[index] = _outcome(candidate, _replay(call, copy, dict(candidate.changes)))
        for index, candidate in enumerate(chosen):
            if candidate.mutation is not None:
                with mutator.mutated(candidate.mutation) as mutant:
                    outcomes[index] = _outcome(candidate, _replay(call, mutant, {}))
        power.mutations = [outcomes[i] for i in range(len(chosen))]
    mutator.verify_source()


def _rebound(call: registry.ClaimCall, copy) -> registry.ClaimCall:
    """``call`` with its arguments bound to the original model rebuilt on the copy: a ``prober=`` (its seed and settings kept).

    Without this a replay would fit its probes on the original model, whatever the copy's weights.
    """
    from ..engine.probe import Prober

    prober = call.arguments.get("prober")
    if not isinstance(prober, Prober) or prober.model is copy:
        return call
    rebuilt = type(prober)(copy, seed=prober.seed, weight_decay=prober.weight_decay, max_iter=prober.max_iter)
    return registry.ClaimCall(call.check, {**call.arguments, "prober": rebuilt}, call.model, task=call.task, seed=call.seed,
                              model_given=call.model_given)


@dataclass
class _Replayed:
    passed: bool | None
    value: float | None
    decided_on: str | None
    bound: Any
    error: str | None


def _replay(call: registry.ClaimCall, model, changes: dict) -> _Replayed:
    try:
        replayed = call.run(model, **changes)
    except CircuitCheckError as error:
        return _Replayed(None, None, None, None, f"{type(error).__name__}: {error}")
    statistic, bound = claim_format.deciding_bound(replayed)
    return _Replayed(bool(replayed.passed), _number(replayed.value), statistic, bound, None)


def _outcome(candidate: Candidate, replayed: _Replayed) -> Outcome:
    return Outcome(candidate.name, candidate.family, killed=replayed.error is not None or not replayed.passed,
                   passed=replayed.passed, value=replayed.value, decided_on=replayed.decided_on,
                   bound=list(replayed.bound) if isinstance(replayed.bound, tuple) else replayed.bound,
                   error=replayed.error)


def _number(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _close(a, b) -> bool:
    a, b = _number(a), _number(b)
    if a is None or b is None:
        return a is None and b is None
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=CONTROL_TOLERANCE, abs_tol=1e-6)


def _prewarm(call: registry.ClaimCall, result, copy, alterations: Sequence[Candidate]) -> None:
    """Measure the random circuits of a necessity, sufficiency or faithfulness claim in one batched engine call.

    The replays then find their variants measured (the lattice's memory of the
    copy's cached runs). Anything this cannot build is left to the replays,
    which measure it themselves: the numbers are the same either way.
    """
    if result.kind not in ("necessary", "sufficient", "faithful") or not alterations:
        return
    from . import causal, lattice, robustness, stats

    arguments = call.arguments
    task = arguments.get("task") if arguments.get("task") is not None else call.task
    if task is None:
        return
    name = _circuit_argument_of(result.kind)
    circuits = [dict(c.changes)[name] for c in alterations if name in dict(c.changes)]
    seed = arguments.get("seed")
    seed = seed if seed is not None else (call.seed if call.seed is not None else 0)
    try:
        with call.replaying(copy):
            for ablation in robustness.ablations(arguments.get("ablation")):
                confidence = arguments.get("confidence", stats.DEFAULT_CONFIDENCE)
                setup = causal._setup(copy, task, ablation, seed, confidence, arguments.get("keep"))
                seq_len = setup.task.seq_len
                empty = causal._ablate_all_but([], copy, seq_len, keep=setup.keep)
                variants = [empty]
                for text in circuits:
                    comps = causal._components(text, copy)
                    if result.kind == "necessary":
                        variants.append(causal._ablate(comps, seq_len))
                        if len(comps) > 1:
                            variants += [causal._ablate([c], seq_len) for c in comps]
                    else:
                        variants.append(causal._ablate_all_but(comps, copy, seq_len, keep=setup.keep))
                lattice.run_variants(setup, variants, desc="power: random circuits")
    except CircuitCheckError:
        return  # each replay then measures (or reports) its own circuit


def _circuit_argument_of(kind: str) -> str:
    return "components" if kind == "necessary" else "circuit"
