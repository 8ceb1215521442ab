"""Run results as a document: JSON (versioned) and a self-contained HTML page.

The document is plain data built from the JSON-safe dicts that assertions
record (``CheckResult.to_dict``), so it can be written by the controller of an
xdist run and re-rendered later::

    python -m circuitcheck report results.json -o report.html

Its schema is documented in ``SCHEMA.md`` beside this module. To analyse
results in a notebook, :func:`load` gives one pandas row per claim::

    results = circuitcheck.report.load("results.json")
    results.frame().query("not passed")

Shards of one suite run on several machines or CI jobs merge into one
document (:func:`merge`; ``python -m circuitcheck report a.json b.json -o
merged.html``), and :func:`diff` lists what changed between two runs
(``python -m circuitcheck diff old.json new.json``).

Claims and sweeps made in a notebook become a report with :func:`from_results`
(a complete document: no "incomplete run" banner)::

    report = circuitcheck.report.from_results([result, sweep])
    report.write_html("notebook-report.html")

Modules: :mod:`.sections` prepares what the page shows (one claim:
:mod:`.claim_view`, in the words of :mod:`circuitcheck.claims.format`; the
sections: :mod:`.causal_sections`, :mod:`.heatmaps`, :mod:`.attribution_sections`,
:mod:`.checkpoints`; which section shows a kind: :mod:`.kinds`), :mod:`.charts`
draws the inline SVG charts, :mod:`.frames` reads evidence tables without pandas,
:mod:`.results` reads documents back for analysis, :mod:`.files` writes the
files (atomically, only over circuitcheck's own); the page layout is the
Jinja template ``templates/report.html.j2``.

A run's files say what they hold: ``in_progress_document`` is written at
session start (so a killed run never leaves the previous run's report in
place), and a finished document lists what it lacks (``complete``,
``not_run``, ``incomplete_reasons``, tests whose worker ``crashed``).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
from pathlib import Path
from typing import Any

from ..errors import CircuitCheckError
from .files import ReportWriteError, atomic_write, check_writable, owner_meta, write_text
from .results import Results, ResultsDiff, diff, load, merge

__all__ = [
    "REPORT_SCHEMA",
    "CircuitCheckError",
    "ReportWriteError",
    "ReportDocument",
    "Results",
    "ResultsDiff",
    "check_writable",
    "diff",
    "from_results",
    "in_progress_document",
    "load",
    "merge",
    "new_document",
    "read_json",
    "render_html",
    "summarize",
    "validate",
    "write_html",
    "write_json",
]

REPORT_SCHEMA = 1
GENERATOR_MARK = '<meta name="generator" content="circuitcheck">'


def new_document(environment: dict[str, Any], *, complete: bool = False) -> dict[str, Any]:
    """An empty results document (schema ``REPORT_SCHEMA``).

    ``complete`` is False by default: a pytest run's document is complete only
    once the session has finished with every collected test run (the page shows
    an "incomplete run" banner until then). A document of results already made
    (:func:`from_results`) is complete from the start.
    """
    return {
        "circuitcheck_report": REPORT_SCHEMA,
        "created": _now(),
        "complete": bool(complete),
        "environment": environment,
        "tests": [],
    }


class ReportDocument(dict):
    """A results document (a plain ``dict``, so every function of this module takes it) that writes and shows itself.

    ``write_html(path)`` / ``write_json(path)`` write it as :func:`write_html` /
    :func:`write_json` do; ``html()`` is the page; in a notebook it shows a
    summary line and the page itself, in a frame of its own (its stylesheet
    stays inside).
    """

    def html(self) -> str:
        """The self-contained HTML page (:func:`render_html`)."""
        return render_html(self)

    def write_html(self, path: str | os.PathLike) -> Path:
        """Write the HTML report (never over a file circuitcheck did not write)."""
        return write_html(path, self)

    def write_json(self, path: str | os.PathLike) -> Path:
        """Write the results JSON (re-rendered later by ``python -m circuitcheck report``)."""
        return write_json(path, self)

    def summary_text(self) -> str:
        """``3 claims: 2 held, 1 failed; 1 sweep``."""
        summary = summarize(self)
        sweeps = sum(len(test.get("sweeps") or []) for test in self.get("tests") or [])
        return (f"{summary['claims']} claim{'s' if summary['claims'] != 1 else ''}: {summary['claims_passed']} held, "
                f"{summary['claims_failed']} failed; {sweeps} sweep{'s' if sweeps != 1 else ''}")

    def __repr__(self) -> str:
        return f"<ReportDocument {self.summary_text()}{'' if self.get('complete') else ', incomplete'}>"

    def _repr_html_(self) -> str:
        from markupsafe import escape

        return (f'<p style="font: 13px system-ui, sans-serif; margin: 0 0 .3rem"><b>circuitcheck report</b>: {escape(self.summary_text())} '
                "· <code>.write_html(path)</code> writes this page</p>"
                f'<iframe srcdoc="{escape(self.html())}" title="circuitcheck report" '
                'style="width: 100%; height: 42rem; border: 1px solid #d8dee6; border-radius: .3rem"></iframe>')


def from_results(results, *, name: str = "notebook", environment: dict[str, Any] | None = None) -> ReportDocument:
    """A complete report document of claims and sweeps made outside pytest (a notebook, a script).

    ``results``: ``CheckResult`` s, ``Sweep`` s (two axes: :meth:`Patcher.sweep`,
    :meth:`Patcher.path_sweep`) and ``GraphSweep`` s, in the order to show them;
    or a dict of name -> such a list, one group (a "test" of the page) each.
    A group's outcome is ``failed`` when one of its claims failed, else
    ``passed``. ``environment`` is added to what the document records by
    itself (Python and package versions, the models the claims name).
    """
    import sys
    from importlib import metadata

    from ..claims.result import CheckResult
    from ..engine.attribution_patching import GraphSweep
    from ..engine.sweeps import Sweep

    groups = results.items() if isinstance(results, dict) else [(name, results)]
    tests = []
    models: set[str] = set()
    for group, items in groups:
        if isinstance(items, (str, bytes)) or not hasattr(items, "__iter__"):
            raise CircuitCheckError(f"results for {group!r} must be a list of CheckResults and sweeps, got {type(items).__name__}")
        claims, sweeps = [], []
        for item in items:
            if isinstance(item, CheckResult):
                claims.append(item.to_dict())
                if item.model:
                    models.add(str(item.model))
            elif isinstance(item, (Sweep, GraphSweep)):
                if len(item.axes) != 2:
                    raise CircuitCheckError(f"sweep {item.what} has {len(item.axes)} axes ({', '.join(item.axes)}): the report draws "
                                            "sweeps of two (layer x position, layer x head, sender x receiver)")
                sweeps.append(item.to_dict())
            else:
                raise CircuitCheckError(f"{type(item).__name__} cannot go in a report: give CheckResults (check_* and assert_* return them), "
                                        "Sweeps (Patcher.sweep, Patcher.path_sweep) or GraphSweeps (attribution_sweep, patching_sweep)")
        outcome = "failed" if any(not claim["passed"] for claim in claims) else "passed"
        tests.append({"nodeid": str(group), "outcome": outcome, "claims": claims, "sweeps": sweeps})
    env: dict[str, Any] = {"python": sys.version.split()[0], "made by": "circuitcheck.report.from_results"}
    for package in ("circuitcheck", "torch", "transformer-lens", "transformers"):
        try:
            env[f"version {package}"] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    if models:
        env["models"] = ", ".join(sorted(models))
    env.update(environment or {})
    document = ReportDocument(new_document(env, complete=True))
    document["tests"] = tests
    validate(document, source="from_results")
    return document


def in_progress_document(environment: dict[str, Any], started: str | None = None, pid: int | None = None) -> dict[str, Any]:
    """The document a run writes at its start: no tests, ``in_progress`` true, when it started and its process id.

    It stays in place when the run is killed (SIGKILL, SIGTERM, a hard crash),
    so the files never show an earlier run's results as this one's.
    """
    document = new_document(environment)
    document.update(in_progress=True, started=started or document["created"], pid=os.getpid() if pid is None else pid)
    return document


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def summarize(document: dict[str, Any]) -> dict[str, Any]:
    """Counts of claims and tests by verdict, and of claims by kind, model and checkpoint.

    A claim that held its threshold but moved beyond its baseline tolerance
    (``baseline.status == "regressed"``) failed its test, and counts as failed
    here, in every count; ``claims_regressed`` says how many of the failed did so.
    Failed claims of tests marked xfail failed as expected: ``claims_xfailed``,
    not in ``claims_failed`` (``by_kind`` and the other tables still count
    them as failed). ``check_*`` results no assertion decided on
    (``"informational": true``) are no claims of the run: only
    ``checks_informational`` counts them.
    ``by_checkpoint`` groups claims by the part after ``@`` of their model spec
    (``zoo:induction-2l@step800`` -> ``step800``); it is empty when no claim names one.
    """
    from ..claims.baseline import is_regressed
    from .claim_view import checkpoint_of

    from ..claims.format import is_informational

    tests = document.get("tests") or []
    # check_* results no assertion decided on are shown, never counted as claims of the run
    checks = [claim for test in tests for claim in test.get("claims") or [] if is_informational(claim)]
    claims = [claim for test in tests for claim in test.get("claims") or [] if not is_informational(claim)]
    expected = [claim for test in tests if test.get("outcome") == "xfailed" for claim in test.get("claims") or []
                if not is_informational(claim) and not (claim.get("passed") and not is_regressed(claim))]
    by_kind: dict[str, dict[str, int]] = {}
    by_model: dict[str, dict[str, int]] = {}
    by_checkpoint: dict[str, dict[str, int]] = {}
    held = [bool(claim.get("passed")) and not is_regressed(claim) for claim in claims]
    for claim, claim_held in zip(claims, held):
        verdict = "passed" if claim_held else "failed"
        checkpoint = checkpoint_of(claim)
        groups = [(by_kind, claim.get("kind") or "?"), (by_model, claim.get("model") or "?")]
        if checkpoint is not None:
            groups.append((by_checkpoint, checkpoint))
        for table, key in groups:
            row = table.setdefault(str(key), {"passed": 0, "failed": 0})
            row[verdict] += 1
    outcomes: dict[str, int] = {}
    for test in document.get("tests") or []:
        outcome = str(test.get("outcome", "?"))
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return {
        "claims": len(claims),
        "claims_passed": sum(held),
        "claims_failed": len(claims) - sum(held) - len(expected),
        "claims_xfailed": len(expected),
        "checks_informational": len(checks),
        "claims_regressed": sum(is_regressed(c) for c in claims),
        "tests": outcomes,
        "by_kind": by_kind,
        "by_model": by_model,
        "by_checkpoint": by_checkpoint,
    }


def render_html(document: dict[str, Any]) -> str:
    """The self-contained HTML page of a results document (no scripts, fonts or network)."""
    import jinja2

    from .charts import format_number
    from .claim_view import natural_key
    from .sections import build_page

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("circuitcheck.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = format_number
    env.filters["natural"] = lambda items: sorted(items, key=lambda item: natural_key(item[0]))
    env.tests["number"] = lambda value: isinstance(value, (int, float)) and not isinstance(value, bool)
    summary = summarize(document)
    return env.get_template("report.html.j2").render(
        doc={
            "created": str(document.get("created") or "unknown time"),
            "complete": bool(document.get("complete", False)),
            "schema": document.get("circuitcheck_report", REPORT_SCHEMA),
            **_incompleteness(document),
        },
        summary=summary,
        page=build_page(document, summary),
        generator_mark=owner_meta(REPORT_SCHEMA) + "\n" + GENERATOR_MARK,
    )


def _incompleteness(document: dict[str, Any]) -> dict[str, Any]:
    """What the page's banner says a document lacks: in progress, crashed tests, tests not run, other reasons."""

    def strings(value) -> list[str]:
        return [str(v) for v in value] if isinstance(value, list) else []

    crashed = [str(test.get("nodeid")) for test in document.get("tests") or [] if isinstance(test, dict) and test.get("outcome") == "crashed"]
    return {
        "in_progress": document.get("in_progress") is True,
        "started": str(document.get("started") or document.get("created") or "an unknown time"),
        "pid": document.get("pid"),
        "crashed": crashed,
        "not_run": strings(document.get("not_run")),
        # crashed tests and tests not run are listed by name below the reasons
        "reasons": [
            reason
            for reason in strings(document.get("incomplete_reasons"))
            if not any(nodeid in reason for nodeid in crashed) and not re.fullmatch(r"\d+ tests? did not run", reason)
        ],
    }


