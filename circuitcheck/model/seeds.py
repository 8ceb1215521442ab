"""Seeds: what a seed may be, in one place (task generation, bootstrap, noise, tuned lenses)."""

from __future__ import annotations

from ..errors import CircuitCheckError


MAX_SEED = 2**63 - 1


class SeedError(CircuitCheckError, ValueError):
    """A seed that is not an integer in 0..MAX_SEED."""


def check_seed(seed, name: str = "seed") -> int:
    """``seed`` if it is an integer in 0..2**63-1 (what numpy and torch generators both take); else a SeedError."""
    if isinstance(seed, bool) or not hasattr(seed, "__index__"):
        raise SeedError(f"{name}={seed!r} is not valid: it must be an integer from 0 to 2**63-1, got {type(seed).__name__}")
    value = int(seed.__index__())
    if not 0 <= value <= MAX_SEED:
        raise SeedError(f"{name}={seed!r} is not valid: it must be an integer from 0 to 2**63-1")
    return value
