"""From a results document to what the HTML report shows, section by section.

The template only lays out what :func:`build_page` prepares: claim rows with
their numbers already formatted, charts as inline SVG (:mod:`.charts`), and
evidence tables as :class:`Frame` objects. Evidence that no section knows how
to draw (claim kinds added later, extra tables) is still shown, as a plain
table under "Other evidence", so nothing a check records is ever dropped.

Works on plain JSON data: no pandas, so re-rendering a report is fast.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from . import charts
from .charts import CheckpointPoint, ColorScale, IntervalRow, format_number

CLAIM_KEYS = {"schema", "kind", "claim", "metric", "value", "passed", "n", "min_value", "max_value", "ci_low", "ci_high",
              "confidence", "decided_on", "model", "checkpoint", "parameters", "notes", "evidence",
              "baseline", "baseline_key", "baseline_test"}
BASELINE_STATUSES = ("regressed", "ok", "new", "recorded")
MAX_ATTENTION_POSITIONS = 80  # beyond this an attention map is megabytes of cells nobody can tell apart
MAX_DIRECT_EFFECTS = 20  # bars in a direct-effect chart; the full table follows it
POSITIVE, NEGATIVE = "#b2182b", "#2166ac"  # the ends of the heatmaps' diverging scale: red up, blue down
OUTCOME_ORDER = ["passed", "failed", "error", "skipped", "xfailed", "xpassed"]

DEFINITIONS = {
    "necessity": "drop(C) = (m(M) − m(M\\C)) / (m(M) − m(∅)): the share of the task's performance lost when C is ablated. "
    "A claim holds when the lower bound of its interval clears the threshold.",
    "sufficiency": "recovery(C) = (m(C) − m(∅)) / (m(M) − m(∅)): the share of performance the circuit recovers on its own "
    "(every other head and MLP output ablated; faithfulness as in the IOI paper and MIB).",
    "minimality": "contribution(v) = recovery(C) − recovery(C \\ {v}) for every component v; the circuit is minimal when every "
    "component's lower bound clears the threshold. Components are sorted, weakest first.",
    "heatmaps": "Activation patching: each cell patches one activation; normalised values put the corrupted run at 0 and the "
    "clean run at 1 (diverging colours, white = 0). Attention patterns and head scores use a sequential scale from 0 to 1.",
    "paths": "Path patching: the share of the clean-corrupt gap carried by the direct path from sender to receiver.",
    "attribution": "Logit lens: KL(final ‖ lens) of each layer's residual stream read through the unembedding, and how often its "
    "top token is the model's. Direct effects: each component's mean direct logit attribution (red raises the answer, blue "
    "lowers it). Composition: how much of a receiver head's query, key or value input a sender head's output can reach, next "
    "to random matrices of the same shapes. Copying: the OV circuit's copying score of every head (−1..1). Probes: test "
    "accuracy of a linear probe next to the majority class and a probe trained on shuffled labels.",
}


# Evidence tables ------------------------------------------------------------------------


@dataclass
class Frame:
    """A table as recorded by :func:`circuitcheck.result.frame_to_json`, readable without pandas."""

    index: list
    columns: list
    data: list
    index_name: Any = None
    columns_name: Any = None

    @classmethod
    def of(cls, raw: Any) -> "Frame | None":
        if not isinstance(raw, dict) or not isinstance(raw.get("data"), list):
            return None
        data = [row if isinstance(row, list) else [row] for row in raw["data"]]
        columns = list(raw.get("columns") or range(max((len(r) for r in data), default=0)))
        index = list(raw.get("index") or range(len(data)))
        if len(index) != len(data):
            index = list(range(len(data)))
        return cls(index, columns, data, raw.get("index_name"), raw.get("columns_name"))

    @property
    def show_index(self) -> bool:
        """False for the default 0..n-1 index nobody named."""
        return self.index_name is not None or self.index != list(range(len(self.index)))

    def has(self, *names: str) -> bool:
        return all(name in self.columns for name in names)

    def column(self, name: str) -> list:
        j = self.columns.index(name)
        return [row[j] if j < len(row) else None for row in self.data]

    def records(self) -> list[dict]:
        return [dict(zip(self.columns, row)) for row in self.data]

    def numeric(self) -> list[list[float | None]]:
        return [[v if _is_number(v) else None for v in row] for row in self.data]


# Claims --------------------------------------------------------------------------------


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

    @property
    def verdict(self) -> str:
        return "held" if self.passed else "failed"

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
        if not _is_number(delta) and _is_number(stored) and _is_number(measured):
            delta = measured - stored
        bits = []
        if status == "new":
            bits.append("not in the baseline yet")
        elif status == "recorded":
            bits.append("value written to the baseline")
        if _is_number(stored):
            bits.append(f"stored {format_number(stored)}")
        if _is_number(delta):
            bits.append("unchanged" if delta == 0 else f"{'up' if delta > 0 else 'down'} {format_number(abs(delta))}")
        if _is_number(allowed):
            bits.append(f"allowed ±{format_number(allowed)}")
        key = self.raw.get("baseline_key")
        return {"status": status, "text": ", ".join(bits), "key": str(key) if key else ""}

    @property
    def regressed(self) -> bool:
        baseline = self.baseline
        return baseline is not None and baseline["status"] == "regressed"

    @property
    def value_text(self) -> str:
        return format_number(self.raw.get("value"))

    @property
    def interval_text(self) -> str:
        low, high = self.raw.get("ci_low"), self.raw.get("ci_high")
        if low is None or high is None:
            return "–"
        level = f" ({self.confidence_text})" if _is_number(self.raw.get("confidence")) else ""
        return f"[{format_number(low)}, {format_number(high)}]{level}"

    @property
    def measured_text(self) -> str:
        """``induction score 0.827 [0.785, 0.891] (95%)``."""
        text = f"{self.get('metric', 'value')} {self.value_text}"
        return text if self.interval_text == "–" else f"{text} {self.interval_text}"

    @property
    def confidence_text(self) -> str:
        confidence = self.raw.get("confidence")
        return f"{confidence:.0%}" if _is_number(confidence) else "confidence"

    @property
    def threshold_text(self) -> str:
        return threshold_text(self.raw.get("min_value"), self.raw.get("max_value"))

    @property
    def threshold(self) -> float | None:
        low, high = self.raw.get("min_value"), self.raw.get("max_value")
        return low if _is_number(low) else high if _is_number(high) else None

    @property
    def notes(self) -> list[str]:
        return [str(note) for note in self.raw.get("notes") or []]

    @property
    def extras(self) -> list[tuple[str, str]]:
        """Keys this page has no place for (added by later versions or plugins), shown as text rather than dropped."""
        return [(str(key), _text(value)) for key, value in sorted(self.raw.items()) if key not in CLAIM_KEYS]

    @property
    def parameters(self) -> list[tuple[str, str]]:
        params = self.raw.get("parameters") or {}
        if not isinstance(params, dict):
            return [("parameters", _text(params))]
        # sorted, as in the JSON file, so that a re-rendered page is identical to the first one
        return [(str(key), _text(value)) for key, value in sorted(params.items())]


def threshold_text(low, high) -> str:
    if _is_number(low) and _is_number(high):
        return f"between {format_number(low)} and {format_number(high)}"
    if _is_number(low):
        return f"≥ {format_number(low)}"
    if _is_number(high):
        return f"≤ {format_number(high)}"
    return "–"


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


# The page ------------------------------------------------------------------------------


def build_page(document: dict, summary: dict) -> dict[str, Any]:
    """Everything the template shows, in section order."""
    tests = [test for test in document.get("tests") or [] if isinstance(test, dict)]
    claims: list[ClaimView] = []
    test_views = []
    for test in tests:
        nodeid, outcome = str(test.get("nodeid", "?")), str(test.get("outcome", "?"))
        views = []
        for raw in test.get("claims") or []:
            if not isinstance(raw, dict):
                continue
            evidence = {str(name): frame for name, value in (raw.get("evidence") or {}).items() if (frame := Frame.of(value)) is not None}
            view = ClaimView(len(claims), nodeid, outcome, raw, evidence, test_record=test)
            claims.append(view)
            views.append(view)
        sweeps = [s for s in test.get("sweeps") or [] if isinstance(s, dict)]
        test_views.append({"nodeid": nodeid, "outcome": outcome, "duration": test.get("duration"), "claims": views, "sweeps": sweeps})

    consumed: dict[int, set[str]] = {c.index: set() for c in claims}
    matrix = _checkpoint_matrix(claims)
    page = {
        "claims": claims,
        "tests": [t for t in test_views if t["claims"] or t["sweeps"]],
        "plain_tests": [t for t in test_views if not t["claims"] and not t["sweeps"]],
        "failed_claims": [c for c in claims if not c.passed],
        "checkpoints": matrix,
        "checkpoint_charts": _checkpoint_charts(matrix),
        "baseline": _baseline_summary(claims),
        "outcomes": sorted(summary["tests"].items(), key=lambda item: (_outcome_rank(item[0]), item[0])),
        "necessity": _necessity(claims, consumed),
        "sufficiency": _sufficiency(claims, consumed),
        "minimality": _minimality(claims, consumed),
        "patching": _patching(test_views),
        "attention": _attention(claims, consumed),
        "paths": _paths(claims, consumed),
        "attribution": _attribution(claims, consumed),
        "definitions": DEFINITIONS,
        "environment": [(str(key), _text(value)) for key, value in sorted((document.get("environment") or {}).items())],
    }
    page["other"] = [
        {"claim": c, "tables": [(name, frame) for name, frame in c.evidence.items() if name not in consumed[c.index]]}
        for c in claims
        if any(name not in consumed[c.index] for name in c.evidence)
    ]
    for block in page["other"]:
        block["claim"].links.append(("other evidence", f"other-{block['claim'].index}"))
    return page


def _necessity(claims: list[ClaimView], consumed) -> list[dict]:
    blocks = []
    for c in claims:
        frame = c.evidence.get("necessity")
        if c.kind != "necessary" or frame is None or not frame.has("ablated", "drop"):
            continue
        records = frame.records()
        rows = []
        for i, record in enumerate(records):
            together = i == 0 and len(records) > 1
            rows.append(
                IntervalRow(
                    label="all together" if together else str(record["ablated"]),
                    value=_number(record.get("drop")),
                    low=_number(record.get("ci_low")),
                    high=_number(record.get("ci_high")),
                    status=c.verdict if i == 0 else "neutral",
                    threshold=c.threshold if i == 0 else None,
                    title=f"drop when {record['ablated']} {'are' if together else 'is'} ablated: {_estimate(record, 'drop')}",
                )
            )
        chart = charts.interval_chart(rows, label=f"necessity: {c.text}", axis_label="drop (share of performance lost)", include=(0.0, 1.0))
        consumed[c.index].update({"necessity", "means"} if "means" in c.evidence else {"necessity"})
        c.links.append(("necessity", f"necessity-{c.index}"))
        blocks.append({"claim": c, "chart": chart, "table": frame, "means": _means_text(c.evidence.get("means"))})
    return blocks


def _sufficiency(claims: list[ClaimView], consumed) -> dict:
    entries = []
    for c in claims:
        frame = c.evidence.get("sufficiency")
        if c.kind != "sufficient":
            continue
        record = frame.records()[0] if frame is not None and frame.has("recovery") and frame.data else {}
        circuit = str(record.get("circuit") or (c.raw.get("parameters") or {}).get("components") or c.text)
        entries.append({"claim": c, "circuit": circuit, "means": _means_text(c.evidence.get("means"))})
        consumed[c.index].update(name for name in ("sufficiency", "means") if name in c.evidence)
        c.links.append(("sufficiency", f"sufficiency-{c.index}"))
    if not entries:
        return {"chart": None, "entries": []}
    several_models = len({c["claim"].model for c in entries}) > 1
    rows = []
    for entry in entries:
        c = entry["claim"]
        label = _short_circuit(entry["circuit"])
        if several_models:
            label = f"{label} · {c.checkpoint or c.model}"
        rows.append(
            IntervalRow(
                label=label,
                value=_number(c.raw.get("value")),
                low=_number(c.raw.get("ci_low")),
                high=_number(c.raw.get("ci_high")),
                status=c.verdict,
                threshold=c.threshold,
                title=f"{c.text} ({c.model}): recovery {c.value_text} {c.interval_text}, required {c.threshold_text}, {c.verdict}",
            )
        )
    chart = charts.interval_chart(
        rows, label="sufficiency: recovery of each circuit", axis_label="recovery (1 = full model)", include=(0.0, 1.0)
    )
    return {"chart": chart, "entries": entries}


def _minimality(claims: list[ClaimView], consumed) -> list[dict]:
    blocks = []
    for c in claims:
        frame = c.evidence.get("minimality")
        if c.kind != "minimal" or frame is None or not frame.has("component", "contribution"):
            continue
        threshold = _number(c.raw.get("min_value"))
        records = sorted(frame.records(), key=lambda r: (_number(r.get("contribution")) is None, _number(r.get("contribution")) or 0.0))
        rows = []
        for record in records:
            low = _number(record.get("ci_low"))
            bound = low if low is not None else _number(record.get("contribution"))
            status = "neutral" if threshold is None or bound is None else ("held" if bound >= threshold else "failed")
            rows.append(
                IntervalRow(
                    label=str(record["component"]),
                    value=_number(record.get("contribution")),
                    low=low,
                    high=_number(record.get("ci_high")),
                    status=status,
                    title=f"{record['component']}: contribution {_estimate(record, 'contribution')}"
                    + (f", recovery without it {format_number(record.get('recovery_without'))}" if "recovery_without" in record else ""),
                )
            )
        chart = charts.interval_chart(
            rows, label=f"minimality: {c.text}", axis_label="contribution to recovery", threshold=threshold, threshold_label="min"
        )
        consumed[c.index].add("minimality")
        c.links.append(("minimality", f"minimality-{c.index}"))
        blocks.append({"claim": c, "chart": chart, "table": frame})
    return blocks


def _patching(tests: list[dict]) -> list[dict]:
    maps = []
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
                extra = [[f"mean metric {format_number(v)}" for v in row] for row in matrix.numeric()]
            scale = ColorScale.diverging(values)
            value_name = "normalised" if normalized is not None else "mean metric"
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
                    ),
                    "legend": charts.legend(scale, "normalised (0 = corrupted, 1 = clean)" if normalized is not None else "mean metric"),
                }
            )
    return maps


def _attention(claims: list[ClaimView], consumed) -> list[dict]:
    figures = []
    for c in claims:
        if not c.kind.endswith("_head") or c.kind == "copying_head":  # copying heads: _copying
            continue
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
                highlight={cell} if cell else set(), target_width=300,
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
                target_width=560, background_value=0.0,
            )
            figure["attention_note"] = f"first {shown} of {size} positions" if shown < size else ""
            consumed[c.index].add("attention")
        per_prompt = c.evidence.get("per_prompt")
        if per_prompt is not None and per_prompt.data:
            values = [v for row in per_prompt.numeric() for v in row if v is not None]
            if values:
                figure["per_prompt"] = (
                    f"{len(values)} prompts: min {format_number(min(values))}, mean {format_number(sum(values) / len(values))}, "
                    f"max {format_number(max(values))}"
                )
                consumed[c.index].add("per_prompt")
        if figure["scores"] is None and figure["attention"] is None and figure["per_prompt"] is None:
            continue
        figure["legend"] = charts.legend(ColorScale.sequential(0.0, 1.0), "score / attention weight")
        c.links.append(("attention", f"attention-{c.index}"))
        figures.append(figure)
    return figures


def _paths(claims: list[ClaimView], consumed) -> list[dict]:
    rows = []
    for c in claims:
        if c.kind != "path":
            continue
        params = c.raw.get("parameters") or {}
        frame = c.evidence.get("path")
        rows.append({"claim": c, "path": str(params.get("components", "")), "direction": str(params.get("direction", "")),
                     "means": _means_text(frame)})
        if frame is not None and frame.has("run", "mean_metric"):
            consumed[c.index].add("path")
        c.links.append(("paths", f"path-{c.index}"))
    return rows


# Lenses, direct effects, composition, copying, probes ---------------------------------------


def _attribution(claims: list[ClaimView], consumed) -> dict[str, list[dict]]:
    """The charts of the attribution-style claims, by kind; ``count`` is how many claims got one."""
    builders = {
        "logit_lens": ("lens", _lens), "direct_effect": ("direct", _direct), "top_direct_effects": ("direct", _direct),
        "composition": ("composition", _composition), "copying_head": ("copying", _copying), "probe": ("probe", _probe),
    }
    out: dict[str, Any] = {"lens": [], "direct": [], "composition": [], "copying": [], "probe": []}
    for c in claims:
        if c.kind not in builders:
            continue
        key, build = builders[c.kind]
        block = build(c, consumed[c.index])
        if block is None:
            continue
        block["claim"] = c
        block["anchor"] = f"{key}-{c.index}"
        c.links.append(({"lens": "logit lens", "direct": "direct effects"}.get(key, key), block["anchor"]))
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
    threshold = _number(c.raw.get("max_value"))
    claimed = (c.raw.get("parameters") or {}).get("layer", (c.raw.get("parameters") or {}).get("converges_by"))
    rows = []
    for layer, record in zip(layers, records):
        kl, top1 = _number(record.get("mean_kl")), _number(record.get("top1_agreement"))
        converged = record.get("converged")
        status = ("held" if converged else "failed") if isinstance(converged, bool) else (
            "neutral" if threshold is None or kl is None else ("held" if kl <= threshold else "failed"))
        note = f"top-1 {format_number(top1, 2)}" if top1 is not None else ""
        rows.append(IntervalRow(
            label=f"layer {layer}", value=kl, status=status, note=note, highlight=_same(layer, claimed),
            title=f"layer {layer}: mean KL {format_number(kl)}, max KL {format_number(record.get('max_kl'))}, "
            f"top-1 agreement {format_number(top1)}" + (f", converged: {'yes' if converged else 'no'}" if isinstance(converged, bool) else ""),
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
    records = [(str(name), record) for name, record in zip(frame.index, frame.records()) if _number(record.get("mean")) is not None]
    total = next((_number(r["mean"]) for name, r in records if r.get("kind") == "total"), None)
    # one level of detail, no double counting: heads (and each layer's b_O), or whole attention layers when one is claimed
    layers = any(r.get("kind") == "attn" and name in claimed for name, r in records)
    hidden = {"total", "head", "attn_bias"} if layers else {"total", "attn"}
    records = [(name, r) for name, r in records if r.get("kind") not in hidden or name in claimed]
    records.sort(key=lambda item: -abs(_number(item[1]["mean"])))
    shown = records[:MAX_DIRECT_EFFECTS] + [item for item in records[MAX_DIRECT_EFFECTS:] if item[0] in claimed]
    rows = []
    for name, record in shown:
        mean, std, share = _number(record.get("mean")), _number(record.get("std")), _number(record.get("share"))
        rows.append(IntervalRow(
            label=name, value=mean, colour=POSITIVE if mean >= 0 else NEGATIVE, highlight=name in claimed,
            note=f"share {format_number(share, 2)}" if share is not None else "",
            title=f"{name}{' (' + str(record['kind']) + ')' if record.get('kind') else ''}: mean direct effect {format_number(mean)}"
            + (f" ± {format_number(std)} (std)" if std is not None else "") + (f", share {format_number(share)}" if share is not None else ""),
        ))
    chart = charts.interval_chart(rows, label=f"direct effects: {c.text}", axis_label="mean direct logit attribution",
                                  css_class="direct-effect-chart")
    more = f" (top {MAX_DIRECT_EFFECTS} of {len(records)} by |mean|)" if len(records) > MAX_DIRECT_EFFECTS else ""
    total_text = f" The total (the model's own logit difference) is {format_number(total)}." if total is not None else ""
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
    mean = _number(stats.get("mean", params.get("random_mean")))
    quantile_key = next((k for k in stats if k.startswith("q")), None)
    quantile = _number(stats[quantile_key] if quantile_key else params.get("random_quantile_value"))
    level = quantile_key[1:] if quantile_key else params.get("random_quantile")
    bits = [f"random baseline mean {format_number(mean)}"] if mean is not None else []
    if quantile is not None:
        bits.append(f"{format_number(level) if not isinstance(level, str) else level} quantile {format_number(quantile)}")
    value = _number(c.raw.get("value"))
    if quantile is not None and value is not None:
        bits.append(f"the claimed pair's {format_number(value)} is " + ("above" if value > quantile else "not above") + " it")
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
            if _same(layer, params.get("layer")) and _same(head, params.get("head")):
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
    rows = [IntervalRow(label="test accuracy", value=_number(record.get("accuracy")), low=_number(record.get("ci_low")),
                        high=_number(record.get("ci_high")), status=c.verdict,
                        title=f"test accuracy {_estimate(record, 'accuracy')}, required {c.threshold_text}: {c.verdict}")]
    for column, label in (("majority_baseline", "majority class"), ("chance", "chance"), ("control_accuracy", "control (shuffled)")):
        if _number(record.get(column)) is not None:
            rows.append(IntervalRow(label=label, value=_number(record[column]), title=f"{label}: {format_number(record[column])}"))
    if _number(record.get("selectivity")) is not None:
        min_selectivity = _number((c.raw.get("parameters") or {}).get("min_selectivity"))
        rows.append(IntervalRow(
            label="selectivity", value=_number(record["selectivity"]), low=_number(record.get("selectivity_ci_low")),
            high=_number(record.get("selectivity_ci_high")), threshold=min_selectivity,
            title=f"selectivity (accuracy − control) {format_number(record['selectivity'])}"
            + (f", required ≥ {format_number(min_selectivity)}" if min_selectivity is not None else ""),
        ))
    chart = charts.interval_chart(rows, label=f"probe: {c.text}", axis_label="accuracy", threshold=c.threshold,
                                  threshold_label="required", include=(0.0, 1.0), css_class="probe-chart")
    return {"chart": chart, "legend": None, "caption": f"Test accuracy ({c.confidence_text} interval) next to the majority class, chance "
            "and a probe trained on shuffled labels; dashed: the required accuracy.",
            "tables": _tables(c, used, ("probe", "per_class"))}


def _same(a, b) -> bool:
    """``1 == "1"``: layers and heads come back from JSON as numbers or strings."""
    return a is not None and b is not None and str(a) == str(b)


def _checkpoint_matrix(claims: list[ClaimView]) -> dict | None:
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


def _checkpoint_charts(matrix: dict | None) -> list[dict]:
    """A line chart of each claim measured (with a value) on two checkpoints or more."""
    if matrix is None:
        return []
    figures = []
    for row in matrix["rows"]:
        cells = [c for c in row["cells"] if c is not None]  # already in checkpoint order
        if sum(_number(c.raw.get("value")) is not None for c in cells) < 2:
            continue
        anchor = f"checkpoint-chart-{len(figures)}"
        points = [
            CheckpointPoint(
                checkpoint=c.checkpoint or "?",
                value=_number(c.raw.get("value")),
                low=_number(c.raw.get("ci_low")),
                high=_number(c.raw.get("ci_high")),
                min_value=_number(c.raw.get("min_value")),
                max_value=_number(c.raw.get("max_value")),
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


def _baseline_summary(claims: list[ClaimView]) -> dict | None:
    """Claims compared with a baseline, counted by status; the regressed ones listed. None when no claim was compared."""
    compared = [c for c in claims if c.baseline is not None]
    if not compared:
        return None
    counts: dict[str, int] = {}
    for c in compared:
        counts[c.baseline["status"]] = counts.get(c.baseline["status"], 0) + 1
    order = {status: i for i, status in enumerate(BASELINE_STATUSES)}
    return {
        "compared": len(compared),
        "regressed": [c for c in compared if c.regressed],
        "counts": sorted(counts.items(), key=lambda item: (order.get(item[0], len(order)), item[0])),
    }


# Helpers ----------------------------------------------------------------------------------


def _outcome_rank(outcome: str) -> int:
    return OUTCOME_ORDER.index(outcome) if outcome in OUTCOME_ORDER else len(OUTCOME_ORDER)


def _means_text(frame: Frame | None) -> str:
    if frame is None or not frame.has("run", "mean_metric"):
        return ""
    return " · ".join(f"{run} = {format_number(value)}" for run, value in zip(frame.column("run"), frame.column("mean_metric")))


def _estimate(record: dict, name: str) -> str:
    text = format_number(record.get(name))
    if record.get("ci_low") is not None and record.get("ci_high") is not None:
        text += f" [{format_number(record.get('ci_low'))}, {format_number(record.get('ci_high'))}]"
    return text


def _short_circuit(label: str) -> str:
    """``'induction' (L0H0 L1H3)`` -> ``induction``: the chart shows the name, the hover the members."""
    match = re.match(r"^'([^']+)' \(", label)
    return match.group(1) if match else label


def _number(value) -> float | None:
    return float(value) if _is_number(value) and math.isfinite(value) else None


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _text(value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    return format_number(value) if isinstance(value, float) else str(value)
