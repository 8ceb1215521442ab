"""The "lenses and attribution" section of the report: logit lens, direct effects, composition, copying and probes.

Each builder draws one claim's evidence tables; a claim whose tables are
missing or have other columns gets no chart (its tables then show under "Other evidence").
"""

from __future__ import annotations

import math
from typing import Any

from . import charts
from ..claims.format import FAILED, HELD, number
from .charts import ColorScale, IntervalRow
from .claim_view import ClaimView
from .frames import Frame, estimate_text, finite, same

MAX_DIRECT_EFFECTS = 20  # bars in a direct-effect chart; the full table follows it
POSITIVE, NEGATIVE = "#b2182b", "#2166ac"  # the ends of the heatmaps' diverging scale: red up, blue down


#: The sections of the attribution-style claims, in page order, and their builders (set below).
SECTIONS = ("lens", "direct", "composition", "copying", "probe")
_LINK_NAMES = {"lens": "logit lens", "direct": "direct effects"}


def attribution(by_section: dict[str, list[ClaimView]], consumed) -> dict[str, Any]:
    """The charts of the attribution-style claims, by section; ``count`` is how many claims got one."""
    builders = {"lens": _lens, "direct": _direct, "composition": _composition, "copying": _copying, "probe": _probe}
    out: dict[str, Any] = {}
    for key in SECTIONS:
        out[key] = []
        for c in by_section.get(key, ()):
            block = builders[key](c, consumed[c.index])
            if block is None:
                continue
            block["claim"] = c
            block["anchor"] = f"{key}-{c.index}"
            c.links.append((_LINK_NAMES.get(key, key), block["anchor"]))
            out[key].append(block)
    out["count"] = sum(len(blocks) for blocks in out.values())
    return out


def _tables(c: ClaimView, used: set[str], names: tuple[str, ...]) -> list[tuple[str, Frame]]:
    """The claim's evidence tables among ``names`` that exist, marked as shown."""
    found = [(name, c.evidence[name]) for name in names if name in c.evidence]
    used.update(name for name, _ in found)
    return found


def _lens(c: ClaimView, used: set[str]) -> dict | None:
    frame = c.evidence.get("lens_by_layer")
    if frame is None or not frame.has("mean_kl"):
        return None
    records = frame.records()
    layers = frame.column("layer") if frame.has("layer") else frame.index
    threshold = finite(c.raw.get("max_value"))
    claimed = (c.raw.get("parameters") or {}).get("layer", (c.raw.get("parameters") or {}).get("converges_by"))
    rows = []
    for layer, record in zip(layers, records):
        kl, top1 = finite(record.get("mean_kl")), finite(record.get("top1_agreement"))
        converged = record.get("converged")
        status = (HELD if converged else FAILED) if isinstance(converged, bool) else (
            "neutral" if threshold is None or kl is None else (HELD if kl <= threshold else FAILED))
        note = f"top-1 {number(top1, 2)}" if top1 is not None else ""
        rows.append(IntervalRow(
            label=f"layer {layer}", value=kl, status=status, note=note, highlight=same(layer, claimed),
            title=f"layer {layer}: mean KL {number(kl)}, max KL {number(record.get('max_kl'))}, "
            f"top-1 agreement {number(top1)}" + (f", converged: {'yes' if converged else 'no'}" if isinstance(converged, bool) else ""),
        ))
    chart = charts.interval_chart(rows, label=f"logit lens: {c.text}", axis_label="mean KL(final ‖ lens), nats",
                                  threshold=threshold, threshold_label="max", css_class="lens-chart")
    return {"chart": chart, "legend": None, "caption": "Mean KL per layer (green: converged, red: not; converged = top-1 agreement 1 "
            "and mean KL under the dashed maximum); top-1: the share of positions where the lens's top token is the model's; "
            "outlined: the claimed layer.", "tables": _tables(c, used, ("lens_by_layer", "lens_top_k"))}


