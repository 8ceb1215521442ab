"""Attention-head claims: "L1H3 is an induction head", "L0H1 is not a BOS head".

The score of a head is defined in :mod:`circuitcheck.heads` (TransformerLens
``head_detector``'s ``"mul"`` measure). A claim is decided on the mean score
over its seeded prompts, and decided on that mean's bootstrap interval over
prompts: the lower bound for ``min_score`` ("is a ... head"), the upper bound
for ``max_score`` ("is not"), both for both.
"""

from __future__ import annotations

from typing import Callable, Sequence

import pandas as pd
import torch

from ..model import context
from . import stats
from ..model.components import Component, model_checkpoint, model_label
from ..engine.heads import canonical_kind, measure_head_scores
from .result import CheckResult
from .decision import check_thresholds, conclude

DEFAULT_MIN_SCORE = 0.5

_KIND_WORDS = {
    "previous_token": "a previous-token head",
    "duplicate_token": "a duplicate-token head",
    "induction": "an induction head",
    "bos": "a BOS (first-token) head",
    "pattern": "a head matching the given pattern",
}


def check_head(
    layer: int,
    head: int,
    kind: str,
    *,
    min_score: float | None = None,
    max_score: float | None = None,
    model=None,
    pattern: torch.Tensor | Callable[[torch.Tensor], torch.Tensor] | None = None,
    tokens: torch.Tensor | Sequence[torch.Tensor] | None = None,
    prompts: str | Sequence[str] | None = None,
    n_prompts: int = 16,
    half_len: int = 20,
    seed: int | None = None,
    exclude_bos: bool | None = None,
    confidence: float = stats.DEFAULT_CONFIDENCE,
) -> CheckResult:
    """Measure how well head ``layer``.``head`` fits ``kind`` and decide the claim (never raises on failure)."""
    model = context.resolve_model(model)
    seed = context.resolve_seed(seed)
    kind = "pattern" if pattern is not None else canonical_kind(kind)
    if min_score is None and max_score is None:
        min_score = DEFAULT_MIN_SCORE
    check_thresholds(min_score, max_score, low=0.0, high=1.0, names=("min_score", "max_score"))
    component = Component("head", layer, head).validate(model)

    run = measure_head_scores(
        model,
        None if kind == "pattern" else kind,
        tokens=tokens,
        prompts=prompts,
        pattern=pattern,
        n_prompts=n_prompts,
        half_len=half_len,
        seed=seed,
        exclude_bos=exclude_bos,
    )
    per_prompt = run.scores[:, layer, head]
    if per_prompt.numel() < stats.MIN_EXAMPLES and (prompts is not None or tokens is not None):
        given = f"prompts={prompts!r:.60}" if prompts is not None else "tokens="
        raise stats.TooFewExamples(
            f"{given} gives {per_prompt.numel()} prompt: a head claim is decided on an interval over prompts, "
            f"which needs at least {stats.MIN_EXAMPLES} (give a list of prompts)"
        )
    estimate = stats.bootstrap_mean(per_prompt.numpy(), confidence=confidence, seed=seed)
    scores = run.frame()
    decision = stats.decide(estimate, min_score, max_score)
    passed = decision.passed

    negative = min_score is None
    claim = f"{component} is {'not ' if negative else ''}{_KIND_WORDS[kind]}"
    metric = f"{kind.replace('_', '-')} score"
    ranking = _ranked_heads(scores)
    best = ", ".join(f"{name} {score:.3f}" for name, score in ranking[:3])
    source = "given prompts" if prompts is not None else "given tokens" if tokens is not None else (
        f"seeded prompts 'BOS r r', r = {half_len} random tokens, seed {seed}"
    )
    notes = [
        f"input:    {len(run.tokens)} {source}; attention to BOS {'excluded' if run.exclude_bos else 'included'}",
        f"{'highest-scoring heads' if passed else 'best heads of this kind instead'}: {best}",
    ]
    return CheckResult(
        kind=f"{kind}_head",
        claim=claim,
        value=estimate.mean,
        **decision.fields(),
        **estimate.interval_fields(),
        metric=metric,
        min_value=min_score,
        max_value=max_score,
        model=model_label(model),
        checkpoint=model_checkpoint(model),
        parameters={
            "component": str(component),
            "layer": layer,
            "head": head,
            "head_kind": kind,
            "seed": seed,
            "n_prompts": len(run.tokens),
            "exclude_bos": run.exclude_bos,
        },
        evidence={
            "head_scores": scores,
            "per_prompt": pd.DataFrame({"score": per_prompt.numpy()}, index=pd.RangeIndex(len(per_prompt), name="prompt")),
            "attention": _attention_frame(model, run.tokens[0], run.first_patterns[layer, head]),
        },
        notes=notes,
    )


