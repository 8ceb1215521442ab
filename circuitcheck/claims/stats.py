"""Statistics: seeded bootstrap confidence intervals over examples, and the p-value of a decision.

Per-example values go in; a mean and a percentile interval come out. The
resampling is seeded, so the same values give the same interval on every run
and a claim decided on an interval bound does not flip between runs.

Each :class:`Estimate` keeps its bootstrap draws, so a claim can also state
the one-sided p-value of its decision (:meth:`Estimate.p_value`): the chance,
under the bootstrap distribution, that the statistic lies on the wrong side of
the threshold. A claim "value >= t" decided on the lower bound of a 95%
interval holds exactly when that p-value is at most 2.5%, so the p-value is
the same decision written as a number that a multiple-comparisons correction
(:mod:`circuitcheck.claims.correction`) can compare with smaller levels.

**Tiny levels.** B = 1000 resamples resolve tail probabilities down to about
10/B = 1%; Holm over 50 claims asks for 0.025/50 = 0.05%, half a resample.
Where fewer than :data:`TAIL_DRAWS` draws fall beyond the threshold, the tail
is extrapolated: ``(centre - threshold) / sd`` of the draws, with the
bootstrap's plug-in spread widened by sqrt(n / (n - 1)), is read on Student's
t with n - 1 degrees of freedom. For a mean of n examples that is the
one-sample t-test (exact for normal examples, close for others by the central
limit theorem); for ratios of means it is the usual delta-method
approximation. It never gives more than the empirical tail could (10/B), and
the p-value's ``p_method`` says which of the two was used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import ArgumentError, CircuitCheckError

DEFAULT_CONFIDENCE = 0.95
DEFAULT_RESAMPLES = 1000
#: The fewest examples an interval is computed from: one example has no spread to
#: resample, and its "interval" would be the single value, zero wide.
MIN_EXAMPLES = 2
#: Below this many bootstrap draws beyond a threshold, a tail probability is extrapolated (see the module docstring).
TAIL_DRAWS = 10


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
    """A mean over ``n`` examples with its bootstrap interval ``[low, high]``.

    ``draws`` are the bootstrap replicates of the statistic (``[resamples]``,
    NaN where a resample left it undefined); :meth:`p_value` reads them.
    """

    mean: float
    low: float
    high: float
    n: int
    confidence: float
    draws: np.ndarray | None = field(default=None, compare=False, repr=False)

    def interval_fields(self) -> dict:
        """The CheckResult fields of this estimate's interval: n, ci_low, ci_high, confidence."""
        return {"n": self.n, "ci_low": self.low, "ci_high": self.high, "confidence": self.confidence}

    @property
    def level(self) -> float:
        """The one-sided level of a decision on one bound: (1 - confidence) / 2, e.g. 0.025 at 95%."""
        return (1 - self.confidence) / 2

    def p_value(self, min_value: float | None = None, max_value: float | None = None) -> "PValue":
        """One-sided p-value of the claim "min_value <= statistic <= max_value" (either bound may be None).

        For "at least ``min_value``" it is the bootstrap probability that the
        statistic is below ``min_value`` (ties count half); for "at most" the
        probability that it is above; for both, the larger of the two (the
        claim holds only if both sides do: an intersection-union test).
        """
        if self.draws is None:
            raise ArgumentError("this estimate has no bootstrap draws: build it with bootstrap_mean or bootstrap_statistics")
        return p_value_of_draws(self.draws, self.n, min_value, max_value)

    def describe(self) -> str:
        return f"{self.mean:.3f} ({self.confidence:.0%} CI {self.low:.3f} to {self.high:.3f}, n={self.n})"


def check_confidence(confidence: float) -> float:
    if not isinstance(confidence, (int, float)) or not 0 < confidence < 1:
        raise ArgumentError(f"confidence={confidence!r} is not valid: it must be between 0 and 1, e.g. 0.95")
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
        raise ArgumentError("no examples to aggregate: the measurement produced an empty set of values")
    bad = np.flatnonzero(~np.isfinite(data))
    if bad.size:
        raise ArgumentError(f"{bad.size} of {data.size} per-example values are NaN or infinite (first at example {int(bad[0])})")
    _require_examples(data.size)
    mean = float(data.mean())
    rng = np.random.default_rng(seed)
    index = rng.integers(0, data.size, size=(resamples, data.size))
    means = data[index].mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return Estimate(mean, float(low), float(high), int(data.size), confidence, means)


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
        raise ArgumentError(f"samples must be [quantities, examples] with at least one example, got shape {data.shape}")
    if not np.isfinite(data).all():
        raise ArgumentError("per-example values contain NaN or infinite entries")
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
    return [Estimate(float(p), float(lo), float(hi), n, confidence, values[:, j].copy())
            for j, (p, lo, hi) in enumerate(zip(point, low, high))]


# p-values of decisions ------------------------------------------------------------------


