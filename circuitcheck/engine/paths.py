"""Path patching: let only a receiver read the senders' other output, built on ``Patcher.run``.

The senders' clean-minus-corrupted write to the residual stream (or the
reverse) is added to the receiver's own copy of its input, and the receiver's
input is recomputed from it (its LayerNorm and projection, read from the
model's weights); the result is an explicit-tensor :class:`Patch` that the
patcher runs like any other. Recomputing an input is verified once per model
and weights against the model's own activation, so an architecture this
cannot reach is an error, never a wrong number.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..errors import ArgumentError, CircuitCheckError, ComponentError
from ..model import context
from ..model.components import Component, Edge, model_label
from ..model.tasks import Task
from . import fastpath as _fastpath
from .patches import Patch
from .session import session_of
from .sweeps import Sweep


def sender_delta(patcher, task: Task, senders: Sequence[Component], direction: str = "denoise") -> torch.Tensor:
    """The change in what the senders write to the residual stream, ``[batch, pos, d_model]``.

    ``"denoise"``: clean write minus corrupted write (added on the corrupted run);
    ``"noise"``: corrupted minus clean (added on the clean run).
    """
    runs = patcher.runs(task)
    source, base = _path_runs(runs, direction)
    delta = None
    for sender in senders:
        hook = sender.hook_name
        runs.clean.ensure([hook])
        runs.corrupt.ensure([hook])
        if sender.kind == "head":
            if sender.port is not None:
                raise ComponentError(f"a path's sender must be an output, not the input {sender}")
            W_O = patcher.model.blocks[sender.layer].attn.W_O[sender.head]  # [d_head, d_model]
            diff = source[hook][:, :, sender.head] - base[hook][:, :, sender.head]
            write = diff @ W_O.to(diff.dtype)
        else:
            write = source[hook] - base[hook]
            if write.shape[0] != task.n_examples:  # e.g. a positional embedding without a batch dim
                write = write.expand(task.n_examples, *write.shape[1:])
        if sender.positions is not None:
            keep = torch.zeros(task.seq_len, dtype=write.dtype, device=write.device)
            keep[sender.positions.indices(task.seq_len)] = 1
            write = write * keep[None, :, None]
        delta = write if delta is None else delta + write
    if delta is None:
        raise CircuitCheckError("a path needs at least one sender")
    return delta


def path_patch(
    patcher, task: Task, senders: Sequence[Component], receivers: Sequence["Component | str"], direction: str = "denoise"
) -> torch.Tensor:
    """Per-example metric ``[receivers, batch]`` with each path sender(s) -> receiver patched (see :meth:`Patcher.path_patch`)."""
    runs = patcher.runs(task)
    delta = sender_delta(patcher, task, senders, direction)
    base_name = "corrupt" if direction == "denoise" else "clean"
    out = torch.empty(len(receivers), task.n_examples)
    variants: list[list[Patch]] = []
    rows: list[int] = []
    cache: dict[tuple, torch.Tensor] = {}
    for i, receiver in enumerate(receivers):
        if isinstance(receiver, str) and receiver == "logits":
            out[i] = _logits_path(patcher, runs, delta, base_name)
            continue
        receiver = Component.parse(receiver)
        for sender in senders:
            Edge.parse(f"{sender} -> {receiver}")  # the receiver must read after the sender writes
        variants.append(_receiver_patches(patcher, runs, receiver, delta, cache, base_name))
        rows.append(i)
    if variants:
        out[rows] = patcher.run(task, variants, base=base_name, desc="path patching")
    return out


def path_sweep(patcher, task: Task, sender: "Component | str", port: str = "q", direction: str = "denoise") -> Sweep:
    """Path patching from ``sender`` into the ``port`` input of every later head: a :class:`Sweep` over ``(layer, head)``.

    Only layers after the sender's are measured (a head reads only what earlier
    layers wrote), so the sweep's layers start at ``sender.layer + 1``
    (TransformerLens's ``get_act_patch_direct_path`` has every layer and writes
    0.0 before that). Its ``mean`` is the mean metric, ``normalized`` puts the
    corrupted run at 0 and the clean run at 1, as every sweep's; inside a test
    the heatmap goes to the report like :meth:`Patcher.sweep`'s.
    """
    sender = Component.parse(sender)
    if port not in ("q", "k", "v"):
        raise ArgumentError(f"port={port!r} is not valid: a path sweep patches the 'q', 'k' or 'v' input of every later head")
    cfg = patcher.model.cfg
    first = 0 if sender.layer is None else sender.layer + 1
    if first >= cfg.n_layers:
        raise ComponentError(
            f"{sender} is in the last layer of model {model_label(patcher.model)} (layers 0-{cfg.n_layers - 1}): no later head reads it"
        )
    index = [(layer, head) for layer in range(first, cfg.n_layers) for head in range(cfg.n_heads)]
    receivers = [Component("head", layer, head, port) for layer, head in index]
    values = path_patch(patcher, task, [sender], receivers, direction)
    runs = patcher.runs(task)
    result = Sweep(f"path_{port}", ("layer", "head"), index, values, runs.clean_metric, runs.corrupt_metric, direction,
                   sender=str(sender))
    context.record_sweep(result.to_dict(title=result.title(task.name, model_label(patcher.model))))
    return result


def _path_runs(runs, direction: str):
    """(source, base) runs of a path patch."""
    if direction == "denoise":
        return runs.clean, runs.corrupt
    if direction == "noise":
        return runs.corrupt, runs.clean
    raise ValueError(f"direction={direction!r} is not valid: use 'denoise' (TransformerLens's direct path) or 'noise' (the IOI paper's)")


def _receiver_patches(patcher, runs, receiver: Component, delta: torch.Tensor, cache: dict, base_name: str) -> list[Patch]:
    """The variant that lets only ``receiver`` read the senders' other output: its input recomputed, as patches.

    A grouped-query model's key and value heads are shared: query head ``h`` reads key-value
    head ``h // (n_heads // n_key_value_heads)`` (Hugging Face's ``repeat_kv``), and
    ``attn.hook_k`` / ``attn.hook_v`` have one entry per key-value head. Patching that
    entry would let every head of its group read the senders, so the group's other
    heads get their base run's ``attn.hook_z`` back: nothing upstream of the receiver's
    layer changes in a path patch, so that is exactly what they compute when they read
    their unpatched keys and values.
    """
    layer = receiver.layer
    base = getattr(runs, base_name)
    if receiver.kind == "head" and receiver.port in ("q", "k", "v"):
        receiver.validate(patcher.model)
        n_heads = int(patcher.model.cfg.n_heads)
        key = ("head", layer, receiver.port)
        if key not in cache:
            resid = base[f"blocks.{layer}.hook_resid_pre"]
            cache[key] = _head_input(patcher.model, layer, receiver.port, resid + delta, runs)
        value = cache[key]  # [batch, pos, heads of the port (key-value heads for k and v), d_head]
        n_port = value.shape[2]
        if n_port == n_heads:
            return [Patch.at(f"blocks.{layer}.attn.hook_{receiver.port}", value, h=[receiver.head])]
        group = n_heads // n_port
        kv_head = receiver.head // group
        patches = [Patch.at(f"blocks.{layer}.attn.hook_{receiver.port}", value, h=[kv_head])]
        shared_by = [h for h in range(kv_head * group, (kv_head + 1) * group) if h != receiver.head]
        if shared_by:
            patches.append(Patch.at(f"blocks.{layer}.attn.hook_z", base_name, h=shared_by))
        return patches
    if receiver.kind == "mlp":
        key = ("mlp", layer)
        if key not in cache:
            mid = base[f"blocks.{layer}.hook_resid_mid"]
            cache[key] = _mlp_input(patcher.model, layer, mid + delta, runs)
        return [Patch.at(f"blocks.{layer}.mlp.hook_in", cache[key])]
    raise ComponentError(
        f"{receiver} cannot receive a path: receivers are head inputs (L{layer}H0.q, .k, .v), MLPs (L{layer}.mlp) or 'logits'"
    )


def _head_input(model, layer: int, port: str, resid: torch.Tensor, runs) -> torch.Tensor:
    """``attn.hook_{port}`` of layer ``layer`` recomputed from ``resid`` ``[batch, pos, d_model]``: ``[batch, pos, heads, d_head]``.

    ``heads``: the query heads for ``q``; for ``k`` and ``v`` one per key-value head
    (fewer than the query heads in a grouped-query model), as the hook has them.
    """
    attn = model.blocks[layer].attn
    W = getattr(attn, f"W_{port.upper()}")  # [heads of the port, d_model, d_head]
    b = getattr(attn, f"b_{port.upper()}", None)
    n_heads, n_port = int(model.cfg.n_heads), int(W.shape[0])
    if n_port < 1 or n_heads % n_port or (port == "q" and n_port != n_heads):
        raise CircuitCheckError(
            f"path patching into .{port} cannot read layer {layer}'s {port} projection on model {model_label(model)}: "
            f"{n_port} of them for {n_heads} heads (valid: {n_heads} for q; for k and v a divisor of {n_heads})"
        )
    ln1 = model.blocks[layer].ln1

    def project(x):
        out = torch.einsum("bpd,hde->bphe", ln1(x), W.to(x.dtype))
        return out if b is None else out + b.to(x.dtype)

    _verify(model, ("head", layer, port), lambda: project(runs.corrupt[f"blocks.{layer}.hook_resid_pre"]),
            runs.corrupt[f"blocks.{layer}.attn.hook_{port}"], f"the {port} input of layer {layer}'s heads")
    return project(resid)


def _mlp_input(model, layer: int, resid_mid: torch.Tensor, runs) -> torch.Tensor:
    ln2 = model.blocks[layer].ln2
    _verify(model, ("mlp", layer), lambda: ln2(runs.corrupt[f"blocks.{layer}.hook_resid_mid"]),
            runs.corrupt[f"blocks.{layer}.mlp.hook_in"], f"layer {layer}'s MLP input")
    return ln2(resid_mid)


def _logits_path(patcher, runs, delta: torch.Tensor, base_name: str) -> torch.Tensor:
    model = patcher.model
    last = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
    base = getattr(runs, base_name)

    def unembed(x):
        return model.unembed(model.ln_final(x))

    _verify(model, ("logits",), lambda: unembed(runs.corrupt[last]), runs.corrupt.logits, "the unembedding")
    with torch.no_grad():
        logits = unembed(base[last] + delta)
    return patcher.score(logits, runs.task, runs.clean.logits)


def _verify(model, key: tuple, recompute, cached: torch.Tensor, what: str) -> None:
    """Check once per model and weights that recomputing ``what`` from the residual reproduces the model's own value."""
    verified = session_of(model).derived("path-inputs-verified", set)
    if key in verified:
        return
    with torch.no_grad():
        got = recompute()
        diff = float((got.float() - cached.float()).abs().max())
    # Two implementations of the same input differ by rounding: the fast path's tolerance for this precision.
    if diff > _fastpath.tolerance(_fastpath.coarsest([got.dtype, cached.dtype])) * max(1.0, float(cached.abs().max())):
        raise CircuitCheckError(
            f"path patching cannot reach {what} on model {model_label(model)}: recomputing it from the residual stream "
            f"differs from the model's own activation by {diff:.2e}, so this architecture is not supported"
        )
    verified.add(key)
