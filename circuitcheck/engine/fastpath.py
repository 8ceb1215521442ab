"""A verified fast path for the batched patcher: compute only what a patch can change.

In a causal decoder, a patch that touches layer ``L`` and later, at positions
``p`` and later, cannot change anything before layer ``L`` or before position
``p``. The general path still recomputes all of it, for every variant, and
unembeds every position. The fast path does not:

- every variant's residual stream before its first patched layer is the base
  run's (cached once per task and base input);
- at each later layer only the tokens at or after the variant's first patched
  position are computed; the keys and values of the earlier positions are the
  base run's;
- the unembedding is computed only at the positions the metric reads
  (:meth:`circuitcheck.metrics.Metric.reads`).

Variants with different first layers and positions share one batch: the work
is "ragged" (only the active tokens go through the projections and MLPs), so
there is no need to cut chunks where the first patched layer changes.

The forward is written here, from the model's own weights, for the
architectures it knows: GPT-2 style (learned positions, LayerNorm, GELU MLP)
and rotary + RMSNorm style (adjacent-pair rotary as TransformerLens's native
models, half-split rotary as Hugging Face Llama; grouped-query attention;
gated MLPs), attention-only or not. At each hook point a patch can use
(:data:`HOOKS`), the patcher's own hook functions are called on the activation
as TransformerLens shapes it, so a patch means exactly what it means on the
general path.

Trust, but verify: the kernel's forward of each base input must reproduce the
model's own logits, and on first use per model and kind of hook point the
variant using it that moves the logits most (and the chunk's last variant) also
run the general way; their logits (where the metric reads them) must agree to
1e-4 relative to the logits' scale, and their metric values to 1e-4. A kind
counts as verified only once a compared variant moved the logits. If anything
disagrees, the fast path is turned off for that model for the rest of the
session, with one line on stderr. A metric's declared positions are checked per
task (:func:`metric_positions`). Anything it does not know (a hook point
outside :data:`HOOKS`, an architecture it cannot read, weights in half
precision or on several devices) runs the general path unchanged.
"""

from __future__ import annotations

import math
import re
import sys
import weakref
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

TOLERANCE = 1e-4

# Block implementations the fast path reads by default. ``Patcher(fast=True)``
# also tries any other bridge whose weights it can read (still verified on first use).
KNOWN_BLOCKS = frozenset({"NativeBlock", "GPT2Block", "LlamaDecoderLayer"})

# Hook points (the part after ``blocks.{layer}.``) the kernel calls patch functions at,
# in the order a block computes them. ``hook_resid_mid`` follows TransformerBridge:
# it is the MLP's LayerNorm input, so writing it changes what the MLP reads only.
HOOKS = (
    "hook_resid_pre",
    "attn.hook_q",
    "attn.hook_k",
    "attn.hook_v",
    "attn.hook_pattern",
    "attn.hook_z",
    "hook_attn_out",
    "hook_resid_mid",
    "mlp.hook_in",
    "mlp.hook_pre",
    "mlp.hook_pre_linear",
    "mlp.hook_post",
    "hook_mlp_out",
    "hook_resid_post",
)

_BLOCK_HOOK = re.compile(r"^blocks\.(0|[1-9][0-9]*)\.(.+)$")  # "blocks.01...." is no hook of TransformerLens's


# Which hook, layer and positions a patch touches ----------------------------------------------------


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
    from .patcher import index_dims

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


# Per-model state ---------------------------------------------------------------------------------


class _ModelState:
    def __init__(self) -> None:
        self.disabled: str | None = None  # why, once verification failed
        self.verified: set[str] = set()  # hook kinds checked against the general path
        self.archs: dict[bool, tuple] = {}  # forced -> (Arch or None, why not)
        self.fingerprint: tuple | None = None
        self.unsupported: str | None = None  # why the kernel cannot read this model


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


class Unsupported(Exception):
    """Something the fast path does not know; the general path runs instead."""