@dataclass(frozen=True)
class PValue:
    """A one-sided p-value and how it was computed (``"bootstrap"``, ``"t tail"``, ``"exact"``, ``"monte carlo"``...)."""

    value: float
    method: str

    def fields(self) -> dict:
        """The CheckResult fields: ``p_value`` and ``p_method``."""
        return {"p_value": float(self.value), "p_method": self.method}


def tail_probability(draws, threshold: float, side: str, n: int) -> PValue:
    """P*(statistic < threshold) (``side="below"``) or P*(statistic > threshold) (``"above"``) under the draws.

    Ties count half. Where fewer than :data:`TAIL_DRAWS` draws lie beyond the
    threshold the tail is extrapolated on Student's t with ``n - 1`` degrees of
    freedom (module docstring), and capped at what the empirical tail could be.
    """
    if side not in ("below", "above"):
        raise ArgumentError(f"side={side!r} is not valid: use 'below' or 'above'")
    data = np.asarray(draws, dtype=np.float64).reshape(-1)
    data = data[np.isfinite(data)]
    if data.size == 0:
        return PValue(1.0, "bootstrap (no finite draws)")
    signed = data - threshold if side == "above" else threshold - data  # > 0: beyond the threshold
    beyond = float((signed > 0).sum() + 0.5 * (signed == 0).sum())
    if beyond >= TAIL_DRAWS:
        return PValue(beyond / data.size, "bootstrap")
    centre = float(-signed.mean())  # distance of the draws' centre from the threshold, on the claim's side
    spread = float(signed.std()) * math.sqrt(n / (n - 1)) if n > 1 else float(signed.std())
    if spread == 0.0:
        return PValue(0.0 if centre > 0 else 1.0, "bootstrap")
    from scipy.special import stdtr  # scipy.special only: light, unlike scipy.stats

    extrapolated = float(stdtr(max(n - 1, 1), -centre / spread))
    return PValue(min(extrapolated, TAIL_DRAWS / data.size), "t tail")


def p_value_of_draws(draws, n: int, min_value: float | None = None, max_value: float | None = None) -> PValue:
    """The p-value of "min_value <= statistic <= max_value" from its bootstrap draws (see :meth:`Estimate.p_value`)."""
    sides = [tail_probability(draws, t, side, n) for t, side in ((min_value, "below"), (max_value, "above")) if t is not None]
    if not sides:
        raise ArgumentError("a p-value needs a threshold: give min_value and/or max_value")
    return max(sides, key=lambda p: p.value)


def exceedance_p_value(value: float, null_samples) -> PValue:
    """P-value of "``value`` is above the null distribution" from seeded samples of it (e.g. random-weight scores).

    ``(1 + #{samples >= value}) / (N + 1)`` (the Monte-Carlo p-value, valid at
    every level it can resolve); where fewer than :data:`TAIL_DRAWS` samples
    reach ``value``, the tail is extrapolated on Student's t (the prediction
    of one more sample from the N: ``sd * sqrt(1 + 1/N)``, N - 1 degrees of
    freedom), capped at what the count could give.
    """
    samples = np.asarray(null_samples, dtype=np.float64).reshape(-1)
    samples = samples[np.isfinite(samples)]
    if samples.size < 2:
        raise ArgumentError(f"a null distribution needs at least 2 samples, got {samples.size}")
    reached = int((samples >= value).sum())
    counted = (1 + reached) / (samples.size + 1)
    if reached >= TAIL_DRAWS:
        return PValue(counted, "monte carlo")
    spread = float(samples.std(ddof=1)) * math.sqrt(1 + 1 / samples.size)
    if spread == 0.0:
        return PValue(counted, "monte carlo")
    from scipy.special import stdtr

    extrapolated = float(stdtr(samples.size - 1, -(value - float(samples.mean())) / spread))
    return PValue(min(extrapolated, (1 + TAIL_DRAWS) / (samples.size + 1)), "t tail")


def combine(p_values) -> PValue:
    """The p-value of a claim that holds only when every part holds (intersection-union): the largest."""
    parts = list(p_values)
    if not parts:
        raise ArgumentError("no p-values to combine")
    return max(parts, key=lambda p: p.value)


@dataclass(frozen=True)
class Decision:
    """A claim decided on its interval: whether it held, the statistic that decided, and the decision's p-value."""

    passed: bool
    decided_on: str
    p: PValue

    def fields(self) -> dict:
        """CheckResult keyword arguments: ``passed``, ``decided_on``, ``p_value``, ``p_method``."""
        return {"passed": self.passed, "decided_on": self.decided_on, **self.p.fields()}


def decide(estimate: Estimate, min_value: float | None = None, max_value: float | None = None) -> Decision:
    """Decide "min_value <= statistic <= max_value" on the interval: the lower bound for a minimum, the upper for a maximum."""
    if min_value is None and max_value is None:
        raise ArgumentError("a decision needs a threshold: give min_value and/or max_value")
    passed = (min_value is None or estimate.low >= min_value) and (max_value is None or estimate.high <= max_value)
    decided = "lower bound" if max_value is None else "upper bound" if min_value is None else "interval"
    return Decision(bool(passed), decided, estimate.p_value(min_value, max_value))
