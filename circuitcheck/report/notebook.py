"""Results in a notebook, drawn as the report draws them.

A :class:`~circuitcheck.claims.result.CheckResult`, a
:class:`~circuitcheck.engine.sweeps.Sweep`, a
:class:`~circuitcheck.engine.attribution_patching.GraphSweep`, a
:class:`~circuitcheck.engine.probe.ProbeResult` and a
:class:`~circuitcheck.engine.composition.RandomBaseline` show in Jupyter
through their ``_repr_html_``, which calls the view of this module:

- :func:`claim_html`: the claim's verdict, value with interval, the bound that
  decided and the requirement, its notes, and the charts the report draws for
  its evidence (the one-claim report page is built, and its charts taken), or a
  compact table of the evidence the report draws no chart for;
- :func:`sweep_html`: the report's heatmap and colour legend;
- :func:`probe_html`, :func:`baseline_html`: the probe's accuracies beside its
  baselines, and a random composition baseline, as small tables and charts.

:func:`plot_sweep` is ``Sweep.plot()``: the report's SVG heatmap as an
:class:`SVGFigure`, or a matplotlib heatmap with ``backend="matplotlib"``.
A whole notebook's results become a report with
:func:`circuitcheck.report.from_results`.

Each view is one ``<div class="circuitcheck-view">`` with its own scoped
stylesheet: the chart rules are the report template's own ``svg.chart`` rules,
read from it, so the charts look the same in both places; nothing outside the
view is restyled and there are no scripts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from markupsafe import Markup, escape

from ..claims import format as claim_format
from ..claims.format import number
from ..errors import ArgumentError, CircuitCheckError
from . import REPORT_SCHEMA, summarize
from . import charts, heatmaps
from .charts import IntervalRow
from .frames import Frame
from .sections import build_page

VIEW_CLASS = "circuitcheck-view"
#: rows and columns of an evidence table shown in a view (``result.evidence[name]`` has all of them)
MAX_TABLE_ROWS = 8
MAX_TABLE_COLUMNS = 10
#: the page sections that can draw a claim's evidence, in the report's order
_CHART_SECTIONS = ("necessity", "sufficiency", "minimality", "completeness", "curves", "attention", "attribution", "checkpoint_charts")
_TEXT_KEYS = ("caption", "per_prompt", "attention_note", "means")
_BACKENDS = ("svg", "matplotlib")

_OWN_CSS = """
.{v} {{ font: 13px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink); max-width: 62rem; }}
.{v} .cc-head {{ margin: 0 0 .35rem; font-size: 14px; }}
.{v} .cc-claim {{ font-weight: 600; }}
.{v} .cc-pill {{ display: inline-block; font-size: 11px; font-weight: 700; text-transform: uppercase; letter-spacing: .03em;
  border-radius: 1rem; padding: 0 .5rem; margin-right: .4rem; }}
.{v} .cc-pill.held {{ background: var(--held-bg); color: var(--held); }}
.{v} .cc-pill.failed {{ background: var(--failed-bg); color: var(--failed); }}
.{v} .cc-kind {{ display: inline-block; font-size: 11px; color: var(--muted); background: var(--soft); border-radius: .25rem;
  padding: 0 .35rem; margin-right: .4rem; }}
.{v} .cc-muted {{ color: var(--muted); font-size: 12px; }}
.{v} table.cc-table {{ border-collapse: collapse; margin: .3rem 0 .6rem; font-size: 12px; }}
.{v} table.cc-table th, .{v} table.cc-table td {{ border-bottom: 1px solid var(--line); padding: .15rem .5rem; text-align: left;
  vertical-align: top; }}
.{v} table.cc-table thead th {{ background: var(--soft); font-weight: 600; white-space: nowrap; }}
.{v} table.cc-table td.num {{ text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }}
.{v} table.cc-table caption {{ text-align: left; font-weight: 600; color: var(--muted); font-size: 12px; }}
.{v} pre.cc-notes {{ white-space: pre-wrap; margin: .2rem 0 .5rem; font-size: 12px; background: var(--soft);
  border-left: 3px solid var(--line); padding: .3rem .5rem; }}
