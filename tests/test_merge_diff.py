"""Sharded runs merged into one report and one baseline; what changed between two runs (``python -m circuitcheck diff``)."""

import json
import sys

import pytest

from circuitcheck import report
from circuitcheck.claims.baseline import Baseline

SUITE = """
import os
import circuitcheck as cc

MIN = float(os.environ.get("MIN_SCORE", "0.5"))

def test_a(model):
    cc.assert_induction_head(1, 0, min_score=MIN)

def test_b(model):
    cc.assert_previous_token_head(0, 0, min_score=0.5)
    cc.assert_induction_head(1, 3, min_score=0.5)

def test_c(model):
    cc.assert_previous_token_head(0, 2, min_score=0.5)
"""


def cli(pytester, *args):
    return pytester.run(sys.executable, "-m", "circuitcheck", *args)


def claims_of(document):
    return {claim["baseline_key"]: claim for test in document["tests"] for claim in test["claims"]}


#: full.json, a.json and b.json as the first test that needs them wrote them (the runs take seconds; the files are data)
_SHARD_FILES: dict[str, str] = {}


@pytest.fixture
def shards(pytester):
    """A pytester directory holding the suite and its results: the suite run whole (full.json) and as two shards
    (a.json: test_a and test_b; b.json: test_c)."""
    pytester.makepyfile(test_suite=SUITE)
    if not _SHARD_FILES:
        pytester.runpytest("--circuitcheck-json=full.json").assert_outcomes(passed=3)
        pytester.runpytest("-k", "test_a or test_b", "--circuitcheck-json=a.json").assert_outcomes(passed=2, deselected=1)
        pytester.runpytest("-k", "test_c", "--circuitcheck-json=b.json").assert_outcomes(passed=1, deselected=2)
        _SHARD_FILES.update({name: (pytester.path / f"{name}.json").read_text() for name in ("full", "a", "b")})
    for name, text in _SHARD_FILES.items():
        (pytester.path / f"{name}.json").write_text(text)
    return pytester


# Sharded runs ------------------------------------------------------------------------------


def test_report_merges_the_shards_into_one_report_with_every_shards_environment(shards):
    result = cli(shards, "report", "a.json", "b.json", "-o", "merged.html", "--json", "merged.json")
    assert result.ret == 0, result.stderr.str()
    result.stdout.fnmatch_lines(["circuitcheck: wrote merged.json", "circuitcheck: wrote merged.html (2 results files merged): 4 claims, 4 held, 0 failed"])
    merged = json.loads((shards.path / "merged.json").read_text())
    a, b, full = (json.loads((shards.path / name).read_text()) for name in ("a.json", "b.json", "full.json"))
    assert merged["tests"] == a["tests"] + b["tests"]
    # the shards measured what one whole run measures
    assert {key: claim["value"] for key, claim in claims_of(merged).items()} == {key: claim["value"] for key, claim in claims_of(full).items()}
    assert merged["complete"] is True and merged["not_run"] == [] and merged["incomplete_reasons"] == []
    assert [(shard["source"], shard["environment"], shard["tests"]) for shard in merged["shards"]] == [
        ("a.json", a["environment"], 2), ("b.json", b["environment"], 1)]
    assert merged["environment"]["seed"] == 0  # the same in both shards: shown once
    assert merged["environment"]["shards"].startswith("2 results files merged: a.json (2 tests, complete, created ")
    html = (shards.path / "merged.html").read_text()
    assert "2 results files merged: a.json" in html and "b.json (1 test, complete" in html
    assert '<span class="big">4</span>claims held' in html


def test_shards_that_hold_the_same_test_are_refused_naming_the_tests(shards):
    result = cli(shards, "report", "a.json", "full.json", "-o", "merged.html")
    assert result.ret == 2
    result.stderr.fnmatch_lines(
        ["circuitcheck report: error: cannot merge: 2 tests appear in more than one shard*"
         "test_suite.py::test_a (in a.json, full.json); test_suite.py::test_b (in a.json, full.json);*each test must run in one shard only*"]
    )
    assert not (shards.path / "merged.html").exists()
    assert cli(shards, "report", "a.json", "a.json", "-o", "merged.html").ret == 2


def test_several_results_files_need_an_output_path(shards):
    result = cli(shards, "report", "a.json", "b.json")
    assert result.ret == 2
    result.stderr.fnmatch_lines(["*2 results files are merged into one report: give its path with -o*"])


def test_one_results_file_renders_as_it_did(shards):
    result = cli(shards, "report", "full.json")
    assert result.ret == 0
    assert result.stdout.lines[-1] == "circuitcheck: wrote full.html: 4 claims, 4 held, 0 failed"
    direct = report.write_html(shards.path / "direct.html", report.read_json(shards.path / "full.json"))
    assert (shards.path / "full.html").read_text() == direct.read_text()
    assert "results files merged" not in direct.read_text()


