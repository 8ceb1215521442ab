"""Inline SVG charts for the HTML report, drawn in Python.

Every chart is plain SVG markup (no script, no external reference) so that
the report reads the same without JavaScript, offline and on paper. Hover
values are SVG ``<title>`` elements, which browsers show as tooltips. Every
piece of text that reaches the markup (token strings, component names, claim
text) goes through :func:`markupsafe.escape`; numbers are formatted here.

Charts:

- :func:`heatmap`: a matrix of coloured cells (activation patching sweeps,
  attention patterns, layer x head score grids) and :func:`legend`, its colour bar.
- :func:`interval_chart`: horizontal bars with confidence-interval whiskers
  and thresholds (sufficiency, minimality, necessity).
- :func:`checkpoint_chart`: one claim's value over training checkpoints, a line
  with interval whiskers, points coloured by verdict and dashed thresholds.
- :func:`curve_chart`: a faithfulness curve, recovery against the fraction of
  the graph kept, with its interval band and the line of full recovery.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Sequence

from markupsafe import Markup, escape

from ..claims.format import number as format_number  # one number format for every claim and chart

FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif"
MONO = "ui-monospace, SFMono-Regular, Menlo, Consolas, monospace"
INK = "#1d2430"
MUTED = "#5b6573"
GRID = "#d8dee6"
HELD = "#1a7f4b"
FAILED = "#c0392b"
NEUTRAL = "#6b7a90"
STATUS_COLOURS = {"held": HELD, "failed": FAILED, "neutral": NEUTRAL}

# ColorBrewer RdBu (11 classes), negative blue -> white -> positive red.
_DIVERGING = ["#053061", "#2166ac", "#4393c3", "#92c5de", "#d1e5f0", "#f7f7f7",
              "#fddbc7", "#f4a582", "#d6604d", "#b2182b", "#67001f"]
# ColorBrewer Blues (9 classes), 0 white -> 1 dark blue.
_SEQUENTIAL = ["#f7fbff", "#deebf7", "#c6dbef", "#9ecae1", "#6baed6", "#4292c6", "#2171b5", "#08519c", "#08306b"]
_MISSING = "#e5e7eb"


# Colour scales ------------------------------------------------------------------------


@dataclass(frozen=True)
class ColorScale:
    """Maps a number to a colour: ``diverging`` (centred at 0, ±``vmax``) or ``sequential`` (``vmin``..``vmax``)."""

    kind: str
    vmin: float
    vmax: float

    @classmethod
    def diverging(cls, values: Sequence[Sequence[float | None]]) -> "ColorScale":
        """Data-driven but symmetric around 0 (±the largest |value|), so that white means 0 and hue gives the sign.

        For raw values (a mean metric) whose units have no natural range.
        """
        finite = [abs(v) for row in values for v in row if _finite(v)]
        vmax = max(finite, default=0.0) or 1.0
        return cls("diverging", -vmax, vmax)

    @classmethod
    def normalized(cls) -> "ColorScale":
        """The fixed scale of normalised values: [-1, 1] whatever the data, white at 0, saturated at ±1 and beyond.

        Every normalised map shares it, so noise of ±0.02 stays pale and an
        effect of 1.0 is saturated in every sweep (a per-sweep scale would
        stretch noise to full colour); :func:`value_range` gives the raw range
        to print beside the legend.
        """
        return cls("diverging", -1.0, 1.0)

    @classmethod
    def sequential(cls, vmin: float = 0.0, vmax: float = 1.0) -> "ColorScale":
        return cls("sequential", vmin, vmax if vmax > vmin else vmin + 1.0)

    def color(self, value: float | None) -> str:
        if not _finite(value):
            return _MISSING
        if self.kind == "diverging":
            t = 0.5 + 0.5 * value / self.vmax
            return _interpolate(_DIVERGING, t)
        return _interpolate(_SEQUENTIAL, (value - self.vmin) / (self.vmax - self.vmin))


def _interpolate(anchors: list[str], t: float) -> str:
    t = min(1.0, max(0.0, t))
    x = t * (len(anchors) - 1)
    i = min(int(x), len(anchors) - 2)
    frac = x - i
    a, b = _rgb(anchors[i]), _rgb(anchors[i + 1])
    return "#" + "".join(f"{round(p + (q - p) * frac):02x}" for p, q in zip(a, b))


def _rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def _text_colour(background: str) -> str:
    r, g, b = _rgb(background)
    luminance = (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255
    return INK if luminance > 0.55 else "#ffffff"


# Markup drawn once per page ------------------------------------------------------------


class SharedMarkup:
    """Pieces of SVG drawn once per HTML page and referenced after that (``<use href="#id">``).

    Claims that share an input draw the same axis labels (the prompt's tokens),
    the same colour legend and, for the same head, the same cells; one
    registry per rendered page keeps the first copy and turns every later copy
    into a reference of a few dozen bytes, so the page grows with the distinct
    pictures, not with the claims. The id is the content's hash: two pages
    shown side by side (notebook outputs) can only ever refer to identical markup.
    """

    def __init__(self) -> None:
        self._drawn: set[str] = set()

    def once(self, body: str, style: str = "") -> str:
        """``body`` in a ``<g id>`` the first time, a ``<use>`` of it every later time.

        The page's style sheet does not reach into a ``<use>``'s copy (its
        selectors such as ``svg.chart text.tick`` match the original only), so
        text in ``body`` must be styled by presentation attributes: ``style``
        is put on the group (e.g. :data:`TEXT_STYLE`), where the copy inherits it.
        """
        if not body:
            return body
        ref = "cc-" + hashlib.sha1((style + body).encode("utf-8")).hexdigest()[:16]
        if ref in self._drawn:
            return f'<use href="#{ref}"/>'
        self._drawn.add(ref)
        return f'<g id="{ref}"{style}>{body}</g>'


def _once(shared: SharedMarkup | None, body: str, style: str = "") -> str:
    return shared.once(body, style) if shared is not None else body


#: What the report's style sheet gives chart text (``svg.chart text.tick``), as attributes a ``<use>`` copy inherits.
TEXT_STYLE = f' font-size="11" fill="{MUTED}" font-family="{FONT}"'
#: The axis titles' weight (``svg.chart text.axis-title``), for text drawn inside shared markup.
_AXIS_TITLE = 'font-weight="600"'


# Heatmaps -----------------------------------------------------------------------------

#: Beyond this many cells a heatmap is drawn compactly: colours in COMPACT_LEVELS steps, one path per
#: colour, hover per row (its largest value). One rect and title per cell made a 41 x 41 attention
#: pattern 120 kB of the page; compactly it is a few kB.
COMPACT_CELLS = 150  # where cells stop printing their values (heatmap's show_values)
COMPACT_LEVELS = 32


def heatmap(
    values: Sequence[Sequence[float | None]],
    rows: Sequence[str],
    columns: Sequence[str],
    *,
    scale: ColorScale,
    row_title: str,
    column_title: str,
    label: str,
    value_name: str = "value",
    hover_extra: Sequence[Sequence[str]] | None = None,
    highlight: set[tuple[int, int]] | frozenset = frozenset(),
    show_values: bool | None = None,
    target_width: int = 640,
    background_value: float | None = None,
    css_class: str = "",
    compact: bool | None = None,
    shared: SharedMarkup | None = None,
) -> Markup:
    """A ``len(rows) x len(columns)`` grid of cells coloured by ``scale``.

    Each cell carries a ``<title>`` ("row_title r, column_title c: value_name v"
    plus ``hover_extra[i][j]``) for hover. Cells in ``highlight`` get a dark
    outline (e.g. the head a claim is about). Values are printed in the cells
    when they are big enough (or as ``show_values`` says). Cells exactly equal
    to ``background_value`` are not drawn one by one but left to a background
    of that colour (the masked upper triangle of an attention pattern), which
    halves the size of big maps. ``css_class`` is added to the ``<svg>``'s classes.

    ``compact`` (default: more than :data:`COMPACT_CELLS` cells) draws the
    colours in :data:`COMPACT_LEVELS` steps of the scale, one path per colour
    (runs of equal cells merged), and gives each row one hover text with its
    largest value in place of a title per cell; the exact values stay in the
    results JSON. ``shared`` draws the axis labels and cells once per page and
    references them in every later map with the same ones.
    """
    n_rows, n_cols = len(rows), len(columns)
    cell = int(max(9, min(40, target_width // max(n_cols, 1))))
    if show_values is None:
        # "0.83" needs ~30 px at 11 px; beyond a few hundred cells numbers are noise, the colour says it
        show_values = cell >= 30 and n_rows * n_cols <= 150
    rows_text = [_clip(str(r), 16) for r in rows]
    cols_text = [_clip(str(c), 16) for c in columns]
    rotate = n_cols > 0 and (max(len(c) for c in cols_text) * 6.6 > cell - 2)
    col_label_px = max((len(c) for c in cols_text), default=1) * 6.6
    top = round((col_label_px * 0.82 + 14 if rotate else 20) + 30)
    left = round(max(max((len(r) for r in rows_text), default=1) * 6.6 + 14, len(row_title) * 6.6 + 18, 40))
    right = (col_label_px * 0.57 + 8) if rotate else 8
    width = left + n_cols * cell + right
    height = top + n_rows * cell + 6
    if compact is None:
        compact = n_rows * n_cols > COMPACT_CELLS
    svg_open = _svg_open(width, height, label, _classes("heatmap", css_class))
    parts: list[str] = []
    # axis titles, in the top-left corner
    # shared labels are styled on their group (mono ticks); the two axis titles say their own font
    title_style = f' {_AXIS_TITLE} font-family="{FONT}"' if shared is not None else ""
    parts.append(
        f'<text x="{left - 8:.1f}" y="{top - 22 if not rotate else 14:.1f}" text-anchor="end" class="axis-title"{title_style}>'
        f"{escape(column_title)} &#8594;</text>"
    )
    parts.append(
        f'<text x="{left - 8:.1f}" y="{top - 6:.1f}" text-anchor="end" class="axis-title"{title_style}>{escape(row_title)} &#8595;</text>'
    )
    for j, text in enumerate(cols_text):
        x = left + j * cell + cell / 2
        if rotate:
            whole = f"<title>{escape(column_title)} {escape(columns[j])}</title>" if text != str(columns[j]) or not compact else ""
            parts.append(
                f'<text x="{x:.1f}" y="{top - 5:.1f}" transform="rotate(-55 {x:.1f} {top - 5:.1f})" class="tick mono">'
                f"{escape(text)}{whole}</text>"
            )
        else:
            parts.append(f'<text x="{x:.1f}" y="{top - 6:.1f}" text-anchor="middle" class="tick mono">{escape(text)}</text>')
    for i, text in enumerate(rows_text):
        y = top + i * cell + cell / 2 + 4
        whole = f"<title>{escape(row_title)} {escape(rows[i])}</title>" if text != str(rows[i]) or not compact else ""
        parts.append(f'<text x="{left - 6:.1f}" y="{y:.1f}" text-anchor="end" class="tick mono">{escape(text)}{whole}</text>')
    labels_markup, parts = "".join(parts), []
    font = max(8, min(12, cell * 0.32))
    if background_value is not None:
        fill = scale.color(background_value)
        parts.append(f'<rect x="{left}" y="{top}" width="{n_cols * cell}" height="{n_rows * cell}" fill="{fill}"/>')
    if compact:
        parts.append(_compact_cells(values, rows, columns, scale, left, top, cell, row_title, column_title, value_name,
                                    background_value))
    for i in range(n_rows if not compact else 0):
        for j in range(n_cols):
            value = values[i][j] if j < len(values[i]) else None
            colour = scale.color(value)
            x, y = left + j * cell, top + i * cell
            if background_value is not None and value == background_value and (i, j) not in highlight:
                continue
            hover = f"{row_title} {rows[i]}, {column_title} {columns[j]}: {value_name} {format_number(value)}"
            if hover_extra is not None and hover_extra[i][j]:
                hover += f" ({hover_extra[i][j]})"
            parts.append(
                f'<rect class="cell" x="{x}" y="{y}" width="{cell}" height="{cell}" fill="{colour}">'
                f"<title>{escape(hover)}</title></rect>"
            )
            if show_values and _finite(value):
                parts.append(
                    f'<text x="{x + cell / 2:.1f}" y="{y + cell / 2 + font * 0.35:.1f}" text-anchor="middle" '
                    f'style="font-size:{font:.1f}px;fill:{_text_colour(colour)}" class="cell-value">{_cell_text(value)}</text>'
                )
    cells_markup, parts = "".join(parts), []
    for i, j in sorted(highlight):
        if 0 <= i < n_rows and 0 <= j < n_cols:
            parts.append(
                f'<rect x="{left + j * cell + 1:.1f}" y="{top + i * cell + 1:.1f}" width="{cell - 2}" height="{cell - 2}" '
                f'fill="none" stroke="{INK}" stroke-width="2" class="highlight"/>'
            )
    parts.append(f'<rect x="{left:.1f}" y="{top:.1f}" width="{n_cols * cell}" height="{n_rows * cell}" fill="none" stroke="{GRID}"/>')
    parts.append("</svg>")
    return Markup(svg_open + _once(shared, labels_markup, f' font-size="11" fill="{MUTED}" font-family="{MONO}"') + _once(shared, cells_markup, f' font-family="{MONO}"') + "".join(parts))


def _compact_cells(values, rows, columns, scale: ColorScale, left: int, top: int, cell: int, row_title: str,
                   column_title: str, value_name: str, background_value: float | None) -> str:
    """A big map's cells: colours in COMPACT_LEVELS steps, one ``<path>`` of cell-thick strokes per colour, one hover ``<rect>`` per row."""
    background = scale.color(background_value) if background_value is not None else None
    runs: dict[str, list[str]] = {}
    hovers = []
    for i, row in enumerate(values):
        y = top + i * cell
        colours = [scale.color(_quantized(row[j] if j < len(row) else None, scale)) for j in range(len(columns))]
        j = 0
        while j < len(columns):
            k = j + 1
            while k < len(columns) and colours[k] == colours[j]:
                k += 1
            if colours[j] != background:  # a run of equal cells: one horizontal stroke as thick as a cell
                runs.setdefault(colours[j], []).append(f"M{left + j * cell} {y + cell / 2:g}h{(k - j) * cell}")
            j = k
        shown = sorted(((v, c) for c, v in zip(columns, row) if _finite(v)), key=lambda vc: -abs(vc[0]))[:1]
        text = ", ".join(f"largest at {column_title} {c}: {format_number(v)}" for v, c in shown) or "no values"
        hovers.append(f'<rect x="{left}" y="{y}" width="{len(columns) * cell}" height="{cell}">'
                      f'<title>{escape(f"{row_title} {rows[i]}: {text}")}</title></rect>')
    paths = "".join(f'<path class="cells" stroke="{colour}" stroke-width="{cell}" d="{"".join(d)}"/>' for colour, d in runs.items())
    # hover over a row: its largest |value| and where it is (attention: the keys a query attends to most)
    what = f"hover a {row_title} for its largest {value_name} and the {column_title} it is at"
    return paths + f'<g class="row-hover" fill="transparent"><desc>{escape(what)}</desc>{"".join(hovers)}</g>'



def _quantized(value: float | None, scale: ColorScale) -> float | None:
    """``value`` moved to the nearest of COMPACT_LEVELS steps of the scale (a colour difference nobody can see)."""
    if not _finite(value):
        return None
    step = (scale.vmax - scale.vmin) / COMPACT_LEVELS
    return scale.vmin + round((value - scale.vmin) / step) * step


def value_range(values: Sequence[Sequence[float | None]]) -> tuple[float, float] | None:
    """(min, max) of the finite values of a matrix, None when it has none."""
    finite = [v for row in values for v in row if _finite(v)]
    return (min(finite), max(finite)) if finite else None


def range_text(values: Sequence[Sequence[float | None]], scale: ColorScale, name: str = "values") -> str:
    """``values -0.0213 to 1.13 (beyond the scale: saturated)``: the raw range of a map for beside its legend."""
    span = value_range(values)
    if span is None:
        return f"{name}: none finite"
    text = f"{name} {format_number(span[0])} to {format_number(span[1])}"
    if span[0] < scale.vmin or span[1] > scale.vmax:
        text += " (beyond the scale: saturated)"
    return text


def legend(scale: ColorScale, title: str, *, width: int = 240, steps: int = 32, note: str = "",
           shared: SharedMarkup | None = None) -> Markup:
    """The colour bar of ``scale`` with its ends (and 0 for diverging scales) labelled; ``note`` is printed beside the bar.

    ``note`` is where a fixed scale states the data's raw range (:func:`range_text`); ``shared`` draws
    the colour bar and its ticks once per page.
    """
    left, bar_w, bar_h = 10, width - 20, 12
    height = 48
    total = width + (round(len(note) * 6.6) + 12 if note else 0)
    parts = [_svg_open(total, height, f"colour legend: {title}" + (f"; {note}" if note else ""), "legend")]
    if note:
        parts.append(f'<text x="{width + 4}" y="28" class="axis-title range">{escape(note)}</text>')
    parts.append(f'<text x="{left}" y="12" class="axis-title">{escape(title)}</text>')
    svg_open, parts = "".join(parts), []
    step_w = bar_w / steps
    for k in range(steps):
        value = scale.vmin + (scale.vmax - scale.vmin) * (k + 0.5) / steps
        parts.append(f'<rect x="{left + k * step_w:.2f}" y="18" width="{step_w + 0.4:.2f}" height="{bar_h}" fill="{scale.color(value)}"/>')
    parts.append(f'<rect x="{left}" y="18" width="{bar_w}" height="{bar_h}" fill="none" stroke="{GRID}"/>')
    ticks = [(scale.vmin, "start"), (scale.vmax, "end")]
    if scale.kind == "diverging":
        ticks.insert(1, (0.0, "middle"))
    for value, anchor in ticks:
        x = left + (value - scale.vmin) / (scale.vmax - scale.vmin) * bar_w
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="30" y2="34" stroke="{MUTED}"/>')
        parts.append(f'<text x="{x:.1f}" y="44" text-anchor="{anchor}" class="tick">{format_number(value, 2)}</text>')
    return Markup(svg_open + _once(shared, "".join(parts), TEXT_STYLE) + "</svg>")


# Bars with confidence intervals -------------------------------------------------------


@dataclass
class IntervalRow:
    """One bar: ``value`` with its interval [``low``, ``high``]; ``status`` colours it (held, failed, neutral)."""

    label: str
    value: float | None
    low: float | None = None
    high: float | None = None
    status: str = "neutral"
    threshold: float | None = None
    title: str = ""
    colour: str | None = None  # overrides the status colour (e.g. the sign of a direct effect)
    highlight: bool = False  # outlined, label in bold: the component a claim is about
    note: str = ""  # shown after the value, e.g. "top-1 0.20"


def interval_chart(
    rows: Sequence[IntervalRow],
    *,
    label: str,
    axis_label: str,
    threshold: float | None = None,
    threshold_label: str = "threshold",
    include: Sequence[float] = (0.0,),
    plot_width: int = 440,
    css_class: str = "",
) -> Markup:
    """Horizontal bars from 0 to each row's value, a whisker for its interval and thresholds.

    ``threshold`` draws one dashed line across the chart (minimality's
    ``min_contribution``); a row's own ``threshold`` draws a tick on that row
    only (sufficiency claims may each have their own ``min_recovery``).
    ``include`` widens the axis to show these values (e.g. ``(0, 1)`` for recovery).
    A row's ``colour`` overrides its status colour, ``highlight`` outlines it and
    ``note`` follows its value; ``css_class`` is added to the ``<svg>``'s classes.
    """
    numbers = list(include)
    for row in rows:
        numbers += [v for v in (row.value, row.low, row.high, row.threshold) if _finite(v)]
    if _finite(threshold):
        numbers.append(threshold)
    lo, hi = min(numbers, default=0.0), max(numbers, default=1.0)
    ticks = nice_ticks(lo, hi)
    lo, hi = min(lo, ticks[0]), max(hi, ticks[-1])
    labels = [_clip(row.label, 34) for row in rows]
    row_h, top, bottom = 28, 30, 40
    left = max(max((len(text) for text in labels), default=4) * 6.9 + 16, 60)
    annotation_w = 170 + max((len(row.note) for row in rows), default=0) * 6.6
    width = left + plot_width + annotation_w
    height = top + row_h * len(rows) + bottom

    def x_of(value: float) -> float:
        return left + (value - lo) / (hi - lo) * plot_width

    parts = [_svg_open(width, height, label, _classes("interval-chart", css_class))]
    for tick in ticks:
        x = x_of(tick)
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top - 6}" y2="{height - bottom + 4}" stroke="{GRID}" stroke-width="1"/>')
        text = format_number(tick, _tick_digits(ticks))
        parts.append(f'<text x="{x:.1f}" y="{height - bottom + 18}" text-anchor="middle" class="tick">{text}</text>')
    parts.append(
        f'<text x="{left + plot_width / 2:.1f}" y="{height - 6}" text-anchor="middle" class="axis-title">{escape(axis_label)}</text>'
    )
    zero = x_of(0.0) if lo <= 0.0 <= hi else x_of(lo)
    parts.append(f'<line x1="{zero:.1f}" x2="{zero:.1f}" y1="{top - 6}" y2="{height - bottom + 4}" stroke="{MUTED}" stroke-width="1"/>')
    for i, row in enumerate(rows):
        y = top + i * row_h
        mid = y + row_h / 2
        colour = row.colour or STATUS_COLOURS.get(row.status, NEUTRAL)
        hover = row.title or row.label
        parts.append(f'<g class="bar-row{" claimed" if row.highlight else ""}"><title>{escape(hover)}</title>')
        parts.append(
            f'<rect x="{left - 4:.1f}" y="{y + 1:.1f}" width="{plot_width + 8}" height="{row_h - 2}" fill="transparent" class="row-hit"/>'
        )
        if row.highlight:
            parts.append(
                f'<rect x="{left - 4:.1f}" y="{y + 2:.1f}" width="{plot_width + 8}" height="{row_h - 4}" rx="3" fill="none" '
                f'stroke="{INK}" stroke-width="1.5" class="highlight"/>'
            )
        weight = ' style="font-weight:700"' if row.highlight else ""
        parts.append(
            f'<text x="{left - 10:.1f}" y="{mid + 4:.1f}" text-anchor="end" class="bar-label mono"{weight}>{escape(labels[i])}</text>'
        )
        if _finite(row.value):
            x0, x1 = sorted((zero, x_of(row.value)))
            parts.append(
                f'<rect x="{x0:.1f}" y="{mid - 7:.1f}" width="{max(x1 - x0, 1):.1f}" height="14" rx="2" '
                f'fill="{colour}" fill-opacity="0.35"/>'
            )
        if _finite(row.low) and _finite(row.high):
            a, b = x_of(row.low), x_of(row.high)
            # the interval and its two end ticks in one path
            parts.append(
                f'<path d="M{a:.1f} {mid:.1f}H{b:.1f}M{a:.1f} {mid - 6:.1f}V{mid + 6:.1f}M{b:.1f} {mid - 6:.1f}V{mid + 6:.1f}" '
                f'stroke="{colour}" stroke-width="2" class="interval"/>'
            )
        if _finite(row.value):
            parts.append(f'<circle cx="{x_of(row.value):.1f}" cy="{mid:.1f}" r="3.5" fill="{colour}"/>')
        if _finite(row.threshold):
            x = x_of(row.threshold)
            parts.append(
                f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y + 2:.1f}" y2="{y + row_h - 2:.1f}" '
                f'stroke="{INK}" stroke-width="2" stroke-dasharray="3 2" class="threshold"/>'
            )
        text = format_number(row.value)
        if _finite(row.low) and _finite(row.high):
            text += f"  [{format_number(row.low)}, {format_number(row.high)}]"
        if row.note:
            text += f"  {row.note}"
        parts.append(f'<text x="{left + plot_width + 12:.1f}" y="{mid + 4:.1f}" class="bar-value mono">{escape(text)}</text>')
        parts.append("</g>")
    if _finite(threshold):
        x = x_of(threshold)
        parts.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top - 8}" y2="{height - bottom + 4}" '
            f'stroke="{INK}" stroke-width="1.5" stroke-dasharray="5 3" class="threshold"/>'
        )
        parts.append(
            f'<text x="{x:.1f}" y="{top - 12}" text-anchor="middle" class="axis-title">'
            f"{escape(threshold_label)} {format_number(threshold)}</text>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))


# A claim over checkpoints -------------------------------------------------------------


@dataclass
class CheckpointPoint:
    """One checkpoint of a :func:`checkpoint_chart`: its value, interval, thresholds and verdict (held, failed, neutral)."""

    checkpoint: str
    value: float | None
    low: float | None = None
    high: float | None = None
    min_value: float | None = None
    max_value: float | None = None
    status: str = "neutral"
    title: str = ""
    href: str | None = None


def checkpoint_chart(points: Sequence[CheckpointPoint], *, label: str, axis_label: str, plot_height: int = 170) -> Markup:
    """A line chart of one claim's value over checkpoints, in the order given, evenly spaced.

    Each point is coloured by its verdict and carries a ``<title>`` (and a link
    to the claim when ``href`` is set); ``low``/``high`` draw interval whiskers.
    ``min_value``/``max_value`` draw dashed threshold lines (a straight line when
    every checkpoint has the same threshold, else one through each checkpoint's),
    and a constant threshold tints the side of it where the claim fails.
    """
    n = len(points)
    numbers = [v for p in points for v in (p.value, p.low, p.high, p.min_value, p.max_value) if _finite(v)]
    lo, hi = min(numbers, default=0.0), max(numbers, default=1.0)
    ticks = nice_ticks(lo, hi)
    lo, hi = min(lo, ticks[0]), max(hi, ticks[-1])
    digits = _tick_digits(ticks)
    tick_texts = [format_number(t, digits) for t in ticks]
    labels = [_clip(p.checkpoint, 14) for p in points]
    step = max(52.0, min(96.0, 600.0 / max(n, 1)))
    step = max(step, 320.0 / max(n, 1))  # two or three checkpoints still get a chart of a readable width
    rotate = max((len(text) for text in labels), default=0) * 6.6 > step - 6
    left = max(max(len(t) for t in tick_texts) * 6.6 + 16, 44)
    plot_w = step * n
    constant = {name: _constant([getattr(p, name) for p in points]) for name in ("min_value", "max_value")}
    right = 78 if any(_finite(v) for p in points for v in (p.min_value, p.max_value)) else 12
    top = 26
    label_h = (max(len(t) for t in labels) * 6.6 * 0.82 + 14) if rotate else 20
    bottom = label_h + 24
    width = left + plot_w + right
    height = top + plot_height + bottom
    y_top, y_bottom = top, top + plot_height

    def x_of(i: int) -> float:
        return left + step * (i + 0.5)

    def y_of(value: float) -> float:
        return y_bottom - (value - lo) / (hi - lo) * plot_height

    parts = [_svg_open(width, height, label, "checkpoint-chart")]
    parts.append(f'<text x="{left - 8:.1f}" y="{top - 12}" class="axis-title">{escape(_clip(axis_label, 60))}</text>')
    # the side of a constant threshold where the claim fails, faintly tinted
    for name, fails_below in (("min_value", True), ("max_value", False)):
        bound = constant[name]
        if _finite(bound) and lo < bound < hi:
            y = y_of(bound)
            y0, y1 = (y, y_bottom) if fails_below else (y_top, y)
            parts.append(
                f'<rect x="{left}" y="{y0:.1f}" width="{plot_w:.1f}" height="{y1 - y0:.1f}" fill="{FAILED}" fill-opacity="0.06" '
                f'class="fail-region"/>'
            )
    for tick, text in zip(ticks, tick_texts):
        y = y_of(tick)
        parts.append(f'<line x1="{left}" x2="{left + plot_w:.1f}" y1="{y:.1f}" y2="{y:.1f}" stroke="{GRID}" stroke-width="1"/>')
        parts.append(f'<text x="{left - 6:.1f}" y="{y + 4:.1f}" text-anchor="end" class="tick">{text}</text>')
    parts.append(f'<line x1="{left}" x2="{left + plot_w:.1f}" y1="{y_bottom}" y2="{y_bottom}" stroke="{MUTED}" stroke-width="1"/>')
    for i, text in enumerate(labels):
        x = x_of(i)
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y_bottom}" y2="{y_bottom + 4}" stroke="{MUTED}"/>')
        whole = f"<title>{escape(points[i].checkpoint)}</title>" if text != points[i].checkpoint else ""
        if rotate:
            parts.append(
                f'<text x="{x:.1f}" y="{y_bottom + 14}" transform="rotate(-40 {x:.1f} {y_bottom + 14})" text-anchor="end" '
                f'class="tick mono checkpoint-label">{escape(text)}{whole}</text>'
            )
        else:
            parts.append(
                f'<text x="{x:.1f}" y="{y_bottom + 16}" text-anchor="middle" class="tick mono checkpoint-label">'
                f"{escape(text)}{whole}</text>"
            )
    parts.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 6:.1f}" text-anchor="middle" class="axis-title">checkpoint</text>')
    # thresholds: dashed, labelled at the right end
    for name, word in (("min_value", "min"), ("max_value", "max")):
        bounds = [getattr(p, name) for p in points]
        if not any(_finite(b) for b in bounds):
            continue
        if _finite(constant[name]):
            ys = [(left, y_of(constant[name])), (left + plot_w, y_of(constant[name]))]
        else:
            ys = [(x_of(i), y_of(b)) for i, b in enumerate(bounds) if _finite(b)]
        coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in ys)
        parts.append(
            f'<polyline points="{coords}" fill="none" stroke="{INK}" stroke-width="1.5" stroke-dasharray="5 3" class="threshold {word}">'
            f"<title>required {word} {escape(' / '.join(format_number(b) for b in _distinct(bounds)))}</title></polyline>"
        )
        last = next(b for b in reversed(bounds) if _finite(b))
        parts.append(
            f'<text x="{left + plot_w + 6:.1f}" y="{y_of(last) + 4:.1f}" class="axis-title threshold-label">'
            f"{word} {format_number(last)}</text>"
        )
    # the measured values: a line through them (broken where one is missing), whiskers, then the points on top
    run: list[str] = []
    for i, p in enumerate([*points, None]):
        if p is not None and _finite(p.value):
            run.append(f"{x_of(i):.1f},{y_of(p.value):.1f}")
            continue
        if len(run) > 1:
            parts.append(f'<polyline points="{" ".join(run)}" fill="none" stroke="{MUTED}" stroke-width="1.5" class="value-line"/>')
        run = []
    for i, p in enumerate(points):
        if _finite(p.low) and _finite(p.high):
            colour = STATUS_COLOURS.get(p.status, NEUTRAL)
            x, a, b = x_of(i), y_of(p.low), y_of(p.high)
            parts.append(
                f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{a:.1f}" y2="{b:.1f}" stroke="{colour}" stroke-width="1.5" class="whisker"/>'
            )
            for y in (a, b):
                parts.append(f'<line x1="{x - 4:.1f}" x2="{x + 4:.1f}" y1="{y:.1f}" y2="{y:.1f}" stroke="{colour}" stroke-width="1.5"/>')
    for i, p in enumerate(points):
        if not _finite(p.value):
            continue
        colour = STATUS_COLOURS.get(p.status, NEUTRAL)
        point = (
            f'<g class="point {escape(p.status)}"><title>{escape(p.title or f"{p.checkpoint}: {format_number(p.value)}")}</title>'
            f'<circle cx="{x_of(i):.1f}" cy="{y_of(p.value):.1f}" r="4.5" fill="{colour}" stroke="#ffffff" stroke-width="1.5"/></g>'
        )
        parts.append(f'<a href="{escape(p.href)}">{point}</a>' if p.href else point)
    parts.append("</svg>")
    return Markup("".join(parts))


