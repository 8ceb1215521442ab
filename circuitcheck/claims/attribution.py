"""Direct-effect and weight-circuit claims.

- "L1H3 carries most of the direct effect on the logit difference":
  :func:`assert_direct_effect` (share of the direct logit attribution).
- "the induction heads are the top direct contributors": :func:`assert_top_direct_effects`.
- "L1H0 is a copying head": :func:`assert_copying_head` (OV eigenvalue copying score).
- "L0H2 K-composes with L1H0 above random": :func:`assert_composition`.

Definitions are in :mod:`circuitcheck.attribution` and :mod:`circuitcheck.composition`.
"""

from __future__ import annotations

from typing import Iterable, Union

import numpy as np
import pandas as pd

from ..engine import attribution as _dla
from ..engine import composition as _comp
from ..model import context
from ..model.kinds import require_language_model
from . import stats
from ..model.components import Component, model_checkpoint, model_label, parse_components
from ..errors import ArgumentError, CircuitCheckError, ComponentError
from .result import CheckResult
from .decision import check_thresholds, conclude, within

_KIND_WORD = {"q": "Q", "k": "K", "v": "V"}


# Direct logit attribution ----------------------------------------------------------


def _dla_inputs(model, task, tokens):
    if tokens is not None:
        if task is not None:
            raise CircuitCheckError("give either task= or tokens=, not both")
        return tokens, "given tokens"
    task = context.resolve_task(task, model)
    return task, task.describe()


def _dla_component(component, model) -> Component:
    parsed = Component.parse(component)
    if parsed.port is not None:
        raise ComponentError(f"{parsed}: a direct effect belongs to a head's output; use L{parsed.layer}H{parsed.head}")
    if parsed.positions is not None:
        raise ComponentError(f"{parsed}: give the positions as positions=..., not '@' in the component")
    return parsed.validate(model)


def _positions_text(positions) -> str:
    if isinstance(positions, slice):
        return f"{'' if positions.start is None else positions.start}:{'' if positions.stop is None else positions.stop}"
    return str(positions)


def _has_wrong(answers, wrong_answers, task) -> bool:
    return wrong_answers is not False and (
        wrong_answers is not None
        or (task is not None and not isinstance(answers, str) and getattr(task, "wrong_answers", None) is not None)
    )


def _direction_text(answers, wrong_answers, task) -> str:
    answer = "the actual next token's logit" if isinstance(answers, str) else "the answer's logit"
    return f"{answer} minus the wrong answer's" if _has_wrong(answers, wrong_answers, task) else answer


