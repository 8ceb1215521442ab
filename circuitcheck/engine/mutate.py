"""Weight mutations of a model, on a private copy that is restored exactly after each one.

Mutation testing of a claim ("test power", DESIGN.md) re-runs the claim on
models whose weights were changed so that a true claim should no longer hold.
This module makes those models. It never touches the user's model object:

- :class:`Mutator` deep-copies the model twice (leaving out circuitcheck's
  per-model session, which holds a lock and the caches of the original): the
  *mutable* copy (:attr:`Mutator.model`), and the *reference* copy
  (:attr:`Mutator.reference`), which is never written. The reference holds
  the weights every mutation is undone to, and the claims' replays that need
  the unmutated model run on it: its weights never change, so its session's
  cached runs and measured variants last from one claim to the next. The two
  copies take twice the model's memory, on the model's device;
- :meth:`Mutator.mutated` applies a :class:`Mutation` in place under
  ``torch.no_grad()``, hands out the copy, and afterwards copies the saved
  tensors back into every parameter the mutation wrote (found by the version
  counters that in-place writes move) from the reference. The copy's content
  checksum (:mod:`circuitcheck.engine.checksum`, every byte) must then equal
  the one it had before the mutation, and :meth:`Mutator.verify_source`
  checks that the user's model still has the fingerprint (identity and
  content) it had when the copies were made, and the reference its content;
  any mismatch is a :class:`MutationError`.

Head-level edits use TransformerLens's conventions: ``W_Q`` / ``W_K`` / ``W_V``
``[n_heads, d_model, d_head]``, ``W_O`` ``[n_heads, d_head, d_model]``, biases
``b_Q`` / ``b_K`` / ``b_V`` ``[n_heads, d_head]``, ``W_out`` ``[d_mlp, d_model]`` and
``b_out`` ``[d_model]``. A legacy ``HookedTransformer`` stores them as
parameters. A ``TransformerBridge`` computes them on every read as *views* of
the wrapped modules' weights (``q``/``k``/``v``/``o`` Linear or Conv1D layers; for
GPT-2 the separate ``q``/``k``/``v`` weights are themselves views into the fused
``c_attn`` weight), the same weights the forward pass and the fast path
(:mod:`circuitcheck.engine.fastpath`, which reads ``block.attn.W_Q`` ...) use. So a
head's slice is written in place through the view: ``attn.W_Q[h].copy_(x)``.
Every write is checked: the view must share memory with one of the model's
parameters, and reading the weight again must give the written values;
otherwise the model's layout is not one this module can edit, and it says so.

Grouped-query attention (fewer key/value heads than heads): keys and values
are shared by a group of heads, so head edits there change only ``W_Q`` /
``b_Q`` and ``W_O`` (zeroing a head's queries still makes its attention
uniform, zeroing its ``W_O`` still removes its output).

Every mutation is deterministic: scrambles and the checkpoint shuffle draw
their permutations from a ``torch.Generator`` seeded by the mutation's seed
and its target, so the same mutation gives the same weights on every run.
"""

from __future__ import annotations

import copy as _copy
import threading
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import torch

from ..errors import CircuitCheckError
from ..model.components import Component, model_label
from .checksum import content_checksums
from .session import _ATTRIBUTE as _SESSION_ATTRIBUTE
from .session import session_of


class MutationError(CircuitCheckError):
    """A mutation that cannot be applied or undone exactly (the message names the weight and the model)."""


#: The families of weight mutations, as results name them.
FAMILIES = (
    "scramble QK",
    "zero QK",
    "scramble OV",
    "zero OV",
    "scramble MLP output",
    "zero MLP output",
    "swap heads",
    "copy head",
    "copy QK",
    "copy OV",
    "shuffle checkpoint",
)