def write_json(path: str | os.PathLike, document: dict[str, Any]) -> Path:
    """Write the document as JSON (sorted keys), atomically; never over a file circuitcheck did not write.

    Raises :class:`ReportWriteError` (a ``CircuitCheckError``) naming the file
    and the cause when the file is not ours or cannot be written.
    """
    return write_text(Path(path), json.dumps(document, indent=2, sort_keys=True, allow_nan=False) + "\n", kind="json")


def write_html(path: str | os.PathLike, document: dict[str, Any]) -> Path:
    """Write the HTML report, atomically; never over a file circuitcheck did not write (errors as :func:`write_json`)."""
    path = Path(path)
    check_writable(path, "html")  # before rendering: a refused path costs nothing
    return write_text(path, render_html(document), kind="html")


def read_json(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a results document; errors name the file, and the line of a JSON syntax error."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CircuitCheckError(f"results file {str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise CircuitCheckError(f"results file {str(path)!r} is a directory, not a JSON file") from None
    except UnicodeDecodeError as error:
        raise CircuitCheckError(
            f"{path}: not a text file ({error.reason} at byte {error.start}): not a circuitcheck results file"
        ) from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise CircuitCheckError(
            f"{path}:{error.lineno}:{error.colno}: not valid JSON at line {error.lineno}, column {error.colno}: {error.msg}"
        ) from None
    if not isinstance(document, dict) or "circuitcheck_report" not in document:
        raise CircuitCheckError(f"{path} is not a circuitcheck results file (no 'circuitcheck_report' key)")
    validate(document, source=str(path))
    return document


def validate(document: dict[str, Any], source: str = "results document") -> None:
    """Check the structure the report relies on (schema 1, see SCHEMA.md); the error names the bad entry."""
    schema = document.get("circuitcheck_report")
    if not isinstance(schema, int) or isinstance(schema, bool):
        raise CircuitCheckError(f"{source}: 'circuitcheck_report' must be the schema number (an integer), got {schema!r}")
    if schema > REPORT_SCHEMA:
        raise CircuitCheckError(
            f"{source} has results schema {schema}, newer than this circuitcheck reads ({REPORT_SCHEMA}): upgrade circuitcheck"
        )
    tests = document.get("tests")
    if not isinstance(tests, list):
        raise CircuitCheckError(f"{source}: 'tests' must be a list of tests, got {type(tests).__name__}")
    if not isinstance(document.get("environment", {}), dict):
        raise CircuitCheckError(f"{source}: 'environment' must be an object of name -> value")
    for name in ("not_run", "incomplete_reasons"):
        value = document.get(name, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise CircuitCheckError(f"{source}: {name!r} must be a list of strings, got {value!r:.80}")
    if not isinstance(document.get("in_progress", False), bool):
        raise CircuitCheckError(f"{source}: 'in_progress' must be true or false, got {document['in_progress']!r:.80}")
    for i, test in enumerate(tests):
        where = f"{source}: tests[{i}]"
        if not isinstance(test, dict):
            raise CircuitCheckError(f"{where} must be an object, got {type(test).__name__}")
        for key in ("nodeid", "outcome"):
            if not isinstance(test.get(key), str):
                raise CircuitCheckError(f"{where} has no {key!r} string")
        for name in ("claims", "sweeps"):
            if not isinstance(test.get(name, []), list):
                raise CircuitCheckError(f"{where} ({test['nodeid']}): {name!r} must be a list")
        for j, claim in enumerate(test.get("claims", [])):
            if not isinstance(claim, dict):
                raise CircuitCheckError(f"{where}.claims[{j}] ({test['nodeid']}) must be an object")
            missing = [key for key in ("kind", "claim", "passed") if key not in claim]
            if missing:
                raise CircuitCheckError(f"{where}.claims[{j}] ({test['nodeid']}) has no {', '.join(map(repr, missing))}")


# The baseline plugin writes its file the same way.
_atomic_write = atomic_write
