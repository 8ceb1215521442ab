"""Hook names: which block a hook point belongs to, how its activation is indexed, where a patch starts.

TransformerLens names activations ``blocks.{layer}.{point}`` (``blocks.3.attn.hook_z``);
everything outside the blocks (``hook_embed``, ``ln_final.hook_normalized``) counts
as layer 0 here. Patches are anything with ``.hook`` and ``.index`` (see
:class:`circuitcheck.engine.patches.Patch`).
"""

from __future__ import annotations

import re
from typing import Sequence

_HEAD_HOOKS = ("hook_z", "hook_q", "hook_k", "hook_v", "hook_result")
_PATTERN_HOOKS = ("hook_pattern", "hook_attn_scores")
_BLOCK_HOOK = re.compile(r"^blocks\.(0|[1-9][0-9]*)\.(.+)$")  # "blocks.01...." is no hook of TransformerLens's


def index_dims(hook: str) -> str:
    """How a hook's activation is indexed past the batch: ``"ph"`` (pos, head), ``"hqk"`` or ``"p"``."""
    last = hook.rsplit(".", 1)[-1]
    if last in _HEAD_HOOKS:
        return "ph"
    if last in _PATTERN_HOOKS:
        return "hqk"
    return "p"


def split_hook(hook: str) -> tuple[int, str] | None:
    """``"blocks.3.attn.hook_z"`` -> ``(3, "attn.hook_z")``; None outside the blocks."""
    match = _BLOCK_HOOK.match(hook)
    return (int(match.group(1)), match.group(2)) if match else None


def patch_layer(hook: str) -> int:
    """The block a hook belongs to; 0 for anything outside the blocks (embeddings, ln_final...)."""
    split = split_hook(hook)
    return split[0] if split else 0


def start_layer(variants: Sequence[Sequence]) -> int:
    """The first block any patch of ``variants`` touches (0: nothing can be reused)."""
    layers = [patch_layer(patch.hook) for variant in variants for patch in variant]
    return min(layers) if layers else 0


def start_position(variant: Sequence, seq_len: int) -> int:
    """The first position any patch of ``variant`` can change (0 where a patch covers all positions)."""
    first = seq_len
    for patch in variant:
        dims = index_dims(patch.hook)
        axis = "q" if "q" in dims else "p" if "p" in dims else None
        values = dict(patch.index).get(axis) if axis else None
        if values is None:
            return 0
        if not values:
            continue  # selects nothing
        first = min(first, *(v + seq_len if v < 0 else v for v in values))
    return max(0, min(first, seq_len - 1))
