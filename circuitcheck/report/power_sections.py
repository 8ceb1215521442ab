"""The report's power section: each claim's mutation score, the mutations it survived, the claims that cannot fail.

Reads the ``power`` object of each claim (``CheckResult.to_dict()["power"]``,
written with ``--circuitcheck-power``; SCHEMA.md): plain JSON, no pandas, no
torch. Claims that cannot fail come first, then the rest from the lowest
score up, then the claims that were not measured (with the reason). The
killed column reads killed/decided, with ``+N undecided`` when some mutations
could not be decided (each is in the claim's table, verdict "undecided", with its error).
"""

from __future__ import annotations

from typing import Any

from ..claims.format import number
from ..claims.power import (is_measured, killed_count, ratio_text, score_of, summary_text, survivor_names, undecided_count,
                            verdict_of)
from .claim_view import ClaimView
from .frames import Frame

#: The section's definition paragraph (DESIGN.md, "Test power").
DEFINITION = (
    "Test power: each claim was run again on mutated copies of its model (its heads' QK or OV weights scrambled or zeroed, "
    "heads swapped within a layer, the circuit replaced by random circuits of the same size, the checkpoint shuffled; "
    "each kind gets the mutations meant to falsify it). A mutation is killed when the claim fails on it, survived when it holds, "
    "and undecided when the claim cannot be measured there (its replay raised an error, e.g. no gap m(M) - m(∅)): undecided "
    "mutations are listed but left out of the score. The mutation score is killed / decided. A claim that survives every "
    "decided mutation cannot fail, and says nothing."
)


def power(entries: list[tuple[ClaimView, Any]]) -> dict[str, Any] | None:
    """The section: ``rows`` (one per claim with a power object) and ``counts``; None when no claim has one.

    Each claim shown gets a ``power`` link to its row.
    """
    rows = []
    for view, raw in entries:
        if not isinstance(raw, dict):
            continue
        measured = is_measured(raw)
        anchor = f"power-{view.index}"
        view.links.append(("power", anchor))
        rows.append({
            "claim": view,
            "anchor": anchor,
            "measured": measured,
            "cannot_fail": measured and killed_count(raw) == 0,
            "score": number(score_of(raw), 2) if measured else "–",
            "ratio": ratio_text(raw) if measured else "–",
            "undecided": undecided_count(raw),
            "text": summary_text(raw),
            "survivors": survivor_names(raw),
            "notes": [str(note) for note in raw.get("notes") or []],
            "table": _mutations(raw) if measured else None,
            "seconds": raw.get("seconds"),
        })
    if not rows:
        return None
    rows.sort(key=lambda row: (not row["cannot_fail"], not row["measured"], _score(row)))
    measured = [row for row in rows if row["measured"]]
    scores = [_score(row) for row in measured]
    return {
        "rows": rows,
        "counts": {
            "measured": len(measured),
            "undecided": sum(row["undecided"] for row in rows),
            "cannot_fail": sum(row["cannot_fail"] for row in rows),
            "not_measured": len(rows) - len(measured),
            "mean_score": number(sum(scores) / len(scores), 2) if scores else "–",
        },
        "definition": DEFINITION,
    }


def _score(row: dict) -> float:
    try:
        return float(row["score"])
    except (TypeError, ValueError):
        return 2.0  # not measured: after every score


def _mutations(raw: dict) -> Frame | None:
    data = []
    for mutation in raw.get("mutations") or []:
        if not isinstance(mutation, dict):
            continue
        bound = mutation.get("bound")
        bound_text = (f"[{number(bound[0])}, {number(bound[1])}]" if isinstance(bound, list) and len(bound) == 2 else number(bound))
        verdict = verdict_of(mutation)
        data.append([str(mutation.get("name")), str(mutation.get("family")), verdict, mutation.get("value"),
                     f"{mutation.get('decided_on')} {bound_text}" if mutation.get("decided_on") else "–",
                     str(mutation.get("error") or "")])
    if not data:
        return None
    return Frame(list(range(len(data))), ["mutation", "family", "claim", "value", "decided on", "error"], data)
