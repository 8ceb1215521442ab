"""Ablation robustness and gap significance: when a causal verdict means something.

Verdicts can flip between resample, mean and zero ablation (Miller et al.,
2024). A causal claim may therefore name several ablations
(``ablation=["resample", "mean", "zero"]``): each is measured by the claim's
own single-ablation check, the claim holds only if it holds under every one,
and the result is the worst of them (the deciding ablation), with a table of
every ablation's value (evidence ``"ablations"``) and each one's own evidence
tables.

One mechanism serves every causal kind: decorate the ``check_*`` function with
:func:`over_ablations`, and write the function for a single ablation.

Gap significance: every causal quantity is a ratio over a gap (m(M) - m(∅),
or m(clean) - m(corrupt) for paths). A gap whose interval includes zero makes
the ratio noise divided by noise; :func:`require_gap` raises
:class:`GapError` (an error, not a failed claim) naming the ablation, the gap
and its interval.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from ..engine import ablation as _ablation
from ..engine.session import session_of
from ..model import context
from ..errors import CircuitCheckError
from . import format as claim_format
from . import stats
from .result import CheckResult


class GapError(CircuitCheckError, ValueError):
    """The gap a causal ratio divides by is not distinguishable from zero: the claim cannot be decided."""


def ablations(value) -> list[_ablation.Ablation]:
    """The ablations a claim names: one (a string, an Ablation, or None for ``resample``) or a non-empty list of distinct ones."""
    if isinstance(value, (list, tuple)):
        if not value:
            raise CircuitCheckError("ablation=[] names no ablation: give one (e.g. 'resample') or a list such as ['resample', 'mean', 'zero']")
        parsed = [_ablation.parse(item) for item in value]
        names = [a.name for a in parsed]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise CircuitCheckError(f"ablation list {list(value)!r} names {', '.join(repeated)} more than once: list each ablation once")
        return parsed
    return [_ablation.parse(value)]


def over_ablations(check: Callable[..., CheckResult]) -> Callable[..., CheckResult]:
    """Let a single-ablation ``check_*`` function take ``ablation=`` as a list and decide on the worst.

    The wrapped function is called once per ablation (with ``ablation=`` one
    :class:`~circuitcheck.engine.ablation.Ablation`); with one ablation its
    result is returned as it is, with several :func:`worst` combines them.
    """

    @functools.wraps(check)
    def checked(*args, ablation=None, **kwargs) -> CheckResult:
        chosen = ablations(ablation)
        # The whole claim holds the model: its engine calls share one read of the weights
        # (instead of one each), and no other thread edits or runs the model in between.
        with _holding(kwargs.get("model")):
            results = [check(*args, ablation=a, **kwargs) for a in chosen]
        return results[0] if len(results) == 1 else worst(results, chosen)

    return checked


def _holding(model):
    """The model's session held for a block; nothing when there is no model (the check then says why)."""
    try:
        model = context.resolve_model(model)
    except CircuitCheckError:
        return contextlib.nullcontext()
    return session_of(model).exclusive()


def margin(result: CheckResult) -> float | None:
    """How far the deciding statistic clears the threshold (negative: by how much it misses); None without a threshold."""
    statistic, bound = claim_format.deciding_bound(result)
    low, high = bound if statistic == "interval" else (bound, bound)
    margins = []
    if result.min_value is not None and low is not None:
        margins.append(float(low) - float(result.min_value))
    if result.max_value is not None and high is not None:
        margins.append(float(result.max_value) - float(high))
    return min(margins) if margins else None