def check_direct_effect(
    component: Union[str, Component],
    *,
    min_share: float | None = None,
    max_share: float | None = None,
    task=None,
    tokens=None,
    positions=-1,
    answers=None,
    wrong_answers=None,
    model=None,
    seed: int | None = None,
    confidence: float = stats.DEFAULT_CONFIDENCE,
) -> CheckResult:
    """Measure ``component``'s share of the direct logit attribution and decide the claim.

    share = mean over examples of the component's DLA / mean over examples of
    the model's logit difference (ratio of means), with a seeded paired
    bootstrap interval, decided on that interval (the lower bound for
    ``min_share``, the upper bound for ``max_share``). Components: ``embed``,
    ``pos_embed``, ``L1H3``, ``L1.attn``, ``L0.mlp``.
    """
    model = context.resolve_model(model)
    require_language_model(model, "direct-effect claims (they read the unembedding)")
    seed = context.resolve_seed(seed)
    if min_share is None and max_share is None:
        raise ArgumentError("give min_share=... and/or max_share=... (the share of the logit difference the component must carry)")
    check_thresholds(min_share, max_share, names=("min_share", "max_share"))
    parsed = _dla_component(component, model)
    source, source_text = _dla_inputs(model, task, tokens)
    frame = _dla.direct_logit_attribution(model, source, positions=positions, answers=answers, wrong_answers=wrong_answers)
    name = str(parsed)
    values = _dla.per_example(frame)
    total = values.loc["total"].to_numpy(dtype=float)
    if abs(total.mean()) < 1e-9:
        raise CircuitCheckError("the model's mean logit (difference) is 0: a share of it is undefined")
    own = values.loc[name].to_numpy(dtype=float)
    (estimate,) = stats.bootstrap_statistics(
        np.stack([own, total]), lambda means: means[..., :1] / means[..., 1:], confidence=confidence, seed=seed
    )
    decision = stats.decide(estimate, min_share, max_share)
    task_obj = source if hasattr(source, "clean") else None
    target = "logit difference" if _has_wrong(answers, wrong_answers, task_obj) else "answer logit"
    table = _dla.summary(frame)
    ranked = _ranked(frame, level="layer" if parsed.kind == "attn" else "head")
    notes = [
        f"input:    {source_text}; positions {_positions_text(positions)}",
        f"direction: {_direction_text(answers, wrong_answers, task_obj)}, through the final LayerNorm's scale on this run",
        f"share = mean DLA of {name} ({frame.loc[name, 'mean']:.4f}) / mean {target} ({frame.loc['total', 'mean']:.4f})",
        "largest direct effects: " + ", ".join(f"{n} {v:+.3f}" for n, v in ranked[:4]),
    ]
    claim = f"{name} carries {_share_words(min_share, max_share)} of the direct effect on the {target}"
    return CheckResult(
        kind="direct_effect",
        claim=claim,
        value=estimate.mean,
        **decision.fields(),
        **estimate.interval_fields(),
        metric="direct-effect share",
        min_value=min_share,
        max_value=max_share,
        model=model_label(model),
        checkpoint=model_checkpoint(model),
        parameters={
            "component": name,
            "positions": _positions_text(positions),
            "answers": answers if isinstance(answers, str) else ("given" if answers is not None else "task"),
            "seed": seed,
            "mean_dla": float(frame.loc[name, "mean"]),
            "mean_logit_diff": float(frame.loc["total", "mean"]),
            "target": target,
        },
        evidence={
            "direct_logit_attribution": table,
            "per_example": pd.DataFrame(
                {"dla": own, "logit_diff": total}, index=pd.RangeIndex(len(own), name="example")
            ),
        },
        notes=notes,
    )


def _share_words(min_share, max_share) -> str:
    if min_share is not None and max_share is not None:
        return f"between {min_share:.0%} and {max_share:.0%}"
    if min_share is not None:
        return f"at least {min_share:.0%}"
    return f"at most {max_share:.0%}"


def assert_direct_effect(component, tolerance=None, **kwargs) -> CheckResult:
    """Assert that ``component``'s direct logit attribution is a given share of the logit difference.

    ``min_share=`` / ``max_share=`` bound share = mean DLA(component) / mean
    logit difference (signed; a component pushing against the answer has a
    negative share), decided on its paired bootstrap interval over examples:
    the lower bound must clear ``min_share``, the upper bound stay under ``max_share``. Keyword arguments: ``task`` (else the test's task) or
    ``tokens``, ``positions`` (default -1), ``answers`` (ids or ``"next"``),
    ``wrong_answers`` (ids or ``False``), ``model``, ``seed``, ``confidence``.
    """
    __tracebackhide__ = True
    return conclude(check_direct_effect(component, **kwargs), tolerance)


def _pool(frame: pd.DataFrame, level: str) -> pd.DataFrame:
    kinds = ("embed", "pos_embed", "head", "mlp") if level == "head" else ("embed", "pos_embed", "attn", "mlp")
    return frame[frame["kind"].isin(kinds)]


def _ranked(frame: pd.DataFrame, level: str, by: str = "abs") -> list[tuple[str, float]]:
    pool = _pool(frame, level)["mean"]
    key = pool.abs() if by == "abs" else pool
    order = key.sort_values(ascending=False, kind="stable").index
    return [(str(n), float(pool[n])) for n in order]


