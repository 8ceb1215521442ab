"""Exceptions raised by circuitcheck.

Every error names the bad value and what would have been valid, so that a
failing CI log is enough to fix the test without opening a notebook.
"""

from __future__ import annotations


class CircuitCheckError(Exception):
    """Base class of circuitcheck's usage errors (bad input, not failed claims)."""


class ArgumentError(CircuitCheckError, ValueError):
    """An argument of the wrong type or range (``k=0``, ``confidence=1.5``, an unknown kind); the message names it."""


class ModelSpecError(CircuitCheckError, LookupError):
    """A model spec that no model source can resolve, or a missing checkpoint."""


class ComponentError(CircuitCheckError, ValueError):
    """A component string that does not parse or does not exist in the model."""


class CircuitAssertionError(AssertionError):
    """A measured claim did not hold.

    The message reads like a lab note: the claim, the measured value, the
    threshold, how it was measured, and what scored best instead. The full
    :class:`~circuitcheck.result.CheckResult` is attached as ``.result``.
    """

    def __init__(self, message: str, result=None):
        super().__init__(message)
        self.result = result
