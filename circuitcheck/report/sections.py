"""From a results document to what the HTML report shows, section by section.

The template only lays out what :func:`build_page` prepares: claim rows in the
words of :mod:`circuitcheck.claims.format`, charts as inline SVG
(:mod:`.charts`), and evidence tables as :class:`~.frames.Frame` objects.
Which section shows a claim is its kind's ``section`` in the registry of claim
kinds (:mod:`.kinds`), and each section states its kinds' definitions. Evidence
that no section draws (kinds without a section, such as those plugins add, and
extra tables) is still shown, as a plain table under "Other evidence", so
nothing a check records is ever dropped.

Works on plain JSON data: no pandas, so re-rendering a report is fast. The
sections' builders live in :mod:`.causal_sections`, :mod:`.heatmaps`,
:mod:`.attribution_sections`, :mod:`.checkpoints` and :mod:`.power_sections`
(test power: it shows each claim's ``power`` object, so the claim's own row
does not repeat it as text).
"""

from __future__ import annotations

from typing import Any

from . import kinds
from .attribution_sections import SECTIONS as ATTRIBUTION_SECTIONS
from .attribution_sections import attribution
from .causal_sections import completeness, curves, minimality, necessity, paths, sufficiency
from .checkpoints import checkpoint_charts, checkpoint_matrix
from .claim_view import ClaimView, checkpoint_of, natural_key, test_of
from .frames import Frame, text_of
from .heatmaps import attention, patching
from .power_sections import power

__all__ = ["ClaimView", "Frame", "build_page", "checkpoint_of", "natural_key", "section_definitions", "test_of"]

BASELINE_STATUSES = ("regressed", "ok", "new", "missing", "recorded")
OUTCOME_ORDER = ["passed", "failed", "error", "skipped", "xfailed", "xpassed"]
#: The report's own words on its heatmaps (sweeps are not claims, so no record states them).
HEATMAPS = ("Activation patching: each cell patches one activation; normalised values put the corrupted run at 0 and the "
            "clean run at 1 (diverging colours, white = 0). Attention patterns and head scores use a sequential scale from 0 to 1.")


def section_definitions() -> dict[str, Any]:
    """The definition paragraph of each section: its kinds' definitions from the registry (``heatmaps``: the report's own
    words on patching, ``attention``: the head scores' definitions, one each)."""
    return {
        "necessity": " ".join(kinds.definitions("necessity")),
        "sufficiency": " ".join(kinds.definitions("sufficiency")),
        "minimality": " ".join(kinds.definitions("minimality")),
        "completeness": " ".join(kinds.definitions("completeness")),
        "curves": " ".join(kinds.definitions("curves")),
        "heatmaps": HEATMAPS,
        "attention": kinds.definitions("attention"),
        "paths": " ".join(kinds.definitions("paths")),
        "attribution": " ".join(kinds.definitions(*ATTRIBUTION_SECTIONS)),
    }


def build_page(document: dict, summary: dict) -> dict[str, Any]:
    """Everything the template shows, in section order."""
    tests = [test for test in document.get("tests") or [] if isinstance(test, dict)]
    claims: list[ClaimView] = []
    powers: list[tuple[ClaimView, Any]] = []  # claims measured with --circuitcheck-power, and their power objects
    test_views = []
    for test in tests:
        nodeid, outcome = str(test.get("nodeid", "?")), str(test.get("outcome", "?"))
        views = []
        for raw in test.get("claims") or []:
            if not isinstance(raw, dict):
                continue
            evidence = {str(name): frame for name, value in (raw.get("evidence") or {}).items() if (frame := Frame.of(value)) is not None}
            shown = {key: value for key, value in raw.items() if key != "power"} if "power" in raw else raw
            view = ClaimView(len(claims), nodeid, outcome, shown, evidence, test_record=test)
            if "power" in raw:
                powers.append((view, raw["power"]))
            claims.append(view)
            views.append(view)
        sweeps = [s for s in test.get("sweeps") or [] if isinstance(s, dict)]
        test_views.append({"nodeid": nodeid, "outcome": outcome, "duration": test.get("duration"), "claims": views, "sweeps": sweeps})

    by_section: dict[str, list[ClaimView]] = {}
    for c in claims:
        section = kinds.section_of(c.kind)
        if section is not None:
            by_section.setdefault(section, []).append(c)
    consumed: dict[int, set[str]] = {c.index: set() for c in claims}
    matrix = checkpoint_matrix(claims)
    # built in this order: each builder appends its link to the claims it shows
    page = {
        "claims": claims,
        "tests": [t for t in test_views if t["claims"] or t["sweeps"]],
        "plain_tests": [t for t in test_views if not t["claims"] and not t["sweeps"]],
        "failed_claims": [c for c in claims if not c.passed and not c.cells.informational],  # a check_* result fails nothing
        "checkpoints": matrix,
        "checkpoint_charts": checkpoint_charts(matrix),
        "baseline": _baseline_summary(claims, document.get("baseline")),
        "outcomes": sorted(summary["tests"].items(), key=lambda item: (_outcome_rank(item[0]), item[0])),
        "necessity": necessity(by_section.get("necessity", []), consumed),
        "sufficiency": sufficiency(by_section.get("sufficiency", []), consumed),
        "minimality": minimality(by_section.get("minimality", []), consumed),
        "completeness": completeness(by_section.get("completeness", []), consumed),
        "curves": curves(by_section.get("curves", []), consumed),
        "patching": patching(test_views),
        "attention": attention(by_section.get("attention", []), consumed),
        "paths": paths(by_section.get("paths", []), consumed),
        "attribution": attribution(by_section, consumed),
        "definitions": section_definitions(),
        "environment": [(str(key), text_of(value)) for key, value in sorted((document.get("environment") or {}).items())],
    }
    page["power"] = power(powers)
    page["other"] = [
        {"claim": c, "tables": [(name, frame) for name, frame in c.evidence.items() if name not in consumed[c.index]]}
        for c in claims
        if any(name not in consumed[c.index] for name in c.evidence)
    ]
    for block in page["other"]:
        block["claim"].links.append(("other evidence", f"other-{block['claim'].index}"))
    return page


def _baseline_summary(claims: list[ClaimView], run: dict | None = None) -> dict | None:
    """Claims compared with a baseline, counted by status (with the run's ``missing`` entries, from the document's
    ``baseline`` object); the regressed ones listed. None when no claim was compared."""
    compared = [c for c in claims if c.baseline is not None]
    if not compared:
        return None
    counts: dict[str, int] = {}
    for c in compared:
        counts[c.baseline["status"]] = counts.get(c.baseline["status"], 0) + 1
    missing = run.get("missing") if isinstance(run, dict) else None
    if isinstance(missing, list) and missing:
        counts["missing"] = len(missing)
    order = {status: i for i, status in enumerate(BASELINE_STATUSES)}
    return {
        "compared": len(compared),
        "regressed": [c for c in compared if c.regressed],
        "counts": sorted(counts.items(), key=lambda item: (order.get(item[0], len(order)), item[0])),
    }


def _outcome_rank(outcome: str) -> int:
    return OUTCOME_ORDER.index(outcome) if outcome in OUTCOME_ORDER else len(OUTCOME_ORDER)
