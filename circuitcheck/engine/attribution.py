"""Direct logit attribution (DLA): each component's direct effect on a logit difference.

The final residual stream is a sum of the components' outputs::

    resid_final = embed + pos_embed + sum_L (attn_out_L + mlp_out_L)
    attn_out_L  = sum_h z_h @ W_O[h] + b_O_L

and the logits are ``ln_final(resid_final) @ W_U + b_U`` with the final
LayerNorm ``ln(x) = (x - mean(x)) / scale * w + b``. Freezing ``scale`` at its
value on the cached run makes the logits linear in the components, so with
``d`` the answer-minus-wrong-answer unembedding direction (or one answer's
column of ``W_U``) each component ``c`` gets

    DLA(c) = ((c - mean_d_model(c)) / scale) @ (w * d)

and ``sum(DLA over the decomposition) + b @ d + b_U·(answer - wrong)`` equals the
model's actual logit difference (exactly, up to float error). ``RMSNorm``
models skip the centring; models without a final norm skip scale and centring.
The rows ``ln_final.b`` and ``b_U`` hold the two constant terms.

The table has one row per component (index ``component``) with columns:

- ``kind``: ``embed``, ``pos_embed``, ``head``, ``attn_bias`` (``b_O``), ``attn``,
  ``mlp``, ``ln_bias``, ``unembed_bias``, ``total``;
- ``layer``, ``head`` (None where not applicable);
- ``in_total``: True for the rows whose sum is the logit difference
  (embed, pos_embed, each ``L.attn`` and ``L.mlp``, ``ln_final.b``, ``b_U``).
  Heads and ``L.attn.b_O`` are the finer split of ``L.attn``: per layer they sum to it;
- ``mean``, ``std`` over examples, ``share`` (``mean / mean of total``);
- ``ex0`` ... ``ex{n-1}``: the per-example values.

The ``total`` row is the model's own logit difference, read from its logits.
With several positions, a per-example value is the mean over those positions.
"""

from __future__ import annotations

from typing import Sequence, Union

import numpy as np
import pandas as pd
import torch

from ..errors import CircuitCheckError
from ..model import inputs as _inputs
from .session import session_of

SUMMARY_COLUMNS = ("kind", "layer", "head", "in_total", "mean", "std", "share")
MAX_BATCH = 64

Positions = Union[int, Sequence[int], slice]


def direct_logit_attribution(
    model,
    task_or_tokens=None,
    positions: Positions = -1,
    answers=None,
    wrong_answers=None,
) -> pd.DataFrame:
    """Direct logit attribution of every component on a task or on tokens (see the module docstring).

    ``task_or_tokens``: a :class:`~circuitcheck.tasks.Task` (its clean inputs,
    and its ``answers`` / ``wrong_answers`` unless given here), or ``[batch, pos]``
    token ids. ``positions``: the position(s) whose logits are attributed (int,
    list of ints or slice; negative counts from the end). ``answers``: token ids
    ``[batch]`` or ``[batch, k]`` (mean over k), an int for all examples, or
    ``"next"`` for the actual next token at each position. ``wrong_answers``:
    same forms; ``False`` (or none anywhere) attributes the answer's logit alone.
    """
    from ..model.tasks import Task

    task = task_or_tokens if isinstance(task_or_tokens, Task) else None
    if task is not None:
        task.validate(model)
        tokens = task.clean
    elif task_or_tokens is None:
        raise CircuitCheckError("direct_logit_attribution needs a task or tokens")
    else:
        tokens = _inputs.as_tokens(model, task_or_tokens)
    batch, seq_len = tokens.shape
    pos_index = _inputs.resolve_positions(positions, seq_len)
    ans, wrong = _resolve_answers(model, task, tokens, pos_index, answers, wrong_answers)

    chunks = []
    for start in range(0, batch, MAX_BATCH):
        stop = min(batch, start + MAX_BATCH)
        chunks.append(
            _attribute(
                model,
                tokens[start:stop],
                pos_index,
                ans[start:stop],
                None if wrong is None else wrong[start:stop],
            )
        )
    names = list(chunks[0][0])
    values = np.concatenate([np.stack([chunk[0][n] for n in names]) for chunk in chunks], axis=1)  # [rows, batch]
    meta = chunks[0][1]
    return _frame(names, meta, values)