# The model, read as plain tensors ----------------------------------------------------------------


@dataclass
class Norm:
    kind: str  # "ln", "rms" or "none"
    weight: torch.Tensor | None = None
    bias: torch.Tensor | None = None
    eps: float = 1e-5

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "none":
            return x
        if self.kind == "ln" and self.weight is not None and self.bias is not None:
            return F.layer_norm(x, x.shape[-1:], self.weight, self.bias, self.eps)
        xf = x.float()
        if self.kind == "ln":
            xf = xf - xf.mean(-1, keepdim=True)
        y = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)
        if self.weight is not None:
            y = y * self.weight
        if self.bias is not None:
            y = y + self.bias
        return y


@dataclass
class Layer:
    """One block's weights, as views of the model's own parameters where the layout allows (no copies)."""

    ln1: Norm
    W_Q: torch.Tensor  # [d_model, n_heads d_head]
    W_K: torch.Tensor  # [d_model, n_kv d_head]
    W_V: torch.Tensor
    b_Q: torch.Tensor | None
    b_K: torch.Tensor | None
    b_V: torch.Tensor | None
    W_O: torch.Tensor  # [n_heads d_head, d_model]
    b_O: torch.Tensor | None
    ln2: Norm | None = None
    W_gate: torch.Tensor | None = None  # [d_model, d_mlp] (gated MLPs)
    W_in: torch.Tensor | None = None  # [d_model, d_mlp]
    b_in: torch.Tensor | None = None
    W_out: torch.Tensor | None = None
    b_out: torch.Tensor | None = None


@dataclass
class Arch:
    n_heads: int
    n_kv: int
    d_head: int
    d_model: int
    d_mlp: int
    scale: float  # attention scores are divided by this
    gated: bool
    attn_only: bool
    act: Callable
    layers: list[Layer]
    ln_final: Norm
    W_U: torch.Tensor
    b_U: torch.Tensor | None
    rotary: str | None = None  # None, "adjacent" (pairs 2i, 2i+1) or "half" (i, i + d/2)
    rotary_dim: int = 0
    cos: torch.Tensor | None = None  # [n_ctx, rotary_dim]
    sin: torch.Tensor | None = None

    @property
    def n_layers(self) -> int:
        return len(self.layers)


def weights_fingerprint(model) -> tuple:
    """Changes when any parameter is replaced, moved or modified in place (not through ``.data``)."""
    return tuple((p.data_ptr(), p._version, p.dtype, str(p.device)) for p in model.parameters())


def _original(module):
    return getattr(module, "original_component", None)


def _norm(bridge_module) -> Norm:
    original = _original(bridge_module) if bridge_module is not None else None
    if bridge_module is None or original is None or isinstance(original, torch.nn.Identity):
        return Norm("none")
    name = type(original).__name__
    if isinstance(original, torch.nn.LayerNorm):
        return Norm("ln", original.weight, original.bias, float(original.eps))
    if name == "NativeLayerNormPre":
        return Norm("ln", None, None, float(original.eps))
    if name == "NativeRMSNormPre":
        return Norm("rms", None, None, float(original.eps))
    if name in ("NativeRMSNorm", "LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm"):
        eps = getattr(original, "eps", getattr(original, "variance_epsilon", None))
        if eps is None:
            raise Unsupported(f"{name} without an epsilon")
        return Norm("rms", original.weight, None, float(eps))
    raise Unsupported(f"normalisation {name}")


_ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
}


def _activation(model, original_mlp) -> Callable:
    for name in ("act", "act_fn"):
        fn = getattr(original_mlp, name, None)
        if callable(fn):
            return fn
    act = (getattr(model.cfg, "act_fn", None) or "").lower()
    if act not in _ACTIVATIONS:
        raise Unsupported(f"activation {act!r}")
    return _ACTIVATIONS[act]


