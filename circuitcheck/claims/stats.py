"""Statistics: seeded bootstrap confidence intervals over examples.

Per-example values go in; a mean and a percentile interval come out. The
resampling is seeded, so the same values give the same interval on every run
and a claim decided on an interval bound does not flip between runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import CircuitCheckError

DEFAULT_CONFIDENCE = 0.95
DEFAULT_RESAMPLES = 1000
#: The fewest examples an interval is computed from: one example has no spread to
#: resample, and its "interval" would be the single value, zero wide.
MIN_EXAMPLES = 2


class TooFewExamples(CircuitCheckError, ValueError):
    """A claim measured on fewer examples than an interval needs."""


def _require_examples(n: int) -> None:
    if n < MIN_EXAMPLES:
        raise TooFewExamples(
            f"{n} example{'s' if n != 1 else ''} cannot give a confidence interval: a claim is decided on an interval, "
            f"which needs at least {MIN_EXAMPLES} examples (give more prompts, e.g. n_prompts=16)"
        )


@dataclass(frozen=True)
class Estimate:
    """A mean over ``n`` examples with its bootstrap interval ``[low, high]``."""

    mean: float
    low: float
    high: float
    n: int
    confidence: float

    def interval_fields(self) -> dict:
        """The CheckResult fields of this estimate's interval: n, ci_low, ci_high, confidence."""
        return {"n": self.n, "ci_low": self.low, "ci_high": self.high, "confidence": self.confidence}

    def describe(self) -> str:
        return f"{self.mean:.3f} ({self.confidence:.0%} CI {self.low:.3f} to {self.high:.3f}, n={self.n})"


def check_confidence(confidence: float) -> float:
    if not isinstance(confidence, (int, float)) or not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence!r} is not valid: it must be between 0 and 1, e.g. 0.95")
    return float(confidence)


def bootstrap_mean(
    values,
    *,
    confidence: float = DEFAULT_CONFIDENCE,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> Estimate:
    """Mean of ``values`` (``[n]``) with a seeded percentile bootstrap interval.

    Raises ValueError for an empty input or non-finite values, naming how many
    and where: a NaN must never turn into a silent pass.
    """
    confidence = check_confidence(confidence)
    data = np.asarray(values, dtype=np.float64).reshape(-1)
    if data.size == 0:
        raise ValueError("no examples to aggregate: the measurement produced an empty set of values")
    bad = np.flatnonzero(~np.isfinite(data))
    if bad.size:
        raise ValueError(f"{bad.size} of {data.size} per-example values are NaN or infinite (first at example {int(bad[0])})")
    _require_examples(data.size)
    mean = float(data.mean())
    rng = np.random.default_rng(seed)
    index = rng.integers(0, data.size, size=(resamples, data.size))
    means = data[index].mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return Estimate(mean, float(low), float(high), int(data.size), confidence)


def bootstrap_statistics(
    samples,
    statistic,
    *,
    confidence: float = DEFAULT_CONFIDENCE,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> list[Estimate]:
    """Statistics of the means of paired per-example samples, with bootstrap intervals.

    ``samples`` is ``[k, n]``: k quantities measured on the same n examples.
    ``statistic`` maps means ``[..., k]`` to values ``[..., m]`` (e.g. ratios of
    means). Examples are resampled jointly (the quantities stay paired), so
    the intervals of ratios and differences are honest. Returns m estimates.
    """
    confidence = check_confidence(confidence)
    data = np.asarray(samples, dtype=np.float64)
    if data.ndim != 2 or data.shape[1] == 0:
        raise ValueError(f"samples must be [quantities, examples] with at least one example, got shape {data.shape}")
    if not np.isfinite(data).all():
        raise ValueError("per-example values contain NaN or infinite entries")
    n = data.shape[1]
    _require_examples(n)
    point = np.atleast_1d(np.asarray(statistic(data.mean(axis=1)), dtype=np.float64))
    rng = np.random.default_rng(seed)
    index = rng.integers(0, n, size=(resamples, n))
    means = data[:, index].mean(axis=2).T  # [resamples, k]
    with np.errstate(divide="ignore", invalid="ignore"):  # a resample with a zero gap is NaN, skipped below
        values = np.asarray(statistic(means), dtype=np.float64).reshape(resamples, -1)
    alpha = (1 - confidence) / 2
    low = np.nanquantile(values, alpha, axis=0)
    high = np.nanquantile(values, 1 - alpha, axis=0)
    return [Estimate(float(p), float(lo), float(hi), n, confidence) for p, lo, hi in zip(point, low, high)]
