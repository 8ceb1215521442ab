"""Regression baselines: stored claim values that later runs must stay close to.

The baseline file is deterministic JSON (sorted keys, rounded floats, one entry
per line group) so that it diffs well in code review::

    {
      "circuitcheck_baseline": 1,
      "entries": {
        "tests/test_heads.py::test_induction :: L1H0 is an induction head": {
          "checkpoint": null, "claim": "L1H0 is an induction head", "kind": "induction_head",
          "metric": "induction score", "model": "zoo:induction-2l",
          "test": "tests/test_heads.py::test_induction", "value": 0.844106
        }
      }
    }

Entries are keyed by test id, claim and checkpoint. A measured value passes
when ``|measured - stored| <= max(abs, rel * |stored|)``. This module reads,
compares, merges and writes (:func:`update_file`), and sums up a run checked
against the file (:func:`check_run`: claims within tolerance, regressed and
new, and the entries the run no longer produced); the pytest layer decides
when a run may write. The run's claims are given as the test records of a
results document (``tests[*].claims``), so a baseline can also be checked or
updated from a results file, or from the merged results of several shards.

Nothing a user wrote is lost or silently replaced: a file that is not a
finite-valued baseline is an error and is left as it is; an update takes a
lock (``.NAME.lock`` beside the file), re-reads the file under it and merges
into what is there now, so concurrent runs keep each other's entries; the
new file is written to a temporary file and moved into place, keeping the
old file's mode; a read-only file is refused.
"""

from __future__ import annotations

import json
import math
import os
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ..errors import CircuitCheckError

BASELINE_SCHEMA = 1
DEFAULT_ABS = 0.01
DEFAULT_REL = 0.02
DECIMALS = 6
#: Seconds an update waits for another run's lock on the same baseline file.
LOCK_TIMEOUT = 120.0


class BaselineError(CircuitCheckError):
    """A baseline file that cannot be used as it is (never silently replaced)."""


class ToleranceError(CircuitCheckError, ValueError):
    """A baseline tolerance that is not a finite number >= 0 (or a mapping of them)."""


@dataclass(frozen=True)
class Tolerance:
    """How far a measured value may move from the stored one: ``max(abs, rel * |stored|)``.

    Both parts are finite numbers >= 0: an infinite tolerance would report every
    claim as within the baseline, whatever was measured.
    """

    abs: float = DEFAULT_ABS
    rel: float = DEFAULT_REL

    def __post_init__(self):
        for name in ("abs", "rel"):
            value = getattr(self, name)
            if not _finite(value) or value < 0:
                raise ToleranceError(f"tolerance {name}={_shown(value)} is not valid: it must be a finite number >= 0")
            object.__setattr__(self, name, float(value))

    @classmethod
    def parse(cls, value: "Tolerance | float | dict | None") -> "Tolerance":
        """``None`` (the defaults), a number (absolute), ``{"abs": ..., "rel": ...}`` or a :class:`Tolerance`."""
        if value is None:
            return cls()
        if isinstance(value, Tolerance):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return cls(abs=value, rel=0.0)
        if isinstance(value, dict):
            unknown = set(value) - {"abs", "rel"}
            if unknown:
                raise ToleranceError(f"tolerance keys {sorted(map(str, unknown))} are not valid: use 'abs' and 'rel'")
            return cls(abs=value.get("abs", 0.0), rel=value.get("rel", 0.0))
        raise ToleranceError(f"tolerance={_shown(value)} is not valid: give a number (absolute) or {{'abs': ..., 'rel': ...}}")

    def allowed(self, stored: float) -> float:
        return max(self.abs, self.rel * abs(stored))

    def to_dict(self) -> dict:
        return {"abs": self.abs, "rel": self.rel}


def entry_key(test_id: str, claim: str, checkpoint: str | None = None) -> str:
    key = f"{test_id} :: {claim}"
    return f"{key} @ {checkpoint}" if checkpoint and f"[{checkpoint}]" not in test_id else key


def rounded(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), DECIMALS)


