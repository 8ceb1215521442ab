"""The checkpoints section of the report: each claim across the training checkpoints it was measured on."""

from __future__ import annotations

import re

from . import charts
from .charts import CheckpointPoint
from .claim_view import ClaimView, model_base, natural_key
from .frames import finite


def checkpoint_matrix(claims: list[ClaimView]) -> dict | None:
    """Claims measured on checkpoints: one row per (test, claim, model), one column per checkpoint, in natural order.

    "The same claim" on another checkpoint is the one with the same test (its id
    without the checkpoint parameter, :func:`test_of`), claim text and model (less ``@checkpoint``).
    """
    measured = [c for c in claims if c.checkpoint is not None]
    if not measured:
        return None
    checkpoints = sorted({c.checkpoint for c in measured}, key=natural_key)
    rows: dict[tuple[str, str, str], dict[str, ClaimView]] = {}
    for c in measured:
        rows.setdefault((c.test, c.text, model_base(c.model)), {})[c.checkpoint] = c
    several_tests = len({test for test, _, _ in rows}) > 1
    return {
        "checkpoints": checkpoints,
        "rows": [
            {"test": test, "claim": text, "model": model, "cells": [cells.get(cp) for cp in checkpoints],
             "show_test": several_tests, "anchor": f"checkpoint-row-{i}"}
            for i, ((test, text, model), cells) in enumerate(rows.items())
        ],
    }


def checkpoint_charts(matrix: dict | None) -> list[dict]:
    """A line chart of each claim measured (with a value) on two checkpoints or more."""
    if matrix is None:
        return []
    figures = []
    for row in matrix["rows"]:
        cells = [c for c in row["cells"] if c is not None]  # already in checkpoint order
        if sum(finite(c.raw.get("value")) is not None for c in cells) < 2:
            continue
        anchor = f"checkpoint-chart-{len(figures)}"
        points = [
            CheckpointPoint(
                checkpoint=c.checkpoint or "?",
                value=finite(c.raw.get("value")),
                low=finite(c.raw.get("ci_low")),
                high=finite(c.raw.get("ci_high")),
                min_value=finite(c.raw.get("min_value")),
                max_value=finite(c.raw.get("max_value")),
                status=c.verdict,
                title=f"{c.checkpoint}: {c.measured_text}, required {c.threshold_text}: {c.verdict}"
                + (f" (baseline {c.baseline['status']})" if c.baseline else ""),
                href=f"#{c.anchor}",
            )
            for c in cells
        ]
        metrics = {str(c.get("metric", "value")) for c in cells}
        metric = metrics.pop() if len(metrics) == 1 else _common_metric(sorted(metrics))
        chart = charts.checkpoint_chart(points, label=f"{row['claim']} over checkpoints", axis_label=metric)
        for c in cells:
            c.links.append(("over checkpoints", anchor))
        first = cells[0]
        figures.append({
            "anchor": anchor,
            "row": row,
            "chart": chart,
            "runs": _verdict_runs(cells),
            "threshold": first.threshold_text if len({c.threshold_text for c in cells}) == 1 else "per checkpoint",
            "confidence": first.confidence_text,
            "has_interval": any(p.low is not None and p.high is not None for p in points),
            "decided_on": str(first.get("decided_on", "mean")),
        })
    return figures


def _verdict_runs(cells: list[ClaimView]) -> str:
    """``failed step0–step1000 · held step2400–step3000``: the verdicts in runs of consecutive checkpoints."""
    runs: list[list] = []
    for c in cells:
        if runs and runs[-1][0] == c.verdict:
            runs[-1][2] = c.checkpoint
        else:
            runs.append([c.verdict, c.checkpoint, c.checkpoint])
    return " · ".join(f"{verdict} {first}" + (f"–{last}" if last != first else "") for verdict, first, last in runs)


def _common_metric(metrics: list[str]) -> str:
    """``contribution of the weakest component (L1H2)`` and ``(L0H0)`` -> ``contribution of the weakest component``."""
    stripped = {re.sub(r"\s*\([^)]*\)$", "", m) for m in metrics}
    return stripped.pop() if len(stripped) == 1 else "value"
