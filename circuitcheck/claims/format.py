"""One claim in words: the verdict, the measured value, the bound that decided and what was required.

Every place that shows a claim reads this module, so they all say the same
thing: the lab note of a failed assertion (:func:`lab_note`), the line of the
run's claim table in the terminal (:func:`terminal_line`), the report's claim
row and the pytest-html extra (both from :func:`row`).

Vocabulary: a claim **holds** or **fails** (:data:`HELD` / :data:`FAILED`);
"passed" is pytest's word for tests and the name of the JSON field only.

A claim is given either as a :class:`~circuitcheck.claims.result.CheckResult`
or as its JSON dict (``CheckResult.to_dict()``, or a claim read back from a
results file), so this module imports neither pandas nor torch.

Decisions are made on a statistic of the measured value (``decided_on``): the
lower bound of its interval for "at least" claims, the upper bound for "at
most" claims, sometimes the mean. That statistic is shown beside the value,
compared with the threshold the way it came out (:func:`comparison`), so that
``1.302`` failing ``>= 0.7`` reads as what it is: ``lower bound -4.370 < 0.7``.

A claim recorded from a ``check_*`` call that no ``assert_*`` concluded is
*informational* (``"informational": true`` in its JSON dict): it is shown,
marked as a check, and never decides its test (:func:`is_informational`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

HELD = "held"
FAILED = "failed"

#: Plain text (lab note, terminal) writes ASCII comparisons; HTML writes the signs.
_SIGNS = {False: (">=", "<="), True: ("≥", "≤")}
#: ``decided_on`` values that name a single statistic, written without a colon before the number.
_STATISTICS = ("mean", "lower bound", "upper bound", "value")
_FIELDS = ("kind", "claim", "metric", "value", "passed", "n", "min_value", "max_value", "ci_low", "ci_high",
           "confidence", "decided_on", "model", "checkpoint", "notes")


def fields(claim: Any) -> Mapping[str, Any]:
    """The claim's displayed fields as a mapping: a JSON claim dict as it is, a CheckResult read attribute by attribute."""
    if isinstance(claim, Mapping):
        return claim
    missing = [name for name in ("claim", "passed", "value") if not hasattr(claim, name)]
    if missing:
        raise TypeError(f"{claim!r} is not a claim: give a CheckResult or its to_dict() (it has no {', '.join(missing)})")
    return {name: getattr(claim, name, None) for name in _FIELDS}


def verdict(claim: Any) -> str:
    """``"held"`` or ``"failed"``."""
    return HELD if fields(claim).get("passed") else FAILED


def is_informational(claim: Any) -> bool:
    """Whether the claim was recorded from a ``check_*`` call only: shown, but deciding nothing (no test fails on it)."""
    return isinstance(claim, Mapping) and bool(claim.get("informational"))


def number(value: Any, digits: int = 3) -> str:
    """A measured number for people: ``digits`` decimals, ``g`` format when very large or small, ``–`` when missing."""
    if value is None or isinstance(value, bool):
        return "–" if value is None else str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return "–" if math.isnan(value) else ("∞" if value > 0 else "−∞")
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 10 ** -digits):
            return f"{value:.{max(digits, 2)}g}"
        return f"{value:.{digits}f}"
    return str(value)


def limit(value: Any) -> str:
    """A threshold as the user wrote it (3 significant digits): ``0.7``, not ``0.700``."""
    return f"{value:.3g}" if _is_number(value) else number(value)


def requirement(claim: Any, *, html: bool = False) -> str:
    """What the claim requires of the value: ``>= 0.7``, ``<= 0.1``, ``between 0.2 and 0.8``, ``no threshold``."""
    data = fields(claim)
    low, high = data.get("min_value"), data.get("max_value")
    at_least, at_most = _SIGNS[html]
    if _is_number(low) and _is_number(high):
        return f"between {limit(low)} and {limit(high)}"
    if _is_number(low):
        return f"{at_least} {limit(low)}"
    if _is_number(high):
        return f"{at_most} {limit(high)}"
    return "no threshold"


