"""A verified fast path for the batched patcher: reuse the base run before the first patched layer.

For a chunk of variants whose patches all touch layer ``L`` and later, nothing
before block ``L`` changes: every variant's residual stream entering block ``L``
is the base run's ``blocks.{L}.hook_resid_pre``. The fast path repeats that
cached residual once per variant, runs only blocks ``L..n_layers-1`` (the
bridge's own block modules, so the same hook functions fire at the same hook
points), then ``ln_final`` and ``unembed``.

What a block is called with besides the residual (attention mask, position ids,
...) is captured from the model itself: a forward of the chunk's real tokens
stopped before block 0 (``stop_at_layer=0``, the embedding only), so masks and
positions are exactly those the full forward would use.

Trust, but verify: on first use per model and start layer, two variants of the
chunk also run the general way and their logits must agree to 1e-4 (relative to
the logits' scale); if not, the fast path is turned off for that model for the
rest of the session, with one line on stderr. Anything the fast path does not
know (a patch outside the blocks, an architecture it was not verified on, a
block argument it cannot pass) runs the general path unchanged.
"""

from __future__ import annotations

import re
import sys
import weakref
from typing import Callable, Sequence

import torch

TOLERANCE = 1e-4

# Block implementations whose call signature the fast path has been checked on.
# ``Patcher(fast=True)`` also tries any other bridge with a plain ``blocks`` stack
# (still verified on first use).
KNOWN_BLOCKS = frozenset({"NativeBlock", "GPT2Block"})

_BLOCK_HOOK = re.compile(r"^blocks\.(\d+)\.")


class _ModelState:
    def __init__(self) -> None:
        self.disabled: str | None = None  # why, once verification failed
        self.verified: set[int] = set()  # start layers checked against the general path


_STATE: "weakref.WeakKeyDictionary[object, _ModelState]" = weakref.WeakKeyDictionary()


def state(model) -> _ModelState:
    if model not in _STATE:
        _STATE[model] = _ModelState()
    return _STATE[model]


def reset(model=None) -> None:
    """Forget verification results (for one model, or all): the next use verifies again."""
    if model is None:
        _STATE.clear()
    else:
        _STATE.pop(model, None)


def patch_layer(hook: str) -> int:
    """The block a hook belongs to; 0 for anything outside the blocks (embeddings, ln_final...)."""
    match = _BLOCK_HOOK.match(hook)
    return int(match.group(1)) if match else 0


def start_layer(variants: Sequence[Sequence]) -> int:
    """The first block any patch of ``variants`` touches (0: nothing can be reused)."""
    layers = [patch_layer(patch.hook) for variant in variants for patch in variant]
    return min(layers) if layers else 0


def supports(model, forced: bool = False) -> bool:
    """Whether the fast path may be tried on ``model`` (it is still verified on first use)."""
    if state(model).disabled is not None:
        return False
    modules = getattr(model, "_modules", {})
    if "blocks" not in modules or not all(hasattr(model, name) for name in ("ln_final", "unembed")):
        return False
    cfg = model.cfg
    if any(getattr(cfg, flag, False) for flag in ("is_visual_model", "is_audio_model", "is_multimodal")):
        return False
    if any(hasattr(model, alt) for alt in ("encoder_blocks", "decoder_blocks", "L_blocks", "H_blocks")):
        return False
    if forced:
        return True
    originals = {type(getattr(block, "original_component", None)).__name__ for block in model.blocks}
    return originals <= KNOWN_BLOCKS


class _Unsupported(Exception):
    """A block argument the fast path cannot pass on."""


