"""The report's power section: each claim's mutation score, the mutations it survived, the claims that cannot fail.

Reads the ``power`` object of each claim (``CheckResult.to_dict()["power"]``,
written with ``--circuitcheck-power``; SCHEMA.md): plain JSON, no pandas, no
torch. Claims that cannot fail come first, then the rest from the lowest
score up, then the claims that were not measured (with the reason).
"""

from __future__ import annotations

from typing import Any

from ..claims.format import number
from ..claims.power import MEASURED, summary_text, survivor_names
from .claim_view import ClaimView
from .frames import Frame

#: The section's definition paragraph (DESIGN.md, "Test power").
DEFINITION = (
    "Test power: each claim was run again on mutated copies of its model (its heads' QK or OV weights scrambled or zeroed, "
    "heads swapped within a layer, the circuit replaced by random circuits of the same size, the checkpoint shuffled; "
    "each kind gets the mutations meant to falsify it). A mutation is killed when the claim fails on it (or cannot be "
    "decided there); the mutation score is killed / total. A claim that survives every mutation cannot fail, and says nothing."
)


def power(entries: list[tuple[ClaimView, Any]]) -> dict[str, Any] | None:
    """The section: ``rows`` (one per claim with a power object) and ``counts``; None when no claim has one.

    Each claim shown gets a ``power`` link to its row.
    """
    rows = []
    for view, raw in entries:
        if not isinstance(raw, dict):
            continue
        measured = raw.get("status") == MEASURED and bool(raw.get("total"))
        anchor = f"power-{view.index}"
        view.links.append(("power", anchor))
        rows.append({
            "claim": view,
            "anchor": anchor,
            "measured": measured,
            "cannot_fail": bool(raw.get("cannot_fail")) and measured,
            "score": number(raw.get("score"), 2) if measured else "–",
            "ratio": f"{raw.get('killed')}/{raw.get('total')}" if measured else "–",
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
        verdict = "killed" if mutation.get("killed") else "survived"
        data.append([str(mutation.get("name")), str(mutation.get("family")), verdict, mutation.get("value"),
                     f"{mutation.get('decided_on')} {bound_text}" if mutation.get("decided_on") else "–",
                     str(mutation.get("error") or "")])
    if not data:
        return None
    return Frame(list(range(len(data))), ["mutation", "family", "claim", "value", "decided on", "error"], data)