.{v}.failed pre.cc-notes {{ border-left-color: var(--failed); }}
.{v} figure {{ margin: .4rem 0 .8rem; }}
.{v} figcaption {{ color: var(--muted); font-size: 12px; margin-bottom: .2rem; max-width: 52rem; }}
"""


# The stylesheet -----------------------------------------------------------------------


@lru_cache(maxsize=1)
def _template_rules() -> tuple[str, tuple[tuple[tuple[str, ...], str], ...]]:
    """The report template's colour variables and its ``svg.chart`` rules (selectors, body): one look for charts everywhere."""
    template = (resources.files("circuitcheck.report") / "templates" / "report.html.j2").read_text(encoding="utf-8")
    variables = re.search(r":root\s*\{([^}]*)\}", template)
    rules = []
    for line in template.splitlines():
        line = line.strip()
        if line.startswith("svg.chart") and "{" in line:
            selectors, body = line.split("{", 1)
            rules.append((tuple(s.strip() for s in selectors.split(",")), "{" + body))
    return (variables.group(1).strip() if variables else ""), tuple(rules)


def chart_css(scope: str = "") -> str:
    """The charts' stylesheet, its rules under ``scope`` (a selector; ``""``: the SVG itself, for a file of its own)."""
    variables, rules = _template_rules()
    lines = [f"{scope or 'svg.chart'} {{ {variables} }}"]
    lines += [", ".join(f"{scope} {selector}".strip() for selector in selectors) + " " + body for selectors, body in rules]
    return "\n".join(lines)


def style() -> str:
    """The views' ``<style>``: the report template's colours and ``svg.chart`` rules, scoped to ``.circuitcheck-view``."""
    return f"<style>{chart_css('.' + VIEW_CLASS)}{_OWN_CSS.format(v=VIEW_CLASS)}</style>"


def _view(body: str, *, status: str = "") -> str:
    classes = f"{VIEW_CLASS} {status}".strip()
    return f'{style()}<div class="{classes}">{body}</div>'


# One claim ----------------------------------------------------------------------------


def claim_html(result: Any) -> str:
    """A claim (a ``CheckResult`` or its ``to_dict()``) as the notebook shows it.

    The head line gives the verdict, the kind and the claim; the table the
    measured value with its interval, the requirement, the statistic that
    decided (with its number) and n; then the lab note's notes, the report's
    charts of the evidence and the tables the report draws no chart for
    (the first :data:`MAX_TABLE_ROWS` rows each).
    """
    raw = result.to_dict() if hasattr(result, "to_dict") else result
    if not isinstance(raw, dict) or not all(key in raw for key in ("kind", "claim", "passed")):
        raise ArgumentError(f"{type(result).__name__} is not a claim: give a CheckResult or its to_dict()")
    row = claim_format.row(raw)
    document = {"circuitcheck_report": REPORT_SCHEMA, "environment": {},
                "tests": [{"nodeid": "notebook", "outcome": "passed" if raw.get("passed") else "failed", "claims": [raw]}]}
    page = build_page(document, summarize(document))
    where = f' <span class="cc-muted">model {escape(row.model)}</span>' if row.model else ""
    parts = [
        f'<p class="cc-head"><span class="cc-pill {row.verdict}">{row.verdict}</span><span class="cc-kind">{escape(row.kind)}</span>'
        f'<span class="cc-claim">{escape(row.claim)}</span>{where}</p>',
        '<table class="cc-table"><thead><tr><th>measured</th><th>interval</th><th>required</th><th>decided on</th><th>n</th></tr></thead>'
        f'<tbody><tr><td class="num">{escape(row.metric)} {escape(row.value)}</td><td class="num">{escape(row.interval or "–")}</td>'
        f"<td>{escape(row.metric)} {escape(row.required)}</td><td>{escape(row.decision)}</td><td class=\"num\">{escape(row.n)}</td></tr>"
        "</tbody></table>",
    ]
    notes = [str(note) for note in raw.get("notes") or []]
    if notes:
        parts.append(f'<pre class="cc-notes">{escape(chr(10).join(notes))}</pre>')
    power = page.get("power")
    for entry in (power or {}).get("rows", []):
        parts.append(f'<p class="cc-muted">test power: {escape(entry["text"])}</p>')
    drawn = _charts(page)
    for caption, svgs in drawn:
        text = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
        parts.append(f"<figure>{text}{''.join(svgs)}</figure>")
    # no chart: the evidence is the tables; with charts, the tables they leave out ("other evidence" in the report)
    tables = page["claims"][0].evidence.items() if not drawn else [table for block in page["other"] for table in block["tables"]]
    for name, frame in tables:
        parts.append(frame_table(frame, name))
    evidence = raw.get("evidence") or {}
    if evidence:
        shapes = ", ".join(f"{escape(name)} ({_shape(value)})" for name, value in evidence.items())
        parts.append(f'<p class="cc-muted">evidence tables: {shapes} — <code>result.evidence[name]</code> as DataFrames, '
                     "<code>print(result)</code> for the lab note</p>")
    return _view("".join(parts), status=row.verdict)


