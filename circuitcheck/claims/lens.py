"""Lens claims: "the logit lens converges by layer L".

Definition (DESIGN.md "Metric definitions"): the lens *converges by layer L*
when at every layer L' >= L (residual stream after layer L', read through the
final norm and unembedding, see :mod:`circuitcheck.lens`)

- the share of evaluated positions where the lens's top-1 token equals the
  model's final top-1 (top-1 agreement) is at least ``min_agreement``, decided
  on the lower bound of its interval, and
- the mean over evaluated positions of KL(final || lens), in nats, is at most
  ``max_kl``, decided on the upper bound of its interval.

Intervals are seeded bootstraps over prompts (the positions of one prompt move
together, as they are not independent); with a single prompt, over its
positions, which the lab note says. The reported value is the mean KL of the
layer >= L with the largest upper bound, with that layer's interval; every
layer's agreement and KL with their intervals are in the evidence.
With ``lens="tuned"`` each layer is first mapped by its trained affine
translator (a tuned lens, cached on disk; see :func:`circuitcheck.lens.tuned_lens`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch

from ..model import context
from ..model import inputs as _inputs
from ..model.kinds import require_language_model
from ..engine import lens as _lens
from ..model.components import model_checkpoint, model_label
from ..errors import ArgumentError, CircuitCheckError
from . import stats
from .result import CheckResult
from .decision import ThresholdError, check_thresholds, conclude, is_finite_number

DEFAULT_MAX_KL = 0.1
"""Default ``max_kl`` in nats. 0.1 nats is small next to the spread of an unconverged lens
(a layer that predicts a different token typically sits at 1-10 nats) and still tolerant of
a lens that has the right answer with a somewhat different confidence: e.g. final
p(top-1) = 0.9 read as 0.75 by the lens is about 0.1 nats."""

DEFAULT_MIN_AGREEMENT = 0.9
"""Default ``min_agreement``: the lower bound of the share of positions whose lens top-1 is the model's
top-1. Not 1: one position in a hundred where the lens's runner-up is the model's answer does not
undo convergence, and an interval cannot show 100% without every resample agreeing everywhere."""

MAX_TOPK_ROWS = 200  # rows of the top-k evidence table (the first prompt's positions, every layer)


def check_logit_lens_converges_by(
    layer: int,
    *,
    prompt: str | Sequence[str] | None = None,
    tokens: torch.Tensor | None = None,
    task=None,
    positions=None,
    max_kl: float = DEFAULT_MAX_KL,
    min_agreement: float = DEFAULT_MIN_AGREEMENT,
    lens="logit",
    model=None,
    seed: int | None = None,
    k: int = 5,
    confidence: float = stats.DEFAULT_CONFIDENCE,
) -> CheckResult:
    """Measure whether the lens has converged to the model's output from ``layer`` on (never raises on failure).

    Inputs: ``prompt`` (a string or prompts of equal token length), ``tokens``
    (``[batch, pos]``) or ``task`` (its clean inputs); with none of them, the
    running test's task. ``positions``: int, list or slice (default: every
    position except BOS). ``lens``: ``"logit"``, ``"tuned"`` (the model's tuned
    lens, trained with ``seed`` on seeded random tokens, cached) or a fitted
    :class:`circuitcheck.lens.TunedLens`.
    """
    model = context.resolve_model(model)
    require_language_model(model, "lens claims")
    seed = context.resolve_seed(seed)
    n_layers = model.cfg.n_layers
    _lens.check_layers(model, [layer], allow_embed=False)
    _check_max_kl(max_kl)
    check_thresholds(min_agreement, None, low=0.0, high=1.0, names=("min_agreement", "max_agreement"))
    confidence = stats.check_confidence(confidence)
    _refuse_last_layer(model, layer, lens)
    given = [name for name, value in (("prompt", prompt), ("tokens", tokens), ("task", task)) if value is not None]
    if len(given) > 1:
        raise CircuitCheckError(f"give one of prompt=, tokens= or task=, not {' and '.join(given)}")
    if prompt is not None:
        token_input = _inputs.as_tokens(model, prompt, what="the prompts")
        source = f"prompt {prompt!r}" if isinstance(prompt, str) else f"{len(prompt)} given prompts"
    elif tokens is not None:
        token_input = _inputs.as_tokens(model, tokens)
        source = "given tokens"
    else:
        task = context.resolve_task(task, model)
        task.validate(model)
        token_input = task.clean
        source = f"clean inputs of task {task.name!r}"
    chosen = _lens.resolve_positions(model, token_input, positions)

    lens_name, lens_obj, lens_params = _resolve_lens(model, lens, seed)
    layers = list(range(n_layers))
    run = _lens.measure(model, token_input, chosen, layers, lens=lens_obj, k=k)

    table = run.per_layer()
    given = f"prompt={prompt!r:.60}" if prompt is not None else "the input"
    kl_estimates, agreement_estimates, unit = _layer_estimates(run, confidence, seed, given)
    decisions = {}
    for i, L in enumerate(layers):
        kl_decision = stats.decide(kl_estimates[i], None, max_kl)
        agreement_decision = stats.decide(agreement_estimates[i], min_agreement, None)
        decisions[L] = (kl_decision, agreement_decision)
        table.loc[L, "kl_ci_low"], table.loc[L, "kl_ci_high"] = kl_estimates[i].low, kl_estimates[i].high
        table.loc[L, "agreement_ci_low"] = agreement_estimates[i].low
        table.loc[L, "agreement_ci_high"] = agreement_estimates[i].high
        table.loc[L, "p_value"] = stats.combine([kl_decision.p, agreement_decision.p]).value
    table["converged"] = [decisions[L][0].passed and decisions[L][1].passed for L in table.index]
    from_here = table["converged"][::-1].cummin()[::-1]
    table["converged_from_here"] = from_here
    first = next((int(L) for L in table.index if bool(from_here.loc[L])), None)
    later = table.loc[table.index >= layer]
    passed = bool(later["converged"].all())
    # the value shown: the mean KL of the layer >= L whose upper bound is highest, with that layer's interval
    worst = int(later["kl_ci_high"].idxmax())
    shown = kl_estimates[layers.index(worst)]
    p = stats.combine(d.p for L in later.index for d in decisions[int(L)])
    n = int(token_input.shape[0] * len(chosen))

    lens_words = "logit lens" if lens_name == "logit" else "tuned lens"
    notes = [
        f"input:    {source}: {token_input.shape[0]} x {token_input.shape[1]} tokens; {len(chosen)} position(s) each"
        + (" (BOS excluded)" if positions is None and chosen[0] == 1 else ""),
        "top-1 agreement with the final prediction, layers >= {}: {} (required: lower bound >= {:.3g})".format(
            layer, ", ".join(f"L{L} {row.top1_agreement:.1%} [{row.agreement_ci_low:.1%}, {row.agreement_ci_high:.1%}]"
                             for L, row in later.iterrows()), min_agreement
        ),
        "mean KL(final || lens) per layer: " + ", ".join(
            f"L{L} {row.mean_kl:.3g} [{row.kl_ci_low:.3g}, {row.kl_ci_high:.3g}]" for L, row in table.iterrows()
        ) + f" (required: upper bound <= {max_kl:.3g})",
        f"intervals: {confidence:.0%} seeded bootstrap over {unit}",
    ]
    if passed:
        if first is not None and first < layer:
            notes.append(f"the {lens_words} already converges by layer {first}")
    else:
        notes.append(
            f"the {lens_words} converges by layer {first} instead" if first is not None
            else f"the {lens_words} never converges: not even at the last layer ({n_layers - 1})"
        )
        notes += _worst_positions(model, run, later, max_kl, min_agreement)
    parameters = {
        "layer": layer,
        "lens": lens_name,
        "max_kl": max_kl,
        "min_agreement": min_agreement,
        "positions": chosen,
        "n_prompts": int(token_input.shape[0]),
        "seq_len": int(token_input.shape[1]),
        "converges_by": first,
        "seed": seed,
        "k": k,
        **lens_params,
    }
    if task is not None:
        parameters["task"] = task.name
    return CheckResult(
        kind="logit_lens",
        claim=f"the {lens_words} converges by layer {layer}",
        value=shown.mean,
        passed=passed,
        n=n,
        ci_low=shown.low,
        ci_high=shown.high,
        confidence=shown.confidence,
        p_value=p.value,
        p_method=p.method,
        metric="KL(final || lens)",
        max_value=float(max_kl),
        decided_on=f"upper bound of the worst layer >= {layer} (L{worst}; and top-1 agreement's lower bound)",
        model=model_label(model),
        checkpoint=model_checkpoint(model),
        parameters=parameters,
        evidence={"lens_by_layer": table, "lens_top_k": _topk_frame(model, run, k)},
        notes=notes,
    )


def assert_logit_lens_converges_by(
    layer: int,
    *,
    prompt: str | Sequence[str] | None = None,
    tokens: torch.Tensor | None = None,
    task=None,
    positions=None,
    max_kl: float = DEFAULT_MAX_KL,
    min_agreement: float = DEFAULT_MIN_AGREEMENT,
    lens="logit",
    model=None,
    seed: int | None = None,
    k: int = 5,
    confidence: float = stats.DEFAULT_CONFIDENCE,
    tolerance=None,
) -> CheckResult:
    """Assert that the logit lens (or ``lens="tuned"``) has converged to the model's output from ``layer`` on.

    Passes when at every layer >= ``layer`` the lower bound of the top-1
    agreement (the share of evaluated positions where the lens's top-1 token is
    the model's final top-1) is >= ``min_agreement`` (default 0.9) and the upper
    bound of the mean KL(final || lens) is <= ``max_kl`` nats (default 0.1);
    intervals are seeded bootstraps over prompts (over positions for a single
    prompt), at ``confidence``. The reported value is the mean KL of the layer
    with the highest upper bound; a failure names the first layer from which
    the lens does converge ("converges by layer 2 instead").

    Keyword arguments: ``prompt`` / ``tokens`` / ``task`` (default: the test's
    task), ``positions`` (default: all but BOS), ``lens`` (``"logit"``,
    ``"tuned"``: the model's tuned lens trained with ``seed`` on seeded random
    tokens and cached, or a fitted :class:`~circuitcheck.lens.TunedLens`, e.g.
    ``tuned_lens(model, task=task)``), ``model``, ``seed``, ``k`` (top-k tokens
    in the evidence), ``tolerance`` (against a baseline).
    Returns the :class:`CheckResult`; raises :class:`CircuitAssertionError` if it fails.
    """
    __tracebackhide__ = True
    result = check_logit_lens_converges_by(
        layer, prompt=prompt, tokens=tokens, task=task, positions=positions, max_kl=max_kl, min_agreement=min_agreement,
        lens=lens, model=model, seed=seed, k=k, confidence=confidence,
    )
    return conclude(result, tolerance)


def _refuse_last_layer(model, layer: int, lens) -> None:
    """A claim about the last layer cannot fail: refused, saying what to claim instead.

    The residual stream after the last layer, read through the final norm and
    unembedding, *is* the model's output (and a tuned lens keeps the identity
    there), so its KL to the output is 0 and its top-1 agrees everywhere,
    whatever the model does. Only a fitted :class:`~circuitcheck.lens.TunedLens`
    given with a translator of its own at the last layer reads something else
    there, and may be claimed about it.
    """
    n_layers = model.cfg.n_layers
    if layer != n_layers - 1:
        return
    if isinstance(lens, _lens.TunedLens) and layer in lens.translators:
        return
    label = model_label(model) or type(model).__name__
    cannot = ("the lens there is the model's own output (KL 0 and top-1 agreement 100% by construction, for the logit "
              "and the tuned lens alike), so the claim cannot fail")
    if n_layers == 1:
        raise ArgumentError(f"layer=0 is the only layer of {label}, and its last: {cannot}; a one-layer model has no "
                            "earlier layer to claim convergence by")
    raise ArgumentError(
        f"layer={layer} is the last layer of {label} (layers 0 to {n_layers - 1}): {cannot}. Claim an earlier layer "
        f"(0 to {n_layers - 2}): the first by which you expect the lens to match the output; a failed claim's lab note "
        "names the layer it does converge by"
    )


def _check_max_kl(max_kl) -> None:
    if not is_finite_number(max_kl) or max_kl <= 0:  # inf would let any lens converge
        raise ThresholdError(
            f"max_kl={max_kl!r} is not valid: it must be a positive number of nats, and finite "
            "(KL(final || lens) is >= 0, and exactly 0 only where the lens is the model's output)"
        )


def _resolve_lens(model, lens, seed: int):
    if isinstance(lens, _lens.TunedLens):
        lens.check_model(model)
        return "tuned", lens, _tuned_params(lens)
    if lens == "logit":
        return "logit", "logit", {}
    if lens == "tuned":
        fitted = _lens.tuned_lens(model, seed=seed)
        return "tuned", fitted, _tuned_params(fitted)
    raise ArgumentError(f"lens={lens!r} is not valid: give 'logit', 'tuned' or a fitted circuitcheck.lens.TunedLens")


def _tuned_params(lens: "_lens.TunedLens") -> dict:
    s = lens.settings
    return {
        "tuned_lens_seed": s.seed,
        "tuned_lens_data": s.data if s.data == "random" else "given tokens",
        "tuned_lens_prompts": s.n_prompts,
        "tuned_lens_from_cache": lens.from_cache,
        "tuned_lens_file": lens.path.name if lens.path is not None else None,
    }


def _layer_estimates(run: "_lens.LensRun", confidence: float, seed: int, given: str = "the input"):
    """Per layer: mean KL and top-1 agreement with bootstrap intervals over prompts (over positions for one prompt)."""
    kl = run.kl.double().numpy()  # [layers, batch, positions]
    agrees = run.agrees.double().numpy()
    if kl.shape[1] >= 2:  # every prompt has the same positions: per-prompt means weigh them equally
        units, unit = (kl.mean(axis=2), agrees.mean(axis=2)), f"{kl.shape[1]} prompts"
    else:
        units, unit = (kl[:, 0, :], agrees[:, 0, :]), (
            f"the {kl.shape[2]} positions of the one prompt (not independent: give several prompts for an honest interval)")
    if kl.shape[1] < 2 and kl.shape[2] < stats.MIN_EXAMPLES:
        tokens = run.tokens[0].tolist() if getattr(run, "tokens", None) is not None else "?"
        raise stats.TooFewExamples(
            f"{given} is one prompt (tokens {tokens}) with {kl.shape[2]} evaluated position: a lens claim is decided on an interval, "
            f"which needs at least {stats.MIN_EXAMPLES} positions or prompts (give a longer prompt or several)"
        )
    estimates = stats.bootstrap_statistics(np.concatenate(units), lambda means: means, confidence=confidence, seed=seed)
    n_layers = kl.shape[0]
    return estimates[:n_layers], estimates[n_layers:], unit


def _worst_positions(model, run: "_lens.LensRun", later: pd.DataFrame, max_kl: float, min_agreement: float) -> list[str]:
    """The failing layers >= L and, for the first of them, the positions furthest from the final output."""
    failing = [int(L) for L in later.index if not bool(later.loc[L, "converged"])]
    if not failing:
        return []
    L = failing[0]
    i = run.layers.index(L)
    name = _lens._token_namer(model)
    kl = run.kl[i]
    order = torch.argsort(kl.reshape(-1), descending=True)[:3]
    width = kl.shape[1]
    worst = []
    for flat in order.tolist():
        b, j = divmod(flat, width)
        pos = run.positions[j]
        worst.append(
            f"prompt {b} pos {pos} ({name(int(run.tokens[b, pos]))!s}): lens top-1 {name(int(run.topk_ids[i, b, j, 0]))!s}, "
            f"final {name(int(run.final_top1[b, j]))!s}, KL {float(kl[b, j]):.3g}"
        )
    row = later.loc[L]
    why = []
    if row["agreement_ci_low"] < min_agreement:
        why.append(f"top-1 agrees at {row['top1_agreement']:.0%} of positions (lower bound {row['agreement_ci_low']:.1%} "
                   f"< {min_agreement:.3g})")
    if row["kl_ci_high"] > max_kl:
        why.append(f"mean KL {row['mean_kl']:.3g} (upper bound {row['kl_ci_high']:.3g}) > {max_kl:.3g}")
    lines = [f"not converged at layer{'s' if len(failing) > 1 else ''} {', '.join(map(str, failing))}; layer {L}: {'; '.join(why)}"]
    lines.append("furthest positions at layer {}: {}".format(L, "; ".join(worst)))
    return lines


def _topk_frame(model, run: "_lens.LensRun", k: int) -> pd.DataFrame:
    """The first prompt's top-k lens predictions per (layer, position), as text for the report."""
    name = _lens._token_namer(model)
    rows = []
    for i, L in enumerate(run.layers):
        for j, pos in enumerate(run.positions):
            rows.append(
                {
                    "layer": L,
                    "position": pos,
                    "token": str(name(int(run.tokens[0, pos]))),
                    "final_top1": str(name(int(run.final_top1[0, j]))),
                    "lens_top_k": ", ".join(
                        f"{name(int(t))} {float(p):.2f}" for t, p in zip(run.topk_ids[i, 0, j], run.topk_probs[i, 0, j])
                    ),
                    "p_final_top1": float(run.p_final[i, 0, j]),
                    "kl": float(run.kl[i, 0, j]),
                }
            )
            if len(rows) >= MAX_TOPK_ROWS:
                return pd.DataFrame(rows)
    return pd.DataFrame(rows)