#: Edit operations (one :class:`Edit` each) and what they do.
OPERATIONS = {
    "scramble_qk": "permute the entries of the head's W_Q and W_K slices and of b_Q, b_K (each its own permutation; norms kept)",
    "zero_qk": "set the head's W_Q, W_K, b_Q and b_K slices to zero: every query-key score is 0, so its attention is uniform",
    "scramble_ov": "permute the entries of the head's W_V and W_O slices and of b_V",
    "zero_ov": "set the head's W_V, W_O and b_V slices to zero: the head writes nothing",
    "scramble_mlp": "permute the entries of the MLP's W_out and b_out",
    "zero_mlp": "set the MLP's W_out and b_out to zero: the MLP writes nothing",
    "swap": "exchange two heads of one layer: all their W_Q, W_K, W_V, W_O, b_Q, b_K, b_V slices",
    "copy": "write one head's W_Q, W_K, W_V, W_O, b_Q, b_K, b_V slices over another head of its layer",
    "copy_qk": "write one head's W_Q, W_K, b_Q and b_K slices over another head of its layer: the target attends like the source",
    "copy_ov": "write one head's W_V, W_O and b_V slices over another head of its layer: the target writes what the source would",
    "shuffle": "permute the entries of every weight matrix (every parameter with two or more dimensions)",
}

_QK = (("W_Q", "q"), ("W_K", "k"), ("b_Q", "q"), ("b_K", "k"))
_OV = (("W_V", "v"), ("b_V", "v"), ("W_O", "o"))
_HEAD_WEIGHTS = _QK + _OV


@dataclass(frozen=True)
class Edit:
    """One edit of the weights: ``op`` (one of :data:`OPERATIONS`) at ``layer`` on ``heads``.

    ``heads``: the head for head edits, ``(a, b)`` for ``swap``, ``(source, target)``
    for ``copy``, ``copy_qk`` and ``copy_ov``, empty for MLP edits and ``shuffle``. ``seed`` seeds scrambles and
    the shuffle.
    """

    op: str
    layer: int | None = None
    heads: tuple[int, ...] = ()
    seed: int = 0

    def __post_init__(self):
        if self.op not in OPERATIONS:
            raise MutationError(f"edit {self.op!r} is not valid: valid edits are {', '.join(OPERATIONS)}")
        wanted = {"swap": 2, "copy": 2, "copy_qk": 2, "copy_ov": 2, "shuffle": 0, "scramble_mlp": 0, "zero_mlp": 0}.get(self.op, 1)
        if len(self.heads) != wanted:
            raise MutationError(f"edit {self.op!r} takes {wanted} head{'s' if wanted != 1 else ''}, got {self.heads!r}")
        if wanted == 2 and self.heads[0] == self.heads[1]:
            raise MutationError(f"edit {self.op!r} needs two different heads, got L{self.layer}H{self.heads[0]} twice")
        if self.op != "shuffle" and (isinstance(self.layer, bool) or not isinstance(self.layer, int)):
            raise MutationError(f"edit {self.op!r} needs a layer (an integer), got {self.layer!r}")


@dataclass(frozen=True)
class Mutation:
    """A named change of a model's weights: one or more :class:`Edit` s applied in order.

    ``name`` says what it does (``scramble QK of L1H3``); ``family`` is one of
    :data:`FAMILIES`. Build mutations with the functions of this module
    (:func:`scramble_qk`, :func:`swap_heads`, ...).
    """

    name: str
    family: str
    edits: tuple[Edit, ...] = field(default_factory=tuple)

    def apply(self, model) -> None:
        """Apply the edits to ``model`` in place (under ``torch.no_grad()``); :class:`MutationError` if one cannot be made."""
        with torch.no_grad():
            for edit in self.edits:
                _apply(model, edit)

    def __str__(self) -> str:
        return self.name


# Building mutations ------------------------------------------------------------------------------


def _head(layer: int, head: int) -> str:
    return f"L{layer}H{head}"


def scramble_qk(layer: int, head: int, seed: int = 0) -> Mutation:
    """Permute the entries of the head's W_Q and W_K slices (and b_Q, b_K), seeded: same norms, random attention."""
    return Mutation(f"scramble QK of {_head(layer, head)}", "scramble QK", (Edit("scramble_qk", layer, (head,), seed),))


