"""Model inputs: the one place that turns prompts, tokens and positions into tensors, and seeded inputs.

- :func:`as_tokens` / :func:`token_rows`: a prompt, prompts, a ``[pos]`` or
  ``[batch, pos]`` tensor, or rows of token ids -> ``[batch, pos]`` long CPU
  tokens (or one ``[pos]`` row per prompt when lengths may differ), checked
  against the model's vocabulary and context.
- :func:`resolve_positions`: an int, a list of ints or a slice -> non-negative
  indices; :func:`positions_after_bos`: the default, every position but a
  leading BOS.
- Seeded inputs (:func:`random_tokens`, :func:`repeated_random_tokens`): every
  generated input is a function of (model vocabulary, sizes, seed) only, so the
  same claim measures the same number on every run and every machine.

Bad inputs raise :class:`InputError`, which names the bad value and what is valid.
"""

from __future__ import annotations

import operator
from typing import Any, Sequence, Union

import torch

from ..errors import CircuitCheckError
from .seeds import check_seed

TokensLike = Union[str, Sequence[str], torch.Tensor, Sequence[torch.Tensor], Sequence[Sequence[int]]]
PositionsLike = Union[int, Sequence[int], slice, range, torch.Tensor]


class InputError(CircuitCheckError, ValueError):
    """Prompts, tokens or positions that cannot be used: the message names the value and what is valid."""


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
    generator = torch.Generator().manual_seed(check_seed(seed))
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
    _check_positive(n_prompts=n_prompts, half_len=half_len)
    n_ctx = getattr(getattr(model, "cfg", None), "n_ctx", None)
    length = 2 * half_len + (bos_token_id(model) is not None)
    if n_ctx is not None and length > n_ctx:
        raise InputError(
            f"half_len={half_len!r} is not valid: 'BOS r r' would be {length} tokens, more than the model's context of {n_ctx} "
            f"(half_len can be at most {(n_ctx - (bos_token_id(model) is not None)) // 2})"
        )
    first = random_tokens(model, n_prompts, half_len, seed)
    return with_bos(model, torch.cat([first, first], dim=1))


def tokens_of_prompts(model, prompts: str | Sequence[str]) -> list[torch.Tensor]:
    """Tokenise prompts one by one (BOS prepended as the model does); a list of ``[pos]`` tensors."""
    if isinstance(prompts, str):
        prompts = [prompts]
    if not isinstance(prompts, (list, tuple)):
        raise InputError(f"prompts {_shown(prompts)} of type {type(prompts).__name__} are not valid: give a string or a list of strings")
    if len(prompts) == 0:
        raise InputError("prompts is empty: give at least one prompt")
    for index, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise InputError(f"prompt {index} is {_shown(prompt)} ({type(prompt).__name__}): every prompt must be a string")
    if model is None or getattr(model, "tokenizer", None) is None:
        raise InputError(f"this model has no tokenizer, so string prompts cannot be used (got {_shown(prompts[0])}): pass tokens= instead")
    return [model.to_tokens(p)[0].cpu() for p in prompts]


def _is_prompts(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, (list, tuple)) and bool(value) and all(isinstance(v, str) for v in value))


def token_rows(model, value: TokensLike, *, what: str = "tokens") -> list[torch.Tensor]:
    """One ``[pos]`` long CPU tensor per prompt; rows may differ in length.

    ``value``: a prompt string or a list of prompts (tokenised with the model's
    BOS), a ``[pos]`` or ``[batch, pos]`` integer tensor (or array), or a list
    of ``[pos]`` rows. Token ids are checked against the vocabulary of
    ``model`` (skipped when ``model`` is None). ``what`` names the value in errors.
    """
    if _is_prompts(value) or (isinstance(value, (list, tuple)) and any(isinstance(v, str) for v in value)):
        rows = tokens_of_prompts(model, value)  # a list with any string is prompts: the others are named there
    elif isinstance(value, (list, tuple)) and not value:
        raise InputError(f"{what} are empty: give at least one prompt")
    elif isinstance(value, (list, tuple)) and not any(_is_int(v) for v in value):  # rows, possibly of different lengths
        rows = [_integer_tensor(_tensor_of(v, what), what).reshape(-1) for v in value]
    else:
        tensor = _tensor_of(value, what)
        tensor = _integer_tensor(tensor, what)
        if tensor.ndim == 1:
            tensor = tensor[None]
        if tensor.ndim != 2:
            raise InputError(f"{what} must be [batch, pos] or [pos] token ids, got shape {tuple(tensor.shape)}: {_shown(value.tolist() if isinstance(value, torch.Tensor) else value)}")
        rows = list(tensor)
    if not rows:
        raise InputError(f"{what} are empty: give at least one prompt")
    rows = [row.long().cpu() for row in rows]
    if model is not None:
        vocab = model.cfg.d_vocab
        for row in rows:
            if row.numel() and (int(row.min()) < 0 or int(row.max()) >= vocab):
                bad = int(row.max()) if int(row.max()) >= vocab else int(row.min())
                raise InputError(f"token id {bad} is outside the model's vocabulary 0-{vocab - 1}")
    return rows