def _charts(page: dict) -> list[tuple[str, list[str]]]:
    """The page's charts, in its order: (caption, SVGs) per block of every section that drew one."""
    found = []

    def visit(block) -> None:
        if isinstance(block, list):
            for item in block:
                visit(item)
        elif isinstance(block, dict):
            svgs = [str(value) for value in block.values() if isinstance(value, Markup) and value.startswith("<svg")]
            if svgs:
                texts = [str(block[key]) for key in _TEXT_KEYS if isinstance(block.get(key), str) and block.get(key)]
                found.append(("; ".join(texts), svgs))
            for key, value in block.items():
                if key != "claim" and isinstance(value, (list, dict)) and not isinstance(value, Markup):
                    visit(value)

    for name in _CHART_SECTIONS:
        visit(page.get(name))
    return found


def _shape(value: Any) -> str:
    frame = Frame.of(value)
    if frame is None:
        return "?"
    return f"{len(frame.data)}×{len(frame.columns)}"


def frame_table(frame: Frame, caption: str, max_rows: int = MAX_TABLE_ROWS, max_columns: int = MAX_TABLE_COLUMNS) -> str:
    """An evidence table as a compact HTML table: its first rows and columns, numbers as the report writes them."""
    rows, columns = frame.data[:max_rows], list(frame.columns[:max_columns])
    cut = []
    if len(frame.data) > max_rows:
        cut.append(f"first {max_rows} of {len(frame.data)} rows")
    if len(frame.columns) > max_columns:
        cut.append(f"first {max_columns} of {len(frame.columns)} columns")
    title = f"{caption} ({', '.join(cut)})" if cut else caption
    index = frame.show_index
    head = (f"<th>{escape(str(frame.index_name or ''))}</th>" if index else "") + "".join(f"<th>{escape(str(c))}</th>" for c in columns)
    body = []
    for label, row in zip(frame.index, rows):
        cells = "".join(_cell(row[j] if j < len(row) else None) for j in range(len(columns)))
        body.append(f"<tr>{f'<th>{escape(str(label))}</th>' if index else ''}{cells}</tr>")
    return (f'<table class="cc-table"><caption>{escape(title)}</caption><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>")


def _cell(value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f'<td class="num">{escape(number(value))}</td>'
    return f"<td>{escape('–' if value is None else str(value))}</td>"


# Sweeps -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SVGFigure:
    """A heatmap drawn by the report as SVG: notebooks show it, :meth:`save` writes it.

    ``svg``: the chart's markup; ``legend``: its colour bar; ``title``: what it shows.
    """

    title: str
    svg: str
    legend: str = ""

    def _repr_html_(self) -> str:
        return _view(f"<figure><figcaption><strong>{escape(self.title)}</strong></figcaption>{self.svg}{self.legend}</figure>")

    def __repr__(self) -> str:
        return f"<SVGFigure {self.title!r}: {len(self.svg)} characters of SVG>"

    def save(self, path: "str | Path") -> Path:
        """Write the chart: ``.svg`` (the heatmap with the chart stylesheet inside) or ``.html`` (heatmap and legend)."""
        path = Path(path)
        if path.suffix == ".html":
            text = f'<!doctype html><meta charset="utf-8"><title>{escape(self.title)}</title>{self._repr_html_()}'
        elif path.suffix == ".svg":
            opening = re.match(r"<svg[^>]*>", self.svg)
            if opening is None:
                raise CircuitCheckError(f"figure {self.title!r} holds no SVG to save")
            text = (opening.group(0).replace("<svg ", '<svg xmlns="http://www.w3.org/2000/svg" ', 1)
                    + f"<style>{escape(chart_css())}</style>" + self.svg[opening.end():])
        else:
            raise ArgumentError(f"{str(path)!r}: a figure is saved as .svg or .html, not {path.suffix or 'a file without a suffix'}")
        path.write_text(text, encoding="utf-8")
        return path


def sweep_html(sweep: Any) -> str:
    """A ``Sweep`` or ``GraphSweep`` as the notebook shows it: the report's heatmap and legend, or for a sweep of more
    than two axes (``head_out_by_pos``) a table of its largest changes."""
    summary = _sweep_summary(sweep)
    if len(sweep.axes) != 2:
        return _view(f"<p class=\"cc-head\"><strong>{escape(sweep.title())}</strong></p><p class=\"cc-muted\">{escape(summary)}; "
                     f"{len(sweep.axes)} axes ({escape(', '.join(sweep.axes))}): the largest changes below, every cell in "
                     "<code>.frame()</code></p>" + _largest_cells(sweep))
    figure = plot_sweep(sweep)
    return _view(f'<figure><figcaption><strong>{escape(figure.title)}</strong> · {escape(summary)}</figcaption>'
                 f"{figure.svg}{figure.legend}</figure>")


def _sweep_summary(sweep: Any) -> str:
    clean, corrupt = float(sweep.clean_metric.mean()), float(sweep.corrupt_metric.mean())
    return (f"{len(sweep.index)} variants × {sweep.values.shape[1]} examples; mean metric clean {number(clean)}, "
            f"corrupted {number(corrupt)}")


def _largest_cells(sweep: Any, k: int = MAX_TABLE_ROWS) -> str:
    """The ``k`` cells that move the metric most from the base run (normalised where defined, else the mean metric)."""
    frame = sweep.frame()
    if frame["normalized"].notna().all():
        change = (frame["normalized"] - (0.0 if sweep.direction == "denoise" else 1.0)).abs()
    else:  # the two runs score the same: that score is the base
        change = (frame["value"] - float(sweep.clean_metric.mean())).abs()
    order = change.sort_values(ascending=False, kind="stable").index[:k]
    rows = [[int(v) for v in sweep.index[i]] + [float(frame["value"][i]), float(frame["normalized"][i])] for i in order]
    table = Frame(list(range(1, len(rows) + 1)), [*sweep.axes, "value", "normalized"], rows, "rank")
    return frame_table(table, f"largest changes of {len(frame)} cells")


def plot_sweep(sweep: Any, backend: str = "svg", *, normalized: bool | None = None, ax=None):
    """``Sweep.plot()`` / ``GraphSweep.plot()``: the heatmap of a two-axis sweep.

    ``backend="svg"``: the report's own heatmap and legend as an :class:`SVGFigure`
    (the page's colour scale and hover titles). ``"matplotlib"``: ``imshow`` on
    ``ax`` (a new figure without one) with the report's red-blue colours, returned
    as the axes; normalised values on a symmetric scale of at least [-1, 1], the
    mean metric on one symmetric around 0. ``normalized``: None (normalised where
    the clean and corrupted runs differ), True or False (the mean metric).
    """
    if backend not in _BACKENDS:
        raise ArgumentError(f"backend={backend!r} is not valid: use 'svg' (the report's heatmap) or 'matplotlib'")
    if len(sweep.axes) != 2:
        raise ArgumentError(f"sweep {sweep.what} has {len(sweep.axes)} axes ({', '.join(sweep.axes)}): a heatmap shows two; "
                            "select from .frame() and plot that")
    defined = float(sweep.clean_metric.mean()) != float(sweep.corrupt_metric.mean())
    if normalized and not defined:
        raise CircuitCheckError("clean and corrupted runs score the same mean metric: a normalised sweep is undefined; "
                                "plot the mean metric with normalized=False")
    use_normalized = defined if normalized is None else bool(normalized)
    if backend == "matplotlib":
        return _matplotlib(sweep, use_normalized, ax)
    if ax is not None:
        raise ArgumentError("ax= is for backend='matplotlib': the SVG backend draws its own figure")
    data = sweep.to_dict()
    if not use_normalized:
        data["normalized"] = None
    drawn = heatmaps.patching([{"nodeid": "notebook", "sweeps": [data]}])[0]
    return SVGFigure(title=str(drawn["title"]), svg=str(drawn["svg"]), legend=str(drawn["legend"]))


def _matplotlib(sweep: Any, use_normalized: bool, ax):
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        raise ArgumentError("backend='matplotlib' needs matplotlib, which is not installed: pip install matplotlib, "
                            "or use backend='svg' (the report's heatmap)") from None
    import numpy as np

    matrix = sweep.matrix(normalized=use_normalized)
    values = matrix.to_numpy(dtype=float)
    finite = np.abs(values[np.isfinite(values)])
    largest = float(finite.max()) if finite.size else 0.0
    limit = max(1.0, largest) if use_normalized else (largest or 1.0)
    if ax is None:
        rows, columns = values.shape
        _, ax = plt.subplots(figsize=(min(14.0, 2.5 + 0.45 * columns), min(12.0, 1.5 + 0.4 * rows)))
    image = ax.imshow(np.ma.masked_invalid(values), cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto", interpolation="nearest")
    ax.set_xticks(range(values.shape[1]), [str(c) for c in matrix.columns], rotation=90 if values.shape[1] > 12 else 0)
    ax.set_yticks(range(values.shape[0]), [str(r) for r in matrix.index])
    ax.set_xlabel(str(matrix.columns.name or "column"))
    ax.set_ylabel(str(matrix.index.name or "row"))
    ax.set_title(str(sweep.to_dict()["title"]))
    label = "normalised (0 = corrupted, 1 = clean)" if use_normalized else "mean metric"
    if getattr(sweep, "approximation", False):
        label = f"estimate by {sweep.label}: {label}"
    ax.figure.colorbar(image, ax=ax, label=label)
    return ax


# Probes and baselines ----------------------------------------------------------------


def probe_html(result: Any) -> str:
    """A ``ProbeResult``: its test accuracy beside the majority class, chance and the control, and the per-class table."""
    summary = result.summary()
    rows = [IntervalRow(label="test accuracy", value=summary["accuracy"], title=f"test accuracy {number(summary['accuracy'])}"),
            IntervalRow(label="train accuracy", value=summary["train_accuracy"], title=f"train accuracy {number(summary['train_accuracy'])}"),
            IntervalRow(label="majority class", value=summary["majority_accuracy"],
                        title=f"always the most frequent training label: {number(summary['majority_accuracy'])}"),
            IntervalRow(label="chance", value=1.0 / summary["n_classes"] if summary["n_classes"] else None,
                        title=f"one of {summary['n_classes']} classes at random")]
    if summary["control_accuracy"] is not None:
        rows.append(IntervalRow(label=f"control ({summary['control']})", value=summary["control_accuracy"],
                                title=f"the same probe on the {summary['control']} control task: {number(summary['control_accuracy'])}"))
    if summary["selectivity"] is not None:
        rows.append(IntervalRow(label="selectivity", value=summary["selectivity"],
                                title=f"test accuracy minus control accuracy: {number(summary['selectivity'])}"))
    chart = charts.interval_chart(rows, label=f"probe at {summary['hook']}", axis_label="accuracy", include=(0.0, 1.0),
                                  css_class="probe-chart")
    from ..tables import frame_to_json

    sizes = (f"{summary['n_train']} train / {summary['n_test']} test examples ({summary['n_train_prompts']} / "
             f"{summary['n_test_prompts']} prompts), {summary['n_classes']} classes, {summary['n_features']} features, "
             f"seed {summary['seed']}, weight decay {summary['weight_decay']:g}")
    return _view(f'<p class="cc-head"><span class="cc-kind">probe</span><span class="cc-claim">{escape(summary["hook"])}</span></p>'
                 f'<p class="cc-muted">{escape(sizes)}</p><figure>{chart}</figure>'
                 + frame_table(Frame.of(frame_to_json(result.per_class)), "per class"))


def baseline_html(baseline: Any) -> str:
    """A ``RandomBaseline``: the composition scores of random weights of the model's shapes, in one table."""
    rows = [("kind", f"{baseline.kind}-composition"), ("mean ± std", f"{number(baseline.mean)} ± {number(baseline.std)}"),
            (f"{baseline.quantile:.0%} quantile", number(baseline.quantile_value)), ("samples", str(baseline.n_samples)),
            ("seed", str(baseline.seed))]
    body = "".join(f"<tr><th>{escape(name)}</th><td>{escape(value)}</td></tr>" for name, value in rows)
    return _view('<p class="cc-head"><span class="cc-kind">composition</span><span class="cc-claim">random baseline</span></p>'
                 f'<table class="cc-table"><tbody>{body}</tbody></table>')
