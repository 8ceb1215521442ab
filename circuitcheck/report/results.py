"""A results document read back for analysis: one pandas row per claim.

    >>> results = load("results.json")
    >>> results.frame().query("not passed")[["nodeid", "claim", "value", "ci_low"]]
    >>> results.evidence(0, "minimality")          # a claim's evidence table

Several documents: :func:`merge` makes one document of the results of
several machines or CI jobs (shards), refusing a test or claim that two
shards hold; :func:`diff` lists the claims whose verdict or value changed
between two runs, and the claims only one of them has::

    >>> merged = merge([load("shard-1.json"), load("shard-2.json")])
    >>> print("\n".join(diff(load("old.json"), load("new.json")).lines()))

pandas is imported on first use, so reading and re-rendering documents stays light.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from ..errors import CircuitCheckError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

CLAIM_COLUMNS = [
    "nodeid",
    "outcome",
    "kind",
    "claim",
    "model",
    "checkpoint",
    "metric",
    "value",
    "ci_low",
    "ci_high",
    "confidence",
    "min_value",
    "max_value",
    "decided_on",
    "passed",
    "n",
]


@dataclass
class Results:
    """A results document (schema in ``SCHEMA.md``) and where it was read from."""

    document: dict[str, Any]
    path: Path | None = None

    @property
    def complete(self) -> bool:
        """Whether the run finished with every collected test's result (see ``incomplete_reasons`` when not)."""
        return self.document.get("complete") is True

    @property
    def in_progress(self) -> bool:
        """Whether this is the document a run writes at its start: that run is going on, or was killed before its end."""
        return self.document.get("in_progress") is True

    @property
    def not_run(self) -> list[str]:
        """Node ids of the tests that were collected but have no result."""
        return list(self.document.get("not_run") or [])

    @property
    def incomplete_reasons(self) -> list[str]:
        """Why the run is incomplete (interrupted, stopped early, a worker crashed, tests not run); empty when complete."""
        return list(self.document.get("incomplete_reasons") or [])

    def claims(self) -> list[dict[str, Any]]:
        """Every claim dict, in document order, with its test's ``nodeid`` and ``outcome`` added."""
        return [
            {**claim, "nodeid": test.get("nodeid"), "outcome": test.get("outcome")}
            for test in self.document.get("tests") or []
            for claim in test.get("claims") or []
        ]

    def frame(self) -> "pd.DataFrame":
        """One row per claim: :data:`CLAIM_COLUMNS`, then ``param_<name>`` for each parameter (as ``CheckResult.to_frame``)."""
        import pandas as pd

        from .claim_view import checkpoint_of

        rows = []
        for claim in self.claims():
            row = {column: claim.get(column) for column in CLAIM_COLUMNS}
            row["checkpoint"] = checkpoint_of(claim)
            row["passed"] = bool(claim.get("passed"))
            params = claim.get("parameters")
            if isinstance(params, dict):
                row.update({f"param_{name}": value for name, value in params.items()})
            rows.append(row)
        frame = pd.DataFrame(rows, columns=_columns(rows))
        for column in ("value", "ci_low", "ci_high", "confidence", "min_value", "max_value"):
            frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
        frame["passed"] = frame["passed"].astype(bool)
        return frame

    def evidence(self, claim: int, name: str) -> "pd.DataFrame":
        """Evidence table ``name`` of the ``claim``-th claim (the row of :meth:`frame`)."""
        from ..tables import frame_from_json

        claims = self.claims()
        if not 0 <= claim < len(claims):
            have = f"the document has claims 0-{len(claims) - 1}" if claims else "the document has no claims"
            raise IndexError(f"claim {claim} does not exist: {have}")
        evidence = claims[claim].get("evidence") or {}
        if name not in evidence:
            raise KeyError(
                f"claim {claim} ({claims[claim].get('claim')!r}) has no evidence {name!r}; it has: {', '.join(evidence) or 'none'}"
            )
        return frame_from_json(evidence[name])

    def summary(self) -> dict[str, Any]:
        from . import summarize

        return summarize(self.document)

    def to_html(self) -> str:
        from . import render_html

        return render_html(self.document)


def load(path: str | os.PathLike) -> Results:
    """Read a ``--circuitcheck-json`` results file (errors name the file and, for bad JSON, the line)."""
    from . import read_json

    return Results(read_json(path), Path(path))


def _columns(rows: list[dict]) -> list[str]:
    params: list[str] = []
    for row in rows:
        params += [key for key in row if key not in CLAIM_COLUMNS and key not in params]
    return CLAIM_COLUMNS + params


# Several results documents: merged shards, and the changes between two runs -----------------

