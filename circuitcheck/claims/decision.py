"""Shared by every assertion: threshold validation and the pass/raise step."""

from __future__ import annotations

from ..model import context
from ..errors import CircuitAssertionError
from .result import CheckResult


def check_thresholds(min_value, max_value, *, low: float | None = None, high: float | None = None, names=("min", "max")):
    """Validate a pair of thresholds; ``low``/``high`` bound the metric's range when it has one."""
    for name, value in zip(names, (min_value, max_value)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            raise ValueError(f"{name}={value!r} is not valid: it must be a number")
        if (low is not None and value < low) or (high is not None and value > high):
            raise ValueError(f"{name}={value!r} is not valid: the measured value lies between {low} and {high}")
    if min_value is not None and max_value is not None and min_value > max_value:
        raise ValueError(f"{names[0]}={min_value} is above {names[1]}={max_value}: no value can satisfy both")


def within(value: float, min_value, max_value) -> bool:
    return (min_value is None or value >= min_value) and (max_value is None or value <= max_value)


def conclude(result: CheckResult, tolerance=None) -> CheckResult:
    """Record the result on the running test; raise the lab note if the claim failed or regressed.

    ``tolerance`` (a number, or ``{"abs": ..., "rel": ...}``) overrides the
    baseline tolerance for this claim when the run compares with a baseline.
    """
    __tracebackhide__ = True
    if tolerance is not None:
        from .baseline import Tolerance

        Tolerance.parse(tolerance)  # a bad tolerance is an error even without a baseline
    regression = context.record(result, tolerance)
    if not result.passed:
        message = result.message() + (f"\n  also {regression}" if regression else "")
        raise CircuitAssertionError(message, result)
    if regression:
        raise CircuitAssertionError(regression, result)
    return result