@dataclass
class Comparison:
    """How a measured value relates to the baseline: ``status`` is ``ok``, ``regressed``, ``new`` or ``recorded``."""

    status: str
    stored: float | None = None
    measured: float | None = None
    allowed: float | None = None

    @property
    def delta(self) -> float | None:
        if self.stored is None or self.measured is None:
            return None
        return self.measured - self.stored

    def to_dict(self) -> dict:
        return {"status": self.status, "stored": self.stored, "measured": rounded(self.measured), "allowed": rounded(self.allowed), "delta": rounded(self.delta)}

    def message(self, claim: str, path: str, metric: str) -> str:
        direction = "up" if (self.delta or 0) > 0 else "down"
        return "\n".join(
            [
                f"regression: {claim} moved beyond the baseline tolerance",
                f"  stored:   {metric} {self.stored:.6g} (baseline {path})",
                f"  measured: {metric} {self.measured:.6g} ({direction} by {abs(self.delta):.6g}; allowed ±{self.allowed:.3g})",
                "  if the change is intended, update the baseline with --circuitcheck-update-baseline",
            ]
        )


@dataclass
class Baseline:
    """The entries of one baseline file, keyed by :func:`entry_key`; ``existed``: whether the file was there."""

    path: Path
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    existed: bool = False

    @classmethod
    def load(cls, path: str | Path) -> "Baseline":
        """Read and validate a baseline file (a missing file is an empty baseline).

        Raises :class:`BaselineError` naming the file, the line and what is
        wrong for anything that is not a baseline with finite values: such a
        file is never used or replaced.
        """
        path = Path(path)
        if not path.exists():
            return cls(path)
        if path.is_dir():
            raise BaselineError(f"baseline path {str(path)!r} is a directory: give a file name")
        text = _read_text(path)
        try:
            data = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
        except json.JSONDecodeError as error:
            raise BaselineError(
                f"{path}:{error.lineno}: the baseline file is not valid JSON ({error.msg}, column {error.colno}); "
                "fix it or restore it from version control (it is never replaced automatically)"
            ) from None
        except _Unreadable as problem:
            raise BaselineError(f"{path}:{_line_of(text, problem.needle, quoted=problem.quoted, nth=problem.nth)}: {problem}; {_NEVER_REPLACED}") from None
        if not isinstance(data, dict) or data.get("circuitcheck_baseline") is None:
            raise BaselineError(f"{path} is not a circuitcheck baseline (no 'circuitcheck_baseline' key): refusing to use or overwrite it")
        if data["circuitcheck_baseline"] != BASELINE_SCHEMA:
            raise BaselineError(f"{path} has baseline schema {data['circuitcheck_baseline']!r}; this circuitcheck reads schema {BASELINE_SCHEMA}")
        entries = data.get("entries")
        if not isinstance(entries, dict):
            raise BaselineError(f"{path}:{_line_of(text, 'entries')}: 'entries' must be an object of key -> entry")
        for key, entry in entries.items():
            value = entry.get("value") if isinstance(entry, dict) else None
            if not isinstance(entry, dict) or not isinstance(value, (int, float)) or isinstance(value, bool):
                raise BaselineError(f"{path}:{_line_of(text, key)}: entry {key!r} needs a numeric 'value'")
            if not _finite(value):  # e.g. 1e999: within tolerance of nothing, or of everything
                raise BaselineError(f"{path}:{_line_of(text, key)}: entry {key!r} has value {_shown(value)}: a stored value must be a finite number")
            if not isinstance(entry.get("test", ""), str):
                raise BaselineError(f"{path}:{_line_of(text, key)}: entry {key!r} has test {_shown(entry['test'])}: it must be a test id (a string)")
        return cls(path, dict(entries), existed=True)

    def compare(self, key: str, measured: float, tolerance: Tolerance) -> Comparison:
        entry = self.entries.get(key)
        if entry is None:
            return Comparison("new", measured=measured)
        stored = float(entry["value"])
        allowed = tolerance.allowed(stored)
        ok = measured is not None and math.isfinite(measured) and abs(measured - stored) <= allowed + 1e-12
        return Comparison("ok" if ok else "regressed", stored, measured, allowed)

    def merged(self, produced: dict[str, dict[str, Any]], completed: Iterable[str], prune: bool) -> tuple["Baseline", list[str]]:
        """Entries after an update: produced entries replace stored ones; every other entry is kept unless pruned.

        ``completed``: the test ids that ran to completion in this run. Returns
        the new baseline and the stale keys (stored for a completed test that
        no longer produced them); stale entries are removed only with
        ``prune``. Entries of tests that did not run, or stopped early (a
        failure, a crash, a skip), are never stale: they were not re-measured.
        """
        done = set(completed)
        stale = sorted(key for key, entry in self.entries.items() if entry.get("test") in done and key not in produced)
        entries = {key: entry for key, entry in self.entries.items() if not (prune and key in stale)}
        entries.update(produced)
        return Baseline(self.path, entries, self.existed), stale

    def dumps(self) -> str:
        document = {"circuitcheck_baseline": BASELINE_SCHEMA, "entries": {k: self.entries[k] for k in sorted(self.entries)}}
        return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"


