"""The heatmaps section of the report: activation-patching sweeps and the attention claims' head scores and patterns."""

from __future__ import annotations

from typing import Any

from . import charts
from ..claims.format import number
from .charts import ColorScale
from .claim_view import ClaimView
from .frames import Frame

MAX_ATTENTION_POSITIONS = 80  # beyond this an attention map is megabytes of cells nobody can tell apart


def patching(tests: list[dict]) -> list[dict]:
    """One figure per sweep of the run's tests: the heatmap (normalised values on the fixed [-1, 1] scale) and its legend."""
    maps = []
    shared = charts.SharedMarkup()  # sweeps over the same model share their axis labels and legends
    for test in tests:
        for k, sweep in enumerate(test["sweeps"]):
            normalized, matrix = Frame.of(sweep.get("normalized")), Frame.of(sweep.get("matrix"))
            shown = normalized or matrix
            if shown is None:
                continue
            axes = list(sweep.get("axes") or [shown.index_name or "row", shown.columns_name or "column"])
            row_title, column_title = str(axes[0]), str(axes[1] if len(axes) > 1 else "column")
            values = shown.numeric()
            extra = None
            if normalized is not None and matrix is not None and len(matrix.data) == len(values):
                extra = [[f"mean metric {number(v)}" for v in row] for row in matrix.numeric()]
            # normalised values share one fixed scale (±0.02 pale, 1.0 saturated in every sweep), raw range beside it;
            # a mean metric has no natural range: symmetric around 0 from the data
            scale = ColorScale.normalized() if normalized is not None else ColorScale.diverging(values)
            value_name = "normalised" if normalized is not None else "mean metric"
            note = charts.range_text(values, scale, "values")
            if normalized is not None and matrix is not None:
                span = charts.value_range(matrix.numeric())
                if span is not None:
                    note += f"; mean metric {number(span[0])} to {number(span[1])}"
            title = str(sweep.get("title") or f"{sweep.get('what', 'sweep')} patching ({sweep.get('direction', '?')})")
            maps.append(
                {
                    "nodeid": test["nodeid"],
                    "anchor": f"sweep-{len(maps)}",
                    "title": title,
                    "what": str(sweep.get("what", "?")),
                    "direction": str(sweep.get("direction", "?")),
                    "svg": charts.heatmap(
                        values, [str(v) for v in shown.index], [str(v) for v in shown.columns], scale=scale,
                        row_title=row_title, column_title=column_title, label=title, value_name=value_name, hover_extra=extra,
                        shared=shared,
                    ),
                    "legend": charts.legend(scale, _legend_text(sweep, normalized is not None), note=note, shared=shared),
                }
            )
    return maps


def _legend_text(sweep: dict, normalized: bool) -> str:
    """The colour scale's words; an attribution estimate says it is one (and which), an exact sweep needs no word."""
    text = "normalised (0 = corrupted, 1 = clean)" if normalized else "mean metric"
    if sweep.get("approximation"):
        text = f"estimate by {sweep.get('label') or 'attribution patching'}, not measured: {text}"
    return text


def attention(claims: list[ClaimView], consumed) -> list[dict]:
    """One figure per attention claim: the head-score grid, the pattern on the first prompt and the per-prompt summary.

    Claims on the same prompt draw its tokens once, claims on the same head and
    prompt its pattern once, and every figure the same legend once (the page
    references the first copy): the section grows with the distinct pictures.
    """
    figures = []
    shared = charts.SharedMarkup()
    for c in claims:
        params = c.raw.get("parameters") or {}
        scores, attention = c.evidence.get("head_scores"), c.evidence.get("attention")
        figure: dict[str, Any] = {"claim": c, "scores": None, "attention": None, "attention_note": "", "per_prompt": None}
        if scores is not None:
            cell = (scores.index.index(params["layer"]), scores.columns.index(params["head"])) if (
                params.get("layer") in scores.index and params.get("head") in scores.columns) else None
            scale = ColorScale.sequential(0.0, 1.0)
            figure["scores"] = charts.heatmap(
                scores.numeric(), [str(v) for v in scores.index], [str(v) for v in scores.columns], scale=scale,
                row_title=str(scores.index_name or "layer"), column_title=str(scores.columns_name or "head"),
                label=f"{c.get('metric', 'score')} of every head", value_name=str(c.get("metric", "score")),
                highlight={cell} if cell else set(), target_width=300, shared=shared,
            )
            consumed[c.index].add("head_scores")
        if attention is not None:
            scale = ColorScale.sequential(0.0, 1.0)
            size = len(attention.index)
            shown = min(size, MAX_ATTENTION_POSITIONS)  # causal: the first k queries only see the first k keys
            figure["attention"] = charts.heatmap(
                [row[:shown] for row in attention.numeric()[:shown]], [str(v) for v in attention.index[:shown]],
                [str(v) for v in attention.columns[:shown]], scale=scale,
                row_title=str(attention.index_name or "query"), column_title=str(attention.columns_name or "key"),
                label=f"attention pattern of {params.get('component', c.text)} on the first prompt", value_name="attention",
                target_width=560, background_value=0.0, shared=shared,
            )
            figure["attention_note"] = f"first {shown} of {size} positions" if shown < size else ""
            consumed[c.index].add("attention")
        per_prompt = c.evidence.get("per_prompt")
        if per_prompt is not None and per_prompt.data:
            values = [v for row in per_prompt.numeric() for v in row if v is not None]
            if values:
                figure["per_prompt"] = (
                    f"{len(values)} prompts: min {number(min(values))}, mean {number(sum(values) / len(values))}, "
                    f"max {number(max(values))}"
                )
                consumed[c.index].add("per_prompt")
        if figure["scores"] is None and figure["attention"] is None and figure["per_prompt"] is None:
            continue
        figure["legend"] = charts.legend(ColorScale.sequential(0.0, 1.0), "score / attention weight", shared=shared)
        c.links.append(("attention", f"attention-{c.index}"))
        figures.append(figure)
    return figures