def check_top_direct_effects(
    components: Union[str, Iterable],
    k: int | None = None,
    *,
    level: str | None = None,
    by: str = "abs",
    task=None,
    tokens=None,
    positions=-1,
    answers=None,
    wrong_answers=None,
    model=None,
    seed: int | None = None,
    confidence: float = stats.DEFAULT_CONFIDENCE,
) -> CheckResult:
    """Check that every listed component ranks among the top ``k`` direct effects.

    Candidates (no double counting): at ``level="head"`` embed, pos_embed,
    every head and every MLP; at ``level="layer"`` embed, pos_embed, every
    ``L.attn`` and ``L.mlp`` (inferred from the listed components; biases are
    never candidates). Ranked by ``|mean DLA|`` (``by="abs"``) or by signed mean
    (``by="signed"``: largest positive first). ``k`` defaults to the number of
    listed components, making the claim "these are exactly the top ones".

    value = the rank margin: the smallest, over the listed components, of the
    component's score (``|mean DLA|`` or signed mean) minus the k-th largest
    score among the other candidates. It is > 0 exactly when every listed
    component is in the top k. Decided on its lower bound (paired bootstrap
    over examples, every candidate resampled together): the claim holds when
    the lower bound is >= 0, i.e. the ranking is not an accident of the examples.
    """
    model = context.resolve_model(model)
    require_language_model(model, "direct-effect claims (they read the unembedding)")
    seed = context.resolve_seed(seed)
    listed = parse_components(components)
    if not listed:
        raise ArgumentError("list at least one component")
    for c in listed:
        _dla_component(c, model)
    names = [str(c) for c in listed]
    if len(set(names)) != len(names):
        raise ArgumentError(f"components {names} list one component twice")
    if level is None:
        has_head = any(c.kind == "head" for c in listed)
        has_attn = any(c.kind == "attn" for c in listed)
        if has_head and has_attn:
            raise ArgumentError("list heads (L1H3) or whole attention layers (L1.attn), not both: a layer contains its heads")
        level = "layer" if has_attn else "head"
    if level not in ("head", "layer"):
        raise ArgumentError(f"level={level!r} is not valid: use 'head' or 'layer'")
    wrong_level = [n for c, n in zip(listed, names) if c.kind == ("attn" if level == "head" else "head")]
    if wrong_level:
        raise ArgumentError(f"{wrong_level} are not candidates at level={level!r}")
    if by not in ("abs", "signed"):
        raise ArgumentError(f"by={by!r} is not valid: use 'abs' or 'signed'")
    if k is None:
        k = len(listed)
    pool_size = len(_pool_names(model, level))
    if isinstance(k, bool) or not isinstance(k, int) or not len(listed) <= k <= pool_size:
        raise ArgumentError(
            f"k={k!r} is not valid: it must be an integer from {len(listed)} (the components listed) to {pool_size} (the candidates)"
        )

    confidence = stats.check_confidence(confidence)
    source, source_text = _dla_inputs(model, task, tokens)
    frame = _dla.direct_logit_attribution(model, source, positions=positions, answers=answers, wrong_answers=wrong_answers)
    ranked = _ranked(frame, level, by)
    rank_of = {n: i + 1 for i, (n, _) in enumerate(ranked)}
    inside = [n for n in names if rank_of[n] <= k]
    candidates = [n for n, _ in ranked]
    margin = _rank_margin(frame, candidates, names, k, by, confidence, seed)
    decision = stats.decide(margin, 0.0, None)
    ranking = pd.DataFrame(
        {
            "rank": [rank_of[n] for n, _ in ranked],
            "mean_dla": [v for _, v in ranked],
            "share": [float(frame.loc[n, "share"]) for n, _ in ranked],
            "listed": [n in names for n, _ in ranked],
        },
        index=pd.Index([n for n, _ in ranked], name="component"),
    )
    outside = [f"{n} (rank {rank_of[n]}, {frame.loc[n, 'mean']:+.3f})" for n in names if rank_of[n] > k]
    notes = [
        f"input:    {source_text}; positions {_positions_text(positions)}",
        f"ranked by {'|mean DLA|' if by == 'abs' else 'signed mean DLA'} among {len(ranked)} {level}-level candidates",
        f"top {k}: " + ", ".join(f"{n} {v:+.3f}" for n, v in ranked[:k]),
        f"in the top {k} on the mean: {len(inside)} of {len(names)} listed; rank margin {margin.describe()} "
        f"(listed score minus the {_ordinal(k)} largest other score, logits)",
    ]
    if outside:
        notes.append("outside the top: " + ", ".join(outside))
    return CheckResult(
        kind="top_direct_effects",
        claim=f"{', '.join(names)} {'is' if len(names) == 1 else 'are'} among the top {k} direct effects",
        value=margin.mean,
        **decision.fields(),
        **margin.interval_fields(),
        metric=TOP_METRIC,
        min_value=0.0,
        model=model_label(model),
        checkpoint=model_checkpoint(model),
        parameters={
            "components": names,
            "k": k,
            "level": level,
            "by": by,
            "positions": _positions_text(positions),
            "seed": seed,
            "ranks": {n: rank_of[n] for n in names},
            "fraction_in_top_k": len(inside) / len(names),
        },
        evidence={"direct_logit_attribution": _dla.summary(frame), "ranking": ranking},
        notes=notes,
    )