#: Top-level keys of a results document that :func:`merge` builds anew; any other key stays with its shard.
_MERGED_KEYS = ("circuitcheck_report", "created", "started", "complete", "environment", "tests", "not_run",
                "incomplete_reasons", "in_progress", "pid")


def _name(results: Results, index: int) -> str:
    return str(results.path) if results.path is not None else f"shard {index + 1}"


def merge(parts: Sequence[Results | dict[str, Any]]) -> Results:
    """One results document from the documents of several machines or CI jobs (shards) of one suite.

    The tests are the shards' tests, in order; a test (by ``test_id``) or a
    claim (by its baseline key) found in two shards is an error naming them,
    as a merged report would count it twice. The document is complete when
    every shard is; ``not_run`` and ``incomplete_reasons`` are the shards'
    (reasons prefixed with the shard's name). ``environment`` holds each entry
    once where the shards agree, else every shard's value (``a.json: ... ·
    b.json: ...``), and ``shards`` lists every shard: its name, when it
    ran, whether complete, its tests and claims, its whole environment and
    its other top-level keys (the multiple-comparisons correction was made
    within a shard, so it stays there). The shards' ``baseline`` checks are
    combined into one (missing: missing in some shard; not checked: in none).
    """
    from ..claims.baseline import record_keys, test_id_of
    from . import REPORT_SCHEMA, _now, validate

    shards = [part if isinstance(part, Results) else Results(part) for part in parts]
    if not shards:
        raise CircuitCheckError("nothing to merge: give at least one results document")
    names = [_name(shard, i) for i, shard in enumerate(shards)]
    given_twice = sorted({name for name in names if names.count(name) > 1})
    if given_twice:
        raise CircuitCheckError(f"results file {given_twice[0]} is given twice: give each shard once")
    for name, shard in zip(names, shards):
        validate(shard.document, source=name)

    def refuse(what: str, where: dict[str, list[str]]) -> None:
        twice = {key: places for key, places in where.items() if len(places) > 1}
        if twice:
            listed = [f"{key} (in {', '.join(places)})" for key, places in list(twice.items())[:10]]
            more = f"; and {len(twice) - 10} more" if len(twice) > 10 else ""
            raise CircuitCheckError(
                f"cannot merge: {len(twice)} {what} appear{'s' if len(twice) == 1 else ''} in more than one shard, "
                f"so the merged report would count {'it' if len(twice) == 1 else 'them'} twice: {'; '.join(listed)}{more}; "
                "each test must run in one shard only (check how the tests are split between the jobs)"
            )

    tests_at: dict[str, list[str]] = {}
    claims_at: dict[str, list[str]] = {}
    for name, shard in zip(names, shards):
        tests = [test for test in shard.document.get("tests") or [] if isinstance(test, dict)]
        for test_id in dict.fromkeys(test_id_of(test) for test in tests):
            tests_at.setdefault(test_id, []).append(name)
        for key in dict.fromkeys(key for key, _, _ in record_keys(tests)):
            claims_at.setdefault(key, []).append(name)
    refuse("test" if sum(len(p) > 1 for p in tests_at.values()) == 1 else "tests", tests_at)
    refuse("claim" if sum(len(p) > 1 for p in claims_at.values()) == 1 else "claims", claims_at)

    tests = [test for shard in shards for test in shard.document.get("tests") or []]
    reported = {test.get("nodeid") for test in tests if isinstance(test, dict)}
    not_run = list(dict.fromkeys(nodeid for shard in shards for nodeid in shard.not_run if nodeid not in reported))
    reasons: list[str] = []
    for name, shard in zip(names, shards):
        if shard.in_progress:
            reasons.append(f"{name}: in progress (started {shard.document.get('started') or 'at an unknown time'}, "
                           f"pid {shard.document.get('pid')}): that run had not finished, or was killed, when it was written")
        # "N tests did not run" is said once below, for the merged not_run (a shard's may have run in another)
        own = [f"{name}: {reason}" for reason in shard.incomplete_reasons if not re.fullmatch(r"\d+ tests? did not run", reason)]
        if not shard.complete and not shard.in_progress and not own and not shard.not_run:
            own.append(f"{name}: incomplete (no reason recorded)")
        reasons += own
    if not_run:
        reasons.append(f"{len(not_run)} test{'s' if len(not_run) != 1 else ''} did not run")
    started = sorted(str(s.document["started"]) for s in shards if s.document.get("started"))
    document: dict[str, Any] = {
        "circuitcheck_report": REPORT_SCHEMA,
        "created": _now(),
        "complete": not reasons,
        "environment": _merged_environment(names, shards),
        "tests": tests,
        "not_run": not_run,
        "incomplete_reasons": reasons,
        "shards": [_shard_entry(name, shard) for name, shard in zip(names, shards)],
    }
    if started:
        document["started"] = started[0]
    baseline = _merged_baseline([shard.document.get("baseline") for shard in shards])
    if baseline is not None:
        document["baseline"] = baseline
    return Results(document)