def _direct(c: ClaimView, used: set[str]) -> dict | None:
    frame = c.evidence.get("direct_logit_attribution")
    if frame is None or not frame.has("mean"):
        return None
    params = c.raw.get("parameters") or {}
    claimed = params.get("components", params.get("component"))
    claimed = {str(x) for x in (claimed if isinstance(claimed, list) else [claimed] if claimed is not None else [])}
    records = [(str(name), record) for name, record in zip(frame.index, frame.records()) if finite(record.get("mean")) is not None]
    total = next((finite(r["mean"]) for name, r in records if r.get("kind") == "total"), None)
    # one level of detail, no double counting: heads (and each layer's b_O), or whole attention layers when one is claimed
    layers = any(r.get("kind") == "attn" and name in claimed for name, r in records)
    hidden = {"total", "head", "attn_bias"} if layers else {"total", "attn"}
    records = [(name, r) for name, r in records if r.get("kind") not in hidden or name in claimed]
    records.sort(key=lambda item: -abs(finite(item[1]["mean"])))
    shown = records[:MAX_DIRECT_EFFECTS] + [item for item in records[MAX_DIRECT_EFFECTS:] if item[0] in claimed]
    rows = []
    for name, record in shown:
        mean, std, share = finite(record.get("mean")), finite(record.get("std")), finite(record.get("share"))
        rows.append(IntervalRow(
            label=name, value=mean, colour=POSITIVE if mean >= 0 else NEGATIVE, highlight=name in claimed,
            note=f"share {number(share, 2)}" if share is not None else "",
            title=f"{name}{' (' + str(record['kind']) + ')' if record.get('kind') else ''}: mean direct effect {number(mean)}"
            + (f" ± {number(std)} (std)" if std is not None else "") + (f", share {number(share)}" if share is not None else ""),
        ))
    chart = charts.interval_chart(rows, label=f"direct effects: {c.text}", axis_label="mean direct logit attribution",
                                  css_class="direct-effect-chart")
    more = f" (top {MAX_DIRECT_EFFECTS} of {len(records)} by |mean|)" if len(records) > MAX_DIRECT_EFFECTS else ""
    total_text = f" The total (the model's own logit difference) is {number(total)}." if total is not None else ""
    return {"chart": chart, "legend": None, "caption": f"Mean direct effect of each component{more}, largest |mean| first; red: raises "
            "the target, blue: lowers it; outlined: the claimed component" + ("s" if len(claimed) > 1 else "") + "." + total_text,
            "tables": _tables(c, used, ("ranking", "direct_logit_attribution", "per_example"))}


def _composition(c: ClaimView, used: set[str]) -> dict | None:
    params = c.raw.get("parameters") or {}
    name = next((n for n in (f"{params.get('composition')}_composition", *c.evidence) if n in c.evidence
                 and n.endswith("_composition")), None)
    if name is None:
        return None
    frame = c.evidence[name]
    sender, receiver = str(params.get("sender")), str(params.get("receiver"))
    full = frame.numeric()
    keep_rows = [i for i, row in enumerate(full) if any(v is not None for v in row) or str(frame.index[i]) == sender]
    keep_cols = [j for j, col in enumerate(frame.columns)
                 if any(j < len(row) and row[j] is not None for row in full) or str(col) == receiver]
    values = [[full[i][j] if j < len(full[i]) else None for j in keep_cols] for i in keep_rows]
    rows, columns = [str(frame.index[i]) for i in keep_rows], [str(frame.columns[j]) for j in keep_cols]
    cell = {(rows.index(sender), columns.index(receiver))} if sender in rows and receiver in columns else set()
    top = max((v for row in values for v in row if v is not None and math.isfinite(v)), default=1.0)
    scale = ColorScale.sequential(0.0, max(top, 1e-9))
    chart = charts.heatmap(
        values, rows, columns, scale=scale, row_title=str(frame.index_name or "sender"), column_title=str(frame.columns_name or "receiver"),
        label=f"{c.get('metric', 'composition score')}: {c.text}", value_name=str(c.get("metric", "score")), highlight=cell,
        target_width=420, css_class="composition-chart",
    )
    baseline = c.evidence.get("random_baseline")
    stats = dict(zip([str(v) for v in baseline.index], [row[0] if row else None for row in baseline.data])) if baseline else {}
    mean = finite(stats.get("mean", params.get("random_mean")))
    quantile_key = next((k for k in stats if k.startswith("q")), None)
    quantile = finite(stats[quantile_key] if quantile_key else params.get("random_quantile_value"))
    level = quantile_key[1:] if quantile_key else params.get("random_quantile")
    bits = [f"random baseline mean {number(mean)}"] if mean is not None else []
    if quantile is not None:
        bits.append(f"{number(level) if not isinstance(level, str) else level} quantile {number(quantile)}")
    value = finite(c.raw.get("value"))
    if quantile is not None and value is not None:
        bits.append(f"the claimed pair's {number(value)} is " + ("above" if value > quantile else "not above") + " it")
    caption = (f"{c.get('metric', 'composition score')} of every sender × receiver pair that can compose (the full matrix is in the table below); outlined: "
               f"{sender} → {receiver}." + (f" {'; '.join(bits)}." if bits else ""))
    return {"chart": chart, "legend": charts.legend(scale, str(c.get("metric", "score"))), "caption": caption,
            "tables": _tables(c, used, (name, "random_baseline"))}