TOP_METRIC = "rank margin (listed score minus the k-th largest other)"


def _rank_margin(frame: pd.DataFrame, candidates: list[str], names: list[str], k: int, by: str, confidence: float,
                 seed: int) -> stats.Estimate:
    """The smallest listed score minus the k-th largest score of the other candidates, with a paired bootstrap interval.

    Every candidate's per-example DLA is resampled together, so the interval
    is that of the ranking itself.
    """
    if k >= len(candidates):  # every candidate is in the top k: the claim could not fail
        raise ArgumentError(f"k={k} is every candidate ({len(candidates)}): the claim would hold whatever was measured; "
                         f"give k < {len(candidates)}")
    samples = _dla.per_example(frame).loc[candidates].to_numpy(dtype=float)  # [candidates, examples]
    listed = [candidates.index(n) for n in names]

    def statistic(means):
        scores = np.abs(means) if by == "abs" else means
        margins = [scores[..., i] - np.sort(np.delete(scores, i, axis=-1), axis=-1)[..., -k] for i in listed]
        return np.min(np.stack(margins, axis=-1), axis=-1, keepdims=True)

    (estimate,) = stats.bootstrap_statistics(samples, statistic, confidence=confidence, seed=seed)
    return estimate


def _ordinal(k: int) -> str:
    return f"{k}{'th' if 10 <= k % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(k % 10, 'th')}"


def _pool_names(model, level: str) -> list[str]:
    cfg = model.cfg
    names = ["embed"]
    if getattr(cfg, "positional_embedding_type", "standard") == "standard":
        names.append("pos_embed")
    for layer in range(cfg.n_layers):
        names += [f"L{layer}H{h}" for h in range(cfg.n_heads)] if level == "head" else [f"L{layer}.attn"]
        if not getattr(cfg, "attn_only", False):
            names.append(f"L{layer}.mlp")
    return names


def assert_top_direct_effects(components, k: int | None = None, tolerance=None, **kwargs) -> CheckResult:
    """Assert that the listed components all rank among the top ``k`` by direct effect.

    See :func:`check_top_direct_effects` for the candidates and ranking.
    ``k`` defaults to the number listed ("exactly the top ones").
    """
    __tracebackhide__ = True
    return conclude(check_top_direct_effects(components, k, **kwargs), tolerance)


# Copying ----------------------------------------------------------------------------------