def as_tokens(model, value: TokensLike, *, what: str = "tokens") -> torch.Tensor:
    """``[batch, pos]`` long CPU tokens: :func:`token_rows` of one length, within the model's context."""
    rows = token_rows(model, value, what=what)
    lengths = sorted({int(row.shape[0]) for row in rows})
    if len(lengths) > 1:
        verb = "tokenise to" if _is_prompts(value) else "have"
        raise InputError(
            f"{what} {verb} different lengths ({', '.join(map(str, lengths))} tokens): "
            "they form one [batch, pos] tensor, so give prompts of the same token length"
        )
    tokens = torch.stack(rows)
    if tokens.shape[1] == 0:
        raise InputError(f"{what} are empty (shape {tuple(tokens.shape)}): give at least one token per prompt")
    n_ctx = getattr(getattr(model, "cfg", None), "n_ctx", None)
    if n_ctx is not None and tokens.shape[1] > n_ctx:
        raise InputError(f"{what} have {tokens.shape[1]} positions, more than the model's context of {n_ctx}")
    return tokens


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _tensor_of(value: Any, what: str) -> torch.Tensor:
    """``value`` as a tensor, or an InputError naming it (None, strings mixed with ids, mappings...)."""
    if isinstance(value, torch.Tensor):
        return value
    try:
        tensor = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError, OverflowError):
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        raise InputError(f"{what} of type {type(value).__name__} are not valid ({shown}): "
                         "give a prompt, a list of prompts, or [batch, pos] token ids") from None
    if tensor.dtype.is_floating_point or tensor.dtype.is_complex or tensor.dtype == torch.bool:
        # named as given: a float tensor would show 16777217.0 rounded to float32
        raise InputError(f"{what} must be integer token ids, got dtype {tensor.dtype}: {_shown(value)}")
    return tensor


def _integer_tensor(tensor: torch.Tensor, what: str) -> torch.Tensor:
    if tensor.dtype.is_floating_point or tensor.dtype.is_complex or tensor.dtype == torch.bool:
        raise InputError(f"{what} must be integer token ids, got dtype {tensor.dtype}: {_shown(tensor.tolist() if tensor.numel() <= 8 else tensor)}")
    return tensor


def _is_int(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, torch.Tensor):
        return value.ndim == 0 and not value.dtype.is_floating_point and value.dtype != torch.bool
    try:
        operator.index(value)  # ints, numpy and torch integer scalars
    except TypeError:
        return False
    return True


def resolve_positions(positions: PositionsLike, seq_len: int, *, what: str = "position") -> list[int]:
    """Non-negative position indices, in the order given (repeats kept), from an int, ints, a range or a slice.

    Negative indices count from the end. A position outside the ``seq_len``
    positions, a non-integer, or a selection of nothing is an :class:`InputError`.
    """
    if isinstance(positions, slice):
        selected = list(range(seq_len))[positions]
        if not selected:
            raise InputError(
                f"positions {_slice_text(positions)} select no position of inputs with {seq_len} positions (0 to {seq_len - 1})"
            )
        return selected
    if _is_int(positions):
        items = [positions]
    else:
        try:
            items = list(positions)
        except TypeError:
            raise InputError(f"positions={positions!r} is not valid: give an int, a list of ints or a slice") from None
        if not items:
            raise InputError(f"positions={positions!r} selects no position: give at least one")
    out = []
    for p in items:
        if not _is_int(p):
            raise InputError(f"{what} {p!r} is not valid: positions are integers")
        p = operator.index(p)
        if not -seq_len <= p < seq_len:
            raise InputError(
                f"{what} {p} is out of range: the inputs have {seq_len} positions, valid are 0 to {seq_len - 1} "
                f"(or -{seq_len} to -1 from the end)"
            )
        out.append(p % seq_len)
    return out


def positions_after_bos(model, tokens: torch.Tensor) -> list[int]:
    """Every position of ``[batch, pos]`` tokens except a leading BOS (when every prompt starts with the model's BOS).

    Inputs that are only a BOS token are an :class:`InputError`: nothing follows it.
    """
    seq_len = int(tokens.shape[1])
    bos = bos_token_id(model)
    start = 1 if bos is not None and bool((tokens[:, 0] == bos).all()) else 0
    if start >= seq_len:
        raise InputError(f"the inputs have {seq_len} position, a BOS token: no position follows it (give positions=[0] to use it)")
    return list(range(start, seq_len))


def _slice_text(positions: slice) -> str:
    return f"{'' if positions.start is None else positions.start}:{'' if positions.stop is None else positions.stop}"


MAX_COUNT = 10_000_000


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{name}={value!r} is not valid: it must be a positive integer")
        if value > MAX_COUNT:  # a typo like 10**30 would otherwise be an allocation failure deep in torch
            raise InputError(f"{name}={value!r} is not valid: it must be at most {MAX_COUNT:,}")
