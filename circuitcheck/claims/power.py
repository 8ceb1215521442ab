"""Test power: how often a claim fails on models where it should not hold (its mutation score).

DESIGN.md, "Verdicts researchers can trust": a claim that survives every
mutation of the model that should falsify it cannot fail and says nothing.
:func:`mutation_score` re-runs a claim (its :class:`~circuitcheck.claims.registry.ClaimCall`,
recorded on every result as ``result.call``) on mutated copies of its model and
on altered versions of the claim, and reports:

- each mutation's outcome: the replayed claim *kills* the mutation when it
  does not hold, and *survives* it when it holds. A replay that raises a
  circuitcheck error (for example the gap m(M) - m(∅) is no longer
  distinguishable from zero) is **undecided**: the claim could not be
  measured there, which says nothing about whether it fails. It is recorded
  (``undecided: <ErrorType>: <message>``) and counted, but left out of the score;
- the mutation score = killed / decided (decided = killed + survived);
- **cannot fail**: no kill among at least one decided mutation.

A claim gets no score ("not measured", with the reason) when it fails on the
model itself, when its replay on an unmutated copy does not reproduce it (then
the replay would measure something else), when its kind's catalogue has no
mutation meant to falsify it, or when no mutation run could be decided.

The catalogue: mutations chosen to falsify the claim's kind
(:func:`catalogue`). Weight mutations (:mod:`circuitcheck.engine.mutate`) run
on one private copy per model, restored and verified after each one; the
user's model is never touched, and its fingerprint is checked at the end.

- head kinds (``*_head``): scramble and zero the head's QK; swap it with each
  other head of its layer that does not satisfy the claim itself on the model
  (measured); shuffle the checkpoint. ``copying_head``: the same with OV.
  "Is not" claims (only ``max_score``): swap the head with, and copy the QK
  (``copying_head``: the OV) onto it of, each head of its layer on which the
  claim fails (measured: a head that *is* such a head).
- ``necessary``, ``sufficient``, ``faithful`` (C) are claims about the set, not
  about each member: swapping one member out does not falsify "C is
  necessary" when another member alone carries it, nor "C is sufficient" when
  the member is a negative head (recovery rises). Their swap is "every head of
  C swapped out at once": each head of C swapped with a head of its layer
  outside C, in :data:`SET_SWAPS` seeded variants with different partners.
  Then random circuits of C's size and the checkpoint shuffle; ``necessary``
  also zeroes the outputs of all of C (zeroing a member does not falsify
  sufficiency: it changes M and C alike).
- ``minimal`` (C) claims that *each* member is needed: zero each member's output
  (one mutation each), swap each member head with each head of its layer
  outside C, random circuits, shuffle.
- ``complete`` (C): copy each member head onto each head of its layer outside C
  (a parallel path the circuit misses), random circuits, shuffle.
- "Not" claims of set kinds (only the upper threshold) are falsified by moving
  function *into* C: swap a member head with a head of its layer outside C
  that matters on the model. ``necessary`` with ``max_drop``: a head whose own
  drop is at least ``max_drop`` (lower bound, measured on the model: the claim
  "that head is necessary with min_drop=max_drop" holds). ``sufficient`` with
  ``max_recovery``: a head with which in the member's place C recovers more
  than ``max_recovery`` (measured: one head's own recovery says little, a
  head does not recover a task alone). Where no such head exists the claim is
  not measured, and the reason says so.
- Edge circuits (``"L0H0 -> L1H0.k, L1H0 -> logits"``, every causal kind) take
  the same families over edges, with the heads their edges name (senders and
  receivers) as C's heads for the swaps and copies:

  - random circuits: as many edges, drawn uniformly from the model's edge graph
    (:meth:`circuitcheck.engine.edges.Graph.edges`), seeded and measured
    together like node circuits;
  - *moved edges* (:data:`MOVED_EDGES`): an edge given another receiver of its
    kind that reads after the sender writes: another head input (another
    head, or another port q/k/v, of any such layer), or another layer's MLP
    (``L0H0 -> L1H0.k`` becomes ``L0H0 -> L1H1.k`` or ``L0H0 -> L1H0.q``); the
    sender's write is unchanged, only who reads it. Never onto an edge already
    in C. Set kinds (``necessary``, ``sufficient``, ``faithful``) move every
    edge at once (:data:`SET_SWAPS` seeded variants; an edge into the logits
    has no other receiver and stays); ``minimal`` moves each edge alone;
  - zeroing what an edge carries: the sender's output (zero OV of a head,
    zero output of an MLP), or, for an edge out of the embeddings, the
    receiver's read of it (zero QK of a head for ``.q`` / ``.k``, whose
    attention is then uniform; zero OV for ``.v``; an MLP's output). An
    embedding's edge into the logits has none (no weight edit removes it
    alone). ``necessary`` zeroes what all of C's edges carry at once;
    ``minimal`` each edge's (one mutation per distinct edit). Scrambles are
    left out: a scrambled head still carries a (random) signal along the
    edge, so the claim's verdict there says nothing about the edge;
  - "not" claims: swap a head the edges name with a head of its layer that
    they do not name, where the swap moves function into the edges. By the
    swap's symmetry the swapped model's claim about C is the original's claim
    about C with the two heads relabelled, so that relabelled circuit is what
    is measured: ``necessary`` with ``max_drop``, it is necessary with
    ``min_drop=max_drop`` (lower bound); ``sufficient`` with ``max_recovery``,
    it recovers more than ``max_recovery``.
- ``path`` (sender -> receiver): swap the receiver head with each other head of
  its layer that does not carry the path itself (measured): the path moves to
  another receiver; zero the senders' outputs; shuffle. "Does not carry"
  claims: swap the receiver, and each sender head, with the heads of its layer
  for which the path does carry the effect (measured).
- ``logit_lens`` converging by L: scramble the outputs of every layer after L
  (one mutation per layer, and all of them at once): the lens reads the residual
  stream after block L, so only later blocks can move the prediction away
  from it. At the last layer nothing comes after: such a claim survives every
  mutation, and is flagged cannot fail.
- ``direct_effect``, ``top_direct_effects``: zero and scramble each claimed
  component's output, swaps (measured), shuffle. ``composition``: scramble the
  sender's OV and the receiver's QK (OV for V-composition), swaps (measured),
  shuffle. ``probe``: scramble the outputs of every layer upstream of the
  probed hook (per layer and all at once), shuffle; a "not" probe claim has no
  falsifying mutation (no weight edit moves information into a hook).
- kinds a plugin declares: shuffle the checkpoint and scramble the OV of every head.

A swap of two heads of one layer is a symmetry of the network: the swapped
model computes what the original computes, with the two heads' labels
exchanged. So a claim survives the swap of a member m with a head o exactly
when it holds on the model with o in m's place. For head claims the catalogue
swaps only with heads on which the claim fails (measured), so those swaps
check that the claim tells its head apart from the others of its layer; for
circuit claims every swap out of the circuit runs, and one that survives
means the claim holds just as well with those heads instead (a backup head, or
a circuit whose claim is carried by its other components, e.g. an MLP).

The number of mutations per claim is capped (:data:`DEFAULT_MAX_MUTATIONS`,
``max_mutations=``, ``--circuitcheck-power-mutations``): families are taken in
turn, each family's candidates in a seeded order, so a capped run keeps every
family.

**What is shared and batched.** Everything that needs the unmutated model
(the control replay, the catalogue's measurements, the random circuits) runs
on the mutator's *reference* copy, which is never mutated: its cached clean
and corrupted runs and its measured variants (:mod:`circuitcheck.claims.lattice`)
last from one claim to the next, so claims on one circuit and task share them
(the random circuits of a seed are the same for every kind of claim on a
circuit). Before the random circuits' replays, their variants run in one
batched engine call (necessity, sufficiency, faithfulness; minimality and
completeness: the subsets their checks start from), and the replays then find
them measured. A weight mutation changes every activation downstream of it,
so its replay runs the claim on the mutated copy (its own variants batched
as always); for causal kinds the gap m(M) - m(∅) is measured first (one
variant, which the claim then reuses), and a mutation without a gap is
recorded undecided with the claim's own error, without running the rest.

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
#: The family of claim alterations that give an edge circuit's edges other receivers of their kind (edge circuits only).
MOVED_EDGES = "moved edges"
#: Statuses of a :class:`PowerResult`.
MEASURED = "measured"
NOT_MEASURED = "not measured"
FAILS_ITSELF = "the claim fails on the model itself"
#: Verdicts of one mutation (:attr:`Outcome.verdict`).
KILLED, SURVIVED, UNDECIDED = "killed", "survived", "undecided"
#: Variants of "every head of the circuit swapped out at once" (each with other partners) for set claims.
SET_SWAPS = 3
#: Relative tolerance of the control replay (an unmutated copy must give the claim's value).
CONTROL_TOLERANCE = 1e-4

HEAD_KINDS = ("previous_token_head", "duplicate_token_head", "induction_head", "bos_head", "pattern_head")
CIRCUIT_KINDS = ("necessary", "sufficient", "faithful", "minimal", "complete")


# Results -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """One mutation and what the claim did on it: killed, survived, or undecided.

    Attributes:
        name: what the mutation did (``scramble QK of L1H3``, ``random circuit L0H1 L1H3``).
        family: its family (:data:`circuitcheck.engine.mutate.FAMILIES`, or ``"random circuit"``).
        killed: whether the replayed claim failed on it (False when it was undecided).
        passed: the replayed claim's verdict (None when it raised).
        value: the replayed claim's measured value (None when it raised).
        decided_on: the statistic the replay's decision was made on (``lower bound``).
        bound: that statistic's value (a ``[low, high]`` pair for ``interval``).
        error: ``"<ErrorType>: <message>"`` when the replay raised a circuitcheck error: the
            mutation is then *undecided* (the claim could not be measured there) and left out of the score.
    """

    name: str
    family: str
    killed: bool
    passed: bool | None = None
    value: float | None = None
    decided_on: str | None = None
    bound: Any = None
    error: str | None = None

    @property
    def undecided(self) -> bool:
        """Whether the replay raised (the claim could not be measured on this mutation)."""
        return self.error is not None

    @property
    def verdict(self) -> str:
        """``"killed"``, ``"survived"`` or ``"undecided"``."""
        return UNDECIDED if self.error is not None else KILLED if self.killed else SURVIVED

    def to_dict(self) -> dict[str, Any]:
        from ..tables import json_number

        bound = [json_number(b) for b in self.bound] if isinstance(self.bound, (tuple, list)) else json_number(self.bound)
        return {"name": self.name, "family": self.family, "verdict": self.verdict, "killed": self.verdict == KILLED,
                "passed": self.passed, "value": json_number(self.value), "decided_on": self.decided_on, "bound": bound,
                "error": self.error}


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
        """Mutations run (decided or not)."""
        return len(self.mutations)

    @property
    def killed(self) -> int:
        return sum(outcome.killed and not outcome.undecided for outcome in self.mutations)

    @property
    def undecided(self) -> int:
        """Mutations on which the replay raised (the claim could not be measured there)."""
        return sum(outcome.undecided for outcome in self.mutations)

    @property
    def decided(self) -> int:
        """Mutations on which the claim was measured: killed + survived (the score's denominator)."""
        return self.total - self.undecided

    @property
    def score(self) -> float | None:
        """killed / decided; None when not measured or no mutation was decided."""
        if self.status != MEASURED or not self.decided:
            return None
        return self.killed / self.decided

    @property
    def cannot_fail(self) -> bool:
        """Whether the claim survived every one of at least one decided mutation."""
        return self.status == MEASURED and self.decided >= 1 and self.killed == 0

    @property
    def survivors(self) -> list[Outcome]:
        """The mutations the claim survived (held on)."""
        return [outcome for outcome in self.mutations if not outcome.killed and not outcome.undecided]

    @property
    def undecided_mutations(self) -> list[Outcome]:
        """The mutations on which the claim could not be measured (its replay raised)."""
        return [outcome for outcome in self.mutations if outcome.undecided]

    def text(self) -> str:
        """One line: ``score 0.83 (10/12 killed, 1 undecided)``, ``CANNOT FAIL (0/1 killed)``, ``not measured: ...``."""
        return summary_text(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: what ``CheckResult.to_dict()["power"]`` holds (report/SCHEMA.md)."""
        return {
            "status": self.status,
            "reason": self.reason,
            "score": self.score,
            "killed": self.killed,
            "decided": self.decided,
            "undecided": self.undecided,
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
        """One row per mutation: ``name``, ``family``, ``verdict``, ``killed``, ``passed``, ``value``, ``decided_on``,
        ``bound``, ``error``."""
        import pandas as pd

        columns = ["name", "family", "verdict", "killed", "passed", "value", "decided_on", "bound", "error"]
        return pd.DataFrame([outcome.to_dict() for outcome in self.mutations], columns=columns)

    def __repr__(self) -> str:
        return f"<PowerResult {self.claim!r}: {self.text()}>"


# Reading power dicts (PowerResult.to_dict(), also from JSON written by older versions) --------------


def verdict_of(mutation: dict) -> str:
    """A mutation dict's verdict: ``"killed"``, ``"survived"`` or ``"undecided"`` (a replay that raised)."""
    verdict = mutation.get("verdict")
    if verdict in (KILLED, SURVIVED, UNDECIDED):
        return verdict
    if mutation.get("error"):
        return UNDECIDED
    return KILLED if mutation.get("killed") else SURVIVED


def decided_count(power: dict) -> int:
    """Decided mutations (killed + survived) of a power dict."""
    if isinstance(power.get("decided"), int):
        return power["decided"]
    mutations = [m for m in power.get("mutations") or [] if isinstance(m, dict)]
    if mutations:
        return sum(verdict_of(m) != UNDECIDED for m in mutations)
    return int(power.get("total") or 0)


def killed_count(power: dict) -> int:
    """Killed mutations of a power dict (an older dict counted a replay that raised as killed: counted again here)."""
    mutations = [m for m in power.get("mutations") or [] if isinstance(m, dict)]
    if "decided" in power or not mutations:
        return int(power.get("killed") or 0)
    return sum(verdict_of(m) == KILLED for m in mutations)


def score_of(power: dict) -> float | None:
    """A power dict's score, killed / decided (recomputed for an older dict); None when not measured."""
    if "decided" in power:
        return power.get("score")
    decided = decided_count(power)
    return killed_count(power) / decided if power.get("status") == MEASURED and decided else None


def undecided_count(power: dict) -> int:
    """Undecided mutations (replays that raised) of a power dict."""
    if isinstance(power.get("undecided"), int):
        return power["undecided"]
    return sum(verdict_of(m) == UNDECIDED for m in power.get("mutations") or [] if isinstance(m, dict))


def is_measured(power: dict) -> bool:
    """Whether a power dict has a score: measured, with at least one decided mutation."""
    return power.get("status") == MEASURED and decided_count(power) > 0


def ratio_text(power: dict) -> str:
    """``10/11`` (killed / decided), with ``+1 undecided`` after it when some mutations were undecided."""
    undecided = undecided_count(power)
    text = f"{killed_count(power)}/{decided_count(power)}"
    return f"{text} +{undecided} undecided" if undecided else text


def summary_text(power: dict) -> str:
    """A power dict in words: ``score 0.83 (10/12 killed, 1 undecided)``, ``CANNOT FAIL (0/1 killed)``, ``not measured: ...``."""
    if power.get("status") != MEASURED:
        return f"not measured: {power.get('reason') or 'no reason given'}"
    killed, decided, undecided = killed_count(power), decided_count(power), undecided_count(power)
    if not decided:
        return "not measured: no mutation ran" if not undecided else f"not measured: all {undecided} mutations were undecided"
    tail = f", {undecided} undecided" if undecided else ""
    if killed == 0:
        return f"CANNOT FAIL ({killed}/{decided} killed{tail})"
    return f"score {claim_format.number(score_of(power), 2)} ({killed}/{decided} killed{tail})"


def survivor_names(power: dict) -> list[str]:
    """The names of the mutations a claim survived (held on), from its power dict."""
    return [str(m.get("name")) for m in power.get("mutations") or [] if isinstance(m, dict) and verdict_of(m) == SURVIVED]


def undecided_texts(power: dict, limit: int | None = None) -> list[str]:
    """``<mutation>: <error>`` for each mutation on which the claim could not be measured, from its power dict.

    ``limit``: cut each error to that many characters (``…`` at the end); the full error stays in the dict.
    """
    texts = []
    for m in power.get("mutations") or []:
        if isinstance(m, dict) and verdict_of(m) == UNDECIDED:
            error = str(m.get("error"))
            if limit is not None and len(error) > limit:
                error = error[: limit - 1].rstrip() + "…"
            texts.append(f"{m.get('name')}: {error}")
    return texts


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

    def swaps_measured(self, layer: int, head: int, change: Callable[[int], dict], skip: Iterable[int] = ()) -> list[int]:
        """Swap the head with each other head of its layer on which the claim does not hold itself (measured).

        Returns the partners (the heads swapped with).
        """
        from ..engine import mutate

        kept, partners = [], []
        for other in range(self.n_heads):
            if other == head or other in set(skip):
                continue
            if self.holds_with(**change(other)):
                kept.append(f"L{layer}H{other}")
            else:
                partners.append(other)
                self.add(mutate.swap_heads(layer, head, other))
        if kept:
            self.notes.append(f"not swapped with {', '.join(kept)}: the claim holds for {'it' if len(kept) == 1 else 'them'} "
                              "on the model, so a swap would not falsify it")
        return partners


def catalogue(call: registry.ClaimCall, result, model, *, seed: int = 0, max_mutations: int = DEFAULT_MAX_MUTATIONS):
    """The mutations meant to falsify ``result``'s claim, before the cap: ``(candidates, notes, reason)``.

    ``model`` is the unmutated copy the claim's measurements run on (the
    mutator's reference copy: head claims measure the other heads of the
    layer there, "not" claims the heads that could be moved in). ``reason``
    says why there is no candidate, when there is none.
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
    partners = found.swaps_measured(layer, head, lambda other: {"head": other})
    if found.negative:  # move the function in: the head attends (copying: writes) like one that is such a head
        for other in partners:
            found.add(mutate.copy_qk(layer, other, head) if qk else mutate.copy_ov(layer, other, head))
    if not found.negative:
        found.shuffle()
    elif not found.candidates:
        found.reason = f"no other head of layer {layer} fails this 'not' claim on the model: no swap or copy could falsify it"


def _copying_claim(found: _Catalogue) -> None:
    _head_claim(found, qk=False)


def _components(value, model) -> list:
    """The claim's members, validated: components, or the edges of an edge circuit (as the causal claims read them)."""
    from ..model.circuit import Circuit
    from ..model.components import parse_components
    from .causal import _members

    if isinstance(value, Circuit) and not value.edges:
        items = list(value.components)
    elif isinstance(value, str) and "->" not in value:
        items = parse_components(value)
    else:
        return _members(value, model)
    return [component.validate(model) for component in items]


def _is_edges(members) -> bool:
    from ..model.components import Edge

    return bool(members) and isinstance(members[0], Edge)


def _named_heads(members) -> list:
    """For an edge circuit, the heads its edges name (senders and receivers, as head outputs; a sender ``L0.attn`` as
    ``L0.attn``, which names every head of its layer); else the members themselves."""
    from ..model.components import Component

    if not _is_edges(members):
        return list(members)
    named = []
    for edge in members:
        for end in (edge.sender, edge.receiver):
            if end.kind in ("head", "attn"):
                node = Component(end.kind, end.layer, end.head)
                if node not in named:
                    named.append(node)
    return named


def _label(components) -> str:
    return (", " if _is_edges(components) else " ").join(str(c) for c in components)


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

    components = _named_heads(components)
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

    if _is_edges(components):
        _random_edge_circuits(found, components)
        return
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


# Edge circuits -------------------------------------------------------------------------------------


def _edge_graph(found: _Catalogue):
    from ..engine.edges import Graph

    return Graph.of(found.model, 1)  # the edges are the same at every input length; positions are not drawn


def _edge_keys(edge, n_heads: int) -> frozenset:
    """What an edge covers, as ``(sender, receiver)`` texts without positions (``L0.attn`` as each of its heads)."""
    from ..model.components import Component

    sender = edge.sender.without_positions()
    senders = [Component("head", sender.layer, h) for h in range(n_heads)] if sender.kind == "attn" else [sender]
    receiver = str(edge.receiver.without_positions())
    return frozenset((str(s), receiver) for s in senders)


def _narrowed(edges) -> list:
    return [e for e in edges if e.sender.positions is not None or e.receiver.positions is not None]


def _random_edge_circuits(found: _Catalogue, edges) -> None:
    """Alterations: the edge circuit replaced by random sets of as many edges, uniform over the model's edge graph (seeded)."""
    import numpy as np

    narrowed = _narrowed(edges)
    if narrowed:
        found.notes.append(f"no random circuits: the circuit has edges narrowed to positions ({_label(narrowed)})")
        return
    universe = _edge_graph(found).edges()
    own = frozenset().union(*(_edge_keys(e, found.n_heads) for e in edges))
    size = len(own)  # an L0.attn sender counts as each of its heads' edges, as the graph lists them
    if size >= len(universe):
        found.notes.append(f"no random circuits: the circuit has {size} of the model's {len(universe)} edges")
        return
    rng = np.random.default_rng([found.seed, 0x5EED])
    wanted = min(found.max_mutations, math.comb(len(universe), size) - 1)
    chosen, seen = [], {own}
    while len(chosen) < wanted:
        picked = sorted(int(i) for i in rng.choice(len(universe), size=size, replace=False))  # graph order
        keys = frozenset().union(*(_edge_keys(universe[i], found.n_heads) for i in picked))
        if keys not in seen:
            seen.add(keys)
            chosen.append([universe[i] for i in picked])
    argument = _circuit_argument(found)
    for pick in chosen:
        text = _label(pick)
        found.alter(f"random circuit {text}", RANDOM_CIRCUIT, **{argument: text})


def _receivers_like(found: _Catalogue, edge) -> list:
    """The edges ``edge`` becomes when another receiver of its kind reads the sender's write (positions kept).

    A head's input: every other head input (any head, port q/k/v and layer)
    that reads after the sender writes. An MLP's input: every other layer's
    MLP that reads after the sender writes. The logits: none (the only
    receiver of their kind).
    """
    from ..errors import ComponentError
    from ..model.components import Component, Edge

    receiver = edge.receiver
    if receiver.kind == "head":
        others = [Component("head", layer, h, port, receiver.positions)
                  for layer in range(int(found.model.cfg.n_layers)) for h in range(found.n_heads) for port in ("q", "k", "v")
                  if (layer, h, port) != (receiver.layer, receiver.head, receiver.port)]
    elif receiver.kind == "mlp":
        others = [Component("mlp", layer, positions=receiver.positions)
                  for layer in range(int(found.model.cfg.n_layers)) if layer != receiver.layer]
    else:
        return []
    moved = []
    for other in others:
        try:
            moved.append(Edge(edge.sender, other))
        except ComponentError:  # that MLP reads before the sender writes
            continue
    return moved


def _moved_edge_sets(found: _Catalogue, edges) -> None:
    """Set claims: every edge of C moved to another receiver of its kind at once, in :data:`SET_SWAPS` seeded variants.

    The moved edges carry the same writes to other readers, so the claim about
    the moved set should fail where C's own edges are what matters. Moved
    edges are distinct and never edges of C; an edge with no other receiver of
    its kind (into the logits) stays.
    """
    import numpy as np

    targets = [_receivers_like(found, edge) for edge in edges]
    movable = [i for i, t in enumerate(targets) if t]
    if not movable:
        found.notes.append("no moved edges: every edge of the circuit goes into the logits, which have no other receiver of their kind")
        return
    staying = [edges[i] for i, t in enumerate(targets) if not t]
    if staying:
        found.notes.append(f"moving the circuit's edges leaves those into the logits in place: {_label(staying)}")
    own = frozenset().union(*(_edge_keys(e, found.n_heads) for e in edges))
    rng = np.random.default_rng([found.seed, 0xED6E])
    picks, seen = [], set()
    for _ in range(20 * SET_SWAPS):
        if len(picks) == SET_SWAPS:
            break
        used, moved = set(own), {}
        for i in rng.permutation(movable):
            free = [t for t in targets[i] if not _edge_keys(t, found.n_heads) & used]
            if not free:
                break
            moved[int(i)] = free[int(rng.integers(len(free)))]
            used |= _edge_keys(moved[int(i)], found.n_heads)
        else:
            key = tuple(sorted((i, str(e)) for i, e in moved.items()))
            if key not in seen:
                seen.add(key)
                picks.append(moved)
    if not picks:
        found.notes.append("no moved edges: the receivers of the circuit's layers are too few to move every edge to one outside it")
        return
    argument = _circuit_argument(found)
    for moved in picks:
        text = _label([moved.get(i, edge) for i, edge in enumerate(edges)])
        what = "every edge" if not staying else f"{len(moved)} of the {len(edges)} edges"
        found.alter(f"move {what} to another receiver: {text}", MOVED_EDGES, **{argument: text})


def _moved_edges(found: _Catalogue, edges) -> None:
    """``minimal``: each edge of C alone moved to each other receiver of its kind (never onto an edge of C)."""
    own = frozenset().union(*(_edge_keys(e, found.n_heads) for e in edges))
    argument = _circuit_argument(found)
    for index, edge in enumerate(edges):
        for moved in _receivers_like(found, edge):
            if _edge_keys(moved, found.n_heads) & own:
                continue
            text = _label([moved if i == index else e for i, e in enumerate(edges)])
            found.alter(f"move {edge} to {moved.receiver}", MOVED_EDGES, **{argument: text})
    if not any(_receivers_like(found, edge) for edge in edges):
        found.notes.append("no moved edges: every edge of the circuit goes into the logits, which have no other receiver of their kind")


def _silencer(edge, found: _Catalogue):
    """The weight mutation after which ``edge`` carries nothing, or None (an embedding's edge into the logits).

    The sender's output zeroed (a head's OV, every head's of ``L0.attn``, an
    MLP's output); for an edge out of the embeddings, which no edit removes
    alone, the receiver's read of it: a head's QK (``.q`` / ``.k``: its attention
    is then uniform, whatever its input), a head's OV (``.v``), an MLP's output.
    """
    from ..engine import mutate

    sender, receiver = edge.sender, edge.receiver
    if sender.kind in ("head", "attn", "mlp"):
        parts = mutate.component_mutation(sender.without_positions(), found.model, "zero")
        if len(parts) == 1:
            return parts[0]
        return mutate.combined(f"zero OV of every head of layer {sender.layer}", "zero OV", parts) if parts else None
    if receiver.kind == "head":
        return (mutate.zero_qk if receiver.port in ("q", "k") else mutate.zero_ov)(receiver.layer, receiver.head)
    if receiver.kind == "mlp":
        return mutate.zero_mlp(receiver.layer)
    return None


def _silenced(found: _Catalogue, edges) -> dict:
    """Distinct silencing mutations (by name) -> the edges of ``edges`` each silences; the edges none silences under None."""
    out: dict = {}
    for edge in edges:
        mutation = _silencer(edge, found)
        slot = out.setdefault(None if mutation is None else mutation.name, [mutation, []])
        slot[1].append(edge)
    return out


def _silence_all(found: _Catalogue, edges) -> None:
    """``necessary``: one mutation that zeroes what every edge of C carries (then ablating C changes nothing)."""
    from ..engine import mutate

    groups = _silenced(found, edges)
    if None in groups:
        found.notes.append(f"no zeroing of what the edges carry: no weight edit removes {_label(groups[None][1])} alone "
                           "(the unembedding reads every sender)")
        return
    parts = [mutation for mutation, _ in groups.values()]
    family = parts[0].family if len({p.family for p in parts}) == 1 else "zero OV"
    found.add(mutate.combined(f"zero what the circuit's edges carry: {', '.join(p.name for p in parts)}", family, parts))


def _silence_each(found: _Catalogue, edges) -> None:
    """``minimal``: for each distinct edit, zero what the edges it silences carry (one mutation each)."""
    from ..engine import mutate

    for name, (mutation, silenced) in _silenced(found, edges).items():
        if name is None:
            found.notes.append(f"no zeroing of {_label(silenced)}: no weight edit removes an embedding's edge into the logits alone")
            continue
        found.add(mutate.combined(f"{name} (what {_label(silenced)} carr{'ies' if len(silenced) == 1 else 'y'})",
                                  mutation.family, [mutation]))


def _relabelled(edges, layer: int, a: int, b: int) -> str:
    """The edges' text with heads ``a`` and ``b`` of ``layer`` exchanged at both ends (ports and positions kept).

    The claim about C on the model with heads a and b swapped is the claim about
    this circuit on the model itself (a swap of two heads is a relabelling).
    """
    import dataclasses

    from ..model.components import Edge

    def swapped(end):
        if end.kind == "head" and end.layer == layer and end.head in (a, b):
            return dataclasses.replace(end, head=b if end.head == a else a)
        return end

    return _label([Edge(swapped(e.sender), swapped(e.receiver)) for e in edges])


def _moved_into_edges(found: _Catalogue, edges, matters: Callable[[str], bool], why: str) -> None:
    """"Not" claims about an edge circuit: swap each head its edges name with each head of its layer they do not name,
    where the relabelled circuit (what the swapped model's claim measures) ``matters`` (measured on the model)."""
    from ..engine import mutate

    named = _named_heads(edges)
    heads = _member_heads(named)
    label = _label(edges)
    if not heads:
        found.reason = (f"{label} names no single head: nothing can be swapped into its edges (embeddings, MLPs and whole "
                        "attention layers are not swapped), so no mutation moves function into it")
        return
    pairs = [(m, other) for m in heads for other in _heads_outside(found, m.layer, named)]
    texts = {(m.layer, m.head, other): _relabelled(edges, m.layer, m.head, other) for m, other in pairs}
    _prewarm_sets(found.call, found.result.kind, found.model, list(texts.values()), singles=False)
    moved, passed_over = [], []
    for m, other in pairs:
        if matters(texts[(m.layer, m.head, other)]):
            moved.append(f"L{m.layer}H{other} for {m}")
            found.add(mutate.swap_heads(m.layer, m.head, other))
        else:
            passed_over.append(f"L{m.layer}H{other} for {m}")
    if not found.candidates:
        outside = ", ".join(passed_over) or "none: every head of their layers is named"
        found.reason = (f"no swap moves function into the edges {label}: with a head of its layer that they do not name in "
                        f"a named head's place, the circuit {why} for none (measured: {outside})")
        return
    found.notes.append(f"swapped into the circuit's edges: {', '.join(moved)} (with it in that head's place the circuit {why} "
                       "on the model, measured)")
    if passed_over:
        found.notes.append(f"not swapped in: {', '.join(passed_over)} (measured: the circuit with it in that head's place does "
                           "not, so a swap would move nothing that matters into the edges)")


def _set_swaps(found: _Catalogue, components) -> None:
    """Every head of C swapped out at once (each with a head of its layer outside C), in :data:`SET_SWAPS` seeded variants.

    Set claims (necessity, sufficiency, faithfulness) are about C as a whole:
    the swapped model computes what the original computes with C's heads
    relabelled as heads outside C, so the claim should fail there. Partners
    differ between variants where the layers allow it.
    """
    import itertools

    import numpy as np

    from ..engine import mutate

    components = _named_heads(components)
    members = _member_heads(components)
    if not members:
        found.notes.append("no swaps: the circuit has no single heads (MLPs and whole attention layers are not swapped)")
        return
    by_layer: dict[int, list] = {}
    for member in members:
        by_layer.setdefault(member.layer, []).append(member.head)
    choices, full = [], []
    for layer, heads in sorted(by_layer.items()):
        outside = _heads_outside(found, layer, components)
        if len(outside) < len(heads):
            full.append(f"layer {layer} has {len(outside)} head{'s' if len(outside) != 1 else ''} outside the circuit "
                        f"for its {len(heads)}")
            continue
        choices.append([(layer, heads, partners) for partners in itertools.permutations(outside, len(heads))])
    if not choices:
        found.notes.append(f"no swaps out of the circuit: {'; '.join(full)}")
        return
    if full:
        found.notes.append(f"swaps out of the circuit leave the heads of full layers in place: {'; '.join(full)}")
    rng = np.random.default_rng([found.seed, 0x5A4B])
    if math.prod(len(c) for c in choices) <= 20_000:
        every = list(itertools.product(*choices))
        picks = [every[i] for i in rng.permutation(len(every))[:SET_SWAPS]]
    else:
        picks, seen = [], set()
        while len(picks) < SET_SWAPS:
            pick = tuple(layer_choices[int(rng.integers(len(layer_choices)))] for layer_choices in choices)
            if pick not in seen:
                seen.add(pick)
                picks.append(pick)
    for pick in picks:
        pairs = [(layer, head, partner) for layer, heads, partners in pick for head, partner in zip(heads, partners)]
        text = ", ".join(f"L{layer}H{head} with L{layer}H{partner}" for layer, head, partner in pairs)
        what = "every head of the circuit" if not full else "the circuit's heads"
        name = f"swap {what} out: {text}" if len(pairs) > 1 or full else f"swap the circuit's head out: {text}"
        found.add(mutate.combined(name, "swap heads", [mutate.swap_heads(layer, head, partner) for layer, head, partner in pairs]))


def _replaced(components, index: int, layer: int, head: int) -> str:
    """The components' text with component ``index`` replaced by head ``layer``/``head`` (its port and positions kept)."""
    texts = [str(c) for c in components]
    texts[index] = _head_text(layer, head, components[index])
    return " ".join(texts)


def _moved_in(found: _Catalogue, components, matters: Callable[[int, int, int], bool], why: str) -> None:
    """Not-claims of set kinds: swap each member head with each head of its layer outside C for which ``matters`` holds.

    ``matters(index, layer, other)``: whether head ``other`` (measured on the
    model) matters enough that moving it into C in place of member ``index``
    should falsify the claim. ``why`` says what was measured, for the notes.
    """
    from ..engine import mutate

    label = _label(components)
    members = [(i, c) for i, c in enumerate(components) if c.kind == "head"]
    if not members:
        found.reason = (f"{label} has no single heads: nothing can be swapped into it (MLPs and whole attention layers are "
                        "not swapped), so no mutation moves function into it")
        return
    moved, passed_over = [], []
    for index, member in members:
        for other in _heads_outside(found, member.layer, components):
            if matters(index, member.layer, other):
                moved.append(f"L{member.layer}H{other}")
                found.add(mutate.swap_heads(member.layer, member.head, other))
            else:
                passed_over.append(f"L{member.layer}H{other}")
    layers = sorted({member.layer for _, member in members})
    where = f"layer{'s' if len(layers) > 1 else ''} {', '.join(map(str, layers))}"
    if not found.candidates:
        found.reason = (f"no head of {where} outside {label} {why} on the model (measured: "
                        f"{', '.join(dict.fromkeys(passed_over)) or 'no head outside it'}), so no swap moves function into it")
        return
    found.notes.append(f"swapped into the circuit: {', '.join(dict.fromkeys(moved))} ({why} on the model, measured)")
    skipped = [h for h in dict.fromkeys(passed_over) if h not in moved]
    if skipped:
        found.notes.append(f"not swapped in: {', '.join(skipped)} (measured: they do not, so a swap would move nothing "
                           "that matters into the circuit)")


def _necessary(found: _Catalogue) -> None:
    from ..engine import mutate

    components = _components(found.arguments["components"], found.model)
    if found.negative and _is_edges(components):
        maximum = found.result.max_value
        _moved_into_edges(found, components,
                          lambda text: found.holds_with(components=text, min_drop=maximum, max_drop=None),
                          f"is necessary with min_drop={maximum:g} (its drop's lower bound)")
        return
    if found.negative:
        maximum = found.result.max_value
        own = {}

        def matters(index, layer, other):  # the head's own drop is at least max_drop (its lower bound)
            text = _head_text(layer, other, components[index])
            if text not in own:
                own[text] = found.holds_with(components=text, min_drop=maximum, max_drop=None)
            return own[text]

        outside = [_head_text(m.layer, o, m) for m in components if m.kind == "head" for o in _heads_outside(found, m.layer, components)]
        _prewarm_sets(found.call, "necessary", found.model, list(dict.fromkeys(outside)), singles=False)
        _moved_in(found, components, matters, f"has its own drop at least max_drop={maximum:g}")
        return
    if _is_edges(components):
        _silence_all(found, components)
    else:
        zeroed = [m for c in components for m in mutate.component_mutation(c, found.model, "zero")]
        if zeroed:
            found.add(mutate.combined(f"zero the outputs of {_label(components)}", "zero OV", zeroed))
    _set_swaps(found, components)
    if _is_edges(components):
        _moved_edge_sets(found, components)
    _random_circuits(found, components)
    found.shuffle()


def _sufficient(found: _Catalogue) -> None:
    components = _components(found.arguments["circuit"], found.model)
    if found.negative and _is_edges(components):
        maximum = found.result.max_value
        _moved_into_edges(found, components, lambda text: not found.holds_with(circuit=text),
                          f"recovers more than max_recovery={maximum:g}")
        return
    if found.negative:
        maximum = found.result.max_value

        def matters(index, layer, other):  # C with that head in the member's place recovers more than max_recovery
            return not found.holds_with(circuit=_replaced(components, index, layer, other))

        replaced = [_replaced(components, i, m.layer, o) for i, m in enumerate(components) if m.kind == "head"
                    for o in _heads_outside(found, m.layer, components)]
        _prewarm_sets(found.call, "sufficient", found.model, replaced)
        _moved_in(found, components, matters, f"in the member's place makes the circuit recover more than max_recovery={maximum:g}")
        return
    _set_swaps(found, components)
    if _is_edges(components):
        _moved_edge_sets(found, components)
    _random_circuits(found, components)
    found.shuffle()


def _minimal(found: _Catalogue) -> None:
    from ..engine import mutate

    components = _components(found.arguments["circuit"], found.model)
    if _is_edges(components):
        _silence_each(found, components)
    for component in [] if _is_edges(components) else components:
        zeroed = mutate.component_mutation(component, found.model, "zero")
        if zeroed:
            found.add(mutate.combined(f"zero the output of {component}", zeroed[0].family, zeroed))
    _swaps_out(found, components)
    if _is_edges(components):
        _moved_edges(found, components)
    _random_circuits(found, components)
    found.shuffle()


def _complete(found: _Catalogue) -> None:
    from ..engine import mutate

    components = _components(found.arguments["circuit"], found.model)
    named = _named_heads(components)
    for member in _member_heads(named):
        for other in _heads_outside(found, member.layer, named):
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

    senders = _components(found.arguments["sender"], found.model)
    receiver = found.arguments["receiver"]
    target = None
    if not (isinstance(receiver, str) and receiver.strip() == "logits"):
        target = Component.parse(receiver).validate(found.model)
        if target.kind == "head":
            skip = [s.head for s in senders if s.kind == "head" and s.layer == target.layer]
            found.swaps_measured(target.layer, target.head,
                                 lambda other: {"receiver": _head_text(target.layer, other, target)}, skip=skip)
    if found.negative:  # "does not carry": move the path in, swapping a sender with a head whose path does carry it
        for index, sender in enumerate(senders):
            if sender.kind != "head":
                continue
            skip = [s.head for s in senders if s.kind == "head" and s.layer == sender.layer]
            if target is not None and target.kind == "head" and target.layer == sender.layer:
                skip.append(target.head)
            found.swaps_measured(sender.layer, sender.head,
                                 lambda other, index=index, sender=sender: {"sender": _replaced(senders, index, sender.layer, other)},
                                 skip=skip)
        if not found.candidates:
            found.reason = ("no head of the receiver's or the senders' layers carries the effect on a path in their place "
                            "(measured): no swap could move the path into this 'does not carry' claim")
        return
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

    if found.negative:
        found.reason = ("no mutation in the catalogue moves information into a hook: a 'not' probe claim (only max_accuracy) "
                        "has no mutation meant to falsify it")
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

    A mutation is killed when the replayed claim fails on it, survived when
    it holds, and undecided when the replay raises a circuitcheck error (the
    claim could not be measured there); the score is killed / decided.

    The user's model is never edited: the mutations run on a private copy, and
    what needs the unmutated model on a second one that is never mutated (the
    two take twice the model's memory); both are kept in the model's session
    for the next claim, with their cached runs (freed with the model, made
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
    """The model's private copies (in its session; made again when its weights changed): one to mutate, one for reference."""
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
        reference = mutator.reference  # never mutated: what needs the unmutated model runs here, on its cached runs
        on_reference, on_copy = _rebound(call, reference), _rebound(call, mutator.model)
        control = _replay(on_reference, reference, {})
        if control.error is not None or not control.passed or not _close(control.value, result.value):
            seen = control.error or f"{'held' if control.passed else 'failed'} with value {claim_format.number(control.value)}"
            power.status = NOT_MEASURED
            power.reason = (f"the claim run again on an unmutated copy of its model {seen}, where it measured "
                            f"{claim_format.number(result.value)}: it cannot be replayed faithfully")
            return
        candidates, notes, reason = catalogue(on_reference, result, reference, seed=seed, max_mutations=max_mutations)
        power.notes = notes
        power.catalogue = len(candidates)
        if not candidates:
            power.status, power.reason = NOT_MEASURED, reason
            return
        chosen = choose(candidates, max_mutations, seed)
        if len(candidates) > len(chosen):
            power.notes.append(f"{len(chosen)} of {len(candidates)} candidate mutations run (max_mutations={max_mutations})")
        alterations = [c for c in chosen if c.mutation is None]
        _prewarm(on_reference, result, reference, alterations)
        outcomes: dict[int, Outcome] = {}
        for index, candidate in enumerate(chosen):
            if candidate.mutation is None:
                outcomes[index] = _outcome(candidate, _replay(on_reference, reference, dict(candidate.changes)))
        for index, candidate in enumerate(chosen):
            if candidate.mutation is not None:
                with mutator.mutated(candidate.mutation) as mutant:
                    replayed = _without_gap(on_copy, result.kind, mutant) or _replay(on_copy, mutant, {})
                    outcomes[index] = _outcome(candidate, replayed)
        power.mutations = [outcomes[i] for i in range(len(chosen))]
        if not power.decided:
            power.status = NOT_MEASURED
            power.reason = (f"no mutation could be decided: the claim could not be measured on any of the {power.total} "
                            f"mutations run (first: {power.mutations[0].error})")
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
    return Outcome(candidate.name, candidate.family, killed=replayed.error is None and not replayed.passed,
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


#: Kinds whose claims divide by the gap m(M) - m(∅) and are made of circuit-lattice variants (claims/lattice.py).
LATTICE_KINDS = ("necessary", "sufficient", "faithful", "minimal", "complete")


def _without_gap(call: registry.ClaimCall, kind: str, model) -> _Replayed | None:
    """The replay's outcome when the claim's gap m(M) - m(∅) on ``model`` is not distinguishable from zero, else None.

    A causal claim measures its gap before it decides, and raises
    :class:`~circuitcheck.claims.robustness.GapError` when the gap's interval
    includes zero: this measures that gap first (the full model and the fully
    ablated run, under the claim's first ablation: the one its check starts
    with) and returns that same error without running the rest. With a gap,
    the claim then finds the ablated run measured. Anything this cannot
    build is left to the replay (None).
    """
    if kind not in LATTICE_KINDS:
        return None
    from . import causal, lattice, robustness, stats

    arguments = call.arguments
    try:
        with call.replaying(model):
            first = robustness.ablations(arguments.get("ablation"))[0]
            setup = causal._setup(model, arguments.get("task"), first, arguments.get("seed"),
                                  arguments.get("confidence", stats.DEFAULT_CONFIDENCE), arguments.get("keep"))
            ablate_all_but, _ = causal.builders(setup, causal._members(arguments[_circuit_argument_of(kind)], model))
            (ablated,), _ = lattice.run_variants(setup, [ablate_all_but([])], desc="power: gap")
            causal._check_gap(lattice.full_metric(setup), ablated, setup)
    except robustness.GapError as error:
        return _Replayed(None, None, None, None, f"{type(error).__name__}: {error}")
    except CircuitCheckError:
        return None
    return None


def _prewarm(call: registry.ClaimCall, result, reference, alterations: Sequence[Candidate]) -> None:
    """Measure the random circuits of a circuit claim in one batched engine call (the replays then find them measured)."""
    name = _circuit_argument_of(result.kind)
    circuits = [dict(c.changes)[name] for c in alterations if name in dict(c.changes)]
    _prewarm_sets(call, result.kind, reference, circuits)


def _lattice_masks(kind: str, arguments: dict, n: int, singles: bool = True) -> tuple[list[int], list[int]]:
    """The keep and drop masks over an n-component circuit that a claim of ``kind`` measures first (claims/lattice.py)."""
    from . import minimality, subsets

    everything = subsets.full(n)
    if kind == "necessary":
        return [0], [everything] + ([1 << i for i in range(n)] if singles and n > 1 else [])
    if kind in ("sufficient", "faithful"):
        return [everything, 0], []
    exact = n <= subsets.MAX_EXACT_PLAYERS
    if kind == "minimal":
        method = arguments.get("method") or minimality.DEFAULT_METHOD
        if method != "leave-one-out" and exact:
            return list(range(1 << n)), []
        if method == "shapley":  # sampled orders (seeded in the check): only what every order starts and ends with
            return [everything, 0], []
        return [everything, 0, *[everything & ~(1 << i) for i in range(n)]], []
    if kind == "complete":
        ks = list(range(1 << n)) if exact else list(dict.fromkeys([0, *[1 << i for i in range(n)], everything]))
        return [everything & ~k for k in ks] + [0], [k for k in ks if k]
    return [], []


def _prewarm_sets(call: registry.ClaimCall, kind: str, reference, circuits: Sequence[str], singles: bool = True) -> None:
    """Measure, in one batched engine call, the variants a claim of ``kind`` on each of ``circuits`` starts from.

    ``circuits``: component strings. The claims' replays (on ``reference``,
    with the claim's task, ablations, seed and ``keep=``) then find those
    variants measured (the lattice's memory of the reference's cached runs).
    What this does not build (greedy searches, sampled orders) the replays
    measure themselves, and anything it cannot build is left to them: the
    numbers are the same either way.
    """
    if kind not in LATTICE_KINDS or not circuits:
        return
    from . import causal, lattice, minimality, robustness, stats

    arguments = call.arguments
    try:
        with call.replaying(reference):
            for ablation in robustness.ablations(arguments.get("ablation")):
                setup = causal._setup(reference, arguments.get("task"), ablation, arguments.get("seed"),
                                      arguments.get("confidence", stats.DEFAULT_CONFIDENCE), arguments.get("keep"))
                variants = []
                for text in circuits:
                    members = causal._members(text, reference)
                    circuit = minimality.lattice_of(setup, members)
                    keep_masks, drop_masks = _lattice_masks(kind, arguments, len(members), singles)
                    variants += [circuit._ablate_all_but(circuit.members(m)) for m in dict.fromkeys([0, *keep_masks])]
                    variants += [circuit._ablate(circuit.members(m)) for m in dict.fromkeys(drop_masks) if m]
                lattice.run_variants(setup, variants, desc="power: circuits measured together")
    except CircuitCheckError:
        return  # each replay then measures (or reports) its own circuit


def _circuit_argument_of(kind: str) -> str:
    return "components" if kind == "necessary" else "circuit"