def make_entry(test_id: str, claim: dict[str, Any]) -> dict[str, Any]:
    return {
        "test": test_id,
        "claim": claim["claim"],
        "checkpoint": claim.get("checkpoint"),
        "kind": claim.get("kind"),
        "metric": claim.get("metric"),
        "model": claim.get("model"),
        "value": rounded(claim["value"]),
    }


# A run's claims (test records of a results document) against a baseline ------------------


def is_regressed(claim: Mapping[str, Any]) -> bool:
    """Whether a claim record moved beyond its baseline tolerance (``claim["baseline"]["status"] == "regressed"``).

    Such a claim held its own threshold, but its test failed on the move: every
    summary (terminal, report, JSON, the ``report`` command) counts it as a
    failed claim.
    """
    baseline = claim.get("baseline") if isinstance(claim, Mapping) else None
    return isinstance(baseline, Mapping) and baseline.get("status") == "regressed"


def test_id_of(test: Mapping[str, Any]) -> str:
    """The id a test record's baseline entries are keyed by: ``test_id``, else the node id without xdist's group suffix."""
    return str(test.get("test_id") or str(test.get("nodeid", "?")).split("@circuitcheck:")[0])


def record_keys(tests: Sequence[Mapping[str, Any]]) -> list[tuple[str, str, Mapping[str, Any]]]:
    """``(key, test_id, claim)`` for every claim of the test records, in document order.

    The key is the claim's ``baseline_key`` when the run recorded one, else
    :func:`entry_key` of its test id, claim and checkpoint with ``#2``, ``#3``
    ... for the same claim made again in one test (as the pytest plugin keys them).
    Informational records (``check_*`` results no assertion concluded, which
    decide nothing and are never compared with a baseline) are left out.
    """
    keyed = []
    for test in tests:
        seen: dict[str, int] = {}
        for claim in _claims(test):
            if claim.get("informational"):
                continue  # a check_* result no assertion decided on: never a baseline entry
            test_id = str(claim.get("baseline_test") or test_id_of(test))
            key = claim.get("baseline_key")
            if not key:
                key = entry_key(test_id, str(claim.get("claim")), claim.get("checkpoint"))
                seen[key] = seen.get(key, 0) + 1
                if seen[key] > 1:
                    key = f"{key} #{seen[key]}"
            keyed.append((str(key), test_id, claim))
    return keyed


def completed_tests(tests: Sequence[Mapping[str, Any]]) -> set[str]:
    """Ids of the tests whose body ran to its end with every claim measured (passed, or xfail-marked and passed).

    A failed claim stops its test, so the claims after it were never measured;
    only these tests' missing entries can be called stale (or, checking, missing).
    """
    return {
        test_id_of(test)
        for test in tests
        if test.get("outcome") in ("passed", "xpassed") and all(rounded(claim.get("value")) is not None for claim in _claims(test))
    }


