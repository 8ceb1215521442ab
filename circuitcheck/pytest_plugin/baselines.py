"""The baseline plugin: compares each claim's value with a stored baseline, and updates the file.

Registered by the main plugin as ``circuitcheck-baseline``. The file format
and the comparison are :mod:`circuitcheck.claims.baseline` (usable without
pytest); this plugin loads the file named by ``--circuitcheck-baseline``,
compares every recorded claim while its test runs (on the worker, under
xdist), and at the end of the session (on the controller) sums up the check
or, with ``--circuitcheck-update-baseline``, writes the merged file.

Checking, the summary lists the regressed and new claims and the stored
entries that tests which ran to completion no longer produced (missing: a
claim whose text, circuit or threshold changed has a new key, so its old
entry goes missing and the new one is new). The same is written to the
results document's ``baseline`` object and the report's environment table.
``--circuitcheck-baseline-strict`` (ini ``circuitcheck_baseline_strict``)
fails the run on new or missing entries; a regression always fails its test.

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

from ..claims.baseline import completed_tests, is_regressed  # noqa: F401  (light: json, math, no torch)
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
        #: the check of this run against the file (check mode, at session finish on the controller)
        self.check = None
        self.strict = options.baseline_strict(config)
        path = options.get(config, "baseline")
        if config.getoption("circuitcheck_update_baseline") and not path:
            raise pytest.UsageError("--circuitcheck-update-baseline needs a file: give --circuitcheck-baseline=FILE (or the ini key)")
        if config.getoption("circuitcheck_baseline_strict", False) and not path:
            raise pytest.UsageError("--circuitcheck-baseline-strict needs a file: give --circuitcheck-baseline=FILE (or the ini key)")
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

    def finish(self, exitstatus: int = pytest.ExitCode.OK) -> bool:
        """Sum up the check, or write the updated file (merging; pruning when asked). True when strict mode fails the run."""
        from ..claims.baseline import check_run, produced_entries, record_keys, update_from_tests

        if self.baseline is None:
            return False
        collector = self.config.pluginmanager.get_plugin("circuitcheck-collect")
        if not self.updating:
            self.check = check_run(self.baseline, self.tests, strict=self.strict)
            self.lines.extend(self.check.lines(verbose=self.config.option.verbose > 0))
            if collector is not None:  # the collector writes the files after this hook (registered before this plugin)
                collector.extra["baseline"] = self.check.to_dict()
                collector.extra_environment["baseline"] = self.check.describe()
            return self.check.fails
        if self.interrupted or exitstatus in (pytest.ExitCode.INTERRUPTED, pytest.ExitCode.INTERNAL_ERROR):
            why = "was interrupted" if exitstatus != pytest.ExitCode.INTERNAL_ERROR else "ended in an internal error"
            self.lines.append(
                f"baseline {self.baseline.path} not updated: the run {why}; the file is left as it was "
                f"(the {len(record_keys(self.tests))} claims measured before that were discarded); run again to update it"
            )
            return False
        prune = bool(self.config.getoption("circuitcheck_prune_baseline"))
        update, lines = update_from_tests(self.baseline.path, self.tests, prune)
        self.lines.extend(lines)
        if collector is not None:
            collector.extra["baseline"] = {
                "path": str(update.path), "mode": "update", "written": len(produced_entries(self.tests)), "added": update.added,
                "changed": update.changed, "stale": list(update.stale), "pruned": prune,
            }
            collector.extra_environment["baseline"] = lines[0].removeprefix("wrote baseline ") + " (updated)"
        return False

    def pytest_keyboard_interrupt(self, excinfo) -> None:
        self.interrupted = True  # Ctrl-C, pytest.exit() or collection errors: this run's values are partial

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus) -> None:
        if hasattr(session.config, "workerinput"):
            return  # the controller holds every test's claims and writes the file once
        from ..claims.baseline import BaselineError

        try:
            fails = self.finish(exitstatus)
        except (BaselineError, OSError) as error:
            self.lines.append(f"baseline not written: {error}")
            session.exitstatus = pytest.ExitCode.USAGE_ERROR
            return
        if fails and session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