def test_a_baseline_updated_from_merged_shards_is_the_one_a_whole_run_writes(shards):
    shards.runpytest("--circuitcheck-baseline=whole.json", "--circuitcheck-update-baseline").assert_outcomes(passed=3)
    assert cli(shards, "report", "a.json", "b.json", "-o", "merged.html", "--json", "merged.json").ret == 0
    result = cli(shards, "baseline", "update", "merged.json", "--baseline", "from-merged.json")
    assert result.ret == 0, result.stderr.str()
    result.stdout.fnmatch_lines(["circuitcheck: wrote baseline from-merged.json: 4 entries (4 added, 0 changed, 0 kept*"])
    whole = (shards.path / "whole.json").read_text()
    assert (shards.path / "from-merged.json").read_text() == whole
    # the shards' files directly: merged on the way
    assert cli(shards, "baseline", "update", "a.json", "b.json", "--baseline", "from-shards.json").ret == 0
    assert (shards.path / "from-shards.json").read_text() == whole


def test_baseline_update_keeps_other_entries_and_prunes_only_tests_that_ran(shards):
    shards.runpytest("--circuitcheck-baseline=base.json", "--circuitcheck-update-baseline").assert_outcomes(passed=3)
    stored = Baseline.load(shards.path / "base.json").entries
    document = json.loads((shards.path / "b.json").read_text())
    (test,) = document["tests"]
    dropped = test["claims"].pop()["baseline_key"]  # test_c no longer produces its claim
    (shards.path / "b-edited.json").write_text(json.dumps(document))
    result = cli(shards, "baseline", "update", "b-edited.json", "--baseline", "base.json", "--prune")
    assert result.ret == 0, result.stderr.str()
    result.stdout.fnmatch_lines(["*1 baseline entries are no longer produced by tests that ran to completion, removed:", f"  {dropped}"])
    assert Baseline.load(shards.path / "base.json").entries == {key: entry for key, entry in stored.items() if key != dropped}


@pytest.mark.parametrize("unfinished", [{"incomplete_reasons": ["interrupted: KeyboardInterrupt"]}, {"in_progress": True}],
                         ids=["interrupted", "in-progress"])
def test_baseline_update_refuses_results_of_a_run_that_did_not_finish(shards, unfinished):
    document = {**json.loads((shards.path / "a.json").read_text()), **unfinished}
    (shards.path / "partial.json").write_text(json.dumps(document))
    for files in (["partial.json"], ["partial.json", "b.json"]):
        result = cli(shards, "baseline", "update", *files, "--baseline", "base.json")
        assert result.ret == 2
        result.stderr.fnmatch_lines(["circuitcheck baseline update: error: *partial*the baseline is left as it was*"])
        assert not (shards.path / "base.json").exists()


def test_the_shards_baseline_checks_merge_into_one(shards, monkeypatch):
    shards.runpytest("--circuitcheck-baseline=base.json", "--circuitcheck-update-baseline").assert_outcomes(passed=3)
    shards.makepyfile(test_suite=SUITE.replace("    cc.assert_induction_head(1, 3, min_score=0.5)\n", ""))
    gone = next(key for key in Baseline.load(shards.path / "base.json").entries if "test_b :: L1H3" in key)
    shards.runpytest("-k", "test_a or test_b", "--circuitcheck-baseline=base.json", "--circuitcheck-json=a.json").assert_outcomes(passed=2, deselected=1)
    shards.runpytest("-k", "test_c", "--circuitcheck-baseline=base.json", "--circuitcheck-json=b.json").assert_outcomes(passed=1, deselected=2)
    a, b = (json.loads((shards.path / name).read_text())["baseline"] for name in ("a.json", "b.json"))
    assert [entry["key"] for entry in a["missing"]] == [gone] and b["missing"] == []
    assert a["unchecked"] and b["unchecked"]  # each shard saw only its own tests
    assert cli(shards, "report", "a.json", "b.json", "-o", "merged.html", "--json", "merged.json").ret == 0
    merged = json.loads((shards.path / "merged.json").read_text())["baseline"]
    assert [entry["key"] for entry in merged["missing"]] == [gone]
    assert merged["unchecked"] == []  # every entry's test ran in one shard or the other
    assert merged["counts"] == {"ok": 3, "regressed": 0, "new": 0, "missing": 1, "unchecked": 0}
    assert "missing 1" in (shards.path / "merged.html").read_text()


# Merging documents (plain data) ----------------------------------------------------------------