def interval(claim: Any) -> str:
    """``[0.785, 0.891] (95%)``, or ``""`` when the claim has no interval."""
    data = fields(claim)
    low, high = data.get("ci_low"), data.get("ci_high")
    if low is None or high is None:
        return ""
    confidence = data.get("confidence")
    level = f" ({confidence:.0%})" if _is_number(confidence) else ""
    return f"[{number(low)}, {number(high)}]{level}"


def deciding_bound(claim: Any) -> tuple[str, Any]:
    """The statistic the decision compared with the threshold, and its value.

    ``("lower bound", -4.37)``: the lower bound of the interval for
    ``decided_on`` values starting with "lower bound", the upper bound for
    "upper bound", both (a ``(low, high)`` pair) for "interval", and the
    measured value itself otherwise (the mean, or a value measured without sampling).
    """
    data = fields(claim)
    statistic = str(data.get("decided_on") or "mean")
    if statistic.startswith("lower bound"):
        return statistic, data.get("ci_low")
    if statistic.startswith("upper bound"):
        return statistic, data.get("ci_high")
    if statistic == "interval":
        return statistic, (data.get("ci_low"), data.get("ci_high"))
    return statistic, data.get("value")


def decision(claim: Any) -> str:
    """The deciding statistic with its number: ``lower bound -4.370``, ``interval [0.1, 0.9]``, ``max over layers >= 1: 0.02``."""
    statistic, bound = deciding_bound(claim)
    if statistic == "interval":
        text = f"interval [{number(bound[0])}, {number(bound[1])}]"
    else:
        separator = " " if statistic in _STATISTICS else ": "
        text = f"{statistic}{separator}{number(bound)}"
    # held on its own bound, failed as one of a family: say so where the bound is shown
    return text + (_correction_text(claim) if isinstance(claim, Mapping) else "")


#: The relation of a bound to its threshold, by (side, holds): plain text and HTML.
_RELATIONS = {("min", True): (">=", "≥"), ("min", False): ("<", "<"), ("max", True): ("<=", "≤"), ("max", False): (">", ">")}


def comparison(claim: Any, *, html: bool = False) -> str | None:
    """The deciding statistic against the threshold, as it came out: ``lower bound 0.790 < 0.99``, ``upper bound 0.02 <= 0.1``.

    Intervals decide "between" claims: ``interval [0.310, 0.520] within [0.2, 0.8]``
    (or ``not within``). None when the claim has no threshold or no number to
    compare, or when the single comparison shown would contradict the
    verdict (a claim decided on more than this statistic, e.g. a lens claim's
    KL bound and top-1 agreement, or a composition above its random baseline):
    the caller then writes the statistic and the requirement apart
    (:func:`decided`). A multiple-comparisons correction that failed a claim
    which held on its own bound is said after the comparison.
    """
    data = fields(claim)
    statistic, bound = deciding_bound(data)
    low, high = data.get("min_value"), data.get("max_value")
    passed = bool(data.get("passed"))
    own_verdict = passed or _failed_by_correction(data)
    if statistic == "interval":
        if not (_is_number(low) and _is_number(high) and _is_number(bound[0]) and _is_number(bound[1])):
            return None
        within = low <= bound[0] and bound[1] <= high
        if within != own_verdict:
            return None
        text = f"interval [{number(bound[0])}, {number(bound[1])}] {'within' if within else 'not within'} [{limit(low)}, {limit(high)}]"
        return text + _correction_text(data)
    if not _is_number(bound):
        return None
    checks = []  # (side, threshold, whether the bound satisfies it)
    if _is_number(low):
        checks.append(("min", low, bound >= low))
    if _is_number(high):
        checks.append(("max", high, bound <= high))
    holds = all(ok for _, _, ok in checks)
    if not checks or holds != own_verdict:
        return None
    shown = f"{statistic}{' ' if statistic in _STATISTICS else ': '}{number(bound)}"
    if len(checks) == 2 and holds:
        return f"{shown} within [{limit(low)}, {limit(high)}]" + _correction_text(data)
    side, threshold, ok = next((c for c in checks if not c[2]), checks[0])  # the comparison that failed, else the only one
    return f"{shown} {_RELATIONS[(side, ok)][html]} {limit(threshold)}" + _correction_text(data)


