"""The baseline plugin: compares each claim's value with a stored baseline, and updates the file.

Registered by the main plugin as ``circuitcheck-baseline``. The file format
and the comparison are :mod:`circuitcheck.claims.baseline` (usable without
pytest); this plugin loads the file named by ``--circuitcheck-baseline``,
compares every recorded claim while its test runs (on the worker, under
xdist), and at the end of the session (on the controller) counts the results
or, with ``--circuitcheck-update-baseline``, writes the merged file.

An update writes nothing when the run was interrupted (Ctrl-C,
``pytest.exit``, collection errors) or ended in an internal error, refuses a
read-only file before any test runs, merges under the file's lock (so
concurrent runs keep each other's entries) and prunes only entries of tests
that ran to completion.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from . import options
from .identity import item_identity

_KEYS = pytest.StashKey[dict]()


class BaselinePlugin:
    """Baseline comparison and update for one run; ``lines`` are what the terminal summary reports."""

    def __init__(self, config: pytest.Config, tests: list[dict[str, Any]]):
        """``tests``: the run's per-test records (the report collector's list, complete at session finish)."""
        from ..claims.baseline import Baseline, BaselineError

        self.config = config
        self.tests = tests
        self.baseline = None
        self.lines: list[str] = []
        self.interrupted = False
        path = options.get(config, "baseline")
        if config.getoption("circuitcheck_update_baseline") and not path:
            raise pytest.UsageError("--circuitcheck-update-baseline needs a file: give --circuitcheck-baseline=FILE (or the ini key)")
        if config.getoption("circuitcheck_prune_baseline") and not config.getoption("circuitcheck_update_baseline"):
            raise pytest.UsageError("--circuitcheck-prune-baseline only applies with --circuitcheck-update-baseline")
        if path:
            from ..claims.baseline import check_writable

            try:
                self.baseline = Baseline.load(Path(config.rootpath, path) if not Path(path).is_absolute() else path)
                if self.updating and not hasattr(config, "workerinput"):
                    check_writable(self.baseline.path)  # before any test runs, not after
            except BaselineError as error:
                raise pytest.UsageError(str(error)) from None

    @property
    def updating(self) -> bool:
        """Whether this run writes its values into the baseline instead of comparing with it."""
        return bool(self.config.getoption("circuitcheck_update_baseline"))

    def compare(self, item: pytest.Item, result, tolerance, record: dict) -> str | None:
        """Key the claim, compare it with the stored value; annotate ``record``; a message when it regressed."""
        from ..claims.baseline import Tolerance, entry_key

        test_id = item_identity(item)["test_id"]
        key = entry_key(test_id, result.claim, result.checkpoint)
        seen = item.stash.setdefault(_KEYS, {})
        seen[key] = seen.get(key, 0) + 1
        if seen[key] > 1:  # the same claim twice in one test
            key = f"{key} #{seen[key]}"
        record["baseline_key"] = key
        record["baseline_test"] = test_id
        if self.baseline is None:
            return None
        if self.updating:
            record["baseline"] = {"status": "recorded"}
            return None
        comparison = self.baseline.compare(key, result.value, Tolerance.parse(tolerance))
        record["baseline"] = comparison.to_dict()
        if comparison.status == "regressed":
            return comparison.message(result.claim, str(self.baseline.path), result.metric)
        return None

    def finish(self, exitstatus: int = pytest.ExitCode.OK) -> None:
        """Count the comparisons, or write the updated file (merging; pruning when asked)."""
        from ..claims.baseline import make_entry, rounded, update_file

        if self.baseline is None:
            return
        claims = [(test, claim) for test in self.tests for claim in test["claims"] if claim.get("baseline_key")]
        if not self.updating:
            statuses = [claim.get("baseline", {}).get("status") for _, claim in claims]
            new = statuses.count("new")
            self.lines.append(
                f"baseline {self.baseline.path}: {statuses.count('ok')} claims within tolerance, {statuses.count('regressed')} regressed, "
                f"{new} not in the baseline" + (" (add them with --circuitcheck-update-baseline)" if new else "")
            )
            return
        if self.interrupted or exitstatus in (pytest.ExitCode.INTERRUPTED, pytest.ExitCode.INTERNAL_ERROR):
            why = "was interrupted" if exitstatus != pytest.ExitCode.INTERNAL_ERROR else "ended in an internal error"
            self.lines.append(
                f"baseline {self.baseline.path} not updated: the run {why}; the file is left as it was "
                f"(the {len(claims)} claims measured before that were discarded); run again to update it"
            )
            return
        produced = {claim["baseline_key"]: make_entry(claim["baseline_test"], claim) for _, claim in claims if rounded(claim.get("value")) is not None}
        ran = {claim["baseline_test"] for _, claim in claims} | {test.get("test_id", test["nodeid"]) for test in self.tests}
        completed = completed_tests(self.tests)
        prune = bool(self.config.getoption("circuitcheck_prune_baseline"))
        update = update_file(self.baseline.path, produced, completed, prune)
        kept = len(update.before) - len(update.stale) * prune - sum(key in update.before for key in produced)
        self.lines.append(
            f"wrote baseline {update.path}: {len(update.baseline.entries)} entries ({update.added} added, {update.changed} changed, "
            f"{kept} kept from tests that did not run or did not change)"
        )
        if update.stale:
            verb = "removed" if prune else "kept (remove them with --circuitcheck-prune-baseline)"
            self.lines.append(f"{len(update.stale)} baseline entries are no longer produced by tests that ran to completion, {verb}:")
            self.lines.extend(f"  {key}" for key in update.stale)
        unreached = sorted(
            key for key, entry in update.before.items() if entry.get("test") in ran - completed and key not in produced
        )
        if prune and unreached:
            self.lines.append(
                f"{len(unreached)} baseline entries of tests that did not run to completion (failed, errored or skipped "
                "before producing them) were kept, not pruned:"
            )
            self.lines.extend(f"  {key}" for key in unreached)

    def pytest_keyboard_interrupt(self, excinfo) -> None:
        self.interrupted = True  # Ctrl-C, pytest.exit() or collection errors: this run's values are partial

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus) -> None:
        if hasattr(session.config, "workerinput"):
            return  # the controller holds every test's claims and writes the file once
        from ..claims.baseline import BaselineError

        try:
            self.finish(exitstatus)
        except (BaselineError, OSError) as error:
            self.lines.append(f"baseline not written: {error}")
            session.exitstatus = pytest.ExitCode.USAGE_ERROR


def completed_tests(tests: list[dict[str, Any]]) -> set[str]:
    """Ids of the tests whose body ran to its end with every claim measured (passed, or xfail-marked and passed).

    A failed claim stops its test, so the claims after it were never measured;
    only these tests' missing entries can be called stale.
    """
    from ..claims.baseline import rounded

    return {
        test.get("test_id", test["nodeid"])
        for test in tests
        if test["outcome"] in ("passed", "xpassed") and all(rounded(claim.get("value")) is not None for claim in test["claims"])
    }
