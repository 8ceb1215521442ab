"""A results document read back for analysis: one pandas row per claim.

    >>> results = load("results.json")
    >>> results.frame().query("not passed")[["nodeid", "claim", "value", "ci_low"]]
    >>> results.evidence(0, "minimality")          # a claim's evidence table

pandas is imported on first use, so reading and re-rendering documents stays light.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

CLAIM_COLUMNS = [
    "nodeid",
    "outcome",
    "kind",
    "claim",
    "model",
    "checkpoint",
    "metric",
    "value",
    "ci_low",
    "ci_high",
    "confidence",
    "min_value",
    "max_value",
    "decided_on",
    "passed",
    "n",
]


@dataclass
class Results:
    """A results document (schema in ``SCHEMA.md``) and where it was read from."""

    document: dict[str, Any]
    path: Path | None = None

    @property
    def complete(self) -> bool:
        """Whether the run finished with every collected test's result (see ``incomplete_reasons`` when not)."""
        return self.document.get("complete") is True

    @property
    def in_progress(self) -> bool:
        """Whether this is the document a run writes at its start: that run is going on, or was killed before its end."""
        return self.document.get("in_progress") is True

    @property
    def not_run(self) -> list[str]:
        """Node ids of the tests that were collected but have no result."""
        return list(self.document.get("not_run") or [])

    @property
    def incomplete_reasons(self) -> list[str]:
        """Why the run is incomplete (interrupted, stopped early, a worker crashed, tests not run); empty when complete."""
        return list(self.document.get("incomplete_reasons") or [])

    def claims(self) -> list[dict[str, Any]]:
        """Every claim dict, in document order, with its test's ``nodeid`` and ``outcome`` added."""
        return [
            {**claim, "nodeid": test.get("nodeid"), "outcome": test.get("outcome")}
            for test in self.document.get("tests") or []
            for claim in test.get("claims") or []
        ]

    def frame(self) -> "pd.DataFrame":
        """One row per claim: :data:`CLAIM_COLUMNS`, then ``param_<name>`` for each parameter (as ``CheckResult.to_frame``)."""
        import pandas as pd

        from .claim_view import checkpoint_of

        rows = []
        for claim in self.claims():
            row = {column: claim.get(column) for column in CLAIM_COLUMNS}
            row["checkpoint"] = checkpoint_of(claim)
            row["passed"] = bool(claim.get("passed"))
            params = claim.get("parameters")
            if isinstance(params, dict):
                row.update({f"param_{name}": value for name, value in params.items()})
            rows.append(row)
        frame = pd.DataFrame(rows, columns=_columns(rows))
        for column in ("value", "ci_low", "ci_high", "confidence", "min_value", "max_value"):
            frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
        frame["passed"] = frame["passed"].astype(bool)
        return frame

    def evidence(self, claim: int, name: str) -> "pd.DataFrame":
        """Evidence table ``name`` of the ``claim``-th claim (the row of :meth:`frame`)."""
        from ..tables import frame_from_json

        claims = self.claims()
        if not 0 <= claim < len(claims):
            have = f"the document has claims 0-{len(claims) - 1}" if claims else "the document has no claims"
            raise IndexError(f"claim {claim} does not exist: {have}")
        evidence = claims[claim].get("evidence") or {}
        if name not in evidence:
            raise KeyError(
                f"claim {claim} ({claims[claim].get('claim')!r}) has no evidence {name!r}; it has: {', '.join(evidence) or 'none'}"
            )
        return frame_from_json(evidence[name])

    def summary(self) -> dict[str, Any]:
        from . import summarize

        return summarize(self.document)

    def to_html(self) -> str:
        from . import render_html

        return render_html(self.document)


def load(path: str | os.PathLike) -> Results:
    """Read a ``--circuitcheck-json`` results file (errors name the file and, for bad JSON, the line)."""
    from . import read_json

    return Results(read_json(path), Path(path))


def _columns(rows: list[dict]) -> list[str]:
    params: list[str] = []
    for row in rows:
        params += [key for key in row if key not in CLAIM_COLUMNS and key not in params]
    return CLAIM_COLUMNS + params
