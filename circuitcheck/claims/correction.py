"""Multiple comparisons: Holm or Benjamini-Hochberg over the claims of a run.

Each claim is a test: its null hypothesis is "the claim is false", and it
holds when its interval excludes that (``stats.decide``). A claim decided on
one bound of a 95% interval has a false-pass rate of at most 2.5% (one-sided):
its own level ``(1 - confidence) / 2``. With dozens of claims in a suite, some
false ones pass by chance; a correction decides the claims as a family:

- ``holm`` (step-down, Holm 1979): the chance that *any* false claim of the
  family holds is at most the family level alpha (family-wise error rate),
  whatever the dependence between claims. The claim with the i-th smallest
  p-value of m is compared with alpha / (m - i + 1); the first that misses its
  level fails, and so do all after it.
- ``bh`` (step-up, Benjamini-Hochberg 1995): the expected share of false
  claims among those that hold is at most alpha (false discovery rate;
  proven for independent or positively dependent claims). The claim of rank i
  is compared with alpha * i / m, stepping up from the largest p-value.
- ``none``: every claim at its own level.

The family is every claim of the run with a p-value (``CheckResult.p_value``,
recorded with each claim from its bootstrap distribution, see
:mod:`circuitcheck.claims.stats`). Claims that only have an interval (kinds
that do not yet record a p-value) get one from the interval by a normal
approximation, which their ``correction.p_method`` says. Claims measured
without sampling error (weights-only scores) cannot pass by chance and are
left out of the family. The family level alpha is the claims' own one-sided
level: ``(1 - confidence) / 2``, the smallest when they differ (0.025 at the
default 95%).

A correction can only make claims fail: a claim holds under it when it held
at its own level *and* its adjusted p-value is at most alpha.

This module works on the JSON claim dicts of a run (``CheckResult.to_dict()``),
so the pytest plugin can apply it on the xdist controller, where every
worker's claims are known only at the end of the session.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, Iterable, MutableMapping

METHODS = ("none", "holm", "bh")
METHOD_NAMES = {"none": "no correction", "holm": "Holm (family-wise error rate)", "bh": "Benjamini-Hochberg (false discovery rate)"}
DEFAULT_LEVEL = 0.025  # the one-sided level of a claim decided on one bound of a 95% interval

_EXACT = "exact"


def check_method(method: str) -> str:
    """``method`` if it is one of :data:`METHODS` (case-insensitive); a ValueError naming the valid ones otherwise."""
    text = str(method).strip().lower() if method is not None else "none"
    if text not in METHODS:
        raise ValueError(f"correction {method!r} is not valid: use one of {', '.join(METHODS)}")
    return text


def adjusted_p_values(p_values: Iterable[float], method: str) -> list[float]:
    """Holm (step-down) or Benjamini-Hochberg (step-up) adjusted p-values, in the input order.

    A claim holds under the correction at level alpha when its adjusted
    p-value is <= alpha. ``none`` returns the p-values unchanged.
    """
    method = check_method(method)
    p = [float(v) for v in p_values]
    for value in p:
        if not 0.0 <= value <= 1.0 or math.isnan(value):
            raise ValueError(f"p-value {value!r} is not valid: p-values lie between 0 and 1")
    m = len(p)
    if method == "none" or m == 0:
        return p
    order = sorted(range(m), key=lambda i: p[i])
    adjusted = [0.0] * m
    if method == "holm":
        running = 0.0
        for rank, i in enumerate(order):  # rank 0 is compared with alpha / m
            running = max(running, min(1.0, (m - rank) * p[i]))
            adjusted[i] = running
    else:
        running = 1.0
        for rank in range(m - 1, -1, -1):
            i = order[rank]
            running = min(running, m * p[i] / (rank + 1))
            adjusted[i] = min(1.0, running)
    return adjusted


def critical_levels(m: int, alpha: float, method: str) -> list[float]:
    """The level the claim of each rank (0 = smallest p-value) is compared with."""
    method = check_method(method)
    if method == "holm":
        return [alpha / (m - rank) for rank in range(m)]
    if method == "bh":
        return [alpha * (rank + 1) / m for rank in range(m)]
    return [alpha] * m


def p_value_of(claim: MutableMapping[str, Any]) -> tuple[float | None, str]:
    """The claim's p-value and how it was obtained; ``(None, why)`` for claims outside any family.

    Recorded p-values are used as they are. A claim with an interval and a
    threshold but no recorded p-value gets a normal approximation from the
    interval: centre ``(low + high) / 2``, standard error ``(high - low) / (2 z)``.
    """
    recorded = claim.get("p_value")
    if isinstance(recorded, (int, float)) and not isinstance(recorded, bool) and math.isfinite(recorded):
        return float(recorded), str(claim.get("p_method") or "recorded")
    low, high, confidence = claim.get("ci_low"), claim.get("ci_high"), claim.get("confidence")
    minimum, maximum = claim.get("min_value"), claim.get("max_value")
    if not all(_number(v) for v in (low, high, confidence)) or not (_number(minimum) or _number(maximum)):
        return None, _EXACT if str(claim.get("p_method") or "").startswith(_EXACT) else "no interval and threshold"
    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    centre, se = (low + high) / 2, (high - low) / (2 * z)
    sides = []
    for threshold, sign in ((minimum, 1), (maximum, -1)):
        if not _number(threshold):
            continue
        distance = sign * (centre - threshold)  # > 0: on the claim's side
        sides.append(NormalDist().cdf(-distance / se) if se > 0 else (0.0 if distance > 0 else 1.0))
    return max(sides), "normal approximation from the interval"


@dataclass
class Correction:
    """What a correction did to a run's claims (the report's ``correction`` entry)."""

    method: str
    alpha: float
    family_size: int
    left_out: int
    held_at_own_level: int
    held: int
    failed_under_correction: list[str] = field(default_factory=list)
    smallest_level: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "alpha": self.alpha,
            "family_size": self.family_size,
            "left_out": self.left_out,
            "held_at_own_level": self.held_at_own_level,
            "held": self.held,
            "failed_under_correction": list(self.failed_under_correction),
            "smallest_level": self.smallest_level,
        }

    def describe(self) -> str:
        """One line: ``holm over 20 claims: family-wise level 0.025 (claims decided at 0.00125 to 0.025); 1 held at its own level fails under it``."""
        if self.method == "none":
            return (f"no multiple-comparisons correction: each of the {self.family_size} claims with sampling error is decided at "
                    f"its own level ({_level(self.alpha)} one-sided); --circuitcheck-correction=holm controls the family")
        what = "family-wise error rate" if self.method == "holm" else "false discovery rate"
        levels = f" (claims decided at {_level(self.smallest_level)} to {_level(self.alpha)})" if self.smallest_level is not None else ""
        text = (f"{self.method} over a family of {self.family_size} claims: {what} <= {_level(self.alpha)}{levels}"
                f"; {self.held} of {self.held_at_own_level} claims that held at their own level still hold")
        if self.left_out:
            text += f"; {self.left_out} exact claim{'s' if self.left_out != 1 else ''} (no sampling error) left out"
        return text


def apply(claims: list[MutableMapping[str, Any]], method: str, alpha: float | None = None) -> Correction:
    """Decide ``claims`` (JSON claim dicts, changed in place) as one family under ``method``.

    Every claim gets a ``correction`` entry (its p-value, rank, level and
    adjusted p-value, or why it is outside the family). A claim that held at
    its own level and fails under the correction gets ``passed = False`` and a
    note saying so. ``alpha``: the family level (default: the claims' own
    one-sided level, the smallest when they differ).
    """
    method = check_method(method)
    members, p_values, methods = [], [], []
    left_out = 0
    for claim in claims:
        p, how = p_value_of(claim)
        if p is None:
            claim["correction"] = {"method": method, "in_family": False, "why": how}
            left_out += how == _EXACT
            continue
        members.append(claim)
        p_values.append(min(max(p, 0.0), 1.0))
        methods.append(how)
    if alpha is None:
        levels = [round((1 - c["confidence"]) / 2, 12) for c in members if _number(c.get("confidence"))]  # 0.025, not 0.025000000000000022
        alpha = min(levels) if levels else DEFAULT_LEVEL
    if not 0 < alpha < 1:
        raise ValueError(f"alpha={alpha!r} is not valid: a family level lies between 0 and 1, e.g. 0.025")
    m = len(members)
    adjusted = adjusted_p_values(p_values, method)
    order = sorted(range(m), key=lambda i: p_values[i])
    rank_of = {i: rank for rank, i in enumerate(order)}
    critical = critical_levels(m, alpha, method) if m else []
    failed: list[str] = []
    own = held = 0
    for i, claim in enumerate(members):
        held_own = bool(claim.get("passed"))
        holds = held_own and (method == "none" or adjusted[i] <= alpha)
        own += held_own
        held += holds
        claim["correction"] = {
            "method": method,
            "in_family": True,
            "family_size": m,
            "alpha": alpha,
            "p_value": p_values[i],
            "p_method": methods[i],
            "rank": rank_of[i] + 1,
            "level": critical[rank_of[i]],
            "adjusted_p_value": adjusted[i],
            "held_at_own_level": held_own,
            "held": holds,
        }
        if held_own and not holds:
            claim["passed"] = False
            claim["notes"] = [*(claim.get("notes") or []), correction_note(claim)]
            failed.append(str(claim.get("claim")))
    return Correction(method, alpha, m, left_out, own, held, failed, min(critical) if critical and method != "none" else None)


def correction_note(claim: MutableMapping[str, Any]) -> str:
    """The lab-note line of a claim that held at its own level and fails under the correction."""
    c = claim["correction"]
    return (f"fails under the {c['method']} correction over {c['family_size']} claims: adjusted p-value {c['adjusted_p_value']:.3g} "
            f"> {_level(c['alpha'])} (p-value {c['p_value']:.3g}, {c['p_method']}; rank {c['rank']}, level {_level(c['level'])}); "
            "it held at its own level")


def _level(value) -> str:
    return f"{value:.3g}" if _number(value) else "?"


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