def zero_qk(layer: int, head: int) -> Mutation:
    """Zero the head's W_Q, W_K, b_Q and b_K: its attention becomes uniform over the positions it can see."""
    return Mutation(f"zero QK of {_head(layer, head)}", "zero QK", (Edit("zero_qk", layer, (head,)),))


def scramble_ov(layer: int, head: int, seed: int = 0) -> Mutation:
    """Permute the entries of the head's W_V and W_O slices (and b_V), seeded."""
    return Mutation(f"scramble OV of {_head(layer, head)}", "scramble OV", (Edit("scramble_ov", layer, (head,), seed),))


def zero_ov(layer: int, head: int) -> Mutation:
    """Zero the head's W_V, W_O and b_V: the head writes nothing into the residual stream."""
    return Mutation(f"zero OV of {_head(layer, head)}", "zero OV", (Edit("zero_ov", layer, (head,)),))


def scramble_mlp(layer: int, seed: int = 0) -> Mutation:
    """Permute the entries of the MLP's W_out and b_out, seeded."""
    return Mutation(f"scramble output of L{layer}.mlp", "scramble MLP output", (Edit("scramble_mlp", layer, (), seed),))


def zero_mlp(layer: int) -> Mutation:
    """Zero the MLP's W_out and b_out: the MLP writes nothing."""
    return Mutation(f"zero output of L{layer}.mlp", "zero MLP output", (Edit("zero_mlp", layer),))


def swap_heads(layer: int, a: int, b: int) -> Mutation:
    """Exchange heads ``a`` and ``b`` of ``layer`` (all their Q, K, V, O weights and biases)."""
    return Mutation(f"swap {_head(layer, a)} and {_head(layer, b)}", "swap heads", (Edit("swap", layer, (a, b)),))


def copy_head(layer: int, source: int, target: int) -> Mutation:
    """Write head ``source``'s weights over head ``target`` of the same layer (a second copy of its function)."""
    return Mutation(f"copy {_head(layer, source)} onto {_head(layer, target)}", "copy head", (Edit("copy", layer, (source, target)),))


def copy_qk(layer: int, source: int, target: int) -> Mutation:
    """Write head ``source``'s W_Q, W_K, b_Q and b_K over head ``target`` of the same layer: ``target`` attends like ``source``.

    ``target`` keeps its own W_V, W_O and b_V (it moves what it moved before, from where ``source`` looks).
    """
    return Mutation(f"copy the QK of {_head(layer, source)} onto {_head(layer, target)}", "copy QK",
                    (Edit("copy_qk", layer, (source, target)),))


def copy_ov(layer: int, source: int, target: int) -> Mutation:
    """Write head ``source``'s W_V, W_O and b_V over head ``target`` of the same layer: ``target`` writes what ``source`` would.

    ``target`` keeps its own W_Q, W_K, b_Q and b_K (it attends as before).
    """
    return Mutation(f"copy the OV of {_head(layer, source)} onto {_head(layer, target)}", "copy OV",
                    (Edit("copy_ov", layer, (source, target)),))


def shuffle_checkpoint(seed: int = 0) -> Mutation:
    """Permute the entries of every weight matrix of the model, seeded (a model with the same numbers and no function)."""
    return Mutation(f"shuffle the checkpoint (seed {seed})", "shuffle checkpoint", (Edit("shuffle", None, (), seed),))


def combined(name: str, family: str, mutations) -> Mutation:
    """One mutation made of several (their edits in order), e.g. "zero OV of L0H0 L1H3"."""
    return Mutation(name, family, tuple(edit for mutation in mutations for edit in mutation.edits))