def _copying(c: ClaimView, used: set[str]) -> dict | None:
    frame = c.evidence.get("copying_scores")
    if frame is None:
        return None
    params = c.raw.get("parameters") or {}
    cell = set()
    for i, layer in enumerate(frame.index):
        for j, head in enumerate(frame.columns):
            if same(layer, params.get("layer")) and same(head, params.get("head")):
                cell.add((i, j))
    scale = ColorScale("diverging", -1.0, 1.0)
    chart = charts.heatmap(
        frame.numeric(), [str(v) for v in frame.index], [str(v) for v in frame.columns], scale=scale,
        row_title=str(frame.index_name or "layer"), column_title=str(frame.columns_name or "head"),
        label=f"{c.get('metric', 'copying score')} of every head", value_name=str(c.get("metric", "copying score")),
        highlight=cell, target_width=300, css_class="copying-chart",
    )
    return {"chart": chart, "legend": charts.legend(scale, str(c.get("metric", "copying score"))),
            "caption": f"{c.get('metric', 'copying score')} of every head (layer × head, −1..1); outlined: the claimed head.",
            "tables": _tables(c, used, ("copying_scores",))}


def _probe(c: ClaimView, used: set[str]) -> dict | None:
    frame = c.evidence.get("probe")
    if frame is None or not frame.has("accuracy") or not frame.data:
        return None
    record = frame.records()[0]
    rows = [IntervalRow(label="test accuracy", value=finite(record.get("accuracy")), low=finite(record.get("ci_low")),
                        high=finite(record.get("ci_high")), status=c.verdict,
                        title=f"test accuracy {estimate_text(record, 'accuracy')}, required {c.threshold_text}: {c.verdict}")]
    for column, label in (("majority_baseline", "majority class"), ("chance", "chance"), ("control_accuracy", "control (shuffled)")):
        if finite(record.get(column)) is not None:
            rows.append(IntervalRow(label=label, value=finite(record[column]), title=f"{label}: {number(record[column])}"))
    if finite(record.get("selectivity")) is not None:
        min_selectivity = finite((c.raw.get("parameters") or {}).get("min_selectivity"))
        rows.append(IntervalRow(
            label="selectivity", value=finite(record["selectivity"]), low=finite(record.get("selectivity_ci_low")),
            high=finite(record.get("selectivity_ci_high")), threshold=min_selectivity,
            title=f"selectivity (accuracy − control) {number(record['selectivity'])}"
            + (f", required ≥ {number(min_selectivity)}" if min_selectivity is not None else ""),
        ))
    chart = charts.interval_chart(rows, label=f"probe: {c.text}", axis_label="accuracy", threshold=c.threshold,
                                  threshold_label="required", include=(0.0, 1.0), css_class="probe-chart")
    return {"chart": chart, "legend": None, "caption": f"Test accuracy ({c.confidence_text} interval) next to the majority class, chance "
            "and a probe trained on shuffled labels; dashed: the required accuracy.",
            "tables": _tables(c, used, ("probe", "per_class"))}
