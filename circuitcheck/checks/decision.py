"""Shared by every assertion: threshold validation and the pass/raise step."""

from __future__ import annotations

from .. import context
from ..errors import CircuitAssertionError
from ..result import CheckResult


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


def conclude(result: CheckResult) -> CheckResult:
    """Record the result on the running test; raise the lab note if the claim failed."""
    __tracebackhide__ = True
    context.record(result)
    if not result.passed:
        raise CircuitAssertionError(result.message(), result)
    return result
