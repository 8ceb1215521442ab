"""Regression baselines: stored claim values that later runs must stay close to.

The baseline file is deterministic JSON (sorted keys, rounded floats, one entry
per line group) so that it diffs well in code review::

    {
      "circuitcheck_baseline": 1,
      "entries": {
        "tests/test_heads.py::test_induction :: L1H0 is an induction head": {
          "checkpoint": null, "claim": "L1H0 is an induction head", "kind": "induction_head",
          "metric": "induction score", "model": "zoo:induction-2l",
          "test": "tests/test_heads.py::test_induction", "value": 0.844106
        }
      }
    }

Entries are keyed by test id, claim and checkpoint. A measured value passes
when ``|measured - stored| <= max(abs, rel * |stored|)``. This module reads,
compares and merges; the pytest layer writes the file (``Baseline.dumps``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..errors import CircuitCheckError

BASELINE_SCHEMA = 1
DEFAULT_ABS = 0.01
DEFAULT_REL = 0.02
DECIMALS = 6


class BaselineError(CircuitCheckError):
    """A baseline file that cannot be used as it is (never silently replaced)."""


@dataclass(frozen=True)
class Tolerance:
    """How far a measured value may move from the stored one: ``max(abs, rel * |stored|)``."""

    abs: float = DEFAULT_ABS
    rel: float = DEFAULT_REL

    @classmethod
    def parse(cls, value: "Tolerance | float | dict | None") -> "Tolerance":
        if value is None:
            return cls()
        if isinstance(value, Tolerance):
            return value
        if isinstance(value, bool):
            raise ValueError(f"tolerance={value!r} is not valid: give a number (absolute) or {{'abs': ..., 'rel': ...}}")
        if isinstance(value, (int, float)):
            return cls._checked(abs=float(value), rel=0.0)
        if isinstance(value, dict):
            unknown = set(value) - {"abs", "rel"}
            if unknown:
                raise ValueError(f"tolerance keys {sorted(unknown)} are not valid: use 'abs' and 'rel'")
            return cls._checked(abs=float(value.get("abs", 0.0)), rel=float(value.get("rel", 0.0)))
        raise ValueError(f"tolerance={value!r} is not valid: give a number (absolute) or {{'abs': ..., 'rel': ...}}")

    @classmethod
    def _checked(cls, abs: float, rel: float) -> "Tolerance":
        if not (math.isfinite(abs) and math.isfinite(rel)) or abs < 0 or rel < 0:
            raise ValueError(f"tolerance abs={abs}, rel={rel} is not valid: both must be finite and >= 0")
        return cls(abs, rel)

    def allowed(self, stored: float) -> float:
        return max(self.abs, self.rel * abs(stored))

    def to_dict(self) -> dict:
        return {"abs": self.abs, "rel": self.rel}


def entry_key(test_id: str, claim: str, checkpoint: str | None = None) -> str:
    key = f"{test_id} :: {claim}"
    return f"{key} @ {checkpoint}" if checkpoint and f"[{checkpoint}]" not in test_id else key


def rounded(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), DECIMALS)


@dataclass
class Comparison:
    """How a measured value relates to the baseline: ``status`` is ``ok``, ``regressed``, ``new`` or ``recorded``."""

    status: str
    stored: float | None = None
    measured: float | None = None
    allowed: float | None = None

    @property
    def delta(self) -> float | None:
        if self.stored is None or self.measured is None:
            return None
        return self.measured - self.stored

    def to_dict(self) -> dict:
        return {"status": self.status, "stored": self.stored, "measured": rounded(self.measured), "allowed": rounded(self.allowed), "delta": rounded(self.delta)}

    def message(self, claim: str, path: str, metric: str) -> str:
        direction = "up" if (self.delta or 0) > 0 else "down"
        return "\n".join(
            [
                f"regression: {claim} moved beyond the baseline tolerance",
                f"  stored:   {metric} {self.stored:.6g} (baseline {path})",
                f"  measured: {metric} {self.measured:.6g} ({direction} by {abs(self.delta):.6g}; allowed ±{self.allowed:.3g})",
                "  if the change is intended, update the baseline with --circuitcheck-update-baseline",
            ]
        )


@dataclass
class Baseline:
    path: Path
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    existed: bool = False

    @classmethod
    def load(cls, path: str | Path) -> "Baseline":
        path = Path(path)
        if not path.exists():
            return cls(path)
        if path.is_dir():
            raise BaselineError(f"baseline path {str(path)!r} is a directory: give a file name")
        text = path.read_text(encoding="utf-8")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise BaselineError(
                f"{path}:{error.lineno}: the baseline file is not valid JSON ({error.msg}, column {error.colno}); "
                "fix it or restore it from version control (it is never replaced automatically)"
            ) from None
        if not isinstance(data, dict) or data.get("circuitcheck_baseline") is None:
            raise BaselineError(f"{path} is not a circuitcheck baseline (no 'circuitcheck_baseline' key): refusing to use or overwrite it")
        if data["circuitcheck_baseline"] != BASELINE_SCHEMA:
            raise BaselineError(f"{path} has baseline schema {data['circuitcheck_baseline']!r}; this circuitcheck reads schema {BASELINE_SCHEMA}")
        entries = data.get("entries")
        if not isinstance(entries, dict):
            raise BaselineError(f"{path}:{_line_of(text, 'entries')}: 'entries' must be an object of key -> entry")
        for key, entry in entries.items():
            if not isinstance(entry, dict) or not isinstance(entry.get("value"), (int, float)) or isinstance(entry.get("value"), bool):
                raise BaselineError(f"{path}:{_line_of(text, key)}: entry {key!r} needs a numeric 'value'")
        return cls(path, dict(entries), existed=True)

    def compare(self, key: str, measured: float, tolerance: Tolerance) -> Comparison:
        entry = self.entries.get(key)
        if entry is None:
            return Comparison("new", measured=measured)
        stored = float(entry["value"])
        allowed = tolerance.allowed(stored)
        ok = measured is not None and math.isfinite(measured) and abs(measured - stored) <= allowed + 1e-12
        return Comparison("ok" if ok else "regressed", stored, measured, allowed)

    def merged(self, produced: dict[str, dict[str, Any]], tests_run: Iterable[str], prune: bool) -> tuple["Baseline", list[str]]:
        """Entries after an update: produced entries replace stored ones; entries of tests that did not run are kept.

        Returns the new baseline and the stale keys (stored for a test that ran
        but no longer produced); stale entries are kept unless ``prune``.
        """
        ran = set(tests_run)
        stale = sorted(key for key, entry in self.entries.items() if entry.get("test") in ran and key not in produced)
        entries = {key: entry for key, entry in self.entries.items() if not (prune and key in stale)}
        entries.update(produced)
        return Baseline(self.path, entries, self.existed), stale

    def dumps(self) -> str:
        document = {"circuitcheck_baseline": BASELINE_SCHEMA, "entries": {k: self.entries[k] for k in sorted(self.entries)}}
        return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"


def make_entry(test_id: str, claim: dict[str, Any]) -> dict[str, Any]:
    return {
        "test": test_id,
        "claim": claim["claim"],
        "checkpoint": claim.get("checkpoint"),
        "kind": claim["kind"],
        "metric": claim["metric"],
        "model": claim.get("model"),
        "value": rounded(claim["value"]),
    }


def _line_of(text: str, needle: str) -> int:
    for number, line in enumerate(text.splitlines(), start=1):
        if f'"{needle}"' in line:
            return number
    return 1