def worst(results: Sequence[CheckResult], chosen: Sequence[_ablation.Ablation]) -> CheckResult:
    """One result for a claim measured under several ablations: it holds only if every one holds, and shows the worst.

    The deciding ablation is a failing one if any fails, and among those (or
    among all, when all hold) the one whose deciding bound clears the
    threshold by the least. Its value, interval and evidence tables become
    the result's; ``evidence["ablations"]`` has a row per ablation and every
    other ablation's tables follow under ``"<table> (<ablation>)"``.
    """
    if len(results) != len(chosen) or not results:
        raise ValueError(f"{len(results)} results for {len(chosen)} ablations: give one result per ablation")
    margins = [margin(r) for r in results]
    deciding = min(range(len(results)), key=lambda i: (results[i].passed, np.inf if margins[i] is None else margins[i]))
    top = results[deciding]
    names = [a.name for a in chosen]
    listed = _listed(names)
    table = pd.DataFrame(
        {
            "ablation": names,
            "replaced by": [r.parameters.get("ablation_detail", "") for r in results],
            "value": [r.value for r in results],
            "ci_low": [r.ci_low for r in results],
            "ci_high": [r.ci_high for r in results],
            "deciding bound": [claim_format.decision(r) for r in results],
            "verdict": [claim_format.verdict(r) for r in results],
            "decided the claim": [i == deciding for i in range(len(results))],
        }
    )
    evidence = {"ablations": table, **top.evidence}
    for name, result in zip(names, results):
        if result is not top:
            evidence.update({f"{key} ({name})": frame for key, frame in result.evidence.items()})
    parameters = dict(top.parameters)
    parameters["ablation"] = ", ".join(names)
    parameters["deciding_ablation"] = names[deciding]
    parameters["ablation_detail"] = {name: r.parameters.get("ablation_detail", "") for name, r in zip(names, results)}
    summary = "; ".join(f"{name} {claim_format.number(r.value)}{_bounds(r)} {claim_format.verdict(r)}" for name, r in zip(names, results))
    return dataclasses.replace(
        top,
        claim=f"{top.claim} under {listed} ablation",
        passed=all(r.passed for r in results),
        decided_on=f"{top.decided_on} under {names[deciding]} ablation (the worst of {len(names)})",
        parameters=parameters,
        evidence=evidence,
        notes=[f"decided on {names[deciding]} ablation, the worst of {', '.join(names)}: {summary}", *top.notes],
    )


def require_gap(
    high,
    low,
    *,
    confidence: float,
    seed: int,
    ablation: str | None,
    task: str,
    gap: str = "m(M) - m(∅)",
    sides: str = "the full model and the fully ablated model",
    undefined: str = "necessity, sufficiency and minimality are",
    hint: str | None = None,
) -> stats.Estimate:
    """The gap mean(high) - mean(low) with its bootstrap interval; :class:`GapError` when the interval includes zero.

    ``high`` / ``low`` are per-example metric values ``[n]`` on the same
    examples (paired: the interval is of the mean difference). The interval
    has the claim's own confidence level and seed. ``ablation`` is named in
    the error (None where the gap does not depend on one, as for paths).
    """
    high = np.asarray(high, dtype=np.float64).reshape(-1)
    low = np.asarray(low, dtype=np.float64).reshape(-1)
    under = f" with {ablation} ablation" if ablation else ""
    what = f"the gap {gap} on task {task!r}{under}"
    hint = hint or (
        "Use an ablation that removes more (resample, mean or zero), more examples, or a task whose metric the model computes."
    )
    mean_gap = float(high.mean() - low.mean())
    if not np.isfinite(mean_gap) or abs(mean_gap) <= 1e-6 * max(1.0, abs(float(high.mean()))):
        raise GapError(
            f"zero gap: {sides} score the same mean metric ({float(high.mean()):.6g} vs {float(low.mean()):.6g}) "
            f"on task {task!r}{under}, so {undefined} undefined. {hint}"
        )
    (estimate,) = stats.bootstrap_statistics(
        np.stack([high, low]), lambda m: (m[..., 0] - m[..., 1])[..., None], confidence=confidence, seed=seed
    )
    if estimate.low <= 0 <= estimate.high:
        raise GapError(
            f"{what} is {estimate.mean:.3g}, and its {estimate.confidence:.0%} interval [{estimate.low:.3g}, {estimate.high:.3g}] "
            f"(n={estimate.n}) includes zero: the ablated model is not distinguishable from the full one, so a ratio over this gap "
            f"would be noise over noise. {hint}"
        )
    return estimate


def _listed(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + f" and {names[-1]}"


def _bounds(result: CheckResult) -> str:
    if result.ci_low is None or result.ci_high is None:
        return ""
    return f" [{claim_format.number(result.ci_low)}, {claim_format.number(result.ci_high)}]"