def _shard_entry(name: str, shard: Results) -> dict[str, Any]:
    """What the merged document keeps of one shard: where it came from, its environment and its own top-level keys."""
    from ..claims.baseline import record_keys

    document = shard.document
    tests = [test for test in document.get("tests") or [] if isinstance(test, dict)]
    entry = {
        "source": name,
        "created": document.get("created"),
        "complete": shard.complete,
        "in_progress": shard.in_progress,
        "incomplete_reasons": shard.incomplete_reasons,
        "tests": len(tests),
        "claims": len(record_keys(tests)),
        "environment": dict(document.get("environment") or {}),
    }
    entry.update({key: value for key, value in document.items() if key not in _MERGED_KEYS and key not in entry})
    return entry


def _merged_environment(names: list[str], shards: list[Results]) -> dict[str, Any]:
    """Each entry once where every shard has the same value, else ``name: value`` for every shard; then the shards."""
    environments = [dict(shard.document.get("environment") or {}) for shard in shards]
    merged: dict[str, Any] = {}
    for key in dict.fromkeys(key for environment in environments for key in environment):
        values = [environment.get(key) for environment in environments]
        if all(key in environment for environment in environments) and all(value == values[0] for value in values):
            merged[key] = values[0]
        else:
            merged[key] = " · ".join(f"{name}: {'(not recorded)' if key not in env else env[key]}" for name, env in zip(names, environments))

    def described(name: str, shard: Results) -> str:
        tests = len(shard.document.get("tests") or [])
        state = "in progress" if shard.in_progress else ("complete" if shard.complete else "incomplete")
        return f"{name} ({tests} test{'s' if tests != 1 else ''}, {state}, created {shard.document.get('created') or 'at an unknown time'})"

    merged["shards"] = f"{len(shards)} results files merged: " + "; ".join(described(n, s) for n, s in zip(names, shards))
    return merged


def _merged_baseline(checks: list[Any]) -> dict[str, Any] | None:
    """The shards' baseline checks as one: listed claims and missing entries of every shard, entries none checked."""
    checks = [check for check in checks if isinstance(check, dict) and check.get("mode") == "check"]
    if not checks:
        return None
    paths = list(dict.fromkeys(str(check.get("path")) for check in checks))
    merged: dict[str, Any] = {"path": " · ".join(paths), "mode": "check", "strict": any(check.get("strict") for check in checks),
                              "fails": any(check.get("fails") for check in checks)}
    for status in ("regressed", "new"):
        merged[status] = list(dict.fromkeys(key for check in checks for key in check.get(status) or []))
    missing = {entry["key"]: entry for check in checks for entry in check.get("missing") or [] if isinstance(entry, dict) and "key" in entry}
    merged["missing"] = list(missing.values())
    unchecked = [set(check.get("unchecked") or []) for check in checks]
    merged["unchecked"] = sorted(set.intersection(*unchecked) - set(missing))
    ok = sum((check.get("counts") or {}).get("ok", 0) for check in checks)
    merged["counts"] = {"ok": ok, **{status: len(merged[status]) for status in ("regressed", "new", "missing", "unchecked")}}
    return merged


@dataclass
class ClaimChange:
    """One claim in two results documents (``old`` or ``new`` None when it is in only one), matched by ``key``."""

    key: str
    old: dict[str, Any] | None
    new: dict[str, Any] | None

    @staticmethod
    def verdict_of(claim: dict[str, Any] | None) -> str | None:
        """``held``, ``failed``, or ``regressed`` (held its threshold, moved beyond its baseline tolerance: its test failed)."""
        from ..claims.baseline import is_regressed

        if claim is None:
            return None
        if not claim.get("passed"):
            return "failed"
        return "regressed" if is_regressed(claim) else "held"

    @property
    def verdicts(self) -> tuple[str | None, str | None]:
        return self.verdict_of(self.old), self.verdict_of(self.new)

    @property
    def delta(self) -> float | None:
        """New value minus old, when both are numbers."""
        old, new = (_number(c.get("value")) if c else None for c in (self.old, self.new))
        return None if old is None or new is None else new - old

    def line(self) -> str:
        """``  KEY: held -> FAILED; induction score 0.844106 -> 0.612 (-0.232106); lower bound 0.8 -> 0.55``."""
        from ..claims.format import deciding_bound

        before, after = self.verdicts
        if self.old is None or self.new is None:
            claim = self.new or self.old
            return f"  {self.key}: {before or after}, {claim.get('metric') or 'value'} {_shown(claim.get('value'))}"
        verdict = before if before == after else f"{before} -> {after.upper() if after != 'held' else after}"
        metric = self.new.get("metric") or self.old.get("metric") or "value"
        text = f"  {self.key}: {verdict}; {metric} {_shown(self.old.get('value'))} -> {_shown(self.new.get('value'))}"
        if self.delta is not None:
            text += f" ({self.delta:+.6g})"
        (statistic, old_bound), (_, new_bound) = deciding_bound(self.old), deciding_bound(self.new)
        if statistic not in ("mean", "value") and not isinstance(old_bound, tuple) and not isinstance(new_bound, tuple):
            text += f"; {statistic} {_shown(old_bound)} -> {_shown(new_bound)}"
        return text


