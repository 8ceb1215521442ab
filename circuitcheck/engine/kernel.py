"""The fast path's kernel: a causal decoder's forward written from plain weight tensors, ragged over variants.

:class:`Arch` is a model read as plain tensors (views of its parameters);
:func:`forward` runs ``n`` variants of a base input, computing for each row only
the layers and positions a patch can change and taking everything else from the
base input's :class:`Trace`. Reading a model into an :class:`Arch`, deciding when
the kernel applies and verifying it are :mod:`circuitcheck.engine.fastpath`'s job.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F


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
    dtype: torch.dtype = torch.float32  # the weights' least precise type: what the verification's tolerance is for

    @property
    def n_layers(self) -> int:
        return len(self.layers)



# The kernel --------------------------------------------------------------------------------------


@dataclass
class Trace:
    """The base input's run through the kernel: what variants reuse."""

    resid: list[torch.Tensor]  # resid[l]: [batch, pos, d_model] entering block l; resid[n_layers]: after the last
    keys: list[torch.Tensor] = field(default_factory=list)  # [batch, pos, n_kv, d_head], rotated
    values: list[torch.Tensor] = field(default_factory=list)
    logits: torch.Tensor | None = None  # the model's own logits of the base input [batch, pos, vocab]


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