def component_mutation(component: Component, model, how: str, seed: int = 0) -> list[Mutation]:
    """The mutations that zero (``how="zero"``) or scramble (``"scramble"``) one component's output.

    A head: its OV; an attention layer: every head's OV; an MLP: its output.
    Embeddings and head inputs have no such mutation (an empty list).
    """
    if how not in ("zero", "scramble"):
        raise MutationError(f"how={how!r} is not valid: use 'zero' or 'scramble'")
    if component.kind == "head" and component.port is None:
        return [zero_ov(component.layer, component.head) if how == "zero" else scramble_ov(component.layer, component.head, seed)]
    if component.kind == "attn":
        return [zero_ov(component.layer, h) if how == "zero" else scramble_ov(component.layer, h, seed) for h in range(model.cfg.n_heads)]
    if component.kind == "mlp" and not getattr(model.cfg, "attn_only", False):
        return [zero_mlp(component.layer) if how == "zero" else scramble_mlp(component.layer, seed)]
    return []


# Applying edits ----------------------------------------------------------------------------------


def _generator(seed: int, edit: Edit, salt: int) -> torch.Generator:
    """A generator for one edit: seeded by the mutation's seed, its target and which weight (``salt``)."""
    key = (int(seed) * 1_000_003 + (edit.layer or 0) * 10_007 + sum(edit.heads) * 101 + salt) % (2**63 - 1)
    return torch.Generator().manual_seed(key)


