"""Seeded, deterministic model inputs.

Every generated input is a function of (model vocabulary, sizes, seed) only, so
the same claim measures the same number on every run and every machine.
"""

from __future__ import annotations

from typing import Sequence

import torch


def special_token_ids(model) -> set[int]:
    """Ids of the tokenizer's special tokens (BOS, EOS, PAD, UNK...); empty without a tokenizer."""
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        return set()
    return {int(i) for i in getattr(tokenizer, "all_special_ids", []) or []}


def bos_token_id(model) -> int | None:
    """The id prepended to every prompt, or None when the model has no BOS token."""
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None or getattr(tokenizer, "bos_token_id", None) is None:
        return None
    if getattr(model.cfg, "default_prepend_bos", True) is False:
        return None
    return int(tokenizer.bos_token_id)


def ordinary_token_ids(model) -> torch.Tensor:
    """Token ids that random inputs draw from: the vocabulary less special tokens."""
    special = special_token_ids(model)
    ids = [i for i in range(model.cfg.d_vocab) if i not in special]
    if not ids:
        raise ValueError(f"model vocabulary of size {model.cfg.d_vocab} has no ordinary tokens")
    return torch.tensor(ids, dtype=torch.long)


def random_tokens(model, n_prompts: int, seq_len: int, seed: int = 0) -> torch.Tensor:
    """Uniform random ordinary tokens, ``[n_prompts, seq_len]``, without BOS."""
    _check_positive(n_prompts=n_prompts, seq_len=seq_len)
    generator = torch.Generator().manual_seed(seed)
    vocab = ordinary_token_ids(model)
    index = torch.randint(0, len(vocab), (n_prompts, seq_len), generator=generator)
    return vocab[index]


def with_bos(model, tokens: torch.Tensor) -> torch.Tensor:
    """Prepend the model's BOS token to ``[batch, pos]`` tokens (unchanged if it has none)."""
    bos = bos_token_id(model)
    if bos is None:
        return tokens
    column = torch.full((tokens.shape[0], 1), bos, dtype=tokens.dtype)
    return torch.cat([column, tokens], dim=1)


def repeated_random_tokens(model, n_prompts: int = 16, half_len: int = 20, seed: int = 0) -> torch.Tensor:
    """``BOS r r``: a random ordinary sequence ``r`` of ``half_len`` tokens, then ``r`` again.

    Shape ``[n_prompts, 1 + 2 * half_len]`` (no BOS column when the model has none).
    The standard input for induction and duplicate-token scores.
    """
    first = random_tokens(model, n_prompts, half_len, seed)
    return with_bos(model, torch.cat([first, first], dim=1))


def tokens_of_prompts(model, prompts: str | Sequence[str]) -> list[torch.Tensor]:
    """Tokenise prompts one by one (BOS prepended as the model does); a list of ``[pos]`` tensors."""
    if isinstance(prompts, str):
        prompts = [prompts]
    if len(prompts) == 0:
        raise ValueError("prompts is empty: give at least one prompt")
    if getattr(model, "tokenizer", None) is None:
        raise ValueError("this model has no tokenizer, so string prompts cannot be used: pass tokens= instead")
    return [model.to_tokens(p)[0].cpu() for p in prompts]


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} is not valid: it must be a positive integer")