@dataclass
class ResultsDiff:
    """How the claims of two results documents differ (see :func:`diff`)."""

    old_name: str
    new_name: str
    verdict_changed: list[ClaimChange]
    value_changed: list[ClaimChange]
    added: list[ClaimChange]
    removed: list[ClaimChange]
    unchanged: int
    tolerance: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        """Whether a claim's verdict changed or a claim went missing (the ``diff`` command's exit status 1)."""
        return bool(self.verdict_changed or self.removed)

    def lines(self) -> list[str]:
        """The changes for the terminal: verdicts, values, removed and added claims, then the unchanged count."""
        within = f" (value changes within {self.tolerance:g} ignored)" if self.tolerance else ""
        out = [f"circuitcheck diff: {self.old_name} -> {self.new_name}{within}"]
        out += [f"  note: {note}" for note in self.notes]
        for title, changes in (("verdict changed", self.verdict_changed), ("value changed, same verdict", self.value_changed),
                               ("removed (in the old results only)", self.removed), ("added (in the new results only)", self.added)):
            if changes:
                out.append(f"{title} ({len(changes)}):")
                out += [change.line() for change in changes]
        out.append(f"{self.unchanged} claim{'s' if self.unchanged != 1 else ''} unchanged")
        return out


def diff(old: Results, new: Results, tolerance: float = 0.0) -> ResultsDiff:
    """The claims whose verdict or value changed from ``old`` to ``new``, and the claims only one of them has.

    Claims are matched by their baseline key (test id, claim text and
    checkpoint; ``#2`` for a claim made again in one test). A value changed
    when it moved by more than ``tolerance`` (absolute; 0: any change at the
    baseline's 6 decimals) or became or stopped being a number. Informational
    records (``check_*`` results no assertion concluded) decide nothing and
    are left out.
    """
    from ..claims.baseline import rounded

    if not (isinstance(tolerance, (int, float)) and not isinstance(tolerance, bool) and math.isfinite(tolerance) and tolerance >= 0):
        raise CircuitCheckError(f"tolerance={tolerance!r} is not valid: it must be a finite number >= 0")
    old_name, new_name = _name(old, 0), _name(new, 1)
    before, after = _keyed(old, old_name), _keyed(new, new_name)
    verdict_changed, value_changed, added, unchanged = [], [], [], 0
    for key, claim in after.items():
        if key not in before:
            added.append(ClaimChange(key, None, claim))
            continue
        change = ClaimChange(key, before[key], claim)
        old_value, new_value = rounded(_number(before[key].get("value"))), rounded(_number(claim.get("value")))
        moved = (old_value is None) != (new_value is None) or (old_value is not None and abs(new_value - old_value) > tolerance)
        if change.verdicts[0] != change.verdicts[1]:
            verdict_changed.append(change)
        elif moved:
            value_changed.append(change)
        else:
            unchanged += 1
    removed = [ClaimChange(key, claim, None) for key, claim in before.items() if key not in after]
    notes = [f"{name} is {'in progress' if r.in_progress else 'incomplete'}: {'; '.join(r.incomplete_reasons) or 'the run had not finished'}"
             for name, r in ((old_name, old), (new_name, new)) if not r.complete]
    return ResultsDiff(old_name, new_name, verdict_changed, value_changed, added, removed, unchanged, float(tolerance), notes)


def _keyed(results: Results, name: str) -> dict[str, dict[str, Any]]:
    from ..claims.baseline import record_keys

    keyed: dict[str, dict[str, Any]] = {}
    tests = [test for test in results.document.get("tests") or [] if isinstance(test, dict)]
    for key, _, claim in record_keys(tests):
        if key in keyed:
            raise CircuitCheckError(f"{name}: claim {key!r} appears twice: the document was merged or edited by hand; "
                                    "each claim of a results file has its own key")
        keyed[key] = dict(claim)
    return keyed


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _shown(value: Any) -> str:
    number = _number(value)
    return "–" if number is None else f"{number:.6g}"