def _permuted(tensor: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    flat = tensor.reshape(-1)
    order = torch.randperm(flat.numel(), generator=generator).to(flat.device)
    return flat[order].reshape(tensor.shape)


def _attn(model, layer: int):
    Component("head", layer, 0).validate(model)
    return model.blocks[layer].attn


def _mlp(model, layer: int):
    Component("mlp", layer).validate(model)  # names the layers, and refuses attention-only models
    return model.blocks[layer].mlp


def _check_head(model, layer: int, head: int) -> None:
    Component("head", layer, head).validate(model)


def _shared_kv(attn, model) -> bool:
    return attn.W_K.shape[0] != model.cfg.n_heads


def _weights(attn, model) -> list[str]:
    """The per-head weights a head edit may write: keys and values only where each head has its own."""
    shared = _shared_kv(attn, model)
    return [name for name, part in _HEAD_WEIGHTS if not (shared and part in ("k", "v"))]


def _storages(model) -> set[int]:
    return {p.untyped_storage().data_ptr() for p in model.parameters()}


def _write(model, owner, name: str, index, value: torch.Tensor, where: str) -> None:
    """``owner.<name>[index] = value`` through the weight's view, then checked (see the module's docstring)."""
    tensor = getattr(owner, name, None)
    if tensor is None:
        return  # a bias the model does not have
    if tensor.untyped_storage().data_ptr() not in _storages(model):
        raise MutationError(
            f"cannot edit {name} of {where} in {model_label(model)}: {type(owner).__name__}.{name} is not a view of the "
            "model's parameters (a copy), so a write would not reach the weights the forward pass uses"
        )
    target = tensor if index is None else tensor[index]
    target.copy_(value)
    again = getattr(owner, name)
    again = again if index is None else again[index]
    if not torch.equal(again, value.to(again.dtype)):
        raise MutationError(
            f"cannot edit {name} of {where} in {model_label(model)}: the write did not read back "
            f"({type(owner).__name__}.{name} is computed in a way this module cannot write through)"
        )


def _read(owner, name: str, index) -> torch.Tensor | None:
    tensor = getattr(owner, name, None)
    if tensor is None:
        return None
    return (tensor if index is None else tensor[index]).detach().clone()


def _apply(model, edit: Edit) -> None:
    op = edit.op
    if op == "shuffle":
        _shuffle(model, edit)
        return
    if op in ("scramble_mlp", "zero_mlp"):
        mlp = _mlp(model, edit.layer)
        where = f"L{edit.layer}.mlp"
        for salt, name in enumerate(("W_out", "b_out")):
            value = _read(mlp, name, None)
            if value is None:
                continue
            new = torch.zeros_like(value) if op == "zero_mlp" else _permuted(value, _generator(edit.seed, edit, salt))
            _write(model, mlp, name, None, new, where)
        return
    attn = _attn(model, edit.layer)
    for head in edit.heads:
        _check_head(model, edit.layer, head)
    names = _weights(attn, model)
    if op in ("swap", "copy", "copy_qk", "copy_ov"):
        a, b = edit.heads
        where = f"L{edit.layer}H{a} and L{edit.layer}H{b}"
        parts = {"copy_qk": ("q", "k"), "copy_ov": ("v", "o")}.get(op, ("q", "k", "v", "o"))
        names = [name for name, part in _HEAD_WEIGHTS if part in parts and name in names]
        for name in names:
            first, second = _read(attn, name, a), _read(attn, name, b)
            if first is None:
                continue
            _write(model, attn, name, b, first, where)
            if op == "swap":
                _write(model, attn, name, a, second, where)
        return
    (head,) = edit.heads
    where = f"L{edit.layer}H{head}"
    part = {"scramble_qk": ("q", "k"), "zero_qk": ("q", "k"), "scramble_ov": ("v", "o"), "zero_ov": ("v", "o")}[op]
    for salt, (name, which) in enumerate(_HEAD_WEIGHTS):
        if which not in part or name not in names:
            continue
        value = _read(attn, name, head)
        if value is None:
            continue
        new = torch.zeros_like(value) if op.startswith("zero") else _permuted(value, _generator(edit.seed, edit, salt))
        _write(model, attn, name, head, new, where)


def _shuffle(model, edit: Edit) -> None:
    """Permute every weight matrix; parameters sharing memory (GPT-2's q/k/v inside c_attn) are shuffled once, as the largest."""
    largest: dict[int, tuple[int, torch.nn.Parameter]] = {}
    order: list[int] = []
    for index, parameter in enumerate(model.parameters()):
        if parameter.dim() < 2:
            continue
        key = parameter.untyped_storage().data_ptr()
        if key not in largest:
            order.append(key)
        if key not in largest or parameter.numel() > largest[key][1].numel():
            largest[key] = (index, parameter)
    for position, key in enumerate(order):
        index, parameter = largest[key]
        generator = torch.Generator().manual_seed((int(edit.seed) * 1_000_003 + index) % (2**63 - 1))
        parameter.copy_(_permuted(parameter.detach(), generator))


# The private copy --------------------------------------------------------------------------------


def private_copy(model):
    """A deep copy of ``model`` without circuitcheck's session (the copy gets a fresh one on first use).

    The copy is on the model's device, in the model's mode (eval), with the
    model's attributes (its spec and checkpoint labels). Raises
    :class:`MutationError` when the model cannot be deep-copied.
    """
    attributes = getattr(model, "__dict__", {})
    memo: dict[int, object] = {}
    session = attributes.get(_SESSION_ATTRIBUTE)
    if session is not None:
        memo[id(session)] = None  # the session holds a lock and the original's caches: never copied
    try:
        clone = _copy.deepcopy(model, memo)
    except Exception as error:  # noqa: BLE001 - any failure to copy means no mutation can run
        raise MutationError(
            f"cannot make a private copy of {model_label(model)} ({type(model).__name__}) to mutate: "
            f"copy.deepcopy failed with {type(error).__name__}: {error}"
        ) from None
    getattr(clone, "__dict__", {}).pop(_SESSION_ATTRIBUTE, None)
    return clone


def _tensors(model) -> list[torch.Tensor]:
    return list(model.parameters()) + (list(model.buffers()) if hasattr(model, "buffers") else [])


class Mutator:
    """A private copy of ``model`` to mutate, restored exactly after every mutation.

    ::

        mutator = Mutator(model)
        with mutator.mutated(zero_qk(1, 3)) as mutant:
            check_head(1, 3, "induction", model=mutant)   # measured on the mutated copy
        mutator.verify_source()                            # the user's model is as it was

    ``mutator.model`` is the copy (with its original weights outside
    :meth:`mutated`); ``mutator.reference`` is a second copy that is never
    mutated (run what needs the unmutated model there: its caches are never
    dropped by a mutation). One mutation at a time: :meth:`mutated` holds the
    mutator's lock for its block, so threads sharing a mutator take turns.
    """

    def __init__(self, model):
        self.source_label = model_label(model)
        self._source = weakref.ref(model)  # the copy may live in the model's session: no strong cycle through it
        self.source_fingerprint = session_of(model).fingerprint()
        self.model = private_copy(model)
        self.reference = private_copy(model)
        self._parameters = list(self.model.parameters())
        # The saved weights are the reference's own parameters (no third copy): they are never written.
        self._saved = [parameter.detach() for parameter in self.reference.parameters()]
        if len(self._saved) != len(self._parameters) or any(
                saved.shape != parameter.shape for saved, parameter in zip(self._saved, self._parameters)):
            raise MutationError(f"the two private copies of {self.source_label} do not have the same parameters")
        self._content = content_checksums(_tensors(self.model))
        for which in (self.model, self.reference):
            if content_checksums(_tensors(which)) != self.source_fingerprint[1]:
                raise MutationError(f"a private copy of {self.source_label} does not have the model's weights (its checksums differ)")
        self.lock = threading.RLock()
        self.applied = 0  # mutations applied and undone (for tests and benchmarks)

    def source_unchanged(self, model) -> bool:
        """Whether ``model`` is the model this copy was made from, with the same weights (identity and content)."""
        return model is self._source() and session_of(model).fingerprint() == self.source_fingerprint

    def verify_source(self) -> None:
        """:class:`MutationError` unless the user's model has the fingerprint it had when the copy was made."""
        source = self._source()
        if source is None:
            raise MutationError(f"{self.source_label} is gone: the mutations cannot be compared with the model they copied")
        if session_of(source).fingerprint() != self.source_fingerprint:
            raise MutationError(
                f"the weights of {self.source_label} changed while its mutations ran (their fingerprint differs): "
                "the mutations ran on a copy, so something else edited the model; measure again"
            )
        if content_checksums(_tensors(self.reference)) != self._content:
            raise MutationError(
                f"the reference copy of {self.source_label} (the unmutated weights) changed: something wrote to it; "
                "its measurements and the restored weights cannot be trusted, measure again"
            )

    @contextmanager
    def mutated(self, mutation: Mutation) -> Iterator[object]:
        """The copy with ``mutation`` applied, for the block; the saved weights are back (and verified) after it."""
        with self.lock:
            versions = [parameter._version for parameter in self._parameters]
            try:
                mutation.apply(self.model)
                yield self.model
            finally:
                self.restore(versions)
                self.applied += 1

    def restore(self, versions: list[int] | None = None) -> None:
        """Copy the saved tensors back (into the parameters written since ``versions``; all when None) and verify.

        Parameters that share memory with a written one are restored with it.
        :class:`MutationError` when the copy's content checksum then differs from the original's.
        """
        with self.lock, torch.no_grad():
            if versions is None:
                written = [True] * len(self._parameters)
            else:
                written = [parameter._version != version for parameter, version in zip(self._parameters, versions)]
            storages = {p.untyped_storage().data_ptr() for p, w in zip(self._parameters, written) if w}
            for parameter, saved, wrote in zip(self._parameters, self._saved, written):
                if wrote or parameter.untyped_storage().data_ptr() in storages:
                    parameter.copy_(saved)
            if content_checksums(_tensors(self.model)) == self._content:
                return
            for parameter, saved in zip(self._parameters, self._saved):  # something wrote past the version counters
                parameter.copy_(saved)
            if content_checksums(_tensors(self.model)) != self._content:
                raise MutationError(
                    f"the private copy of {self.source_label} could not be restored to its original weights "
                    "(its content checksum differs after copying the saved tensors back)"
                )

    def __repr__(self) -> str:
        return f"<Mutator of {self.source_label}: {self.applied} mutations applied and undone>"
