"""Attention-head scores: how much of a head's attention follows a named pattern.

Definitions follow TransformerLens ``head_detector.detect_head`` with the
``"mul"`` measure, so the two agree on the same input:

    score(prompt) = sum_{q,k} A[q,k] * D[q,k] / sum_{q,k} A[q,k]

where ``A`` is the head's attention pattern on the prompt (with the BOS column
set to zero when BOS is excluded, the default) and ``D`` the 0/1 detection
pattern of the kind. The head's score is the mean over prompts. In words: the
share of the head's (non-BOS) attention mass, over all query positions, that
lands where the pattern says it should.

Kinds:

- ``previous_token``: from position i to i-1.
- ``duplicate_token``: from a token to every earlier copy of the same token.
- ``induction``: from a token to the position after each earlier copy of it.
- ``bos``: to the first position (BOS is necessarily included).
- a user-given ``[pos, pos]`` lower-triangular 0/1 pattern.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Sequence

import pandas as pd
import torch

from ..model import inputs as _inputs
from .session import session_of, tokens_digest
from ..errors import ArgumentError

HEAD_KINDS = ("previous_token", "duplicate_token", "induction", "bos")

_KIND_ALIASES = {
    "previous_token_head": "previous_token",
    "prev_token": "previous_token",
    "previous": "previous_token",
    "duplicate_token_head": "duplicate_token",
    "duplicate": "duplicate_token",
    "induction_head": "induction",
    "first_token": "bos",
    "bos_head": "bos",
}


def canonical_kind(kind: str) -> str:
    """The canonical name of a head kind; a clear error for an unknown one."""
    name = _KIND_ALIASES.get(kind, kind) if isinstance(kind, str) else None
    if name not in HEAD_KINDS:
        raise ArgumentError(f"unknown head kind {kind!r}: valid kinds are {', '.join(HEAD_KINDS)} (or pass pattern=)")
    return name


# Detection patterns, [pos, pos] float 0/1, lower triangular -------------------


def previous_token_pattern(tokens: torch.Tensor) -> torch.Tensor:
    n = tokens.shape[-1]
    return torch.diag(torch.ones(n - 1), diagonal=-1)


def duplicate_token_pattern(tokens: torch.Tensor) -> torch.Tensor:
    same = (tokens[:, None] == tokens[None, :]).float()
    return torch.tril(same, diagonal=-1)


def induction_pattern(tokens: torch.Tensor) -> torch.Tensor:
    # Attend to the position right after an earlier copy: shift the duplicate
    # pattern one key to the right. (A copy at q-1 maps to key q, which the
    # causal tril keeps, as TransformerLens does.)
    dup = duplicate_token_pattern(tokens)
    shifted = torch.zeros_like(dup)
    shifted[:, 1:] = dup[:, :-1]
    return torch.tril(shifted)


def bos_pattern(tokens: torch.Tensor) -> torch.Tensor:
    n = tokens.shape[-1]
    pattern = torch.zeros(n, n)
    pattern[:, 0] = 1.0
    return pattern


_PATTERNS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "previous_token": previous_token_pattern,
    "duplicate_token": duplicate_token_pattern,
    "induction": induction_pattern,
    "bos": bos_pattern,
}


def detection_pattern(kind: str, tokens: torch.Tensor) -> torch.Tensor:
    """The ``[pos, pos]`` 0/1 pattern of ``kind`` for one prompt's ``[pos]`` tokens."""
    return _PATTERNS[canonical_kind(kind)](tokens.cpu())


# Scores ---------------------------------------------------------------------


@dataclass
class HeadScoreRun:
    """Per-prompt scores and what they were measured on.

    ``scores`` is ``[n_prompts, n_layers, n_heads]``; ``tokens`` the prompts
    (``[pos]`` each); ``patterns`` the attention patterns of every layer on the
    first prompt, ``[n_layers, n_heads, pos, pos]`` (kept for evidence).
    """

    kind: str
    scores: torch.Tensor
    tokens: list[torch.Tensor]
    first_patterns: torch.Tensor
    exclude_bos: bool
    exclude_current_token: bool

    def frame(self) -> pd.DataFrame:
        mean = self.scores.mean(0)
        frame = pd.DataFrame(mean.numpy(), columns=pd.Index(range(mean.shape[1]), name="head"))
        frame.index.name = "layer"
        return frame


def default_tokens(model, n_prompts: int = 16, half_len: int = 20, seed: int = 0) -> torch.Tensor:
    """The seeded default input of head scores: repeated random tokens ``BOS r r``."""
    return _inputs.repeated_random_tokens(model, n_prompts=n_prompts, half_len=half_len, seed=seed)