def check_copying_head(
    layer: int,
    head: int,
    *,
    min_score: float | None = None,
    max_score: float | None = None,
    model=None,
) -> CheckResult:
    """Copying score of the head's full OV circuit (``Re Σλ / Σ|λ|`` of ``W_E W_V W_O W_U``), in [-1, 1]."""
    model = context.resolve_model(model)
    require_language_model(model, "copying claims (they read the unembedding)")
    if min_score is None and max_score is None:
        min_score = 0.5
    check_thresholds(min_score, max_score, low=-1.0, high=1.0, names=("min_score", "max_score"))
    component = _comp._head(model, layer, head)
    scores = _comp.copying_scores(model)
    value = float(scores.loc[layer, head])
    passed = within(value, min_score, max_score)
    ranked = sorted(((f"L{l}H{h}", float(scores.loc[l, h])) for l in scores.index for h in scores.columns), key=lambda x: -x[1])
    negative = min_score is None
    return CheckResult(
        kind="copying_head",
        claim=f"{component} is {'not ' if negative else ''}a copying head",
        value=value,
        passed=passed,
        n=1,
        metric="OV copying score",
        min_value=min_score,
        max_value=max_score,
        decided_on="value (exact: weights only, no sampling)",
        p_method="exact (weights only: no sampling error, left out of multiple-comparisons families)",
        model=model_label(model),
        checkpoint=model_checkpoint(model),
        parameters={"component": str(component), "layer": layer, "head": head},
        evidence={"copying_scores": scores},
        notes=[
            "score: Re(sum λ) / sum |λ| over the eigenvalues λ of W_E W_V W_O W_U (Elhage et al. 2021); LayerNorm ignored",
            "highest copying scores: " + ", ".join(f"{n} {v:.3f}" for n, v in ranked[:3]),
        ],
    )


def assert_copying_head(layer: int, head: int, min_score: float | None = None, tolerance=None, **kwargs) -> CheckResult:
    """Assert that the head's OV circuit copies: eigenvalue copying score >= ``min_score`` (default 0.5).

    With only ``max_score=`` it is an "is not" claim. Keyword arguments: ``model``.
    """
    __tracebackhide__ = True
    return conclude(check_copying_head(layer, head, min_score=min_score, **kwargs), tolerance)


# Composition --------------------------------------------------------------------------------


