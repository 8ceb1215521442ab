"""Hypothesis strategies for property-based tests of circuit claims.

::

    from hypothesis import given
    from circuitcheck import strategies as cst

    @given(tokens=cst.repeated_sequences(vocab=64, exclude=[0, 1, 2]))
    def test_induction_everywhere(model, tokens):
        ...

Strategies produce plain ``torch.long`` tensors; ``vocab`` is a vocabulary
size (ids ``0..vocab-1``) and ``exclude`` ids never drawn (special tokens).
With a model, :func:`model_vocab` gives both.
"""

from __future__ import annotations

from typing import Sequence

import torch
from hypothesis import strategies as st

from .components import Component


def model_vocab(model) -> dict:
    """``{"vocab": d_vocab, "exclude": special ids, "bos": BOS id or None}`` of a model, for the strategies below."""
    from . import inputs

    return {"vocab": int(model.cfg.d_vocab), "exclude": sorted(inputs.special_token_ids(model)), "bos": inputs.bos_token_id(model)}


def _ids(vocab: int, exclude: Sequence[int]) -> list[int]:
    ids = [i for i in range(vocab) if i not in set(exclude)]
    if not ids:
        raise ValueError(f"no token ids left in a vocabulary of {vocab} after excluding {list(exclude)}")
    return ids


def _finish(rows: list[list[int]], bos: int | None) -> torch.Tensor:
    if bos is not None:
        rows = [[bos, *row] for row in rows]
    return torch.tensor(rows, dtype=torch.long)


@st.composite
def token_sequences(draw, vocab: int, exclude: Sequence[int] = (), min_len: int = 2, max_len: int = 20, batch: int = 1, bos: int | None = None):
    """``[batch, len]`` token ids drawn uniformly from the ordinary vocabulary (BOS prepended if given)."""
    ids = _ids(vocab, exclude)
    length = draw(st.integers(min_len, max_len))
    rows = [draw(st.lists(st.sampled_from(ids), min_size=length, max_size=length)) for _ in range(batch)]
    return _finish(rows, bos)


@st.composite
def repeated_sequences(draw, vocab: int, exclude: Sequence[int] = (), min_half: int = 2, max_half: int = 15, batch: int = 1, bos: int | None = None):
    """``[batch, 2 * half]`` sequences ``r r``: a random segment repeated once (BOS prepended if given)."""
    ids = _ids(vocab, exclude)
    half = draw(st.integers(min_half, max_half))
    rows = []
    for _ in range(batch):
        segment = draw(st.lists(st.sampled_from(ids), min_size=half, max_size=half))
        rows.append(segment + segment)
    return _finish(rows, bos)


@st.composite
def clean_corrupt_pairs(draw, vocab: int, exclude: Sequence[int] = (), min_len: int = 2, max_len: int = 16, min_batch: int = 1, max_batch: int = 4, bos: int | None = None):
    """``(clean, corrupt)``: two ``[batch, len]`` tensors of the same shape."""
    batch = draw(st.integers(min_batch, max_batch))
    length = draw(st.integers(min_len, max_len))
    clean = draw(token_sequences(vocab, exclude, length, length, batch, bos))
    corrupt = draw(token_sequences(vocab, exclude, length, length, batch, bos))
    return clean, corrupt


@st.composite
def head_subsets(draw, n_layers: int, n_heads: int, min_size: int = 0, max_size: int | None = None):
    """A list of distinct head components (``L{l}H{h}``) of a model of the given shape."""
    heads = [Component("head", layer, head) for layer in range(n_layers) for head in range(n_heads)]
    return draw(st.lists(st.sampled_from(heads), min_size=min_size, max_size=max_size if max_size is not None else len(heads), unique=True))