def claim(text, value, passed=True, **extra):
    return {"schema": 1, "kind": "induction_head", "claim": text, "metric": "induction score", "value": value, "passed": passed,
            "n": 8, "ci_low": value - 0.05, "ci_high": value + 0.05, "confidence": 0.95, "decided_on": "lower bound",
            "min_value": 0.5, "max_value": None, "model": "zoo:induction-2l", "checkpoint": None, "parameters": {}, "notes": [],
            "evidence": {}, **extra}


def test_record(nodeid, *claims, outcome="passed"):
    return {"nodeid": nodeid, "test_id": nodeid, "outcome": outcome, "duration": 0.1, "claims": list(claims), "sweeps": []}


test_record.__test__ = False  # a builder, not a test


def document(*tests, **extra):
    return {"circuitcheck_report": 1, "created": "2025-01-01T00:00:00+00:00", "complete": True,
            "environment": {"python": "3.11.7", "device": "cpu"}, "tests": list(tests), "not_run": [], "incomplete_reasons": [], **extra}


def test_environment_entries_that_differ_list_every_shards_value():
    one = document(test_record("t.py::test_a"))
    two = document(test_record("t.py::test_b"), environment={"python": "3.11.7", "device": "cuda:0", "git commit": "abc"})
    merged = report.merge([report.Results(one, "one.json"), report.Results(two, "two.json")]).document
    assert merged["environment"]["python"] == "3.11.7"
    assert merged["environment"]["device"] == "one.json: cpu · two.json: cuda:0"
    assert merged["environment"]["git commit"] == "one.json: (not recorded) · two.json: abc"


def test_an_incomplete_shard_makes_the_merged_document_incomplete_and_says_which():
    one = document(test_record("t.py::test_a"), complete=False, not_run=["t.py::test_x"],
                   incomplete_reasons=["stopped early: KeyboardInterrupt", "1 test did not run"])
    two = document(test_record("t.py::test_b"), in_progress=True, started="2025-01-01T00:00:00+00:00", pid=7, complete=False)
    merged = report.merge([report.Results(one, "one.json"), report.Results(two, "two.json")]).document
    assert merged["complete"] is False and merged["not_run"] == ["t.py::test_x"]
    assert merged["incomplete_reasons"][0] == "one.json: stopped early: KeyboardInterrupt"
    assert merged["incomplete_reasons"][1].startswith("two.json: in progress (started 2025-01-01T00:00:00+00:00, pid 7)")
    assert merged["incomplete_reasons"][2:] == ["1 test did not run"]
    assert "in_progress" not in merged  # the merged document is finished; its shard was not
    assert [shard["in_progress"] for shard in merged["shards"]] == [False, True]


def test_a_shards_own_keys_stay_with_it():
    correction = {"method": "holm", "family_size": 1}
    merged = report.merge([report.Results(document(test_record("t.py::a"), correction=correction), "one.json"),
                           report.Results(document(test_record("t.py::b")), "two.json")]).document
    assert "correction" not in merged  # a family of one shard is not the merged run's family
    assert merged["shards"][0]["correction"] == correction and "correction" not in merged["shards"][1]


def test_a_test_not_run_in_one_shard_but_run_in_another_is_not_listed_as_not_run():
    one = document(test_record("t.py::test_a"), complete=False, not_run=["t.py::test_b"], incomplete_reasons=["1 test did not run"])
    merged = report.merge([report.Results(one, "one.json"), report.Results(document(test_record("t.py::test_b")), "two.json")]).document
    assert merged["not_run"] == [] and merged["complete"] is True


# diff ------------------------------------------------------------------------------------------


def write(path, *tests, **extra):
    path.write_text(json.dumps(document(*tests, **extra)))
    return path


def test_diff_lists_verdicts_values_added_and_removed_claims(tmp_path, pytester):
    old = write(tmp_path / "old.json", test_record("t.py::test_a", claim("L1H0 is an induction head", 0.8), claim("kept", 0.7),
                                                 claim("moved", 0.7), claim("dropped", 0.6)))
    new = write(tmp_path / "new.json", test_record("t.py::test_a", claim("L1H0 is an induction head", 0.4, passed=False),
                                                 claim("kept", 0.7), claim("moved", 0.75), claim("added", 0.9)))
    result = cli(pytester, "diff", str(old), str(new))
    assert result.ret == 1
    result.stdout.fnmatch_lines([
        f"circuitcheck diff: {old} -> {new}",
        "verdict changed (1):",
        "  t.py::test_a :: L1H0 is an induction head: held -> FAILED; induction score 0.8 -> 0.4 (-0.4); lower bound 0.75 -> 0.35",
        "value changed, same verdict (1):",
        "  t.py::test_a :: moved: held; induction score 0.7 -> 0.75 (+0.05); lower bound 0.65 -> 0.7",
        "removed (in the old results only) (1):",
        "  t.py::test_a :: dropped: held, induction score 0.6",
        "added (in the new results only) (1):",
        "  t.py::test_a :: added: held, induction score 0.9",
        "1 claim unchanged",
        "exit status 1: 1 verdict changed, 1 claim missing from *new.json",
    ])