def decided(claim: Any, *, html: bool = False) -> str:
    """How the claim was decided, in a few words: :func:`comparison`, else ``<statistic> <bound>, required <requirement>``."""
    compared = comparison(claim, html=html)
    if compared is not None:
        return compared
    return f"{decision(claim)}, required {requirement(claim, html=html)}"


def _failed_by_correction(data: Mapping[str, Any]) -> bool:
    correction = data.get("correction")
    return isinstance(correction, Mapping) and bool(correction.get("held_at_own_level")) and not correction.get("held")


def _correction_text(data: Mapping[str, Any]) -> str:
    if not _failed_by_correction(data):
        return ""
    correction = data["correction"]
    return (f" (held at its own level; fails {correction.get('method')} over {correction.get('family_size')} claims: "
            f"adjusted p {number(correction.get('adjusted_p_value'))} > {limit(correction.get('alpha'))})")


def lab_note(claim: Any) -> str:
    """The lab note of a claim (a failed assertion's message): claim, measured value, requirement and the bound that decided.

    ::

        claim failed: L1H0 is sufficient for induction (model zoo:induction-2l)
          measured: recovery 1.302 (95% CI -4.370 to 3.100, n=32)
          required: recovery >= 0.99, decided on the lower bound -4.370
          <notes>
    """
    data = fields(claim)
    metric = data.get("metric") or "value"
    where = f" (model {data['model']})" if data.get("model") else ""
    low, high = data.get("ci_low"), data.get("ci_high")
    confidence = data.get("confidence")
    spread = f"{confidence:.0%} CI {number(low)} to {number(high)}, " if low is not None and high is not None and _is_number(confidence) else ""
    lines = [
        f"claim {verdict(data)}: {data.get('claim')}{where}",
        f"  measured: {metric} {number(data.get('value'))} ({spread}n={data.get('n')})",
        f"  required: {metric} {requirement(data)}, decided on the {decision(data)}",
    ]
    lines += [f"  {note}" for note in data.get("notes") or ()]
    return "\n".join(lines)


def terminal_line(claim: Any, *, show_model: bool = False, mark: str | None = None) -> str:
    """One line of the run's claim table: ``  FAILED      1.302  lower bound -4.370 < 0.99  <claim>``.

    The value, then beside it the statistic that decided and how it compared
    with the threshold (:func:`decided`). The mark is ``held`` / ``FAILED``,
    ``(held)`` / ``(failed)`` for an informational ``check_*`` result, or
    ``mark`` when given (the summary writes ``xfailed``). ``show_model``
    appends ``[model]`` (for runs over several models). The caller colours
    the line by :func:`verdict`.
    """
    data = fields(claim)
    if mark is None:
        held = bool(data.get("passed"))
        if is_informational(data):
            mark = "(held)" if held else "(failed)"
        else:
            mark = "held" if held else "FAILED"  # upper case: a failure must stand out in a wall of lines
    where = f"  [{data.get('model')}]" if show_model else ""
    return f"  {mark:<8} {number(data.get('value')):>8}  {decided(data)}  {data.get('claim')}{where}"


@dataclass(frozen=True)
class ClaimRow:
    """A claim's cells as the HTML report and the pytest-html extra show them (plain text; the page escapes it)."""

    verdict: str
    claim: str
    kind: str
    metric: str
    value: str
    interval: str
    required: str
    decision: str
    n: str
    model: str
    decided: str = ""
    informational: bool = False

    @property
    def measured(self) -> str:
        """``induction score 0.827 [0.785, 0.891] (95%)``."""
        text = f"{self.metric} {self.value}"
        return f"{text} {self.interval}" if self.interval else text


def row(claim: Any) -> ClaimRow:
    """The claim's cells for HTML: the same words as :func:`lab_note` and :func:`terminal_line`, with ≥ / ≤ signs."""
    data = fields(claim)
    n = data.get("n")
    return ClaimRow(
        verdict=verdict(data),
        claim=str(data.get("claim") if data.get("claim") is not None else "(claim text missing)"),
        kind=str(data.get("kind") or "?"),
        metric=str(data.get("metric") or "value"),
        value=number(data.get("value")),
        interval=interval(data),
        required=requirement(data, html=True),
        decision=decision(data),
        n="–" if n is None else str(n),
        model=str(data.get("model") or ""),
        decided=decided(data, html=True),
        informational=is_informational(data),
    )


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
