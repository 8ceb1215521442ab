"""Tables and values as JSON: what travels from a check to the report (tensors never do).

The lowest layer beside ``errors``: the engine's sweeps and probes, the claims'
results and the report all read and write tables this way. pandas is imported
only by the function that builds a DataFrame.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


def frame_to_json(frame: "pd.DataFrame") -> dict[str, Any]:
    """A DataFrame as ``{"index", "columns", "data", "index_name", "columns_name"}`` (JSON-safe)."""
    return {
        "index": json_safe(list(frame.index)),
        "columns": json_safe(list(frame.columns)),
        "index_name": frame.index.name,
        "columns_name": frame.columns.name,
        "data": json_safe(frame.to_numpy().tolist()),
    }


def frame_from_json(data: dict[str, Any]) -> "pd.DataFrame":
    """The DataFrame :func:`frame_to_json` wrote."""
    import pandas as pd

    frame = pd.DataFrame(data["data"], index=data["index"], columns=data["columns"])
    frame.index.name = data.get("index_name")
    frame.columns.name = data.get("columns_name")
    return frame


def json_number(value):
    """A float, or None for a missing or non-finite value (JSON has no NaN)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def json_safe(value):
    """Numbers, strings, lists and dicts only: numpy/torch scalars become numbers, anything else its str()."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return json_number(value)
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # numpy / torch scalars
        return json_safe(value.item())
    return str(value)