def _scale(model, original_attn, d_head: int) -> float:
    scale = getattr(original_attn, "scale", None)
    if isinstance(scale, (int, float)) and type(original_attn).__name__ == "NativeAttention":
        return float(scale)
    scaling = getattr(original_attn, "scaling", None)
    if isinstance(scaling, (int, float)) and scaling > 0:
        return 1.0 / float(scaling)
    if type(original_attn).__name__ == "GPT2Attention":
        if getattr(original_attn, "scale_attn_by_inverse_layer_idx", False):
            raise Unsupported("GPT-2 attention scaled by the inverse layer index")
        return math.sqrt(d_head) if getattr(original_attn, "scale_attn_weights", True) else 1.0
    cfg = model.cfg
    if getattr(cfg, "use_attn_scale", True) and getattr(cfg, "attn_scale", -1.0) > 0:
        return float(cfg.attn_scale)
    return math.sqrt(d_head)


def _flat_heads(W: torch.Tensor) -> torch.Tensor:
    """``[heads, d_model, d_head]`` -> ``[d_model, heads * d_head]`` (a view where the layout allows)."""
    return W.permute(1, 0, 2).reshape(W.shape[1], -1)


def _flat_bias(b: torch.Tensor | None) -> torch.Tensor | None:
    return None if b is None else b.reshape(-1)


def _rotary_tables(model) -> tuple[str, int, torch.Tensor, torch.Tensor]:
    original = getattr(model, "original_model", None)
    native = getattr(original, "rotary", None)
    if native is not None and type(native).__name__ == "NativeRotary":
        return "adjacent", int(native.rotary_dim), native.cos_cached, native.sin_cached
    emb = getattr(getattr(original, "model", None), "rotary_emb", None)
    emb = _original(emb) or emb  # TransformerBridge wraps it (calling the wrapper would fire its hooks)
    if emb is not None and type(emb).__name__ in ("LlamaRotaryEmbedding", "MistralRotaryEmbedding", "Qwen2RotaryEmbedding"):
        n_ctx = int(getattr(model.cfg, "n_ctx", 0) or 0)
        if n_ctx <= 0:
            raise Unsupported("rotary model without n_ctx")
        positions = torch.arange(n_ctx, device=emb.inv_freq.device)[None]
        probe = torch.zeros(1, dtype=torch.float32, device=emb.inv_freq.device)
        with torch.no_grad():
            cos, sin = emb(probe, positions)
        return "half", int(cos.shape[-1]), cos[0], sin[0]
    raise Unsupported("rotary embedding of an unknown kind")