def assert_head(layer: int, head: int, kind: str, tolerance=None, **kwargs) -> CheckResult:
    __tracebackhide__ = True
    return conclude(check_head(layer, head, kind, **kwargs), tolerance)


def assert_previous_token_head(layer: int, head: int, min_score: float | None = None, **kwargs) -> CheckResult:
    """Assert that head ``layer``.``head`` attends from each token to the one before it.

    Passes when the lower bound of the mean previous-token score's bootstrap
    interval over prompts is >= ``min_score`` (default 0.5); with only
    ``max_score=`` it is an "is not" claim (upper bound <= ``max_score``).
    Keyword arguments: ``model``, ``seed``, ``tokens``/``prompts`` (else seeded
    repeated random tokens), ``n_prompts``, ``half_len``, ``exclude_bos``, ``confidence``.
    Returns the :class:`CheckResult`; raises :class:`CircuitAssertionError` if it fails.
    """
    __tracebackhide__ = True
    return assert_head(layer, head, "previous_token", min_score=min_score, **kwargs)


def assert_duplicate_token_head(layer: int, head: int, min_score: float | None = None, **kwargs) -> CheckResult:
    """Assert that the head attends from a token to earlier copies of the same token. See :func:`assert_previous_token_head`."""
    __tracebackhide__ = True
    return assert_head(layer, head, "duplicate_token", min_score=min_score, **kwargs)


def assert_induction_head(layer: int, head: int, min_score: float | None = None, **kwargs) -> CheckResult:
    """Assert that the head attends from a repeated token to the token after its earlier copy. See :func:`assert_previous_token_head`."""
    __tracebackhide__ = True
    return assert_head(layer, head, "induction", min_score=min_score, **kwargs)


def assert_bos_head(layer: int, head: int, min_score: float | None = None, **kwargs) -> CheckResult:
    """Assert that the head puts its attention on the first (BOS) position. See :func:`assert_previous_token_head`."""
    __tracebackhide__ = True
    return assert_head(layer, head, "bos", min_score=min_score, **kwargs)


def assert_head_matches_pattern(
    layer: int,
    head: int,
    pattern: torch.Tensor | Callable[[torch.Tensor], torch.Tensor],
    min_score: float | None = None,
    **kwargs,
) -> CheckResult:
    """Assert that the head's attention follows a user-given 0/1 ``[pos, pos]`` pattern.

    ``pattern`` is a lower-triangular tensor (all prompts the same length) or a
    function from a prompt's ``[pos]`` tokens to its pattern.
    """
    __tracebackhide__ = True
    return assert_head(layer, head, "pattern", pattern=pattern, min_score=min_score, **kwargs)


def _ranked_heads(scores: pd.DataFrame) -> list[tuple[str, float]]:
    ranked = [(f"L{layer}H{head}", float(scores.loc[layer, head])) for layer in scores.index for head in scores.columns]
    return sorted(ranked, key=lambda item: -item[1])


def _attention_frame(model, tokens: torch.Tensor, pattern: torch.Tensor) -> pd.DataFrame:
    """The head's ``[q, k]`` attention on one prompt, labelled ``position:token``."""
    labels = [f"{i}:{token}" for i, token in enumerate(_token_strings(model, tokens))]
    frame = pd.DataFrame(pattern.numpy(), index=pd.Index(labels, name="query"), columns=pd.Index(labels, name="key"))
    return frame


