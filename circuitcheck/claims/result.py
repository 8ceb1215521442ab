"""CheckResult: one measured claim, as data.

A result knows how to become a one-row pandas DataFrame, a JSON-safe dict for
the report (tensors never travel), and the lab-note message of a failure.
In a notebook it shows as the report shows it (``_repr_html_``, drawn by
:mod:`circuitcheck.report.notebook`); ``repr`` is one line and ``str`` the lab note.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ..tables import frame_from_json, frame_to_json, json_number as _json_number, json_safe as _json_safe  # noqa: F401 (frame_* importable here)
from . import format as claim_format  # not the builtin

SCHEMA_VERSION = 1


@dataclass
class CheckResult:
    """One measured claim.

    Attributes:
        kind: the assertion, e.g. ``"induction_head"``, ``"necessary"``.
        claim: the claim in words, e.g. ``"L1H3 is an induction head"``.
        value: the measured value the decision is about.
        passed: whether the claim held.
        n: number of examples (prompts) measured.
        min_value / max_value: the thresholds (either or both).
        ci_low / ci_high / confidence: the bootstrap interval of ``value``.
        decided_on: which statistic was compared with the threshold
            (``"mean"``, ``"lower bound"``, ``"upper bound"``).
        metric: what ``value`` is, e.g. ``"induction score"``.
        model: the model spec (or name) the claim was measured on.
        checkpoint: the training checkpoint of that model, when it was loaded at one.
        parameters: JSON-safe inputs of the measurement (layer, head, seed...).
        evidence: named DataFrames for the report.
        notes: extra lines for the lab note (e.g. the best-scoring heads).
        p_value / p_method: the one-sided p-value of the decision and how it was
            computed (``stats.decide``); None for claims measured without
            sampling error (weights only), which a multiple-comparisons
            correction leaves out of its family.
        call: how the claim was made (a :class:`~circuitcheck.claims.registry.ClaimCall`,
            set by the registry when a kind's check returns), so that it can be run
            again; never serialised.
        power: the claim's mutation score when it was measured
            (:func:`circuitcheck.mutation_score`, ``--circuitcheck-power``): a
            :class:`~circuitcheck.claims.power.PowerResult`, in ``to_dict()`` as ``"power"``.
    """

    kind: str
    claim: str
    value: float
    passed: bool
    n: int
    metric: str
    min_value: float | None = None
    max_value: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    confidence: float | None = None
    decided_on: str = "mean"
    model: str | None = None
    checkpoint: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    evidence: dict[str, pd.DataFrame] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    p_value: float | None = None
    p_method: str | None = None
    call: Any = field(default=None, repr=False, compare=False)
    power: Any = field(default=None, repr=False, compare=False)

    @property
    def threshold_text(self) -> str:
        """What the claim requires of the value: ``>= 0.7``, ``between 0.2 and 0.8``, ``no threshold``."""
        return claim_format.requirement(self)

    @property
    def verdict(self) -> str:
        """``"held"`` or ``"failed"``: claims hold or fail (``passed`` is the JSON field)."""
        return claim_format.verdict(self)

    def interval_text(self) -> str:
        """``[0.785, 0.891] (95%)``, or ``""`` without an interval."""
        return claim_format.interval(self)

    def message(self) -> str:
        """The lab note: claim, measured value with interval, threshold, the bound that decided, notes."""
        return claim_format.lab_note(self)

    def __repr__(self) -> str:
        """One line: kind, claim, value and verdict (the evidence tables are in ``.evidence``, the lab note is ``str()``)."""
        return (f"CheckResult(kind={self.kind!r}, claim={self.claim!r}, value={claim_format.number(self.value)}, "
                f"verdict={self.verdict!r})")

    def __str__(self) -> str:
        """The lab note (:meth:`message`)."""
        return self.message()

    def _repr_html_(self) -> str:
        """The notebook view: verdict, claim, value with interval, the bound that decided and the requirement, and the
        report's chart of the evidence (or a compact table where the report draws none)."""
        # The report sits a layer above the claims, which never import it: its view is looked up by name.
        return importlib.import_module("circuitcheck.report.notebook").claim_html(self)

    def to_frame(self) -> pd.DataFrame:
        """One row: the claim, its value, interval, thresholds and verdict."""
        row = {k: v for k, v in self.to_dict().items() if k not in ("evidence", "parameters", "notes", "schema", "power")}
        row.update({f"param_{k}": v for k, v in self.parameters.items()})
        if self.power is not None:
            row["mutation_score"] = self.power.score
        return pd.DataFrame([row])

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (numbers, strings, lists): what travels to the report (``power`` only when it was measured)."""
        data = {
            "schema": SCHEMA_VERSION,
            "kind": self.kind,
            "claim": self.claim,
            "metric": self.metric,
            "value": _json_number(self.value),
            "passed": bool(self.passed),
            "n": int(self.n),
            "min_value": _json_number(self.min_value),
            "max_value": _json_number(self.max_value),
            "ci_low": _json_number(self.ci_low),
            "ci_high": _json_number(self.ci_high),
            "confidence": _json_number(self.confidence),
            "decided_on": self.decided_on,
            "p_value": _json_number(self.p_value),
            "p_method": self.p_method,
            "model": self.model,
            "checkpoint": self.checkpoint,
            "parameters": _json_safe(self.parameters),
            "notes": list(self.notes),
            "evidence": {name: frame_to_json(frame) for name, frame in self.evidence.items()},
        }
        if self.power is not None:
            data["power"] = self.power.to_dict()
        return data
