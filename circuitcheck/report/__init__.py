"""Run results as a document: JSON (versioned) and a self-contained HTML page.

The document is plain data built from the JSON-safe dicts that assertions
record (``CheckResult.to_dict``), so it can be written by the controller of an
xdist run and re-rendered later::

    python -m circuitcheck report results.json -o report.html
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from ..errors import CircuitCheckError

REPORT_SCHEMA = 1
GENERATOR_MARK = '<meta name="generator" content="circuitcheck">'


def new_document(environment: dict[str, Any]) -> dict[str, Any]:
    return {
        "circuitcheck_report": REPORT_SCHEMA,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "complete": False,
        "environment": environment,
        "tests": [],
    }


def summarize(document: dict[str, Any]) -> dict[str, Any]:
    """Counts of claims and tests by verdict, and of claims by kind and model."""
    claims = [claim for test in document["tests"] for claim in test["claims"]]
    by_kind: dict[str, dict[str, int]] = {}
    by_model: dict[str, dict[str, int]] = {}
    for claim in claims:
        verdict = "passed" if claim["passed"] else "failed"
        for table, key in ((by_kind, claim["kind"]), (by_model, claim.get("model") or "?")):
            row = table.setdefault(key, {"passed": 0, "failed": 0})
            row[verdict] += 1
    outcomes: dict[str, int] = {}
    for test in document["tests"]:
        outcomes[test["outcome"]] = outcomes.get(test["outcome"], 0) + 1
    return {
        "claims": len(claims),
        "claims_passed": sum(c["passed"] for c in claims),
        "claims_failed": sum(not c["passed"] for c in claims),
        "tests": outcomes,
        "by_kind": by_kind,
        "by_model": by_model,
    }


def render_html(document: dict[str, Any]) -> str:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("circuitcheck.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["num"] = _format_number
    return env.get_template("report.html.j2").render(doc=document, summary=summarize(document), generator_mark=GENERATOR_MARK)


def write_json(path: str | os.PathLike, document: dict[str, Any]) -> Path:
    path = Path(path)
    _refuse_foreign(path, kind="json")
    _atomic_write(path, json.dumps(document, indent=2, sort_keys=True, allow_nan=False) + "\n")
    return path


def write_html(path: str | os.PathLike, document: dict[str, Any]) -> Path:
    path = Path(path)
    _refuse_foreign(path, kind="html")
    _atomic_write(path, render_html(document))
    return path


def read_json(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CircuitCheckError(f"results file {str(path)!r} does not exist") from None
    except json.JSONDecodeError as error:
        raise CircuitCheckError(f"{path}:{error.lineno}: not valid JSON ({error.msg})") from None
    if not isinstance(document, dict) or "circuitcheck_report" not in document:
        raise CircuitCheckError(f"{path} is not a circuitcheck results file (no 'circuitcheck_report' key)")
    if document["circuitcheck_report"] > REPORT_SCHEMA:
        raise CircuitCheckError(
            f"{path} has results schema {document['circuitcheck_report']}, newer than this circuitcheck reads ({REPORT_SCHEMA}): upgrade circuitcheck"
        )
    return document


def _refuse_foreign(path: Path, kind: str) -> None:
    """Never overwrite a file that circuitcheck did not write."""
    if not path.exists():
        return
    if path.is_dir():
        raise CircuitCheckError(f"report path {str(path)!r} is a directory: give a file name")
    head = path.read_bytes()[:4096].decode("utf-8", errors="replace")
    ours = GENERATOR_MARK in head if kind == "html" else '"circuitcheck_report"' in head
    if not ours:
        raise CircuitCheckError(
            f"refusing to overwrite {str(path)!r}: it exists and is not a circuitcheck {kind} report. Choose another path or remove it."
        )


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _format_number(value, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)