def _token_ids(value, batch: int, n_pos: int, d_vocab: int, label: str) -> torch.Tensor:
    """``[batch, n_pos, k]`` token ids from an int, ``[batch]`` or ``[batch, k]``."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = torch.full((batch,), int(value))
    tensor = torch.as_tensor(value)
    if tensor.dtype.is_floating_point or tensor.dtype == torch.bool:
        raise CircuitCheckError(f"{label} must be integer token ids, got dtype {tensor.dtype}")
    tensor = tensor.long().cpu()
    if tensor.ndim == 0:
        tensor = tensor.expand(batch)
    if tensor.ndim not in (1, 2) or tensor.shape[0] != batch:
        raise CircuitCheckError(f"{label} must be [batch] or [batch, k] token ids for {batch} examples, got shape {tuple(tensor.shape)}")
    if tensor.numel() and (int(tensor.min()) < 0 or int(tensor.max()) >= d_vocab):
        raise CircuitCheckError(f"{label} contain token ids outside the model's vocabulary 0-{d_vocab - 1}")
    if tensor.ndim == 1:
        tensor = tensor[:, None]
    return tensor[:, None, :].expand(batch, n_pos, tensor.shape[1])


def _resolve_answers(model, task, tokens, pos_index, answers, wrong_answers):
    batch, seq_len = tokens.shape
    d_vocab = model.cfg.d_vocab
    if isinstance(answers, str):
        if answers != "next":
            raise CircuitCheckError(f"answers={answers!r} is not valid: give token ids or 'next' (the actual next token)")
        last = max(pos_index)
        if last + 1 >= seq_len:
            raise CircuitCheckError(
                f"answers='next' needs a next token, but position {last} is the last one: choose positions before {seq_len - 1}"
            )
        ans = tokens[:, [p + 1 for p in pos_index]][:, :, None]
    else:
        if answers is None:
            answers = getattr(task, "answers", None) if task is not None else None
        if answers is None:
            where = f"task {task.name!r} has no answers" if task is not None else "no answers were given"
            raise CircuitCheckError(
                f"direct logit attribution needs answer tokens and {where}: pass answers=... (token ids, or 'next' for the "
                "actual next token) or use a task built with answers (tasks.from_prompts)"
            )
        ans = _token_ids(answers, batch, len(pos_index), d_vocab, "answers")
    if wrong_answers is False:
        return ans, None
    if wrong_answers is None and task is not None and not isinstance(answers, str):
        wrong_answers = task.wrong_answers
    if wrong_answers is None:
        return ans, None
    return ans, _token_ids(wrong_answers, batch, len(pos_index), d_vocab, "wrong_answers")


def _final_norm(model):
    """``(center, scaled, w, b)`` of the final normalisation as the model runs it."""
    kind = getattr(model.cfg, "normalization_type", None)
    ln = getattr(model, "ln_final", None)
    if kind is None or ln is None:
        return False, False, None, None
    center = kind.startswith("LN")
    w = getattr(ln, "w", None)
    b = getattr(ln, "b", None)
    if kind.endswith("Pre"):
        w = b = None
    return center, True, (None if w is None else w.detach().double()), (None if b is None else b.detach().double())


def _attribute(model, tokens, pos_index, ans, wrong):
    cfg = model.cfg
    n_layers, n_heads = cfg.n_layers, cfg.n_heads
    has_mlp = not getattr(cfg, "attn_only", False)
    center, scaled, w, b = _final_norm(model)

    names = {"hook_embed", "ln_final.hook_scale"}
    for layer in range(n_layers):
        names |= {f"blocks.{layer}.hook_attn_out", f"blocks.{layer}.attn.hook_z"}
        if has_mlp:
            names.add(f"blocks.{layer}.hook_mlp_out")
    names_with_pos = names | {"hook_pos_embed"}
    with session_of(model).exclusive(), torch.no_grad():  # no other thread's hooks in this forward
        logits, cache = model.run_with_cache(tokens.to(cfg.device), names_filter=lambda name: name in names_with_pos)
    missing = [n for n in names if n not in cache and not (n == "ln_final.hook_scale" and not scaled)]
    if missing:
        raise CircuitCheckError(f"the model's run did not record {missing}: direct logit attribution needs these hooks")

    idx = torch.tensor(pos_index)
    W_U = model.W_U.detach().double().cpu()
    b_U = getattr(model, "b_U", None)
    b_U = torch.zeros(W_U.shape[1], dtype=torch.float64) if b_U is None else b_U.detach().double().cpu()

    def gather_dir(tok):  # [b, P, k] -> [b, P, d_model], [b, P]
        return W_U[:, tok].permute(1, 2, 3, 0).mean(2), b_U[tok].mean(-1)

    direction, bias_u = gather_dir(ans)
    if wrong is not None:
        d_wrong, bias_wrong = gather_dir(wrong)
        direction, bias_u = direction - d_wrong, bias_u - bias_wrong
    effective = direction * w.cpu() if w is not None else direction
    scale = cache["ln_final.hook_scale"][:, idx].double().cpu() if scaled else None  # [b, P, 1]

    def project(x):  # x [b, P, ..., d_model] -> [b] (mean over positions)
        x = x.double().cpu()
        if center:
            x = x - x.mean(-1, keepdim=True)
        extra = x.ndim - 3
        s = scale.reshape(scale.shape[0], scale.shape[1], *([1] * extra), 1) if scale is not None else 1.0
        eff = effective.reshape(effective.shape[0], effective.shape[1], *([1] * extra), effective.shape[-1])
        return ((x / s) * eff).sum(-1).mean(1)  # [b, ...]

    values: dict[str, np.ndarray] = {}
    meta: dict[str, tuple] = {}

    def put(name, kind, layer, head, in_total, value):
        values[name] = value.numpy()
        meta[name] = (kind, layer, head, in_total)

    put("embed", "embed", None, None, True, project(cache["hook_embed"][:, idx]))
    if "hook_pos_embed" in cache:
        put("pos_embed", "pos_embed", None, None, True, project(cache["hook_pos_embed"][:, idx]))
    W_O = model.W_O.detach().double().cpu() if getattr(model, "W_O", None) is not None else None
    for layer in range(n_layers):
        attn_W_O = W_O[layer] if W_O is not None else model.blocks[layer].attn.W_O.detach().double().cpu()
        z = cache[f"blocks.{layer}.attn.hook_z"][:, idx].double().cpu()  # [b, P, h, d_head]
        per_head = project(torch.einsum("bphd,hdm->bphm", z, attn_W_O))  # [b, h]
        for head in range(n_heads):
            put(f"L{layer}H{head}", "head", layer, head, False, per_head[:, head])
        b_O = getattr(model.blocks[layer].attn, "b_O", None)
        if b_O is not None:
            bias = b_O.detach().double().cpu().expand(z.shape[0], z.shape[1], -1)
            put(f"L{layer}.attn.b_O", "attn_bias", layer, None, False, project(bias))
        put(f"L{layer}.attn", "attn", layer, None, True, project(cache[f"blocks.{layer}.hook_attn_out"][:, idx]))
        if has_mlp:
            put(f"L{layer}.mlp", "mlp", layer, None, True, project(cache[f"blocks.{layer}.hook_mlp_out"][:, idx]))
    if b is not None:
        put("ln_final.b", "ln_bias", None, None, True, (direction * b.cpu()).sum(-1).mean(1))
    put("b_U", "unembed_bias", None, None, True, bias_u.mean(1))

    logits = logits.double().cpu()[:, idx]  # [b, P, vocab]
    total = logits.gather(-1, ans).mean(-1)
    if wrong is not None:
        total = total - logits.gather(-1, wrong).mean(-1)
    put("total", "total", None, None, False, total.mean(1))
    return values, meta


def _frame(names, meta, values: np.ndarray) -> pd.DataFrame:
    n = values.shape[1]
    total_mean = float(values[names.index("total")].mean())
    means = values.mean(axis=1)
    stds = values.std(axis=1, ddof=1) if n > 1 else np.zeros(len(names))
    with np.errstate(divide="ignore", invalid="ignore"):
        shares = means / total_mean if total_mean != 0 else np.full(len(names), np.nan)
    rows = {
        "kind": [meta[name][0] for name in names],
        "layer": pd.array([meta[name][1] for name in names], dtype=object),
        "head": pd.array([meta[name][2] for name in names], dtype=object),
        "in_total": [meta[name][3] for name in names],
        "mean": means,
        "std": stds,
        "share": shares,
    }
    for i in range(n):
        rows[f"ex{i}"] = values[:, i]
    return pd.DataFrame(rows, index=pd.Index(names, name="component"))


def per_example(frame: pd.DataFrame) -> pd.DataFrame:
    """The per-example columns of a DLA table (``ex0`` ...)."""
    return frame[[c for c in frame.columns if c not in SUMMARY_COLUMNS]]


def summary(frame: pd.DataFrame) -> pd.DataFrame:
    """The DLA table without its per-example columns (what the report draws as a bar chart)."""
    return frame[list(SUMMARY_COLUMNS)]