# A faithfulness curve -------------------------------------------------------------------


@dataclass
class CurvePoint:
    """One point of a :func:`curve_chart`: the fraction of the graph kept, how many items, recovery and its interval."""

    fraction: float
    n: int
    value: float | None
    low: float | None = None
    high: float | None = None


def curve_chart(points: Sequence[CurvePoint], *, label: str, status: str = "neutral", plot_width: int = 460,
                plot_height: int = 190, note: str = "") -> Markup:
    """Recovery against the fraction of the graph kept: a line through the points, the interval as a band, y = 0 and 1 marked.

    The x axis is logarithmic when every fraction is above 0 and they span two
    decades or more (MIB's points, 0.1% to 100%), else linear; the areas the
    claim decides on are over the axis the claim chose, which ``note`` states.
    """
    shown = [p for p in points if _finite(p.fraction)]
    log_x = bool(shown) and all(p.fraction > 0 for p in shown) and max(p.fraction for p in shown) / min(p.fraction for p in shown) >= 100
    xs = [math.log10(p.fraction) if log_x else p.fraction for p in shown]
    x_lo, x_hi = (min(xs), max(xs)) if xs else (0.0, 1.0)
    if x_hi == x_lo:
        x_lo, x_hi = x_lo - 0.5, x_hi + 0.5
    numbers = [0.0, 1.0] + [v for p in shown for v in (p.value, p.low, p.high) if _finite(v)]
    ticks = nice_ticks(min(numbers), max(numbers))
    lo, hi = min(min(numbers), ticks[0]), max(max(numbers), ticks[-1])
    digits = _tick_digits(ticks)
    left, top, right = 52, 16, 16
    bottom = 44 + (16 if note else 0)
    width, height = left + plot_width + right, top + plot_height + bottom
    y_bottom = top + plot_height

    def x_of(x: float) -> float:
        return left + (x - x_lo) / (x_hi - x_lo) * plot_width

    def y_of(value: float) -> float:
        return y_bottom - (value - lo) / (hi - lo) * plot_height

    parts = [_svg_open(width, height, label, "curve-chart")]
    for tick in ticks:
        y = y_of(tick)
        parts.append(f'<line x1="{left}" x2="{left + plot_width}" y1="{y:.1f}" y2="{y:.1f}" stroke="{GRID}" stroke-width="1"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">{format_number(tick, digits)}</text>')
    for level, word in ((1.0, "full model"), (0.0, "all ablated")):
        y = y_of(level)
        parts.append(f'<line x1="{left}" x2="{left + plot_width}" y1="{y:.1f}" y2="{y:.1f}" stroke="{INK}" stroke-width="1" '
                     f'stroke-dasharray="5 3" class="reference"><title>recovery {format_number(level)}: {word}</title></line>')
    if log_x:
        x_ticks = [10.0 ** e for e in range(math.floor(x_lo), math.ceil(x_hi) + 1) if x_lo - 1e-9 <= e <= x_hi + 1e-9]
    else:
        x_ticks = nice_ticks(x_lo, x_hi)
    for tick in x_ticks:
        x = x_of(math.log10(tick) if log_x else tick)
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{y_bottom}" stroke="{GRID}" stroke-width="1"/>')
        text = f"{tick * 100:g}%" if log_x else format_number(tick, _tick_digits(x_ticks))
        parts.append(f'<text x="{x:.1f}" y="{y_bottom + 16}" text-anchor="middle" class="tick">{escape(text)}</text>')
    axis = "share of the graph kept" + (" (log scale)" if log_x else "")
    parts.append(f'<text x="{left + plot_width / 2:.1f}" y="{y_bottom + 34}" text-anchor="middle" class="axis-title">{axis}</text>')
    if note:
        parts.append(f'<text x="{left + plot_width / 2:.1f}" y="{y_bottom + 50}" text-anchor="middle" class="axis-title">'
                     f"{escape(_clip(note, 90))}</text>")
    colour = STATUS_COLOURS.get(status, NEUTRAL)
    band = [(x, p) for x, p in zip(xs, shown) if _finite(p.low) and _finite(p.high)]
    if len(band) > 1:
        upper = [f"{x_of(x):.1f},{y_of(p.high):.1f}" for x, p in band]
        lower = [f"{x_of(x):.1f},{y_of(p.low):.1f}" for x, p in reversed(band)]
        parts.append(f'<polygon points="{" ".join(upper + lower)}" fill="{colour}" fill-opacity="0.15" stroke="none" class="band"/>')
    line = [f"{x_of(x):.1f},{y_of(p.value):.1f}" for x, p in zip(xs, shown) if _finite(p.value)]
    if len(line) > 1:
        parts.append(f'<polyline points="{" ".join(line)}" fill="none" stroke="{colour}" stroke-width="2" class="value-line"/>')
    for x, p in zip(xs, shown):
        if not _finite(p.value):
            continue
        interval = f" [{format_number(p.low)}, {format_number(p.high)}]" if _finite(p.low) and _finite(p.high) else ""
        parts.append(f'<g class="point"><title>top {p.n} ({p.fraction * 100:.3g}% of the graph): recovery '
                     f"{escape(format_number(p.value))}{escape(interval)}</title>"
                     f'<circle cx="{x_of(x):.1f}" cy="{y_of(p.value):.1f}" r="3.5" fill="{colour}" stroke="#ffffff" stroke-width="1"/></g>')
    parts.append(f'<text x="{left - 40}" y="{top + plot_height / 2:.1f}" transform="rotate(-90 {left - 40} {top + plot_height / 2:.1f})" '
                 f'text-anchor="middle" class="axis-title">recovery</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def _constant(values: Sequence[float | None]) -> float | None:
    """The one value every entry has (missing ones aside); None when they differ or none is set."""
    distinct = _distinct(values)
    return distinct[0] if len(distinct) == 1 else None


def _distinct(values: Sequence[float | None]) -> list[float]:
    out: list[float] = []
    for value in values:
        if _finite(value) and value not in out:
            out.append(value)
    return out


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values (steps of 1, 2 or 5 x 10^k) covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        lo, hi = 0.0, 1.0
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    raw = (hi - lo) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    start = math.floor(lo / step + 1e-9) * step
    ticks = [round(start, 12)]
    while ticks[-1] < hi - step * 1e-9 and len(ticks) < 4 * count:
        ticks.append(round(start + len(ticks) * step, 12))
    return ticks


def _tick_digits(ticks: Sequence[float]) -> int:
    """Decimals that show every tick exactly (0.25 needs 2, 0.2 needs 1)."""
    if len(ticks) < 2:
        return 2
    step = abs(ticks[1] - ticks[0])
    for digits in range(0, 6):
        if abs(round(step, digits) - step) < step * 1e-6:
            return digits
    return 6


# Helpers --------------------------------------------------------------------------------


def _cell_text(value: float) -> str:
    """Two decimals, or 3 significant digits for big values: what fits in a cell."""
    return f"{value:.2f}" if abs(value) < 100 else f"{value:.3g}"


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _classes(base: str, extra: str) -> str:
    return f"{base} {extra}" if extra else base


def _svg_open(width: float, height: float, label: str, css_class: str) -> str:
    return (
        f'<svg class="chart {css_class}" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" role="img" aria-label="{escape(label)}">'
        f"<title>{escape(label)}</title>"
    )
