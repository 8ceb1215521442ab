"""One claim of a results document as the page shows it, and how claims are grouped (test, checkpoint, model)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property

from ..claims import format as claim_format
from ..claims.format import ClaimRow, number
from .frames import Frame, is_number, text_of

CLAIM_KEYS = {"schema", "kind", "claim", "metric", "value", "passed", "n", "min_value", "max_value", "ci_low", "ci_high",
              "confidence", "decided_on", "model", "checkpoint", "parameters", "notes", "evidence",
              "baseline", "baseline_key", "baseline_test", "informational"}


@dataclass
class ClaimView:
    """One claim, formatted for the page; ``index`` is its position in the whole document."""

    index: int
    nodeid: str
    outcome: str
    raw: dict
    evidence: dict[str, Frame]
    links: list[tuple[str, str]] = field(default_factory=list)
    test_record: dict = field(default_factory=dict)

    @property
    def anchor(self) -> str:
        return f"claim-{self.index}"

    def get(self, key: str, default=None):
        value = self.raw.get(key, default)
        return default if value is None else value

    @property
    def kind(self) -> str:
        return str(self.get("kind", "?"))

    @property
    def text(self) -> str:
        return str(self.get("claim", "(claim text missing)"))

    @property
    def passed(self) -> bool:
        return bool(self.raw.get("passed"))

    @cached_property
    def cells(self) -> ClaimRow:
        """The claim's words (:func:`circuitcheck.claims.format.row`): the same as the lab note and the terminal line."""
        return claim_format.row(self.raw)

    @property
    def verdict(self) -> str:
        return self.cells.verdict

    @property
    def model(self) -> str:
        return str(self.get("model", ""))

    @property
    def checkpoint(self) -> str | None:
        """The claim's checkpoint (:func:`checkpoint_of`), else its test's ``checkpoint``."""
        own = checkpoint_of(self.raw)
        if own is None and self.test_record.get("checkpoint") not in (None, ""):
            return str(self.test_record["checkpoint"])
        return own

    @property
    def test(self) -> str:
        """The test without its checkpoint parameter: the same claim on other checkpoints has the same ``test``."""
        return test_of(self.test_record or {"nodeid": self.nodeid}, self.checkpoint)

    @property
    def baseline(self) -> dict | None:
        """The baseline comparison for the page: ``status``, ``text`` ("stored 0.844, down 0.230, allowed ±0.050"), ``key``."""
        raw = self.raw.get("baseline")
        if not isinstance(raw, dict) or not raw.get("status"):
            return None
        status = str(raw["status"])
        stored, measured, allowed, delta = (raw.get(k) for k in ("stored", "measured", "allowed", "delta"))
        if not is_number(delta) and is_number(stored) and is_number(measured):
            delta = measured - stored
        bits = []
        if status == "new":
            bits.append("not in the baseline yet")
        elif status == "recorded":
            bits.append("value written to the baseline")
        if is_number(stored):
            bits.append(f"stored {number(stored)}")
        if is_number(delta):
            bits.append("unchanged" if delta == 0 else f"{'up' if delta > 0 else 'down'} {number(abs(delta))}")
        if is_number(allowed):
            bits.append(f"allowed ±{number(allowed)}")
        key = self.raw.get("baseline_key")
        return {"status": status, "text": ", ".join(bits), "key": str(key) if key else ""}

    @property
    def regressed(self) -> bool:
        baseline = self.baseline
        return baseline is not None and baseline["status"] == "regressed"

    @property
    def value_text(self) -> str:
        return self.cells.value

    @property
    def interval_text(self) -> str:
        return self.cells.interval or "–"

    @property
    def measured_text(self) -> str:
        """``induction score 0.827 [0.785, 0.891] (95%)``."""
        return self.cells.measured

    @property
    def confidence_text(self) -> str:
        confidence = self.raw.get("confidence")
        return f"{confidence:.0%}" if is_number(confidence) else "confidence"

    @property
    def threshold_text(self) -> str:
        """``≥ 0.7``: what the claim requires of its value."""
        return self.cells.required

    @property
    def decision_text(self) -> str:
        """``lower bound 0.785``: the statistic the decision was made on, with its number."""
        return self.cells.decision

    @property
    def threshold(self) -> float | None:
        low, high = self.raw.get("min_value"), self.raw.get("max_value")
        return low if is_number(low) else high if is_number(high) else None

    @property
    def notes(self) -> list[str]:
        return [str(note) for note in self.raw.get("notes") or []]

    @property
    def extras(self) -> list[tuple[str, str]]:
        """Keys this page has no place for (added by later versions or plugins), shown as text rather than dropped."""
        return [(str(key), text_of(value)) for key, value in sorted(self.raw.items()) if key not in CLAIM_KEYS]

    @property
    def parameters(self) -> list[tuple[str, str]]:
        params = self.raw.get("parameters") or {}
        if not isinstance(params, dict):
            return [("parameters", text_of(params))]
        # sorted, as in the JSON file, so that a re-rendered page is identical to the first one
        return [(str(key), text_of(value)) for key, value in sorted(params.items())]


def checkpoint_of(claim: dict) -> str | None:
    """The checkpoint a claim was measured on.

    Its ``checkpoint`` key when set, else ``parameters["checkpoint"]``, else the
    part after ``@`` of its model spec (``zoo:induction-2l@step800`` -> ``step800``).
    """
    if claim.get("checkpoint") not in (None, ""):
        return str(claim["checkpoint"])
    params = claim.get("parameters") if isinstance(claim.get("parameters"), dict) else {}
    if params.get("checkpoint") not in (None, ""):
        return str(params["checkpoint"])
    for spec in (claim.get("model"), params.get("model"), params.get("model_spec"), params.get("spec")):
        if isinstance(spec, str) and "@" in spec:
            return spec.rsplit("@", 1)[1]
    return None


def test_of(test: dict, checkpoint: str | None = None) -> str:
    """A test's id without its checkpoint parameter: its ``test`` key, else ``nodeid`` less ``[checkpoint]``.

    ``t.py::test_x[step600]`` -> ``t.py::test_x``; ``t.py::test_x[step600-L1H0]`` -> ``t.py::test_x[L1H0]``.
    """
    if isinstance(test.get("test"), str) and test["test"]:
        return test["test"]
    nodeid = str(test.get("nodeid", "?"))
    checkpoint = checkpoint if checkpoint is not None else test.get("checkpoint")
    if checkpoint in (None, ""):
        return nodeid
    cp = str(checkpoint)
    for old, new in ((f"[{cp}]", ""), (f"[{cp}-", "["), (f"-{cp}]", "]"), (f"-{cp}-", "-")):
        if old in nodeid:
            return nodeid.replace(old, new, 1)
    return nodeid


def model_base(model: str) -> str:
    return model.rsplit("@", 1)[0] if "@" in model else model


def natural_key(text: str):
    """``step800`` before ``step1000``."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", str(text)) if part]