def read_arch(model, forced: bool = False) -> Arch:
    """The model's weights as the kernel uses them, or :class:`Unsupported`."""
    cfg = model.cfg
    modules = getattr(model, "_modules", {})
    if "blocks" not in modules or not all(hasattr(model, name) for name in ("ln_final", "unembed")):
        raise Unsupported("no blocks / ln_final / unembed")
    if any(getattr(cfg, flag, False) for flag in ("is_visual_model", "is_audio_model", "is_multimodal")):
        raise Unsupported("not a text model")
    if any(hasattr(model, alt) for alt in ("encoder_blocks", "decoder_blocks", "L_blocks", "H_blocks")):
        raise Unsupported("not a plain decoder stack")
    if getattr(cfg, "attention_dir", "causal") != "causal":
        raise Unsupported("bidirectional attention")
    for cap in ("attn_scores_soft_cap", "output_logits_soft_cap"):
        if float(getattr(cfg, cap, -1.0) or -1.0) > 0:
            raise Unsupported(cap)
    places = {(p.device, p.dtype) for p in model.parameters()}
    if len({device for device, _ in places}) > 1:
        raise Unsupported("weights on several devices")
    if not forced and any(dtype not in (torch.float32, torch.float64) for _, dtype in places):
        # Rounding in half precision differs between any two implementations by more than 1e-4.
        raise Unsupported("half-precision weights")
    originals = {type(_original(block)).__name__ for block in model.blocks}
    if len(originals) != 1:
        raise Unsupported(f"mixed block types {sorted(originals)}")
    if not forced and not originals <= KNOWN_BLOCKS:
        raise Unsupported(f"block type {originals.pop()}")

    n_heads, d_head, d_model = int(cfg.n_heads), int(cfg.d_head), int(cfg.d_model)
    attn_only = bool(getattr(cfg, "attn_only", False))
    gated = bool(getattr(cfg, "gated_mlp", False))
    layers: list[Layer] = []
    n_kv = n_heads
    act = None
    d_mlp = 0
    first_attn = None
    with torch.no_grad():
        for block in model.blocks:
            attn = block.attn
            first_attn = first_attn or _original(attn)
            W_Q, W_K, W_V, W_O = attn.W_Q, attn.W_K, attn.W_V, attn.W_O
            n_kv = W_K.shape[0]
            if W_Q.shape != (n_heads, d_model, d_head) or W_K.shape != W_V.shape or W_K.shape[1:] != (d_model, d_head):
                raise Unsupported(f"attention weights shaped {tuple(W_Q.shape)} / {tuple(W_K.shape)}")
            if n_heads % n_kv:
                raise Unsupported(f"{n_heads} heads over {n_kv} key-value heads")
            layer = Layer(
                _norm(block.ln1), _flat_heads(W_Q), _flat_heads(W_K), _flat_heads(W_V),
                _flat_bias(attn.b_Q), _flat_bias(attn.b_K), _flat_bias(attn.b_V),
                W_O.reshape(n_heads * d_head, d_model), attn.b_O,
            )
            if not attn_only:
                mlp = block.mlp
                if getattr(_original(mlp), "ln", None) is not None:
                    raise Unsupported("an MLP with a LayerNorm inside (SoLU-LN)")
                act = act or _activation(model, _original(mlp))
                layer.W_in, layer.b_in, layer.W_out, layer.b_out = mlp.W_in, mlp.b_in, mlp.W_out, mlp.b_out
                d_mlp = layer.W_in.shape[1]
                if gated:
                    layer.W_gate = mlp.W_gate
                    if layer.W_gate is None:
                        raise Unsupported("a gated MLP without W_gate")
                layer.ln2 = _norm(block.ln2)
            layers.append(layer)
        arch = Arch(
            n_heads=n_heads, n_kv=n_kv, d_head=d_head, d_model=d_model, d_mlp=d_mlp,
            scale=_scale(model, first_attn, d_head), gated=gated, attn_only=attn_only, act=act or (lambda x: x),
            layers=layers, ln_final=_norm(model.ln_final), W_U=model.W_U, b_U=getattr(model, "b_U", None),
        )
        positional = (getattr(cfg, "positional_embedding_type", "standard") or "standard").lower()
        if positional == "rotary":
            arch.rotary, arch.rotary_dim, arch.cos, arch.sin = _rotary_tables(model)
        elif positional != "standard":
            raise Unsupported(f"positional embedding {cfg.positional_embedding_type!r}")
    return arch


def arch_of(model, forced: bool = False) -> Arch | None:
    """The model's :class:`Arch` (cached until its weights change), or None if the kernel cannot read it."""
    model_state = state(model)
    if model_state.disabled is not None:
        return None
    fingerprint = weights_fingerprint(model)
    if model_state.fingerprint != fingerprint:
        model_state.fingerprint = fingerprint
        model_state.verified.clear()
        model_state.archs = {}
    if forced not in model_state.archs:
        try:
            model_state.archs[forced] = (read_arch(model, forced), None)
        except (Unsupported, AttributeError, TypeError, RuntimeError) as error:
            model_state.archs[forced] = (None, str(error) or type(error).__name__)
    arch, model_state.unsupported = model_state.archs[forced]
    return arch


def supports(model, forced: bool = False) -> bool:
    """Whether the fast path may be tried on ``model`` (it is still verified on first use)."""
    return arch_of(model, forced) is not None


