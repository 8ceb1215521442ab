"""Evidence tables and values as the report reads them from JSON: no pandas, so re-rendering a report is fast."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from ..claims.format import number


#: Rows of an evidence table the HTML report shows; longer tables (per-position lens top-k, per-example rows)
#: show their first rows and say so, every row stays in the results JSON.
REPORT_TABLE_ROWS = 25


@dataclass
class Frame:
    """A table as recorded by :func:`circuitcheck.tables.frame_to_json`, readable without pandas."""

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

    def head(self, rows: int = REPORT_TABLE_ROWS) -> "Frame":
        """The first ``rows`` rows (all of them when there are no more), index cut alike."""
        if len(self.data) <= rows:
            return self
        return Frame(self.index[:rows], self.columns, self.data[:rows], self.index_name, self.columns_name)

    @property
    def cut_text(self) -> str:
        """``; the first 25 here, all 160 in the results JSON`` when :meth:`head` leaves rows out, else empty."""
        if len(self.data) <= REPORT_TABLE_ROWS:
            return ""
        return f"; the first {REPORT_TABLE_ROWS} here, all {len(self.data)} in the results JSON"

    def has(self, *names: str) -> bool:
        return all(name in self.columns for name in names)

    def column(self, name: str) -> list:
        j = self.columns.index(name)
        return [row[j] if j < len(row) else None for row in self.data]

    def records(self) -> list[dict]:
        return [dict(zip(self.columns, row)) for row in self.data]

    def numeric(self) -> list[list[float | None]]:
        return [[v if is_number(v) else None for v in row] for row in self.data]



def finite(value) -> float | None:
    """``value`` as a float when it is a finite number, else None."""
    return float(value) if is_number(value) and math.isfinite(value) else None


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def same(a, b) -> bool:
    """``1 == "1"``: layers and heads come back from JSON as numbers or strings."""
    return a is not None and b is not None and str(a) == str(b)


def text_of(value) -> str:
    """A JSON value as one line of text (objects and lists as sorted JSON)."""
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    return number(value) if isinstance(value, float) else str(value)


def estimate_text(record: dict, name: str) -> str:
    """``0.812 [0.790, 0.840]``: an evidence row's ``name`` with its ``ci_low``/``ci_high``."""
    text = number(record.get(name))
    if record.get("ci_low") is not None and record.get("ci_high") is not None:
        text += f" [{number(record.get('ci_low'))}, {number(record.get('ci_high'))}]"
    return text


def means_text(frame: Frame | None) -> str:
    """``clean = 1.2 · corrupted = 0.1``: a ``means`` table (columns ``run``, ``mean_metric``) in one line."""
    if frame is None or not frame.has("run", "mean_metric"):
        return ""
    return " · ".join(f"{run} = {number(value)}" for run, value in zip(frame.column("run"), frame.column("mean_metric")))