def check_composition(
    sender,
    receiver,
    kind: str | None = None,
    *,
    min_score: float | None = None,
    max_score: float | None = None,
    above_random: bool = False,
    n_random: int = _comp.DEFAULT_BASELINE_SAMPLES,
    quantile: float = _comp.DEFAULT_BASELINE_QUANTILE,
    model=None,
    seed: int | None = None,
) -> CheckResult:
    """Composition score of ``sender`` into ``receiver`` (Q, K or V) and its random baseline.

    Passes when the score is within ``min_score``/``max_score`` and, with
    ``above_random=True``, above the ``quantile`` of the random baseline.
    At least one of the three must be given.
    """
    model = context.resolve_model(model)
    seed = context.resolve_seed(seed)
    if min_score is None and max_score is None and not above_random:
        raise ArgumentError("give min_score=..., max_score=... or above_random=True")
    check_thresholds(min_score, max_score, low=0.0, high=1.0, names=("min_score", "max_score"))
    sender_c, receiver_c, kind = _comp._pair(model, sender, receiver, kind)
    value = _comp.composition_score(model, sender_c, receiver_c, kind)
    baseline = _comp.random_composition_baseline(model, kind, n_samples=n_random, quantile=quantile, seed=seed)
    beats_random = value > baseline.quantile_value
    passed = within(value, min_score, max_score) and (beats_random or not above_random)
    # The score is exact; only the random baseline is sampled, so only "above random" has a p-value.
    p = stats.exceedance_p_value(value, baseline.samples) if above_random else None
    low = min_score
    if above_random:
        low = max(baseline.quantile_value, min_score or 0.0)
    matrix = _comp.composition_scores(model, kind)
    word = _KIND_WORD[kind]
    product = {"q": "W_QK", "k": "W_QK^T", "v": "W_OV"}[kind]
    others = matrix[str(receiver_c)].dropna().sort_values(ascending=False)
    notes = [
        f"score: ||W_OV({sender_c}) @ {product}({receiver_c})||_F / (product of norms), "
        "as TransformerLens all_composition_scores; LayerNorm ignored",
        f"{baseline.describe()}; score is {value / baseline.mean:.2f}x the random mean, "
        f"{'above' if beats_random else 'not above'} its {baseline.quantile:.0%} quantile",
        f"senders into {receiver_c}.{kind}: " + ", ".join(f"{n} {v:.3f}" for n, v in others.head(4).items()),
    ]
    if above_random:
        notes.append(f"required above random: score > {baseline.quantile_value:.3f}; p-value against the random "
                     f"baseline {p.value:.3g} ({p.method}, {baseline.n_samples} samples)")
    return CheckResult(
        kind="composition",
        claim=f"{sender_c} {word}-composes with {receiver_c}" + (" above random" if above_random else ""),
        value=value,
        passed=passed,
        n=1,
        metric=f"{word}-composition score",
        min_value=low,
        max_value=max_score,
        decided_on="value (exact: weights only, no sampling)" if not above_random
        else f"value (exact) against the random baseline's {baseline.quantile:.0%} quantile",
        **(p.fields() if p is not None else {"p_method": "exact (weights only: no sampling error, left out of "
                                                          "multiple-comparisons families)"}),
        model=model_label(model),
        checkpoint=model_checkpoint(model),
        parameters={
            "sender": str(sender_c),
            "receiver": str(receiver_c),
            "composition": kind,
            "above_random": bool(above_random),
            "seed": seed,
            "random_mean": baseline.mean,
            "random_std": baseline.std,
            "random_quantile": baseline.quantile,
            "random_quantile_value": baseline.quantile_value,
            "random_samples": baseline.n_samples,
            "min_score": min_score,
        },
        evidence={
            f"{kind}_composition": matrix,
            "random_baseline": pd.DataFrame(
                {"value": [baseline.mean, baseline.std, baseline.quantile_value, float(baseline.n_samples)]},
                index=pd.Index(["mean", "std", f"q{baseline.quantile:g}", "samples"], name="statistic"),
            ),
        },
        notes=notes,
    )


def assert_composition(sender, receiver, kind: str | None = None, tolerance=None, **kwargs) -> CheckResult:
    """Assert that ``sender`` composes with ``receiver`` (``kind`` "q", "k" or "v", or ``receiver="L1H0.k"``).

    Keyword arguments: ``min_score``, ``max_score``, ``above_random`` (score >
    the ``quantile`` (default 0.95) of ``n_random`` seeded random-weight
    scores), ``model``, ``seed``. The result records the sender x receiver
    score matrix and the random baseline.
    """
    __tracebackhide__ = True
    return conclude(check_composition(sender, receiver, kind, **kwargs), tolerance)


# The claim kinds (circuitcheck.claims.registry) ---------------------------------------------

from .registry import ClaimKind, Param, declare  # noqa: E402

_WHERE = (
    Param("positions", "positions", -1, doc="the positions whose logits are attributed (int, list or 'a:b')"),
    Param("answers", "choice", choices=("next",), doc="next: the actual next token (default: the task's answers)"),
)


def _spec_top(assertion, params: dict, *, model, task=None):
    __tracebackhide__ = True
    components = " ".join(map(str, params.pop("components").components))
    return assertion(components, params.pop("k", None), model=model, task=task, **params)


def _spec_composition(assertion, params: dict, *, model, task=None):
    __tracebackhide__ = True
    return assertion(params.pop("sender"), params.pop("receiver"), params.pop("composition", None), model=model, **params)


