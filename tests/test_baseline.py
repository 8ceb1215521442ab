"""Regression baselines: create, pass, regress and fail, update; deterministic files; clear errors."""

import json

import pytest

from circuitcheck.claims.baseline import Baseline, Tolerance

SUITE = """
import os
import circuitcheck as cc

SHIFT = float(os.environ.get("CLAIM_SHIFT", "0"))

def test_heads(model):
    cc.assert_induction_head(1, 0, min_score=0.5)
    cc.assert_previous_token_head(0, 0, min_score=0.5)

def test_custom_tolerance(model):
    cc.assert_induction_head(1, 3, min_score=0.5, tolerance=0.5)
"""


def run(pytester, *args, xdist=False):
    if xdist:
        return pytester.runpytest_subprocess("-n", "2", "--circuitcheck-baseline=baseline.json", *args)
    return pytester.runpytest("--circuitcheck-baseline=baseline.json", *args)


def shifted_baseline(pytester, by):
    """Edit the stored values, as a regression in the model would look from the other side."""
    path = pytester.path / "baseline.json"
    data = json.loads(path.read_text())
    for entry in data["entries"].values():
        entry["value"] = round(entry["value"] + by, 6)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


@pytest.mark.parametrize("xdist", [False, True], ids=["serial", "xdist"])
def test_the_baseline_workflow_create_pass_regress_update(pytester, xdist):
    pytester.makepyfile(SUITE)
    # create
    result = run(pytester, "--circuitcheck-update-baseline", xdist=xdist)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*wrote baseline*baseline.json: 3 entries (3 added, 0 changed*"])
    data = json.loads((pytester.path / "baseline.json").read_text())
    assert data["circuitcheck_baseline"] == 1 and len(data["entries"]) == 3
    key = "test_the_baseline_workflow_create_pass_regress_update.py::test_heads :: L1H0 is an induction head"
    assert data["entries"][key]["kind"] == "induction_head"
    # pass
    result = run(pytester, xdist=xdist)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*baseline*: 3 claims within tolerance, 0 regressed, 0 not in the baseline*"])
    # regress and fail, with stored vs measured and the direction
    shifted_baseline(pytester, 0.2)
    result = run(pytester, xdist=xdist)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*regression: L1H0 is an induction head moved beyond the baseline tolerance",
            "*stored:   induction score 1.04*",
            "*measured: induction score 0.84* (down by 0.2*; allowed ±0.0209)",
        ]
    )
    # update, then pass again
    run(pytester, "--circuitcheck-update-baseline", xdist=xdist).assert_outcomes(passed=2)
    run(pytester, xdist=xdist).assert_outcomes(passed=2)


def test_the_file_is_deterministic(pytester):
    pytester.makepyfile(SUITE)
    run(pytester, "--circuitcheck-update-baseline").assert_outcomes(passed=2)
    first = (pytester.path / "baseline.json").read_text()
    run(pytester, "--circuitcheck-update-baseline", "-p", "no:randomly").assert_outcomes(passed=2)
    assert (pytester.path / "baseline.json").read_text() == first
    assert first == Baseline.load(pytester.path / "baseline.json").dumps()
    keys = list(json.loads(first)["entries"])
    assert keys == sorted(keys)


def test_updating_keeps_entries_of_tests_that_did_not_run(pytester):
    pytester.makepyfile(SUITE)
    run(pytester, "--circuitcheck-update-baseline").assert_outcomes(passed=2)
    run(pytester, "--circuitcheck-update-baseline", "-k", "custom").assert_outcomes(passed=1, deselected=1)
    assert len(json.loads((pytester.path / "baseline.json").read_text())["entries"]) == 3


def test_entries_no_longer_produced_are_listed_and_removed_only_with_prune(pytester):
    pytester.makepyfile(SUITE)
    run(pytester, "--circuitcheck-update-baseline").assert_outcomes(passed=2)
    pytester.makepyfile(SUITE.replace("    cc.assert_previous_token_head(0, 0, min_score=0.5)\n", ""))
    result = run(pytester, "--circuitcheck-update-baseline")
    result.stdout.fnmatch_lines(["*1 baseline entries are no longer produced by tests that ran, kept*", "*test_heads :: L0H0 is a previous-token head"])
    assert len(json.loads((pytester.path / "baseline.json").read_text())["entries"]) == 3
    result = run(pytester, "--circuitcheck-update-baseline", "--circuitcheck-prune-baseline")
    result.stdout.fnmatch_lines(["*1 baseline entries are no longer produced by tests that ran, removed*"])
    assert len(json.loads((pytester.path / "baseline.json").read_text())["entries"]) == 2


def test_a_new_claim_passes_and_is_counted(pytester):
    pytester.makepyfile(SUITE)
    (pytester.path / "baseline.json").write_text('{"circuitcheck_baseline": 1, "entries": {}}\n')
    result = run(pytester)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*0 claims within tolerance, 0 regressed, 3 not in the baseline (add them with --circuitcheck-update-baseline)*"])


def test_a_hand_broken_file_is_a_clear_error_with_the_line_and_is_never_replaced(pytester):
    pytester.makepyfile(SUITE)
    broken = '{\n  "circuitcheck_baseline": 1,\n  "entries": {\n    "x": {"value": 0.5,}\n  }\n}\n'
    (pytester.path / "baseline.json").write_text(broken)
    result = run(pytester, "--circuitcheck-update-baseline")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*baseline.json:4: the baseline file is not valid JSON*never replaced automatically*"])
    assert (pytester.path / "baseline.json").read_text() == broken


def test_a_file_that_is_not_a_baseline_is_refused(pytester):
    pytester.makepyfile(SUITE)
    (pytester.path / "baseline.json").write_text('{"something": "else"}\n')
    result = run(pytester, "--circuitcheck-update-baseline")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*is not a circuitcheck baseline*refusing to use or overwrite it*"])
    assert (pytester.path / "baseline.json").read_text() == '{"something": "else"}\n'


def test_update_needs_a_file(pytester):
    pytester.makepyfile(SUITE)
    result = pytester.runpytest("--circuitcheck-update-baseline")
    result.stderr.fnmatch_lines(["*--circuitcheck-update-baseline needs a file*"])


@pytest.mark.parametrize(
    "value, expected",
    [(None, Tolerance(0.01, 0.02)), (0.1, Tolerance(0.1, 0.0)), ({"rel": 0.5}, Tolerance(0.0, 0.5)), ({"abs": 0.2, "rel": 0.1}, Tolerance(0.2, 0.1))],
)
def test_tolerance_forms(value, expected):
    assert Tolerance.parse(value) == expected


@pytest.mark.parametrize("value", [-1, {"absolute": 1}, "big", True])
def test_bad_tolerances_are_clear_errors(value):
    with pytest.raises(ValueError, match="tolerance"):
        Tolerance.parse(value)


def test_checkpoints_are_part_of_the_key(pytester):
    from circuitcheck import zoo

    last = zoo.checkpoints("induction-2l")[-1]
    pytester.makepyfile(SUITE)
    run(pytester, "--circuitcheck-update-baseline", f"--circuitcheck-checkpoints={last}").assert_outcomes(passed=2)
    keys = list(json.loads((pytester.path / "baseline.json").read_text())["entries"])
    assert any(f"test_heads[{last}] :: L1H0 is an induction head" in key for key in keys)
