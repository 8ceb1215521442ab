"""Weight-based circuit analysis: QK/OV circuits, copying scores, composition scores.

Everything here reads the model's weights only (no forward pass), in
TransformerLens's row-vector convention (``x @ W``):

- ``W_OV = W_V @ W_O`` (``[d_model, d_model]``) and ``W_QK = W_Q @ W_K^T``.
- :func:`ov_circuit`: the full OV circuit ``W_E @ W_OV @ W_U`` (``[d_vocab, d_vocab]``,
  row = attended-to token, column = logit it moves), as a ``FactoredMatrix``.
- :func:`qk_circuit`: the full QK circuit ``W_E @ W_QK @ W_E^T`` (row = query
  token, column = key token).
- :func:`copying_score`: the eigenvalue copying score of "A Mathematical
  Framework for Transformer Circuits" (Elhage et al. 2021):
  ``Re(sum(λ)) / sum(|λ|)`` over the (complex) eigenvalues λ of the full OV
  circuit. ``sum(λ)`` is the trace, real for a real matrix; the score lies in
  ``[-1, 1]``: +1 when every eigenvalue is positive real (the head raises the
  logit of the token it attends to: copying), -1 when every eigenvalue is
  negative real (anti-copying / suppression), near 0 for no systematic effect.
  Zero eigenvalues (the matrix has rank <= d_head) contribute nothing.
- :func:`composition_score`: Q-, K- and V-composition between a sender head
  (layer l1) and a receiver head (layer l2 > l1), exactly as TransformerLens's
  ``all_composition_scores``: ``||L @ R||_F / (||L||_F ||R||_F)`` with
  ``L = W_OV(sender)`` and ``R = W_QK(receiver)`` (Q), ``W_QK(receiver)^T`` (K),
  ``W_OV(receiver)`` (V).
- :func:`random_composition_baseline`: the same score for random Gaussian
  factors of the same shapes (seeded), the reference a real score is read against.

LayerNorm: the weights are used as the model runs them. A ``TransformerBridge``
runs raw, unfolded LayerNorm weights, so these circuits ignore every
LayerNorm (its centring, scale and gain) between the embedding, the head and
the unembedding. They describe the linear maps of the heads themselves, not
the exact end-to-end function; direct logit attribution
(:mod:`circuitcheck.attribution`) measures the latter on real inputs.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Union

import numpy as np
import pandas as pd
import torch

from ..model.components import Component
from ..errors import ArgumentError, CircuitCheckError, ComponentError

COMPOSITION_KINDS = ("q", "k", "v")
DEFAULT_BASELINE_SAMPLES = 200
DEFAULT_BASELINE_QUANTILE = 0.95

HeadLike = Union[str, Component, tuple]


# Weights ----------------------------------------------------------------------


def _weights(model, name: str) -> torch.Tensor:
    """Stacked ``[n_layers, n_heads, ...]`` attention weight ``name``, float32 on CPU-agnostic device."""
    value = getattr(model, name, None)
    if value is None:
        value = torch.stack([getattr(block.attn, name) for block in model.blocks])
    value = value.detach()
    if name in ("W_K", "W_V") and value.shape[1] != model.cfg.n_heads:  # grouped-query attention
        value = value.repeat_interleave(model.cfg.n_heads // value.shape[1], dim=1)
    return value.float()


def _factored(a: torch.Tensor, b: torch.Tensor):
    from transformer_lens import FactoredMatrix

    return FactoredMatrix(a, b)


def _embed(model) -> torch.Tensor:
    return model.W_E.detach().float()


def _unembed(model) -> torch.Tensor:
    return model.W_U.detach().float()


def parse_head(head: HeadLike, model=None, *, what: str = "head") -> Component:
    """A head from ``"L1H3"``, a :class:`Component`, or ``(layer, head)``; validated when ``model`` is given.

    An input port (``L1H3.k``) is kept: composition uses it as the kind.
    """
    if isinstance(head, tuple):
        if len(head) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in head):
            raise ComponentError(f"{what} {head!r} is not valid: give a head as 'L1H3' or (layer, head)")
        component = Component("head", head[0], head[1])
    else:
        component = Component.parse(head)
    if component.kind != "head":
        raise ComponentError(f"{what} {component} is not an attention head: give a head such as 'L1H3'")
    if component.positions is not None:
        raise ComponentError(f"{what} {component}: weight-based scores have no positions; drop the '@...'")
    if model is not None:
        component.validate(model)
    return component


def _head(model, layer: int, head: int) -> Component:
    if isinstance(layer, bool) or isinstance(head, bool) or not isinstance(layer, int) or not isinstance(head, int):
        raise ComponentError(f"layer and head must be integers, got layer={layer!r}, head={head!r}")
    return Component("head", layer, head).validate(model)


def ov_matrix(model, layer: int, head: int):
    """``W_V @ W_O`` of one head as a ``FactoredMatrix`` (``[d_model, d_model]``)."""
    _head(model, layer, head)
    return _factored(_weights(model, "W_V")[layer, head], _weights(model, "W_O")[layer, head])


def qk_matrix(model, layer: int, head: int):
    """``W_Q @ W_K^T`` of one head as a ``FactoredMatrix`` (``[d_model, d_model]``)."""
    _head(model, layer, head)
    return _factored(_weights(model, "W_Q")[layer, head], _weights(model, "W_K")[layer, head].T)


def ov_circuit(model, layer: int, head: int):
    """The full OV circuit ``W_E @ W_V @ W_O @ W_U`` (``[d_vocab, d_vocab]``) as a ``FactoredMatrix``.

    Entry ``[i, j]``: how much attending to token ``i`` raises the logit of
    token ``j`` (LayerNorm ignored, see the module docstring).
    """
    _head(model, layer, head)
    W_V, W_O = _weights(model, "W_V")[layer, head], _weights(model, "W_O")[layer, head]
    return _factored(_embed(model) @ W_V, W_O @ _unembed(model))


def qk_circuit(model, layer: int, head: int):
    """The full QK circuit ``W_E @ W_Q @ W_K^T @ W_E^T`` (``[d_vocab, d_vocab]``) as a ``FactoredMatrix``.

    Entry ``[i, j]``: the (unscaled) attention score of query token ``i`` on key
    token ``j`` from token embeddings alone (no positions, LayerNorm ignored).
    """
    _head(model, layer, head)
    W_E = _embed(model)
    W_Q, W_K = _weights(model, "W_Q")[layer, head], _weights(model, "W_K")[layer, head]
    return _factored(W_E @ W_Q, (W_E @ W_K).T)


# Copying ------------------------------------------------------------------------


def eigenvalue_copying_score(matrix) -> float:
    """``Re(sum(λ)) / sum(|λ|)`` over the eigenvalues of a square matrix or ``FactoredMatrix``.

    A ``FactoredMatrix`` ``A @ B`` uses the eigenvalues of the small ``B @ A``
    (the same non-zero eigenvalues). Raises for a zero matrix (no eigenvalue mass).
    """
    if hasattr(matrix, "eigenvalues") and hasattr(matrix, "BA"):
        eigenvalues = matrix.eigenvalues
    else:
        matrix = torch.as_tensor(matrix)
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ArgumentError(f"the copying score needs a square matrix, got shape {tuple(matrix.shape)}")
        eigenvalues = torch.linalg.eigvals(matrix.double())
    eigenvalues = eigenvalues.to(torch.complex128)
    mass = float(eigenvalues.abs().sum())
    if not mass > 0:
        raise CircuitCheckError("the OV circuit is zero (all eigenvalues are 0): the copying score is undefined")
    return float(eigenvalues.sum().real) / mass


def copying_score(model, layer: int, head: int) -> float:
    """Eigenvalue copying score of head ``layer``.``head``'s full OV circuit ``W_E W_V W_O W_U``.

    ``Re(sum(λ)) / sum(|λ|)`` over its eigenvalues, in [-1, 1] (Elhage et al.
    2021); positive: the head raises the logits of the tokens it attends to.
    """
    return eigenvalue_copying_score(ov_circuit(model, layer, head))


def copying_scores(model) -> pd.DataFrame:
    """Copying score of every head: a ``[layer x head]`` DataFrame."""
    cfg = model.cfg
    data = [[copying_score(model, layer, head) for head in range(cfg.n_heads)] for layer in range(cfg.n_layers)]
    return pd.DataFrame(
        data,
        index=pd.RangeIndex(cfg.n_layers, name="layer"),
        columns=pd.RangeIndex(cfg.n_heads, name="head"),
    )


# Composition --------------------------------------------------------------------


def canonical_composition_kind(kind: str) -> str:
    if not isinstance(kind, str) or kind.lower() not in COMPOSITION_KINDS:
        raise ArgumentError(f"composition kind {kind!r} is not valid: use 'q', 'k' or 'v'")
    return kind.lower()


def _score(left, right) -> torch.Tensor:
    """``||left @ right||_F / (||left||_F ||right||_F)`` on factored matrices (TransformerLens's formula)."""
    new_right = right.collapse_r()
    new_left = left.collapse_l()
    r_norms = new_right.norm(dim=[-2, -1])
    l_norms = new_left.norm(dim=[-2, -1])
    comp_norms = (new_left @ new_right).norm(dim=[-2, -1])
    return comp_norms / r_norms / l_norms


def _receiver_matrix(W_Q, W_K, W_V, W_O, kind: str):
    if kind == "q":
        return _factored(W_Q, W_K.transpose(-2, -1))
    if kind == "k":
        return _factored(W_Q, W_K.transpose(-2, -1)).T
    return _factored(W_V, W_O)


def _pair(model, sender: HeadLike, receiver: HeadLike, kind: str | None) -> tuple[Component, Component, str]:
    sender_c = parse_head(sender, model, what="sender")
    receiver_c = parse_head(receiver, model, what="receiver")
    if sender_c.port is not None:
        raise ComponentError(f"sender {sender_c}: the sender is a head's output, e.g. 'L0H2' (no .q/.k/.v)")
    if kind is None:
        if receiver_c.port is None:
            raise ArgumentError(f"say which composition: kind='q', 'k' or 'v', or name the receiver's input (e.g. '{receiver_c}.k')")
        kind = receiver_c.port
    kind = canonical_composition_kind(kind)
    if receiver_c.port is not None and receiver_c.port != kind:
        raise ArgumentError(f"receiver {receiver_c} names its .{receiver_c.port} input but kind={kind!r}: they must agree")
    if receiver_c.layer <= sender_c.layer:
        raise ComponentError(
            f"receiver {receiver_c.without_positions()} is not after sender {sender_c}: composition needs the receiver "
            f"in a later layer (layer > {sender_c.layer})"
        )
    return sender_c, Component("head", receiver_c.layer, receiver_c.head), kind


def composition_score(model, sender: HeadLike, receiver: HeadLike, kind: str | None = None) -> float:
    """Q-, K- or V-composition score of ``sender`` (e.g. ``"L0H2"``) into ``receiver`` (e.g. ``"L1H3"``).

    ``kind`` is ``"q"``, ``"k"`` or ``"v"``, or implied by the receiver's input
    (``"L1H3.k"``). Equal to TransformerLens's ``all_composition_scores`` entry.
    """
    sender_c, receiver_c, kind = _pair(model, sender, receiver, kind)
    W_Q, W_K, W_V, W_O = (_weights(model, n) for n in ("W_Q", "W_K", "W_V", "W_O"))
    left = _factored(W_V[sender_c.layer, sender_c.head], W_O[sender_c.layer, sender_c.head])
    l2, h2 = receiver_c.layer, receiver_c.head
    right = _receiver_matrix(W_Q[l2, h2], W_K[l2, h2], W_V[l2, h2], W_O[l2, h2], kind)
    return float(_score(left, right))


def composition_tensor(model, kind: str) -> torch.Tensor:
    """All scores ``[layer1, head1, layer2, head2]``; 0 where layer2 <= layer1 (as TransformerLens)."""
    kind = canonical_composition_kind(kind)
    W_Q, W_K, W_V, W_O = (_weights(model, n) for n in ("W_Q", "W_K", "W_V", "W_O"))
    n_layers = W_Q.shape[0]
    left = _factored(W_V, W_O)
    right = _receiver_matrix(W_Q, W_K, W_V, W_O, kind)
    # broadcast: left [l1, h1, 1, 1], right [1, 1, l2, h2]
    left = left.unsqueeze(2).unsqueeze(3)
    right = right.unsqueeze(0).unsqueeze(0)
    scores = _score(left, right)
    index = torch.arange(n_layers)
    mask = index[:, None, None, None] < index[None, None, :, None]
    return torch.where(mask, scores, torch.zeros_like(scores))


def composition_scores(model, kind: str) -> pd.DataFrame:
    """Sender x receiver DataFrame of ``kind`` composition scores (NaN where the receiver is not in a later layer).

    Rows: sender heads ``L{l}H{h}`` (index name ``sender``); columns: receiver heads (``receiver``).
    """
    kind = canonical_composition_kind(kind)
    scores = composition_tensor(model, kind)
    n_layers, n_heads = scores.shape[0], scores.shape[1]
    labels = [f"L{layer}H{head}" for layer in range(n_layers) for head in range(n_heads)]
    flat = scores.reshape(n_layers * n_heads, n_layers * n_heads).double().numpy().copy()
    layer_of = np.repeat(np.arange(n_layers), n_heads)
    flat[~(layer_of[:, None] < layer_of[None, :])] = np.nan
    return pd.DataFrame(flat, index=pd.Index(labels, name="sender"), columns=pd.Index(labels, name="receiver"))


@dataclass(frozen=True)
class RandomBaseline:
    """Composition scores of random Gaussian factors with the model's shapes."""

    kind: str
    mean: float
    std: float
    quantile: float
    quantile_value: float
    n_samples: int
    seed: int
    samples: np.ndarray = field(repr=False)  # every sample: a repr shows the summary only

    def describe(self) -> str:
        return (
            f"random baseline {self.mean:.3f} ± {self.std:.3f} (q{self.quantile:.0%} {self.quantile_value:.3f}, "
            f"{self.n_samples} seeded samples, seed {self.seed})"
        )

    def _repr_html_(self) -> str:
        """The notebook view: the baseline's numbers in one table (:mod:`circuitcheck.report.notebook`)."""
        from .sweeps import report_view

        return report_view("baseline_html")(self)


def random_composition_baseline(
    model,
    kind: str = "k",
    *,
    n_samples: int = DEFAULT_BASELINE_SAMPLES,
    quantile: float = DEFAULT_BASELINE_QUANTILE,
    seed: int = 0,
) -> RandomBaseline:
    """Composition scores of random factored matrices shaped like the model's (``d_model``, ``d_head``).

    Each sample draws i.i.d. standard-normal ``W_Q, W_K, W_V, W_O`` for a sender
    and a receiver head and scores them with the same formula as the real
    heads (the score is scale-free, so the variance does not matter). Returns the
    mean, the standard deviation and the ``quantile`` of the samples.
    """
    kind = canonical_composition_kind(kind)
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 2:
        raise ArgumentError(f"n_samples={n_samples!r} is not valid: it must be an integer >= 2")
    if not isinstance(quantile, (int, float)) or not 0 < quantile < 1:
        raise ArgumentError(f"quantile={quantile!r} is not valid: it must be between 0 and 1, e.g. 0.95")
    samples = _baseline_samples(int(model.cfg.d_model), int(model.cfg.d_head), kind, n_samples, int(seed))
    return RandomBaseline(
        kind=kind,
        mean=float(samples.mean()),
        std=float(samples.std(ddof=1)),
        quantile=float(quantile),
        quantile_value=float(np.quantile(samples, quantile)),
        n_samples=n_samples,
        seed=int(seed),
        samples=samples,
    )


@functools.lru_cache(maxsize=32)
def _baseline_samples(d_model: int, d_head: int, kind: str, n_samples: int, seed: int) -> np.ndarray:
    """Seeded random scores (dense products in float64: the same formula, cheaper than SVDs for a batch)."""
    generator = torch.Generator().manual_seed(seed)

    def draw(*shape):
        return torch.randn(n_samples, *shape, generator=generator, dtype=torch.float64)

    W_V1, W_O1 = draw(d_model, d_head), draw(d_head, d_model)
    W_Q, W_K, W_V, W_O = draw(d_model, d_head), draw(d_model, d_head), draw(d_model, d_head), draw(d_head, d_model)
    left = W_V1 @ W_O1
    right = {"q": W_Q @ W_K.transpose(-2, -1), "k": W_K @ W_Q.transpose(-2, -1), "v": W_V @ W_O}[kind]
    scores = (left @ right).norm(dim=(-2, -1)) / left.norm(dim=(-2, -1)) / right.norm(dim=(-2, -1))
    samples = scores.numpy()
    samples.setflags(write=False)
    return samples