def test_diff_exits_0_when_only_values_moved_or_claims_were_added(tmp_path, pytester):
    old = write(tmp_path / "old.json", test_record("t.py::test_a", claim("a", 0.8)))
    new = write(tmp_path / "new.json", test_record("t.py::test_a", claim("a", 0.81), claim("b", 0.9)))
    result = cli(pytester, "diff", str(old), str(new))
    assert result.ret == 0
    result.stdout.fnmatch_lines(["value changed, same verdict (1):", "added (in the new results only) (1):", "0 claims unchanged"])
    result = cli(pytester, "diff", str(old), str(new), "--tolerance", "0.02")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*(value changes within 0.02 ignored)", "added (in the new results only) (1):", "1 claim unchanged"])
    result.stdout.no_fnmatch_line("value changed*")


def test_diff_of_a_run_with_itself_is_empty(tmp_path, pytester):
    old = write(tmp_path / "old.json", test_record("t.py::test_a", claim("a", 0.8), claim("a", 0.6)))
    changes = report.diff(report.load(old), report.load(old))
    assert (changes.verdict_changed, changes.value_changed, changes.added, changes.removed, changes.unchanged) == ([], [], [], [], 2)
    assert not changes.failed


def test_a_regression_is_a_changed_verdict(tmp_path, pytester):
    old = write(tmp_path / "old.json", test_record("t.py::test_a", claim("a", 0.8, baseline={"status": "ok"})))
    new = write(tmp_path / "new.json", test_record("t.py::test_a", claim("a", 0.6, baseline={"status": "regressed"}), outcome="failed"))
    result = cli(pytester, "diff", str(old), str(new))
    assert result.ret == 1
    result.stdout.fnmatch_lines(["  t.py::test_a :: a: held -> REGRESSED; *"])


def test_claims_are_matched_by_test_claim_and_checkpoint(tmp_path):
    old = write(tmp_path / "old.json", test_record("t.py::test_a", claim("a", 0.8, checkpoint="step400"), claim("a", 0.9, checkpoint="step800")))
    new = write(tmp_path / "new.json", test_record("t.py::test_a", claim("a", 0.9, checkpoint="step800"), claim("a", 0.8, checkpoint="step400")),
                test_record("t.py::test_b", claim("a", 0.8, checkpoint="step400")))
    changes = report.diff(report.load(old), report.load(new))
    assert changes.unchanged == 2 and changes.value_changed == []
    assert [change.key for change in changes.added] == ["t.py::test_b :: a @ step400"]


def test_diff_of_two_real_runs_finds_the_claim_that_now_fails(shards, monkeypatch):
    monkeypatch.setenv("MIN_SCORE", "0.99")
    shards.runpytest("--circuitcheck-json=stricter.json").assert_outcomes(passed=2, failed=1)
    result = cli(shards, "diff", "full.json", "stricter.json")
    assert result.ret == 1
    result.stdout.fnmatch_lines(["verdict changed (1):", "  test_suite.py::test_a :: L1H0 is an induction head: held -> FAILED; *", "3 claims unchanged"])
    assert cli(shards, "diff", "full.json", "full.json").ret == 0


@pytest.mark.parametrize(
    "args, message",
    [(["missing.json", "old.json"], "results file 'missing.json' does not exist"),
     (["old.json", "old.json", "--tolerance", "-1"], "tolerance=-1.0 is not valid: it must be a finite number >= 0"),
     (["old.json", "notes.json"], "notes.json is not a circuitcheck results file")],
    ids=["missing-file", "negative-tolerance", "not-results"],
)
def test_diff_usage_errors_exit_2(pytester, args, message):
    write(pytester.path / "old.json", test_record("t.py::test_a", claim("a", 0.8)))
    (pytester.path / "notes.json").write_text('{"notes": 1}')
    result = cli(pytester, "diff", *args)
    assert result.ret == 2
    result.stderr.fnmatch_lines([f"circuitcheck diff: error: *{message}*"])


def test_informational_checks_are_left_out_of_the_diff(tmp_path):
    old = write(tmp_path / "old.json", test_record("t.py::test_a", claim("a", 0.8), claim("looked at", 0.8, informational=True)))
    new = write(tmp_path / "new.json", test_record("t.py::test_a", claim("a", 0.8), claim("looked at", 0.1, passed=False, informational=True)))
    changes = report.diff(report.load(old), report.load(new))
    assert (changes.verdict_changed, changes.unchanged, changes.failed) == ([], 1, False)
