"""The causal sections of the report: necessity, sufficiency, minimality, completeness (and faithfulness), faithfulness curves and paths.

Each builder gets the claims whose kind the registry places in its section
(:mod:`.kinds`) and draws the evidence tables it knows; the tables it used go
into ``consumed`` so that "Other evidence" shows only the rest.
"""

from __future__ import annotations

import re

from . import charts
from ..claims.format import FAILED, HELD, number
from .charts import IntervalRow
from .claim_view import ClaimView
from .frames import estimate_text, finite, means_text

def necessity(claims: list[ClaimView], consumed) -> list[dict]:
    blocks = []
    for c in claims:
        frame = c.evidence.get("necessity")
        if frame is None or not frame.has("ablated", "drop"):
            continue
        records = frame.records()
        rows = []
        for i, record in enumerate(records):
            together = i == 0 and len(records) > 1
            rows.append(
                IntervalRow(
                    label="all together" if together else str(record["ablated"]),
                    value=finite(record.get("drop")),
                    low=finite(record.get("ci_low")),
                    high=finite(record.get("ci_high")),
                    status=c.verdict if i == 0 else "neutral",
                    threshold=c.threshold if i == 0 else None,
                    title=f"drop when {record['ablated']} {'are' if together else 'is'} ablated: {estimate_text(record, 'drop')}",
                )
            )
        chart = charts.interval_chart(rows, label=f"necessity: {c.text}", axis_label="drop (share of performance lost)", include=(0.0, 1.0))
        consumed[c.index].update({"necessity", "means"} if "means" in c.evidence else {"necessity"})
        c.links.append(("necessity", f"necessity-{c.index}"))
        blocks.append({"claim": c, "chart": chart, "table": frame, "means": means_text(c.evidence.get("means"))})
    return blocks


def sufficiency(claims: list[ClaimView], consumed) -> dict:
    entries = []
    for c in claims:
        frame = c.evidence.get("sufficiency")
        record = frame.records()[0] if frame is not None and frame.has("recovery") and frame.data else {}
        circuit = str(record.get("circuit") or (c.raw.get("parameters") or {}).get("components") or c.text)
        entries.append({"claim": c, "circuit": circuit, "means": means_text(c.evidence.get("means"))})
        consumed[c.index].update(name for name in ("sufficiency", "means") if name in c.evidence)
        c.links.append(("sufficiency", f"sufficiency-{c.index}"))
    if not entries:
        return {"chart": None, "entries": []}
    several_models = len({c["claim"].model for c in entries}) > 1
    rows = []
    for entry in entries:
        c = entry["claim"]
        label = short_circuit(entry["circuit"])
        if several_models:
            label = f"{label} · {c.checkpoint or c.model}"
        rows.append(
            IntervalRow(
                label=label,
                value=finite(c.raw.get("value")),
                low=finite(c.raw.get("ci_low")),
                high=finite(c.raw.get("ci_high")),
                status=c.verdict,
                threshold=c.threshold,
                title=f"{c.text} ({c.model}): recovery {c.value_text} {c.interval_text}, required {c.threshold_text}, {c.verdict}",
            )
        )
    chart = charts.interval_chart(
        rows, label="sufficiency: recovery of each circuit", axis_label="recovery (1 = full model)", include=(0.0, 1.0)
    )
    return {"chart": chart, "entries": entries}


def minimality(claims: list[ClaimView], consumed) -> list[dict]:
    blocks = []
    for c in claims:
        frame = c.evidence.get("minimality")
        if frame is None or not frame.has("component", "contribution"):
            continue
        threshold = finite(c.raw.get("min_value"))
        records = sorted(frame.records(), key=lambda r: (finite(r.get("contribution")) is None, finite(r.get("contribution")) or 0.0))
        rows = []
        for record in records:
            low = finite(record.get("ci_low"))
            bound = low if low is not None else finite(record.get("contribution"))
            status = "neutral" if threshold is None or bound is None else (HELD if bound >= threshold else FAILED)
            rows.append(
                IntervalRow(
                    label=str(record["component"]),
                    value=finite(record.get("contribution")),
                    low=low,
                    high=finite(record.get("ci_high")),
                    status=status,
                    title=f"{record['component']}: contribution {estimate_text(record, 'contribution')}"
                    + (f", recovery without it {number(record.get('recovery_without'))}" if "recovery_without" in record else ""),
                )
            )
        chart = charts.interval_chart(
            rows, label=f"minimality: {c.text}", axis_label="contribution to recovery", threshold=threshold, threshold_label="min"
        )
        consumed[c.index].add("minimality")
        c.links.append(("minimality", f"minimality-{c.index}"))
        blocks.append({"claim": c, "chart": chart, "table": frame})
    return blocks



