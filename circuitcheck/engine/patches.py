"""Patches: what one intervention replaces, and the hook functions that apply a chunk of them.

A patch replaces part of one activation (some positions, some heads) with the
same part of a source:

- ``"clean"`` / ``"corrupt"``: the task's cached clean / corrupted run;
- ``"ablated"``: the ablation's replacement (resample, mean, zero, noise...);
- an explicit tensor ``[batch, ...]`` (path patching computes these);
- a *live* source: an object with ``apply(hook, acts, entries, shared)`` that
  reads and rewrites activations during the forward itself (edge ablation,
  :class:`circuitcheck.engine.edges.EdgeAblation`, rebuilds receivers' inputs
  from the senders' outputs of the same forward). ``shared`` is one dict per
  forward of a chunk, so what one hook records, a later hook can read.

A variant is a list of patches; :class:`HookPlan` turns the patches of many
variants at one hook point into one hook function over the stacked batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ..errors import CircuitCheckError
from ..model.components import Component
from .hooks import index_dims


@dataclass(frozen=True)
class Patch:
    """Replace ``hook``'s activation at ``index`` with ``source``'s.

    ``index`` maps each index dimension (``"p"`` position, ``"h"`` head, ``"q"``/``"k"``
    query/key position) to a list of indices; a missing dimension means all.
    ``source`` is ``"clean"``, ``"corrupt"``, ``"ablated"``, or a tensor
    ``[batch, ...]`` shaped like the activation.
    """

    hook: str
    index: tuple[tuple[str, tuple[int, ...]], ...] = ()
    source: object = "ablated"

    @classmethod
    def at(cls, hook: str, source="ablated", **index: Sequence[int] | int | None) -> "Patch":
        items = []
        for dim, value in index.items():
            if value is None:
                continue
            values = (int(value),) if isinstance(value, (int, np.integer)) else tuple(int(v) for v in value)
            items.append((dim, values))
        return cls(hook, tuple(sorted(items)), source)


Variant = Sequence[Patch]


def is_live(source) -> bool:
    """Whether a patch source rewrites activations during the forward (see the module docstring)."""
    return not isinstance(source, (str, torch.Tensor)) and callable(getattr(source, "apply", None))


class HookPlan:
    """What one hook writes for each variant of a chunk."""

    def __init__(self, hook: str, n_variants: int):
        self.hook = hook
        self.dims = index_dims(hook)
        self.n = n_variants
        self.named: dict[str, list[tuple[int, dict]]] = {}
        self.explicit: list[tuple[int, dict, torch.Tensor]] = []
        self.live: dict[type, list[tuple[int, object]]] = {}
        self.fired = False

    def add(self, variant: int, patch: Patch) -> None:
        index = dict(patch.index)
        unknown = set(index) - set(self.dims)
        if unknown:
            raise ValueError(f"patch on {self.hook} indexes {sorted(unknown)}, but its activation is indexed by {list(self.dims)}")
        if isinstance(patch.source, str):
            self.named.setdefault(patch.source, []).append((variant, index))
        elif is_live(patch.source):
            if index:
                raise ValueError(f"a live patch source on {self.hook} reads the whole activation: give it no index, got {index}")
            self.live.setdefault(type(patch.source), []).append((variant, patch.source))
        else:
            self.explicit.append((variant, index, patch.source))

    def _mask(self, entries, index_shape, device) -> torch.Tensor:
        mask = torch.zeros((self.n, *index_shape), dtype=torch.bool, device=device)
        for variant, index in entries:
            mask[(variant, *self._selector(index, index_shape, device))] = True
        return mask

    def _selector(self, index: dict, index_shape, device) -> tuple:
        """Broadcastable index tensors selecting the product of the listed indices."""
        parts = []
        k = len(self.dims)
        for axis, dim in enumerate(self.dims):
            values = index.get(dim)
            size = index_shape[axis]
            if values is None:
                values = range(size)
            values = [v + size if v < 0 else v for v in values]
            for v in values:
                if not 0 <= v < size:
                    raise CircuitCheckError(f"index {v} is out of range for dimension {dim!r} of {self.hook} (size {size})")
            shape = [1] * k
            shape[axis] = len(values)
            parts.append(torch.tensor(values, device=device).reshape(shape))
        return tuple(parts)

    def hook_fn(self, batch: int, sources, shared: dict | None = None):
        """The hook function of this point over the chunk's stacked batch; ``shared``: the forward's dict for live sources."""
        shared = {} if shared is None else shared

        def fn(activation: torch.Tensor, hook=None) -> torch.Tensor:
            self.fired = True
            n = activation.shape[0] // batch
            acts = activation.reshape(n, batch, *activation.shape[1:])
            n_index = len(self.dims)
            index_shape = tuple(acts.shape[2 : 2 + n_index])
            features = acts.ndim - 2 - n_index
            for name, entries in self.named.items():
                mask = self._mask(entries, index_shape, acts.device)
                mask = mask.reshape(n, 1, *index_shape, *([1] * features))
                source = sources[name](self.hook).to(acts.device, acts.dtype)
                acts = torch.where(mask, source.unsqueeze(0), acts)
            if self.explicit:
                acts = acts.clone()
                for variant, index, value in self.explicit:
                    sel = self._selector(index, index_shape, acts.device)
                    value = value.to(acts.device, acts.dtype).expand(batch, *acts.shape[2:])
                    acts[variant][(slice(None), *sel)] = value[(slice(None), *sel)]
            for kind, entries in self.live.items():
                acts = kind.apply(self.hook, acts, entries, shared)
            return acts.reshape(activation.shape)

        return fn


def component_patch(component: Component, source="ablated", seq_len: int | None = None) -> Patch:
    """The patch that replaces ``component``'s activation (all positions unless narrowed)."""
    positions = component.positions.indices(seq_len) if component.positions is not None and seq_len is not None else None
    if component.positions is not None and seq_len is None:
        raise ValueError("a position-narrowed component needs the input length")
    if component.kind == "head":
        return Patch.at(component.hook_name, source, p=positions, h=[component.head])
    return Patch.at(component.hook_name, source, p=positions)