def hooks_supported(model, hooks) -> bool:
    """Whether every hook in ``hooks`` is a point the kernel can patch on ``model``."""
    n_layers = model.cfg.n_layers
    for hook in hooks:
        split = split_hook(hook)
        if split is None or split[1] not in HOOKS or not 0 <= split[0] < n_layers:
            return False
        if getattr(model.cfg, "attn_only", False) and (split[1].startswith("mlp.") or split[1] in ("hook_mlp_out", "hook_resid_mid")):
            return False
        if split[1] == "mlp.hook_pre_linear" and not getattr(model.cfg, "gated_mlp", False):
            return False
    return True


# The kernel --------------------------------------------------------------------------------------


@dataclass
class Trace:
    """The base input's run through the kernel: what variants reuse."""

    resid: list[torch.Tensor]  # resid[l]: [batch, pos, d_model] entering block l; resid[n_layers]: after the last
    keys: list[torch.Tensor] = field(default_factory=list)  # [batch, pos, n_kv, d_head], rotated
    values: list[torch.Tensor] = field(default_factory=list)


def _rotate(arch: Arch, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Rotary embedding of ``x`` ``[tokens, heads, d_head]`` at ``positions`` ``[tokens]``."""
    rd = arch.rotary_dim
    cos = arch.cos[positions].to(x.dtype)[:, None, :]
    sin = arch.sin[positions].to(x.dtype)[:, None, :]
    x_rot, x_pass = x[..., :rd], x[..., rd:]
    if arch.rotary == "adjacent":
        turned = torch.stack((-x_rot[..., 1::2], x_rot[..., 0::2]), dim=-1).flatten(-2)
    else:
        half = rd // 2
        turned = torch.cat((-x_rot[..., half:], x_rot[..., :half]), dim=-1)
    x_rot = x_rot * cos + turned * sin
    return torch.cat([x_rot, x_pass], dim=-1) if x_pass.shape[-1] else x_rot


def _linear(x: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    return x @ W if b is None else torch.addmm(b, x, W)


def forward(
    arch: Arch,
    base: Trace,
    n: int,
    first_layer: torch.Tensor,
    first_pos: torch.Tensor,
    read: list[int],
    hooks: dict[tuple[int, str], Callable] | None = None,
    record: Trace | None = None,
    work: dict | None = None,
) -> torch.Tensor:
    """Logits ``[n * batch, len(read), vocab]`` of ``n`` variants of the base input.

    Row ``r`` computes only layers ``>= first_layer[r]`` at positions ``>= first_pos[r]``
    (both ``[n * batch]``); everything else is the base run's. ``hooks`` maps
    ``(layer, hook point)`` to a function called on the full activation there
    (TransformerLens's shape, rows = variants x batch); it may change only the
    computed tokens. ``record`` collects the run's residuals, keys and values (for the
    base run itself: every row starts at layer 0, position 0). ``work`` counts what was
    computed: ``token_layers`` (tokens through one block), ``kv_only`` (tokens of the last
    block needed only as keys and values) and ``unembedded`` (logit rows).
    """
    hooks = hooks or {}
    batch, P, d = base.resid[0].shape
    R = n * batch
    h, kv, dh = arch.n_heads, arch.n_kv, arch.d_head
    device = base.resid[0].device
    positions = torch.arange(P, device=device)
    first = int(first_layer.min())
    read_mask = torch.zeros(P, dtype=torch.bool, device=device)
    read_mask[read] = True
    causal = torch.ones(P, P, dtype=torch.bool, device=device).triu(1)

    def full(layer_list, l):  # the base run's tensor, one (writable) copy per variant: [R * P, ...]
        t = layer_list[l]
        return t.repeat(n, *([1] * (t.ndim - 1))).view(R * P, *t.shape[2:])

    resid = full(base.resid, first)
    if record is not None:
        record.resid.append(base.resid[0])
    for l in range(first, arch.n_layers):
        layer = arch.layers[l]
        at = {point: fn for (hook_layer, point), fn in hooks.items() if hook_layer == l}
        active = ((first_layer <= l)[:, None] & (positions[None, :] >= first_pos[:, None])).reshape(-1)
        flat = active.nonzero().squeeze(1)  # the tokens this layer computes
        token_pos = flat % P
        out, out_pos = flat, token_pos  # ... and those whose output is needed
        if l == arch.n_layers - 1 and len(read) < P:
            # The last layer's output is read only where the metric reads logits; the other
            # tokens are needed only as keys and values.
            keep = read_mask[token_pos].nonzero().squeeze(1)
            out, out_pos = flat[keep], token_pos[keep]
        if work is not None:
            work["token_layers"] = work.get("token_layers", 0) + len(out)
            work["kv_only"] = work.get("kv_only", 0) + len(flat) - len(out)

        def through(point: str, x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
            """Call the patch function at ``point`` on the full activation; the computed tokens back."""
            if point not in at:
                return x
            index = out if index is None else index
            whole = x.new_zeros(R * P, *x.shape[1:])
            whole.index_copy_(0, index, x)
            result = at[point](whole.view(R, P, *x.shape[1:]), hook=None)
            return result.reshape(R * P, *x.shape[1:]).index_select(0, index)

        if "hook_resid_pre" in at:
            resid = at["hook_resid_pre"](resid.view(R, P, d), hook=None).reshape(R * P, d)
        x = resid if len(flat) == R * P else resid.index_select(0, flat)

        # Attention: only the computed tokens are projected; earlier keys and values are the base run's.
        normed = layer.ln1(x)
        if out is not flat:
            x = x[keep]
        q = _linear(normed if out is flat else normed[keep], layer.W_Q, layer.b_Q)
        k = _linear(normed, layer.W_K, layer.b_K)
        v = _linear(normed, layer.W_V, layer.b_V)
        q = through("attn.hook_q", q.reshape(-1, h, dh))
        k = through("attn.hook_k", k.reshape(-1, kv, dh), flat)
        v = through("attn.hook_v", v.reshape(-1, kv, dh), flat)
        if arch.rotary:
            q, k = _rotate(arch, q, out_pos), _rotate(arch, k, token_pos)
        if len(flat) == R * P:  # every token computed: nothing of the base run's to keep
            keys, values = k, v
        else:
            keys = full(base.keys, l).index_copy_(0, flat, k)
            values = full(base.values, l).index_copy_(0, flat, v)
        if record is not None:  # the base run itself: every token computed
            record.keys.append(keys.view(batch, P, kv, dh))
            record.values.append(values.view(batch, P, kv, dh))
        queries = q.new_zeros(R * P, h, dh).index_copy_(0, out, q)
        queries = queries.view(R, P, h, dh).transpose(1, 2)
        keys = keys.view(R, P, kv, dh).transpose(1, 2)
        values = values.view(R, P, kv, dh).transpose(1, 2)
        if kv != h:
            keys = keys.repeat_interleave(h // kv, dim=1)
            values = values.repeat_interleave(h // kv, dim=1)
        scores = queries @ keys.transpose(-2, -1) / arch.scale
        pattern = scores.masked_fill(causal, float("-inf")).softmax(-1)
        if "attn.hook_pattern" in at:
            pattern = at["attn.hook_pattern"](pattern, hook=None)
        z = (pattern @ values).transpose(1, 2)  # [R, P, h, dh]
        if "attn.hook_z" in at:
            z = at["attn.hook_z"](z, hook=None)
        z = z.reshape(R * P, h * dh)
        z = z if len(out) == R * P else z.index_select(0, out)
        attn_out = through("hook_attn_out", _linear(z, layer.W_O, layer.b_O))
        x = x + attn_out

        if not arch.attn_only:
            mlp_in = layer.ln2(through("hook_resid_mid", x))
            mlp_in = through("mlp.hook_in", mlp_in)
            pre = _linear(mlp_in, layer.W_gate if arch.gated else layer.W_in, None if arch.gated else layer.b_in)
            post = arch.act(through("mlp.hook_pre", pre))
            if arch.gated:
                post = post * through("mlp.hook_pre_linear", _linear(mlp_in, layer.W_in, layer.b_in))
            post = through("mlp.hook_post", post)
            x = x + through("hook_mlp_out", _linear(post, layer.W_out, layer.b_out))

        if len(out) == R * P:
            resid = x
        else:
            resid = full(base.resid, l + 1).index_copy_(0, out, x)
        if record is not None:
            record.resid.append(resid.view(batch, P, d))
        if "hook_resid_post" in at:
            resid = at["hook_resid_post"](resid.view(R, P, d), hook=None).reshape(R * P, d)

    if work is not None:
        work["unembedded"] = work.get("unembedded", 0) + R * len(read)
    final = resid.view(R, P, d)[:, read]
    logits = arch.ln_final(final) @ arch.W_U
    if arch.b_U is not None:
        logits = logits + arch.b_U
    return logits


def trace(arch: Arch, resid_pre0: torch.Tensor) -> tuple[Trace, torch.Tensor]:
    """The kernel's run of a base input from its ``blocks.0.hook_resid_pre``: (trace, logits at every position)."""
    batch, P, _ = resid_pre0.shape
    record = Trace(resid=[])
    zeros = torch.zeros(batch, dtype=torch.long, device=resid_pre0.device)
    with torch.no_grad():
        logits = forward(arch, Trace(resid=[resid_pre0]), 1, zeros, zeros, list(range(P)), record=record)
    return record, logits


# The patcher's entry point -----------------------------------------------------------------------


def _disable(model, diff: float) -> None:
    from ..model.components import model_label

    state(model).disabled = f"differs by {diff:.2e}"
    sys.stderr.write(f"circuitcheck: fast path disabled for {model_label(model)}: differs by {diff:.2e}\n")
    sys.stderr.flush()


def _close(got: torch.Tensor, expected: torch.Tensor) -> tuple[bool, float]:
    if got.shape != expected.shape:
        return False, float("inf")
    diff = float((got.float() - expected.float()).abs().max()) if got.numel() else 0.0
    return diff <= TOLERANCE * max(1.0, float(expected.abs().max()) if expected.numel() else 1.0), diff


def base_trace(patcher, runs, base: str, arch: Arch) -> Trace | None:
    """The base run's trace, computed once per task and base; None (and the fast path off) if it misses the model's logits."""
    traces = runs.fast_traces  # the runs are remade when the weights change, and their traces with them
    if base not in traces:
        base_run = getattr(runs, base)
        resid0 = base_run["blocks.0.hook_resid_pre"]
        record, logits = trace(arch, resid0)
        ok, diff = _close(logits, base_run.logits)
        if not ok:
            _disable(patcher.model, diff)
            return None
        traces[base] = record
    return traces[base]


def expand_logits(logits: torch.Tensor, read: list[int], seq_len: int) -> torch.Tensor:
    """Logits at the ``read`` positions ``[rows, k, vocab]`` as ``[rows, seq_len, vocab]`` for a metric.

    One position: a view that repeats it (no copy). Several: the other positions are NaN.
    Metrics are checked to read only what they declare (:func:`metric_positions`).
    """
    if len(read) == seq_len:
        return logits
    if len(read) == 1:
        return logits.expand(logits.shape[0], seq_len, logits.shape[2])
    whole = logits.new_full((logits.shape[0], seq_len, logits.shape[2]), float("nan"))
    whole[:, read] = logits
    return whole


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

    Positions the metric does not read are not computed (see :func:`expand_logits`).
    ``make_hooks(variants)`` gives the chunk's (hooks, plans); ``general(variants)``
    runs variants the general way and ``score(logits)`` is the per-example metric (both
    used once per model and kind of hook point, to verify).
    """
    model = patcher.model
    arch = arch_of(model, forced=patcher.fast is True)
    if arch is None:
        return None
    hook_names = {patch.hook for variant in variants for patch in variant}
    if not hook_names or not hooks_supported(model, hook_names):
        return None
    task = runs.task
    base_run = getattr(runs, base)
    batch, P = base_run.tokens.shape
    base_trace_ = base_trace(patcher, runs, base, arch)
    if base_trace_ is None:
        return None
    read = metric_positions(runs, base)
    n = len(variants)
    layers = torch.tensor([start_layer([v]) for v in variants], device=base_run.tokens.device)
    firsts = torch.tensor([start_position(v, P) for v in variants], device=base_run.tokens.device)
    hook_fns, plans = make_hooks(variants)
    hooks = {split_hook(name): fn for name, fn in hook_fns}
    with torch.no_grad():
        sub = forward(arch, base_trace_, n, layers.repeat_interleave(batch), firsts.repeat_interleave(batch), read, hooks,
                      work=patcher.fast_work)
    logits = expand_logits(sub, read, P)

    model_state = state(model)
    kinds = {split_hook(name)[1] for name in hook_names}
    if not kinds <= model_state.verified:
        # For each kind of hook point not yet verified, the variant using it that moves the
        # logits most (a patch without effect would verify nothing), and the last variant.
        reference = base_run.logits[:, read].to(sub.dtype)
        effect = (sub.view(n, batch, *sub.shape[1:]) - reference).abs().flatten(1).amax(1)
        picks: set[int] = {n - 1}
        for kind in kinds - model_state.verified:
            using = [i for i, v in enumerate(variants) if any(split_hook(p.hook)[1] == kind for p in v)]
            picks.add(max(using, key=lambda i: float(effect[i])))
        picks_ = sorted(picks)
        expected = general([variants[i] for i in picks_])
        got = torch.cat([sub[i * batch : (i + 1) * batch] for i in picks_])
        ok, diff = _close(got, expected[:, read])
        if ok:  # the results themselves (the metric) must agree to TOLERANCE, absolute
            for i in range(len(picks_)):
                rows = slice(i * batch, (i + 1) * batch)
                metric_diff = float((score(expand_logits(got[rows], read, P)) - score(expected[rows])).abs().max())
                diff = max(diff, metric_diff)
                ok = ok and metric_diff <= TOLERANCE
        if not ok:
            _disable(model, diff)
            return None
        moved = float((expected[:, read] - reference.repeat(len(picks_), 1, 1)).abs().max())
        if moved > TOLERANCE * max(1.0, float(reference.abs().max())):
            model_state.verified |= kinds  # else nothing was tested: verify again on the next chunk
    patcher.fast_passes += 1
    return logits


def metric_positions(runs, base: str) -> list[int]:
    """The logit positions the fast path computes for ``runs``' metric: those it declares, once checked.

    The check (once per task): on the base run's logits, the metric must give the same
    values when every other position is NaN, and when it is zero. A metric that reads
    positions it does not declare gets every position computed, with one line on stderr.
    """
    checked = runs.fast_read
    if base not in checked:
        task = runs.task
        base_run = getattr(runs, base)
        P = base_run.tokens.shape[1]
        declared = task.metric.reads(P)
        read = list(range(P))
        if declared is not None and len(declared) < P:
            logits = base_run.logits
            with torch.no_grad():
                expected = task.metric(logits, task, runs.clean.logits).float()
                honest = True
                for fill in (float("nan"), 0.0):
                    masked = torch.full_like(logits, fill)
                    masked[:, declared] = logits[:, declared]
                    got = task.metric(masked, task, runs.clean.logits).float()
                    honest = honest and bool(torch.isfinite(got).all()) and bool(((got - expected).abs() <= 1e-6).all())
            if honest:
                read = declared
            else:
                sys.stderr.write(
                    f"circuitcheck: metric {task.metric.name!r} reads logit positions it does not declare "
                    f"(declared: {declared}); the fast path computes every position for it\n"
                )
                sys.stderr.flush()
        checked[base] = read
    return checked[base]
