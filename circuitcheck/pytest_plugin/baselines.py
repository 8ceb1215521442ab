"""The baseline plugin: compares each claim's value with a stored baseline, and updates the file.

Registered by the main plugin as ``circuitcheck-baseline``. The file format
and the comparison are :mod:`circuitcheck.claims.baseline` (usable without
pytest); this plugin loads the file named by ``--circuitcheck-baseline``,
compares every recorded claim while its test runs (on the worker, under
xdist), and at the end of the session (on the controller) counts the results
or, with ``--circuitcheck-update-baseline``, writes the merged file.
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
        path = options.get(config, "baseline")
        if config.getoption("circuitcheck_update_baseline") and not path:
            raise pytest.UsageError("--circuitcheck-update-baseline needs a file: give --circuitcheck-baseline=FILE (or the ini key)")
        if config.getoption("circuitcheck_prune_baseline") and not config.getoption("circuitcheck_update_baseline"):
            raise pytest.UsageError("--circuitcheck-prune-baseline only applies with --circuitcheck-update-baseline")
        if path:
            try:
                self.baseline = Baseline.load(Path(config.rootpath, path) if not Path(path).is_absolute() else path)
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

    def finish(self) -> None:
        """Count the comparisons, or write the updated file (merging; pruning when asked)."""
        from .. import report as _report
        from ..claims.baseline import make_entry

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
        produced = {claim["baseline_key"]: make_entry(claim["baseline_test"], claim) for _, claim in claims if claim.get("value") is not None}
        ran = {claim["baseline_test"] for _, claim in claims} | {test.get("test_id", test["nodeid"]) for test in self.tests}
        prune = bool(self.config.getoption("circuitcheck_prune_baseline"))
        before = dict(self.baseline.entries)
        merged, stale = self.baseline.merged(produced, ran, prune)
        _report._atomic_write(merged.path, merged.dumps())
        added = sum(key not in before for key in produced)
        changed = sum(key in before and before[key].get("value") != entry["value"] for key, entry in produced.items())
        self.lines.append(
            f"wrote baseline {merged.path}: {len(merged.entries)} entries ({added} added, {changed} changed, "
            f"{len(before) - len(stale) * prune - sum(key in before for key in produced)} kept from tests that did not run or did not change)"
        )
        if stale:
            verb = "removed" if prune else "kept (remove them with --circuitcheck-prune-baseline)"
            self.lines.append(f"{len(stale)} baseline entries are no longer produced by tests that ran, {verb}:")
            self.lines.extend(f"  {key}" for key in stale)

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus) -> None:
        if hasattr(session.config, "workerinput"):
            return  # the controller holds every test's claims and writes the file once
        from ..claims.baseline import BaselineError

        try:
            self.finish()
        except (BaselineError, OSError) as error:
            self.lines.append(f"baseline not written: {error}")
            session.exitstatus = pytest.ExitCode.USAGE_ERROR