def measure_head_scores(
    model,
    kind: str | None = "induction",
    *,
    tokens: torch.Tensor | Sequence[torch.Tensor] | None = None,
    prompts: str | Sequence[str] | None = None,
    pattern: torch.Tensor | Callable[[torch.Tensor], torch.Tensor] | None = None,
    n_prompts: int = 16,
    half_len: int = 20,
    seed: int = 0,
    exclude_bos: bool | None = None,
    exclude_current_token: bool = False,
) -> HeadScoreRun:
    """Score every head of ``model``; see :func:`head_scores` for the arguments."""
    if pattern is not None:
        name = "pattern" if kind in (None, "pattern") else kind
        make_pattern = pattern if callable(pattern) else (lambda toks: pattern)  # noqa: E731
    else:
        if kind is None:
            raise ArgumentError("give a head kind or a pattern=")
        name = canonical_kind(kind)
        make_pattern = _PATTERNS[name]
    if exclude_bos is None:
        exclude_bos = name != "bos"
    if name == "bos" and exclude_bos:
        raise ArgumentError("exclude_bos=True makes every BOS score zero: leave it unset for kind 'bos'")

    prompt_tokens = _resolve_tokens(model, tokens, prompts, n_prompts, half_len, seed)
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    scores = torch.empty(len(prompt_tokens), n_layers, n_heads)
    first_patterns = None

    # Prompts of the same length run together; each keeps its own index.
    by_length: dict[int, list[int]] = {}
    for i, toks in enumerate(prompt_tokens):
        by_length.setdefault(int(toks.shape[-1]), []).append(i)
    for length, indices in by_length.items():
        if length < 2 or length > model.cfg.n_ctx:
            raise ArgumentError(
                f"a prompt of {length} tokens {prompt_tokens[indices[0]].tolist()[:8]} cannot be scored"
                f"{' (an empty prompt is BOS alone)' if length <= 1 else ''}: it needs 2 to {model.cfg.n_ctx} tokens (the model's n_ctx)"
            )
        batch = torch.stack([prompt_tokens[i] for i in indices])
        detection = torch.stack([_checked_pattern(make_pattern(t), length) for t in batch])  # [b, q, k]
        layer_patterns = _attention_patterns(model, batch)  # [layers, b, heads, q, k]
        attn = layer_patterns.clone()
        if exclude_bos:
            attn[..., 0] = 0
        if exclude_current_token:
            attn = attn * (1 - torch.eye(length))
        hits = (attn * detection[None, :, None]).sum((-1, -2))
        total = attn.sum((-1, -2))
        per_prompt = (hits / total).permute(1, 0, 2)  # [b, layers, heads]
        scores[indices] = per_prompt
        if 0 in indices:
            first_patterns = layer_patterns[:, indices.index(0)]
    return HeadScoreRun(name, scores, prompt_tokens, first_patterns, exclude_bos, exclude_current_token)


def head_scores(
    model,
    kind: str | None = "induction",
    *,
    tokens: torch.Tensor | Sequence[torch.Tensor] | None = None,
    prompts: str | Sequence[str] | None = None,
    pattern: torch.Tensor | Callable[[torch.Tensor], torch.Tensor] | None = None,
    n_prompts: int = 16,
    half_len: int = 20,
    seed: int = 0,
    exclude_bos: bool | None = None,
    exclude_current_token: bool = False,
) -> pd.DataFrame:
    """Score every attention head for a kind of attention pattern.

    Args:
        model: a TransformerLens-style model.
        kind: ``"previous_token"``, ``"duplicate_token"``, ``"induction"`` or ``"bos"``.
        tokens: ``[batch, pos]`` token ids (or a list of ``[pos]``), used as given.
        prompts: strings, tokenised by the model (BOS prepended as it does).
        pattern: instead of a kind, a ``[pos, pos]`` 0/1 lower-triangular tensor, or
            a function from a prompt's ``[pos]`` tokens to one.
        n_prompts, half_len, seed: the default input when neither tokens nor
            prompts are given: ``n_prompts`` seeded sequences ``BOS r r`` with
            ``r`` of ``half_len`` random ordinary tokens.
        exclude_bos: zero the attention to position 0 before scoring (default:
            True for every kind but ``bos``).
        exclude_current_token: zero the attention of each position to itself.

    Returns:
        DataFrame of mean scores in [0, 1], index ``layer``, columns ``head``.
    """
    return measure_head_scores(
        model,
        kind,
        tokens=tokens,
        prompts=prompts,
        pattern=pattern,
        n_prompts=n_prompts,
        half_len=half_len,
        seed=seed,
        exclude_bos=exclude_bos,
        exclude_current_token=exclude_current_token,
    ).frame()


def _resolve_tokens(model, tokens, prompts, n_prompts, half_len, seed) -> list[torch.Tensor]:
    if tokens is not None and prompts is not None:
        raise ArgumentError("give tokens= or prompts=, not both")
    if prompts is not None:
        return _inputs.token_rows(model, prompts, what="prompts")
    if tokens is None:
        tokens = default_tokens(model, n_prompts=n_prompts, half_len=half_len, seed=seed)
    return _inputs.token_rows(model, tokens)  # prompts may differ in length: each is scored on its own


def _checked_pattern(pattern: torch.Tensor, length: int) -> torch.Tensor:
    pattern = torch.as_tensor(pattern, dtype=torch.float32).cpu()
    if tuple(pattern.shape) != (length, length):
        raise ArgumentError(f"detection pattern has shape {tuple(pattern.shape)}, expected ({length}, {length}) for this prompt")
    if bool((torch.triu(pattern, diagonal=1) != 0).any()):
        raise ArgumentError("detection pattern must be lower triangular: a causal head cannot attend to later positions")
    return pattern


_PATTERN_CACHE_SIZE = 8


def _attention_patterns(model, tokens: torch.Tensor) -> torch.Tensor:
    """Attention patterns of every layer, ``[n_layers, batch, n_heads, q, k]`` on CPU, fp32.

    The last few inputs per model are remembered in its session (dropped when its
    weights change), so several claims about the heads of one model on the same
    seeded input run the model once.
    """
    with session_of(model).exclusive() as session:  # one engine call: weights checked, other threads wait
        cache = session.derived("attention-patterns", OrderedDict)
        key = tokens_digest(tokens)
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
        names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(model.cfg.n_layers)]
        device = getattr(model.cfg, "device", None) or "cpu"
        with torch.no_grad():
            _, run = model.run_with_cache(tokens.to(device), names_filter=lambda name: name in names)
        patterns = torch.stack([run[name].detach().float().cpu() for name in names])
        cache[key] = patterns
        while len(cache) > _PATTERN_CACHE_SIZE:
            cache.popitem(last=False)
        return patterns

