"""Shared by every assertion: threshold validation and the pass/raise step."""

from __future__ import annotations

import math

from ..model import context
from ..errors import CircuitAssertionError, CircuitCheckError
from .result import CheckResult


class ThresholdError(CircuitCheckError, ValueError):
    """A threshold that no measurement can be decided against (not a number, not finite, out of range)."""


def is_finite_number(value) -> bool:
    """Whether ``value`` is a real number (not a bool) that is neither infinite nor NaN.

    Integers too large for a float count as infinite: the comparison would overflow.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def check_thresholds(min_value, max_value, *, low: float | None = None, high: float | None = None, names=("min", "max")):
    """Validate a pair of thresholds; ``low``/``high`` bound the metric's range when it has one.

    A threshold must be a finite number: ``min_drop=-inf`` or ``max_recovery=inf``
    would decide every claim the same way whatever was measured, so a false
    claim would pass. Raises :class:`ThresholdError` (a ``ValueError``) naming
    the bad value and what is valid.
    """
    between = f" between {low:g} and {high:g}" if low is not None and high is not None else ""
    for name, value in zip(names, (min_value, max_value)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ThresholdError(f"{name}={_shown(value)} is not valid: it must be a number{between}")
        if not is_finite_number(value):
            raise ThresholdError(
                f"{name}={_shown(value)} is not valid: it must be a finite number{between} "
                "(an infinite threshold decides every claim the same way, whatever is measured)"
            )
        if (low is not None and value < low) or (high is not None and value > high):
            lies = f"lies between {low} and {high}" if low is not None and high is not None else (f"is >= {low}" if low is not None else f"is <= {high}")
            raise ThresholdError(f"{name}={value!r} is not valid: the measured value {lies}")
    if min_value is not None and max_value is not None and min_value > max_value:
        raise ThresholdError(f"{names[0]}={min_value} is above {names[1]}={max_value}: no value can satisfy both")


def _shown(value) -> str:
    if isinstance(value, int) and value.bit_length() > 64:  # repr of a huge int is slow or refused
        return f"{str(value)[:20]}... (an integer of {value.bit_length()} bits)" if value.bit_length() < 10_000 else f"an integer of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def within(value: float, min_value, max_value) -> bool:
    return (min_value is None or value >= min_value) and (max_value is None or value <= max_value)


def conclude(result: CheckResult, tolerance=None) -> CheckResult:
    """Record the result on the running test; raise the lab note if the claim failed or regressed.

    ``tolerance`` (a number, or ``{"abs": ..., "rel": ...}``) overrides the
    baseline tolerance for this claim when the run compares with a baseline.
    In soft mode (``cc.claims()``, ``--circuitcheck-soft``) a failed claim is
    kept by the soft block, which raises them all at its end, and the result
    is returned.
    """
    __tracebackhide__ = True
    if tolerance is not None:
        from .baseline import Tolerance

        Tolerance.parse(tolerance)  # a bad tolerance is an error even without a baseline
    regression = context.record(result, tolerance)
    soft = context.soft_block()
    if soft is not None:
        soft.concluded += 1
    if not result.passed:
        message = result.message() + (f"\n  also {regression}" if regression else "")
    elif regression:
        message = regression
    else:
        return result
    if soft is not None:
        soft.add_failure(message, result, context.caller_location())
        return result
    raise CircuitAssertionError(message, result)