def _token_strings(model, tokens: torch.Tensor) -> list[str]:
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        return [str(int(t)) for t in tokens]
    return [str(s) for s in tokenizer.convert_ids_to_tokens([int(t) for t in tokens])]


# The claim kinds (circuitcheck.claims.registry) ---------------------------------------------

from .registry import ClaimKind, Param, declare  # noqa: E402

_HEAD_PARAMS = (
    Param("layer", "integer", required=True, doc="the head's layer"),
    Param("head", "integer", required=True, doc="the head's index in its layer"),
    Param("min_score", "score", doc=f"passes when the lower bound of the mean score is >= it (default {DEFAULT_MIN_SCORE} when no threshold is given)"),
    Param("max_score", "score", doc='with only max_score, an "is not" claim (upper bound of the mean score <= it)'),
    Param("n_prompts", "positive", 16, doc="prompts of the seeded 'BOS r r' input"),
    Param("half_len", "positive", 20, doc="length of r in 'BOS r r'"),
    Param("prompts", "strings", doc="prompts to measure on instead of the seeded input"),
    Param("exclude_bos", "boolean", doc="leave attention to BOS out of the score"),
    Param("seed", "seed", doc="default: --circuitcheck-seed"),
    Param("confidence", "probability", stats.DEFAULT_CONFIDENCE, doc="of the bootstrap interval over prompts"),
)

_HEAD_DEFINITIONS = {
    "previous_token": "previous-token score: attention from each position i to i-1",
    "duplicate_token": "duplicate-token score: attention to earlier copies of the same token",
    "induction": "induction score: on repeated random tokens, attention from the second copy of a token to the position "
    "after its first copy",
    "bos": "BOS score: attention to the first (BOS) token",
    "pattern": "pattern score: the share of attention on a user-given pattern",
}


def _head_subject(params: dict) -> str:
    return f"L{params['layer']}H{params['head']}"


def _head_kind(kind: str, assertion: Callable) -> ClaimKind:
    return declare(ClaimKind(
        name=f"{kind}_head",
        check=check_head,
        assertion=assertion,
        metric=f"{kind.replace('_', '-')} score",
        params=_HEAD_PARAMS,
        thresholds=("min_score", "max_score"),
        evidence=("head_scores", "per_prompt", "attention"),
        definition=_HEAD_DEFINITIONS[kind] + " (mean over positions and prompts, BOS excluded unless asked; TransformerLens "
        "head_detector's \"mul\" measure); decided on its bootstrap interval over prompts.",
        section="attention",
        subject=_head_subject,
    ))


def _spec_pattern(assertion, params: dict, *, model, task=None):
    __tracebackhide__ = True
    return assertion(params.pop("layer"), params.pop("head"), params.pop("pattern"), model=model, **params)


PREVIOUS_TOKEN_HEAD = _head_kind("previous_token", assert_previous_token_head)
DUPLICATE_TOKEN_HEAD = _head_kind("duplicate_token", assert_duplicate_token_head)
INDUCTION_HEAD = _head_kind("induction", assert_induction_head)
BOS_HEAD = _head_kind("bos", assert_bos_head)
PATTERN_HEAD = declare(ClaimKind(
    name="pattern_head",
    aliases=("head_matches_pattern",),
    check=check_head,
    assertion=assert_head_matches_pattern,
    metric="pattern score",
    params=(*_HEAD_PARAMS[:2],
            Param("pattern", "reference", required=True,
                  doc="module:function from a prompt's [pos] tokens to its 0/1 [pos, pos] pattern"),
            *_HEAD_PARAMS[2:]),
    thresholds=("min_score", "max_score"),
    evidence=("head_scores", "per_prompt", "attention"),
    definition=_HEAD_DEFINITIONS["pattern"] + " (mean over positions and prompts, BOS excluded unless asked); decided on "
    "its bootstrap interval over prompts.",
    section="attention",
    spec_call=_spec_pattern,
    subject=_head_subject,
))