DIRECT_EFFECT = declare(ClaimKind(
    name="direct_effect",
    check=check_direct_effect,
    assertion=assert_direct_effect,
    metric="direct-effect share",
    params=(
        Param("component", "component", required=True, doc="embed, pos_embed, L1H3, L1.attn or L0.mlp"),
        Param("min_share", "number", doc="lower bound of share = mean DLA(component) / mean logit difference (signed) >= it"),
        Param("max_share", "number", doc="upper bound of the share <= it"),
        *_WHERE,
        Param("seed", "seed", doc="default: --circuitcheck-seed"),
        Param("confidence", "probability", stats.DEFAULT_CONFIDENCE, doc="of the paired bootstrap interval"),
    ),
    thresholds=("min_share", "max_share"),
    evidence=("direct_logit_attribution", "per_example"),
    definition="Direct effects: each component's mean direct logit attribution (red raises the answer, blue lowers it).",
    section="direct",
    needs_task=True,
    subject=lambda params: str(params["component"]),
))
TOP_DIRECT_EFFECTS = declare(ClaimKind(
    name="top_direct_effects",
    check=check_top_direct_effects,
    assertion=assert_top_direct_effects,
    metric=TOP_METRIC,
    params=(
        Param("components", "components", required=True, doc="the components claimed to be the top direct effects"),
        Param("k", "positive", doc="default: the number listed (exactly the top ones)"),
        Param("level", "choice", choices=("head", "layer"), doc="candidates: heads or whole layers (default: from the listed components)"),
        Param("by", "choice", "abs", choices=("abs", "signed"), doc="rank by |mean DLA| or by signed mean"),
        *_WHERE,
        Param("seed", "seed", doc="default: --circuitcheck-seed"),
        Param("confidence", "probability", stats.DEFAULT_CONFIDENCE, doc="of the paired bootstrap interval of the rank margin"),
    ),
    thresholds=(None, None),
    evidence=("direct_logit_attribution", "ranking"),
    definition="Direct effects: each component's mean direct logit attribution (red raises the answer, blue lowers it).",
    section="direct",
    needs_task=True,
    spec_call=_spec_top,
    subject=lambda params: " ".join(map(str, params["components"].components)),
))
COPYING_HEAD = declare(ClaimKind(
    name="copying_head",
    check=check_copying_head,
    assertion=assert_copying_head,
    metric="OV copying score",
    params=(
        Param("layer", "integer", required=True, doc="the head's layer"),
        Param("head", "integer", required=True, doc="the head's index in its layer"),
        Param("min_score", "number", doc="copying score in [-1, 1] (default 0.5 when no threshold is given)"),
        Param("max_score", "number", doc='with only max_score, an "is not" claim'),
    ),
    thresholds=("min_score", "max_score"),
    evidence=("copying_scores",),
    definition="Copying: the OV circuit's copying score of every head (−1..1).",
    section="copying",
    subject=lambda params: f"L{params['layer']}H{params['head']}",
))
COMPOSITION = declare(ClaimKind(
    name="composition",
    check=check_composition,
    assertion=assert_composition,
    metric="composition score",
    params=(
        Param("sender", "component", required=True, doc="a head (L0H0)"),
        Param("receiver", "component", required=True, doc="a head input (L1H0.k), or a head with composition"),
        Param("composition", "choice", choices=("q", "k", "v"), doc="q, k or v (default: the receiver's input)"),
        Param("min_score", "score", doc="composition score in [0, 1]"),
        Param("max_score", "score", doc="at most this score"),
        Param("above_random", "boolean", False, doc="also above the quantile of random-weight scores"),
        Param("n_random", "positive", _comp.DEFAULT_BASELINE_SAMPLES, doc="seeded random-weight samples of the baseline"),
        Param("quantile", "probability", _comp.DEFAULT_BASELINE_QUANTILE, doc="of the random baseline to beat"),
        Param("seed", "seed", doc="default: --circuitcheck-seed"),
    ),
    thresholds=("min_score", "max_score"),
    evidence=("q_composition", "k_composition", "v_composition", "random_baseline"),  # the one of the receiver's input
    definition="Composition: how much of a receiver head's query, key or value input a sender head's output can reach, next "
    "to random matrices of the same shapes.",
    section="composition",
    spec_call=_spec_composition,
    subject=lambda params: f"{params['sender']} -> {params['receiver']}",
))
