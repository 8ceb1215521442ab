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
compares, merges and writes (:func:`update_file`); the pytest layer decides
when a run may write.

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
from typing import Any, Iterable

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
        "kind": claim["kind"],
        "metric": claim["metric"],
        "model": claim.get("model"),
        "value": rounded(claim["value"]),
    }


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