def completeness(claims: list[ClaimView], consumed) -> list[dict]:
    """Completeness claims: the worst K's incompleteness, worst first; faithfulness claims: the circuit's |1 - recovery|."""
    blocks = []
    for c in claims:
        threshold = finite(c.raw.get("max_value"))
        if c.kind == "faithful":
            frame = c.evidence.get("faithfulness")
            if frame is None or not frame.has("recovery", "error"):
                continue
            record = frame.records()[0]
            rows = [IntervalRow(label="|1 − recovery|", value=finite(record.get("error")), low=finite(record.get("ci_low")),
                                high=finite(record.get("ci_high")), status=c.verdict,
                                title=f"faithfulness error {estimate_text(record, 'error')}; recovery {number(record.get('recovery'))}"),
                    IntervalRow(label="recovery", value=finite(record.get("recovery")), low=finite(record.get("recovery_ci_low")),
                                high=finite(record.get("recovery_ci_high")), status="neutral",
                                title=f"recovery {number(record.get('recovery'))}: above 1 the circuit leaves out components that work against the task")]
            chart = charts.interval_chart(rows, label=f"faithfulness: {c.text}", axis_label="faithfulness error and recovery",
                                          threshold=threshold, threshold_label="max error", include=(0.0, 1.0))
            name = "faithfulness"
        else:
            frame = c.evidence.get("completeness")
            if frame is None or not frame.has("K", "incompleteness"):
                continue
            rows = []
            for i, record in enumerate(frame.records()):
                high = finite(record.get("ci_high"))
                status = "neutral" if threshold is None or high is None else (HELD if high <= threshold else FAILED)
                rows.append(IntervalRow(
                    label=f"K = {record['K']}", value=finite(record.get("incompleteness")), low=finite(record.get("ci_low")),
                    high=high, status=status, highlight=i == 0,
                    title=f"K = {record['K']}: |recovery(C \\ K) − recovery(M \\ K)| = {estimate_text(record, 'incompleteness')}; "
                          f"recovery(C \\ K) {number(record.get('recovery_circuit_without_K'))}, "
                          f"recovery(M \\ K) {number(record.get('recovery_model_without_K'))}"))
            chart = charts.interval_chart(rows, label=f"completeness: {c.text}", axis_label="incompleteness |recovery(C \\ K) − recovery(M \\ K)|",
                                          threshold=threshold, threshold_label="max")
            name = "completeness"
        consumed[c.index].add(name)
        c.links.append((name, f"completeness-{c.index}"))
        blocks.append({"claim": c, "chart": chart, "table": frame})
    return blocks


def curves(claims: list[ClaimView], consumed) -> list[dict]:
    """Faithfulness-curve claims: recovery against the share of the graph kept, the ranking's best items beside it."""
    blocks = []
    for c in claims:
        frame = c.evidence.get("curve")
        if frame is None or not frame.has("fraction", "n", "recovery"):
            continue
        points = [charts.CurvePoint(fraction=finite(r.get("fraction")), n=int(r.get("n") or 0), value=finite(r.get("recovery")),
                                    low=finite(r.get("ci_low")), high=finite(r.get("ci_high"))) for r in frame.records()]
        params = c.raw.get("parameters") or {}
        scale = "log(fraction)" if params.get("log_scale") else "fraction"
        chart = charts.curve_chart(points, label=f"faithfulness curve: {c.text}", status=c.verdict,
                                   note=f"{c.raw.get('metric', '')}: {c.value_text} {c.interval_text}; areas over the {scale} kept")
        consumed[c.index].update(name for name in ("curve", "ranking") if name in c.evidence)
        c.links.append(("curve", f"curve-{c.index}"))
        blocks.append({"claim": c, "chart": chart, "table": frame, "ranking": c.evidence.get("ranking"),
                       "level": str(params.get("level", "")), "scores": str(params.get("scores", ""))})
    return blocks


def paths(claims: list[ClaimView], consumed) -> list[dict]:
    rows = []
    for c in claims:
        params = c.raw.get("parameters") or {}
        frame = c.evidence.get("path")
        rows.append({"claim": c, "path": str(params.get("components", "")), "direction": str(params.get("direction", "")),
                     "means": means_text(frame)})
        if frame is not None and frame.has("run", "mean_metric"):
            consumed[c.index].add("path")
        c.links.append(("paths", f"path-{c.index}"))
    return rows


def short_circuit(label: str) -> str:
    """``'induction' (L0H0 L1H3)`` -> ``induction``: the chart shows the name, the hover the members.

    The circuit's name is only in this label (the claim's ``components``
    parameter and the evidence's ``circuit`` column): the results JSON has no
    separate field for it, so it is read back from the label's one fixed shape.
    """
    match = re.match(r"^'([^']+)' \(", label)
    return match.group(1) if match else label