def _claims(test: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """A test record's claims, without informational ``check_*`` records (``"informational": true``)."""
    return [claim for claim in test.get("claims") or [] if not (isinstance(claim, Mapping) and claim.get("informational"))]


def produced_entries(tests: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The baseline entries the test records' claims make (claims with a finite value), keyed as :func:`record_keys`."""
    return {key: make_entry(test_id, claim) for key, test_id, claim in record_keys(tests) if rounded(claim.get("value")) is not None}


#: How many keys a terminal list shows before "and N more" (all with -v, and always in the JSON).
SHOWN_KEYS = 20


@dataclass
class Check:
    """A run checked against a baseline file (not updating it): what each claim's comparison found, and what it missed.

    ``regressed``, ``ok`` and ``new``: keys of the run's claims by comparison.
    ``missing``: stored entries of tests that ran to completion in this run
    and no longer produced them (the claim's text, circuit, threshold or
    checkpoint changed, or the claim was removed), with their stored entries.
    ``unchecked``: the other stored entries this run did not produce: their
    tests did not run (deselected, in files not run, removed) or stopped
    before producing them; nothing is known about them. With ``strict``, new
    or missing entries fail the run (:attr:`fails`).
    """

    path: str
    strict: bool = False
    ok: list[str] = field(default_factory=list)
    regressed: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    missing: dict[str, dict[str, Any]] = field(default_factory=dict)
    unchecked: list[str] = field(default_factory=list)

    @property
    def fails(self) -> bool:
        """Whether strict mode fails the run: a claim not in the baseline, or a stored entry no longer produced."""
        return self.strict and bool(self.new or self.missing)

    def to_dict(self) -> dict[str, Any]:
        """The results document's ``baseline`` object (SCHEMA.md)."""
        return {
            "path": self.path,
            "mode": "check",
            "strict": self.strict,
            "fails": self.fails,
            "counts": {"ok": len(self.ok), "regressed": len(self.regressed), "new": len(self.new),
                       "missing": len(self.missing), "unchecked": len(self.unchecked)},
            "regressed": list(self.regressed),
            "new": list(self.new),
            "missing": [{"key": key, **entry} for key, entry in self.missing.items()],
            "unchecked": list(self.unchecked),
        }

    def describe(self) -> str:
        """One line for the report's environment table: the file, the mode and the counts, and the missing keys."""
        mode = "checked, strict" if self.strict else "checked"
        text = (f"{self.path} ({mode}): {len(self.ok)} within tolerance, {len(self.regressed)} regressed, {len(self.new)} new, "
                f"{len(self.missing)} missing, {len(self.unchecked)} not checked")
        if self.missing:
            keys = list(self.missing)
            text += "; missing: " + "; ".join(keys[:SHOWN_KEYS]) + (f"; and {len(keys) - SHOWN_KEYS} more (the JSON lists all)" if len(keys) > SHOWN_KEYS else "")
        if self.fails:
            text += "; the run failed (strict)"
        return text

    def lines(self, verbose: bool = False) -> list[str]:
        """What the terminal summary says: the counts, then the regressed, new and missing keys (the first
        :data:`SHOWN_KEYS` of each unless ``verbose``), the unchecked count, and strict mode's verdict."""
        new = len(self.new)
        out = [
            f"baseline {self.path}: {len(self.ok)} claims within tolerance, {len(self.regressed)} regressed, "
            f"{new} not in the baseline" + (" (add them with --circuitcheck-update-baseline)" if new else "")
        ]

        def listed(keys: list[str]) -> list[str]:
            shown = keys if verbose else keys[:SHOWN_KEYS]
            more = [f"  ... and {len(keys) - len(shown)} more (-v lists all)"] if len(shown) < len(keys) else []
            return [f"  {key}" for key in shown] + more

        if self.regressed:
            out.append(f"{_count(len(self.regressed), 'claim')} regressed (moved beyond the baseline tolerance; counted as failed):")
            out += listed(self.regressed)
        if self.new:
            out.append(f"{_count(new, 'claim')} not in the baseline (new):")
            out += listed(self.new)
        if self.missing:
            out.append(
                f"{_count(len(self.missing), 'baseline entry', 'baseline entries')} no longer produced by tests that ran to completion "
                "(missing: the claim changed or was removed; remove with --circuitcheck-update-baseline --circuitcheck-prune-baseline):"
            )
            out += listed(list(self.missing))
        if self.unchecked:
            out.append(f"{_count(len(self.unchecked), 'baseline entry', 'baseline entries')} not checked: "
                       "their tests did not run in this run, or stopped before producing them")
        if self.strict:
            if self.fails:
                parts = [f"{_count(new, 'claim')} not in the baseline"] if new else []
                parts += [f"{_count(len(self.missing), 'entry', 'entries')} missing"] if self.missing else []
                out.append(f"strict baseline: the run fails: {', '.join(parts)}; if the change is intended, update the baseline "
                           "(--circuitcheck-update-baseline, with --circuitcheck-prune-baseline to drop the missing entries)")
            else:
                out.append("strict baseline: every claim is in the baseline and no entry of a test that ran is missing")
        return out


def check_run(baseline: Baseline, tests: Sequence[Mapping[str, Any]], strict: bool = False) -> Check:
    """Sum up a run's claims (test records whose claims carry ``baseline`` comparisons) against ``baseline``.

    A claim without a comparison is compared here (default tolerance), so
    records from anywhere can be checked. See :class:`Check` for what missing
    and unchecked mean; entries are listed in the file's (sorted) order.
    """
    result = Check(str(baseline.path), strict=strict)
    produced: set[str] = set()
    for key, _, claim in record_keys(tests):
        produced.add(key)
        comparison = claim.get("baseline")
        status = comparison.get("status") if isinstance(comparison, Mapping) else None
        if status not in ("ok", "regressed", "new"):
            value = claim.get("value")
            status = baseline.compare(key, float(value) if _finite(value) else None, Tolerance()).status
        getattr(result, status).append(key)
    done = completed_tests(tests)
    for key in sorted(baseline.entries):
        if key in produced:
            continue
        if baseline.entries[key].get("test") in done:
            result.missing[key] = dict(baseline.entries[key])
        else:
            result.unchecked.append(key)
    return result


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


@dataclass
class Update:
    """What :func:`update_file` wrote: the entries found under the lock (``before``), the new baseline and the stale keys."""

    path: Path
    before: dict[str, dict[str, Any]]
    baseline: Baseline
    stale: list[str]
    pruned: bool

    @property
    def added(self) -> int:
        return sum(key not in self.before for key in self.baseline.entries)

    @property
    def changed(self) -> int:
        return sum(key in self.before and self.before[key].get("value") != entry.get("value") for key, entry in self.baseline.entries.items())


def update_file(
    path: str | Path, produced: dict[str, dict[str, Any]], completed: Iterable[str], prune: bool = False, timeout: float = LOCK_TIMEOUT
) -> Update:
    """Merge ``produced`` entries into the baseline file at ``path``, safely beside concurrent runs.

    Under a lock on ``.NAME.lock`` beside the file (waiting up to ``timeout``
    seconds for another run's), the file is re-read, so entries another run
    wrote since this one started are kept; then :meth:`Baseline.merged`
    (``completed``: test ids that ran to completion, the only ones whose
    entries can be stale) and an atomic write that keeps the file's mode.
    A read-only file, or one that is no longer a valid baseline, raises
    :class:`BaselineError` and is left as it is. A symbolic link is followed:
    its target is updated.
    """
    shown = Path(path)
    target = Path(os.path.realpath(shown))
    check_writable(shown)
    from filelock import FileLock, Timeout

    lock = FileLock(str(target.with_name(f".{target.name}.lock")), timeout=timeout)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with lock:
            current = Baseline.load(target)
            check_writable(shown)  # another process may have changed it while this run measured
            merged, stale = current.merged(produced, completed, prune)
            _write_atomically(target, merged.dumps())
    except Timeout:
        raise BaselineError(
            f"baseline {shown} not updated: another run has held its lock {lock.lock_file} for {timeout:g} s "
            "(the lock is released when that run ends, even if it crashed): try again when it has finished"
        ) from None
    except OSError as error:
        where = error.filename or target
        raise BaselineError(f"baseline {shown} not updated: cannot write {where} ({error.strerror or error}); the file is left as it was") from None
    return Update(shown, dict(current.entries), Baseline(shown, merged.entries, True), stale, prune)


def update_lines(update: Update, produced: Mapping[str, Any], ran: Iterable[str], completed: Iterable[str]) -> list[str]:
    """What an update says: the file and its counts, the stale entries (removed or kept) and, when pruning, the entries
    of tests that ran but did not run to completion (kept).

    ``produced``: the entries written; ``ran``: ids of every test the results
    hold; ``completed``: those that ran to completion.
    """
    done = set(completed)
    kept = len(update.before) - len(update.stale) * update.pruned - sum(key in update.before for key in produced)
    lines = [
        f"wrote baseline {update.path}: {len(update.baseline.entries)} entries ({update.added} added, {update.changed} changed, "
        f"{kept} kept from tests that did not run or did not change)"
    ]
    if update.stale:
        verb = "removed" if update.pruned else "kept (remove them with --circuitcheck-prune-baseline)"
        lines.append(f"{len(update.stale)} baseline entries are no longer produced by tests that ran to completion, {verb}:")
        lines.extend(f"  {key}" for key in update.stale)
    unreached = sorted(key for key, entry in update.before.items() if entry.get("test") in set(ran) - done and key not in produced)
    if update.pruned and unreached:
        lines.append(
            f"{len(unreached)} baseline entries of tests that did not run to completion (failed, errored or skipped "
            "before producing them) were kept, not pruned:"
        )
        lines.extend(f"  {key}" for key in unreached)
    return lines


def update_from_tests(path: str | Path, tests: Sequence[Mapping[str, Any]], prune: bool = False, timeout: float = LOCK_TIMEOUT) -> tuple[Update, list[str]]:
    """Write the claims of test records (a results document's ``tests``, e.g. merged from shards) into the baseline at ``path``.

    As the pytest plugin's update: every claim with a finite value replaces
    its entry, other entries are kept, and ``prune`` removes only entries of
    tests that ran to completion and no longer produced them. Returns the
    :class:`Update` and the lines that say what changed.
    """
    produced = produced_entries(tests)
    completed = completed_tests(tests)
    ran = {test_id_of(test) for test in tests} | {test_id for _, test_id, _ in record_keys(tests)}
    update = update_file(path, produced, completed, prune, timeout)
    return update, update_lines(update, produced, ran, completed)


def check_writable(path: str | Path) -> None:
    """Raise :class:`BaselineError` when the baseline file exists and is read-only (no write bit, or not writable by us).

    A file its owner made read-only is a statement that it must not change;
    even a user who could override the mode (root) is refused.
    """
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return
    except OSError as error:
        raise BaselineError(f"baseline {path} cannot be inspected ({error.strerror})") from None
    if not mode & 0o222 or not os.access(path, os.W_OK):
        raise BaselineError(
            f"baseline {path} is read-only (mode {stat.filemode(mode)}): refusing to replace it; "
            f"make it writable (chmod u+w {path}) to update it"
        )


def _write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and move it into place: readers see the old file or the new one.

    The new file gets the old one's mode (and owner, where we may set it); a
    new file gets the usual umask mode rather than mkstemp's 0600.
    """
    try:
        old = path.stat()
    except FileNotFoundError:
        old = None
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if old is None:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        else:
            if (old.st_uid, old.st_gid) != (os.geteuid(), os.getegid()):
                try:
                    os.chown(tmp, old.st_uid, old.st_gid)
                except OSError:
                    pass  # only root may give a file away; the mode is kept all the same
            os.chmod(tmp, stat.S_IMODE(old.st_mode))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


_NEVER_REPLACED = "fix it or restore it from version control (it is never replaced automatically)"


class _Unreadable(Exception):
    """Raised from the JSON decoder's hooks: what is wrong, and the text to find its line by."""

    def __init__(self, message: str, needle: str, quoted: bool = True, nth: int = 1):
        super().__init__(message)
        self.needle, self.quoted, self.nth = needle, quoted, nth


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise BaselineError(f"baseline {path} cannot be read ({error.strerror})") from None
    data = data.removeprefix(b"\xef\xbb\xbf")  # a BOM some editors add
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise BaselineError(
            f"{path}:{line}: the baseline file is not UTF-8 text (byte 0x{data[error.start]:02x} at offset {error.start}); "
            f"circuitcheck writes baselines as UTF-8 JSON: {_NEVER_REPLACED}"
        ) from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object's keys, refusing a repeated one (json keeps the last silently; a merge conflict leaves both)."""
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise _Unreadable(f"key {key!r} appears twice in one object (a merge may have kept both): keep one", needle=key, nth=2)
        seen[key] = value
    return seen


def _no_constant(name: str):
    raise _Unreadable(f"{name} is not a value a baseline may hold: stored values must be finite numbers", needle=name, quoted=False)


def _finite(value) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer beyond float range
        return False


def _shown(value) -> str:
    text = repr(value) if not isinstance(value, int) or value.bit_length() < 64 else f"an integer of {value.bit_length()} bits"
    return text if len(text) <= 60 else text[:57] + "..."


def _line_of(text: str, needle: str, quoted: bool = True, nth: int = 1) -> int:
    """The line of the ``nth`` occurrence of ``needle`` (as a JSON string when ``quoted``), or 1."""
    pattern = json.dumps(needle, ensure_ascii=False) if quoted else needle
    found = 0
    for number, line in enumerate(text.splitlines(), start=1):
        found += line.count(pattern)
        if found >= nth:
            return number
    return 1