# The claim kind (circuitcheck.claims.registry) ----------------------------------------------

from .registry import ClaimKind, Param, declare  # noqa: E402

LOGIT_LENS = declare(ClaimKind(
    name="logit_lens",
    aliases=("logit_lens_converges_by",),
    check=check_logit_lens_converges_by,
    assertion=assert_logit_lens_converges_by,
    metric="KL(final || lens)",
    params=(
        Param("layer", "integer", required=True, doc="the lens converges from this layer on"),
        Param("max_kl", "number", DEFAULT_MAX_KL, doc="nats: the upper bound of every layer's mean KL(final || lens) must be <= it"),
        Param("min_agreement", "score", DEFAULT_MIN_AGREEMENT,
              doc="the lower bound of every layer's top-1 agreement with the model must be >= it"),
        Param("lens", "choice", "logit", choices=("logit", "tuned"),
              doc="logit, or tuned (the model's tuned lens, trained with seed on seeded random tokens and cached)"),
        Param("prompt", "strings", doc="a prompt or prompts of one token length to read (default: the task's clean inputs)"),
        Param("positions", "positions", doc="default: every position but BOS"),
        Param("seed", "seed", doc="default: --circuitcheck-seed"),
        Param("k", "positive", 5, doc="top-k tokens in the evidence"),
        Param("confidence", "probability", stats.DEFAULT_CONFIDENCE, doc="of the bootstrap intervals over prompts"),
    ),
    thresholds=(None, "max_kl"),
    evidence=("lens_by_layer", "lens_top_k"),
    definition="Logit lens: KL(final ‖ lens) of each layer's residual stream read through the unembedding, and how often its "
    "top token is the model's; converged from a layer on when every later layer's KL upper bound and agreement lower bound "
    "meet the thresholds.",
    section="lens",
    needs_task=True,
    replaces_task=("prompt",),
    subject=lambda params: f"L{params['layer']}" + (" tuned" if params.get("lens") == "tuned" else ""),
))