def _block_inputs(model, tokens: torch.Tensor) -> tuple[tuple, dict]:
    """What block 0 is called with on ``tokens``, besides the residual; the embedding runs, no block does."""
    captured: dict = {}

    def grab(module, args, kwargs):
        captured["args"], captured["kwargs"] = args, dict(kwargs)

    handle = model.blocks[0].register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with torch.no_grad():
            model(tokens, stop_at_layer=0)
    except (NotImplementedError, TypeError, ValueError) as error:  # no stop_at_layer on this bridge
        raise _Unsupported(str(error)) from error
    finally:
        handle.remove()
    if "args" not in captured:
        raise _Unsupported("block 0 was not called")
    args, kwargs = captured["args"], captured["kwargs"]
    if args:
        rest = tuple(_clean(a) for a in args[1:])
        kwargs = {k: _clean(v) for k, v in kwargs.items() if k != "hidden_states"}
    elif "hidden_states" in kwargs:
        rest = ()
        kwargs = {k: _clean(v) for k, v in kwargs.items() if k != "hidden_states"}
    else:
        raise _Unsupported("block 0 got no residual")
    if "use_cache" in kwargs:
        kwargs["use_cache"] = False
    return rest, kwargs


def _clean(value):
    """A block argument as the fast path passes it: tensors and plain values as they are, no KV cache."""
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor)):
        return value
    if isinstance(value, tuple) and all(isinstance(v, torch.Tensor) for v in value):
        return value  # e.g. rotary (cos, sin)
    if type(value).__name__.endswith("Cache"):
        return None  # no KV cache: every block recomputes its keys and values
    raise _Unsupported(f"block argument of type {type(value).__name__}")


def later_blocks_logits(model, resid: torch.Tensor, start: int, tokens: torch.Tensor, fwd_hooks) -> torch.Tensor:
    """Logits of running blocks ``start..`` on ``resid`` ([rows, pos, d_model]) with ``fwd_hooks`` attached."""
    rest, kwargs = _block_inputs(model, tokens)
    with torch.no_grad(), model.hooks(fwd_hooks=fwd_hooks):
        x = resid
        for block in model.blocks[start:]:
            out = block(x, *rest, **kwargs)
            x = out[0] if isinstance(out, (tuple, list)) else out
        return model.unembed(model.ln_final(x))


def chunk_logits(
    patcher,
    runs,
    variants: Sequence[Sequence],
    base: str,
    make_hooks: Callable[[Sequence[Sequence]], tuple],
    general: Callable[[Sequence[Sequence]], torch.Tensor],
    score: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor | None:
    """Logits ``[variants * batch, pos, vocab]`` of a chunk by the fast path, or None where it does not apply.

    ``make_hooks(variants)`` gives the chunk's (hooks, plans); ``general(variants)``
    runs variants the general way and ``score(logits)`` is the per-example metric (both
    used once per model and start layer, to verify).
    """
    model = patcher.model
    start = start_layer(variants)
    if start <= 0 or start >= model.cfg.n_layers or not supports(model, forced=patcher.fast is True):
        return None
    base_run = getattr(runs, base)
    n = len(variants)
    tokens = base_run.tokens.repeat(n, 1)
    resid = base_run[f"blocks.{start}.hook_resid_pre"]
    resid = resid.repeat(n, *([1] * (resid.ndim - 1)))
    hooks, plans = make_hooks(variants)
    try:
        logits = later_blocks_logits(model, resid, start, tokens, hooks)
    except _Unsupported:
        return None
    for plan in plans.values():
        if not plan.fired:
            return None  # let the general path run (and name the hook that never fires)
    model_state = state(model)
    if start not in model_state.verified:
        picks = sorted({0, n - 1})
        expected = general([variants[i] for i in picks])
        batch = base_run.tokens.shape[0]
        got = torch.cat([logits[i * batch : (i + 1) * batch] for i in picks])
        diff = float((got - expected).abs().max()) if got.shape == expected.shape else float("inf")
        scale = max(1.0, float(expected.abs().max()))
        ok = diff <= TOLERANCE * scale
        if ok:  # the results themselves (the metric) must agree to TOLERANCE, absolute
            for i in range(len(picks)):
                rows = slice(i * batch, (i + 1) * batch)
                metric_diff = float((score(got[rows]) - score(expected[rows])).abs().max())
                diff = max(diff, metric_diff)
                ok = ok and metric_diff <= TOLERANCE
        if not ok:
            from .components import model_label

            model_state.disabled = f"differs by {diff:.2e}"
            sys.stderr.write(f"circuitcheck: fast path disabled for {model_label(model)}: differs by {diff:.2e}\n")
            sys.stderr.flush()
            return None
        model_state.verified.add(start)
    patcher.fast_passes += 1
    return logits
