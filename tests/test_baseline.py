"""Regression baselines: create, pass, regress and fail, update; deterministic files; clear errors."""

import json
import os
import stat
import sys

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
    result.stdout.fnmatch_lines(["*1 baseline entries are no longer produced by tests that ran to completion, kept*", "*test_heads :: L0H0 is a previous-token head"])
    assert len(json.loads((pytester.path / "baseline.json").read_text())["entries"]) == 3
    result = run(pytester, "--circuitcheck-update-baseline", "--circuitcheck-prune-baseline")
    result.stdout.fnmatch_lines(["*1 baseline entries are no longer produced by tests that ran to completion, removed*"])
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


# Nothing a user wrote is lost: interrupts, crashes, concurrent runs, permissions, hostile files -------

STEPS = """
import os
import pytest
import circuitcheck as cc

def test_heads(model):
    cc.assert_induction_head(1, 0, min_score=0.5)
    stop = os.environ.get("STOP")
    if stop == "crash":
        raise RuntimeError("the test crashed between its claims")
    if stop == "skip":
        pytest.skip("skipped between its claims")
    if stop == "fail":
        cc.assert_induction_head(1, 3, min_score=0.999)  # fails, so the claim below is never measured
    cc.assert_previous_token_head(0, 0, min_score=0.5)
"""


@pytest.mark.parametrize("stop", ["crash", "skip", "fail"])
def test_prune_keeps_the_entries_of_a_test_that_stopped_before_its_claims(pytester, monkeypatch, stop):
    pytester.makepyfile(STEPS)
    run(pytester, "--circuitcheck-update-baseline").assert_outcomes(passed=1)
    path = pytester.path / "baseline.json"
    stored = json.loads(path.read_text())["entries"]
    previous = next(key for key in stored if "previous-token" in key)
    monkeypatch.setenv("STOP", stop)
    result = run(pytester, "--circuitcheck-update-baseline", "--circuitcheck-prune-baseline")
    assert result.ret in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED)
    entries = json.loads(path.read_text())["entries"]
    assert entries[previous] == stored[previous]  # not measured this time: kept as it was
    result.stdout.fnmatch_lines(["*1 baseline entries of tests that did not run to completion*were kept, not pruned:", f"  {previous}"])
    result.stdout.no_fnmatch_line("*no longer produced*")


INTERRUPTIBLE = """
import os, pathlib, time
import circuitcheck as cc

def test_heads(model):
    cc.assert_induction_head(1, 0, min_score=0.5)
    if os.environ.get("WAIT_FOR_SIGINT"):
        pathlib.Path("measured").write_text("1")
        time.sleep(300)
    cc.assert_previous_token_head(0, 0, min_score=0.5)
"""


def _wait_for(path, process, seconds=240.0):
    import time

    deadline = time.monotonic() + seconds
    while not path.exists():
        assert process.poll() is None, f"the run ended before {path.name} appeared: {process.communicate()}"
        assert time.monotonic() < deadline, f"{path.name} did not appear within {seconds} s"
        time.sleep(0.05)


def test_ctrl_c_during_an_update_leaves_the_baseline_as_it_was_and_says_so(pytester):
    import signal
    import subprocess

    pytester.makepyfile(INTERRUPTIBLE)
    run(pytester, "--circuitcheck-update-baseline").assert_outcomes(passed=1)
    shifted_baseline(pytester, 0.2)  # an update would move these back
    before = (pytester.path / "baseline.json").read_bytes()
    env_marker = pytester.path / "measured"
    pytester._monkeypatch.setenv("WAIT_FOR_SIGINT", "1")
    process = pytester.popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--circuitcheck-baseline=baseline.json", "--circuitcheck-update-baseline"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    _wait_for(env_marker, process)
    process.send_signal(signal.SIGINT)  # Ctrl-C while the test runs
    out, _ = process.communicate(timeout=120)
    text = out.decode()
    assert process.returncode == pytest.ExitCode.INTERRUPTED, text
    assert "baseline.json not updated: the run was interrupted" in text
    assert (pytester.path / "baseline.json").read_bytes() == before


def test_pytest_exit_during_an_update_does_not_write_the_baseline(pytester):
    pytester.makepyfile(SUITE.replace("    cc.assert_previous_token_head(0, 0, min_score=0.5)\n", "    pytest.exit('stop here', returncode=0)\n").replace("import os\n", "import os\nimport pytest\n"))
    result = run(pytester, "--circuitcheck-update-baseline")
    assert not (pytester.path / "baseline.json").exists()
    result.stdout.fnmatch_lines(["*baseline.json not updated: the run was interrupted; the file is left as it was (the 0 claims measured*"])


CONCURRENT = """
import os, pathlib, time
import circuitcheck as cc

def _meet():
    # both runs have read the baseline (at their start) and measured before either writes it
    pathlib.Path(os.environ["ME"]).write_text("1")
    deadline = time.monotonic() + 240
    while not pathlib.Path(os.environ["OTHER"]).exists():
        assert time.monotonic() < deadline, "the other run never reached its test"
        time.sleep(0.05)

def test_a(model):
    cc.assert_induction_head(1, 0, min_score=0.5)
    _meet()

def test_b(model):
    cc.assert_previous_token_head(0, 0, min_score=0.5)
    _meet()

def test_c(model):
    cc.assert_induction_head(1, 3, min_score=0.5)
"""


def test_two_concurrent_updates_keep_each_others_entries(pytester):
    import subprocess

    pytester.makepyfile(CONCURRENT)
    run(pytester, "--circuitcheck-update-baseline", "-k", "test_c").assert_outcomes(passed=1, deselected=2)
    args = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--circuitcheck-baseline=baseline.json", "--circuitcheck-update-baseline"]
    processes = []
    for me, other in (("a", "b"), ("b", "a")):
        pytester._monkeypatch.setenv("ME", str(pytester.path / me))
        pytester._monkeypatch.setenv("OTHER", str(pytester.path / other))
        processes.append(pytester.popen([*args, "-k", f"test_{me}"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
    outputs = [process.communicate(timeout=400)[0].decode() for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    keys = json.loads((pytester.path / "baseline.json").read_text())["entries"]
    tests = sorted(key.split("::")[1].split()[0] for key in keys)
    assert tests == ["test_a", "test_b", "test_c"], outputs


def _update_many(path: str, worker: int, rounds: int) -> None:
    from circuitcheck.claims.baseline import update_file

    for n in range(rounds):
        key = f"t.py::test_{worker}_{n} :: claim"
        update_file(path, {key: {"test": f"t.py::test_{worker}_{n}", "claim": "claim", "value": worker + n / 100}}, completed=[])


def test_updates_from_many_processes_at_once_lose_no_entry(tmp_path):
    import multiprocessing

    path = tmp_path / "baseline.json"
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_update_many, args=(str(path), worker, 15)) for worker in range(4)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(120)
    assert [process.exitcode for process in workers] == [0] * 4
    entries = Baseline.load(path).entries
    assert len(entries) == 4 * 15
    assert entries["t.py::test_3_14 :: claim"]["value"] == 3.14


def test_a_read_only_baseline_is_refused_before_any_test_runs_and_left_as_it_is(pytester):
    pytester.makepyfile(SUITE)
    run(pytester, "--circuitcheck-update-baseline").assert_outcomes(passed=2)
    path = pytester.path / "baseline.json"
    shifted_baseline(pytester, 0.2)
    path.chmod(0o444)
    before = path.read_bytes()
    result = run(pytester, "--circuitcheck-update-baseline")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*baseline.json is read-only (mode -r--r--r--): refusing to replace it; make it writable (chmod u+w*"])
    assert path.read_bytes() == before and stat.S_IMODE(path.stat().st_mode) == 0o444
    # comparing with a read-only baseline is what it is for
    run(pytester).assert_outcomes(passed=1, failed=1)


def test_a_baseline_made_read_only_during_the_run_is_not_written(pytester, monkeypatch):
    pytester.makepyfile(SUITE + "\ndef test_z_locks_it():\n    os.chmod('baseline.json', 0o440)\n")
    (pytester.path / "baseline.json").write_text('{"circuitcheck_baseline": 1, "entries": {}}\n')
    result = run(pytester, "--circuitcheck-update-baseline", "-p", "no:randomly")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stdout.fnmatch_lines(["*baseline not written: baseline*baseline.json is read-only (mode -r--r-----)*"])
    assert (pytester.path / "baseline.json").read_text() == '{"circuitcheck_baseline": 1, "entries": {}}\n'


def test_an_update_keeps_the_files_mode_and_a_new_file_gets_the_umask_mode(pytester):
    pytester.makepyfile(SUITE)
    run(pytester, "--circuitcheck-update-baseline").assert_outcomes(passed=2)
    path = pytester.path / "baseline.json"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0600
    path.chmod(0o640)
    shifted_baseline(pytester, 0.2)
    run(pytester, "--circuitcheck-update-baseline").assert_outcomes(passed=2)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert not [p.name for p in pytester.path.glob(".baseline.json.*.tmp")]  # no temporary file left behind


def test_a_non_utf8_baseline_is_a_clear_error_not_an_internal_error(pytester):
    pytester.makepyfile(SUITE)
    raw = b'{"circuitcheck_baseline": 1,\n "entries": {"caf\xe9": {"value": 0.5}}}\n'  # Latin-1, as an old editor saves it
    (pytester.path / "baseline.json").write_bytes(raw)
    result = run(pytester, "--circuitcheck-update-baseline")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    result.stderr.fnmatch_lines(["*baseline.json:2: the baseline file is not UTF-8 text (byte 0xe9 at offset 46)*never replaced automatically*"])
    assert (pytester.path / "baseline.json").read_bytes() == raw


ENTRY = '{{"circuitcheck_baseline": 1, "entries": {{\n  "t.py::test_x :: claim": {{"test": "t.py::test_x", "value": {value}}}\n}}}}\n'


@pytest.mark.parametrize(
    "text, message",
    [
        (ENTRY.format(value="Infinity"), "baseline.json:2: Infinity is not a value a baseline may hold: stored values must be finite numbers"),
        (ENTRY.format(value="-Infinity"), "baseline.json:2: -Infinity is not a value a baseline may hold"),
        (ENTRY.format(value="NaN"), "baseline.json:2: NaN is not a value a baseline may hold"),
        (ENTRY.format(value="1e999"), "baseline.json:2: entry 't.py::test_x :: claim' has value inf: a stored value must be a finite number"),
        (ENTRY.format(value="1" + "0" * 400), "has value an integer of 1329 bits: a stored value must be a finite number"),
        (ENTRY.format(value='0.5, "test": ["a"]').replace('"test": "t.py::test_x", ', ""), "has test ['a']: it must be a test id (a string)"),
        (
            '{"circuitcheck_baseline": 1, "entries": {\n  "k": {"value": 0.5},\n  "k": {"value": 0.7}\n}}\n',
            "baseline.json:3: key 'k' appears twice in one object (a merge may have kept both): keep one",
        ),
    ],
    ids=["Infinity", "-Infinity", "NaN", "1e999", "huge-int", "test-not-a-string", "duplicate-key"],
)
def test_a_baseline_value_that_is_not_finite_or_a_hand_merge_is_refused(tmp_path, text, message):
    from circuitcheck.claims.baseline import BaselineError

    path = tmp_path / "baseline.json"
    path.write_text(text)
    with pytest.raises(BaselineError) as info:
        Baseline.load(path)
    assert message in str(info.value)
    assert path.read_text() == text


def test_a_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "baseline.json"
    path.write_bytes(b"\xef\xbb\xbf" + ENTRY.format(value="0.5").encode())
    assert Baseline.load(path).entries["t.py::test_x :: claim"]["value"] == 0.5


def test_an_update_rereads_the_file_and_refuses_one_that_stopped_being_a_baseline(tmp_path):
    from circuitcheck.claims.baseline import BaselineError, update_file

    path = tmp_path / "baseline.json"
    path.write_text('{"not": "a baseline"}\n')  # e.g. replaced by another tool after the run started
    with pytest.raises(BaselineError, match="is not a circuitcheck baseline"):
        update_file(path, {"t.py::t :: c": {"test": "t.py::t", "value": 0.5}}, completed=[])
    assert path.read_text() == '{"not": "a baseline"}\n'


def test_an_update_through_a_symbolic_link_updates_its_target(tmp_path):
    from circuitcheck.claims.baseline import update_file

    (tmp_path / "shared").mkdir()
    target = tmp_path / "shared" / "baseline.json"
    target.write_text(ENTRY.format(value="0.5"))
    link = tmp_path / "baseline.json"
    link.symlink_to(target)
    update = update_file(link, {"t.py::t :: c": {"test": "t.py::t", "value": 0.25}}, completed=[])
    assert link.is_symlink() and (update.added, update.changed) == (1, 0)
    assert set(Baseline.load(target).entries) == {"t.py::test_x :: claim", "t.py::t :: c"}


def test_an_update_waits_for_another_runs_lock_and_says_whose_it_was(tmp_path):
    from filelock import FileLock

    from circuitcheck.claims.baseline import BaselineError, update_file

    path = tmp_path / "baseline.json"
    with FileLock(str(tmp_path / ".baseline.json.lock")):
        with pytest.raises(BaselineError, match=r"not updated: another run has held its lock .*\.baseline\.json\.lock for 0\.2 s"):
            update_file(path, {"t.py::t :: c": {"test": "t.py::t", "value": 0.5}}, completed=[], timeout=0.2)
    assert not path.exists()
    update_file(path, {"t.py::t :: c": {"test": "t.py::t", "value": 0.5}}, completed=[])
    assert list(Baseline.load(path).entries) == ["t.py::t :: c"]


# Check mode: what the run no longer produces, strict mode, regressions in the summaries -------------

EDITED = """
import os
import circuitcheck as cc

CIRCUIT = os.environ.get("CIRCUIT", "L0H0 L0H2 L1H0 L1H1 L1H2 L1H3")

def test_heads(model):
    cc.assert_induction_head(1, 0, min_score=0.5)

def test_circuit(model, induction_task):
    cc.assert_sufficient(CIRCUIT, min_recovery=0.9)
"""
EDITED_CIRCUIT = "L0H0 L0H1 L0H2 L1H0 L1H1 L1H2 L1H3"


def _keys(pytester):
    return list(json.loads((pytester.path / "baseline.json").read_text())["entries"])


def test_checking_lists_entries_that_tests_which_ran_no_longer_produce(pytester):
    pytester.makepyfile(SUITE)
    run(pytester, "--circuitcheck-update-baseline").assert_outcomes(passed=2)
    gone = next(key for key in _keys(pytester) if "previous-token" in key)
    pytester.makepyfile(SUITE.replace("    cc.assert_previous_token_head(0, 0, min_score=0.5)\n", ""))
    result = run(pytester)  # checking, not updating
    result.assert_outcomes(passed=2)
    assert result.ret == pytest.ExitCode.OK  # not strict: listed, not failed
    result.stdout.fnmatch_lines(
        ["*baseline*: 2 claims within tolerance, 0 regressed, 0 not in the baseline",
         "*1 baseline entry no longer produced by tests that ran to completion (missing:*",
         f"  {gone}"]
    )


def test_entries_of_tests_that_did_not_run_are_not_checked_rather_than_missing(pytester):
    pytester.makepyfile(SUITE)
    run(pytester, "--circuitcheck-update-baseline").assert_outcomes(passed=2)
    result = run(pytester, "--circuitcheck-baseline-strict", "-k", "custom")
    result.assert_outcomes(passed=1, deselected=1)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*2 baseline entries not checked: their tests did not run in this run, or stopped before producing them"])
    result.stdout.no_fnmatch_line("*no longer produced*")


def test_editing_the_circuit_of_assert_sufficient_fails_a_strict_run(pytester, monkeypatch, xdist=False):
    pytester.makepyfile(EDITED)
    run(pytester, "--circuitcheck-update-baseline", xdist=xdist).assert_outcomes(passed=2)
    (old,) = [key for key in _keys(pytester) if "test_circuit" in key]
    monkeypatch.setenv("CIRCUIT", EDITED_CIRCUIT)
    result = run(pytester, "--circuitcheck-baseline-strict", "--circuitcheck-json=results.json", xdist=xdist)
    result.assert_outcomes(passed=2)  # every claim holds; the run fails on the baseline
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    document = json.loads((pytester.path / "results.json").read_text())
    (new,) = [claim["baseline_key"] for test in document["tests"] for claim in test["claims"] if "test_circuit" in claim["baseline_key"]]
    assert new != old and "L0H1" in new
    result.stdout.fnmatch_lines(
        ["*1 claim not in the baseline (new):", f"  {new}",
         "*1 baseline entry no longer produced by tests that ran to completion (missing:*", f"  {old}",
         "*strict baseline: the run fails: 1 claim not in the baseline, 1 entry missing;*"]
    )
    section = document["baseline"]
    assert (section["mode"], section["strict"], section["fails"]) == ("check", True, True)
    assert section["new"] == [new] and [entry["key"] for entry in section["missing"]] == [old]
    assert section["counts"] == {"ok": 1, "regressed": 0, "new": 1, "missing": 1, "unchecked": 0}
    # without strict the same run passes, and says the same
    result = run(pytester, xdist=xdist)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*1 claim not in the baseline (new):", f"  {new}", "*(missing:*", f"  {old}"])


def test_strict_mode_under_xdist_sees_every_workers_claims(pytester):
    pytester.makepyfile(SUITE)
    run(pytester, "--circuitcheck-update-baseline").assert_outcomes(passed=2)
    gone = next(key for key in _keys(pytester) if "previous-token" in key)
    pytester.makepyfile(SUITE.replace("    cc.assert_previous_token_head(0, 0, min_score=0.5)\n", ""))
    result = run(pytester, "--circuitcheck-baseline-strict", xdist=True)
    result.assert_outcomes(passed=2)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*: 2 claims within tolerance, 0 regressed, 0 not in the baseline", "*(missing:*", f"  {gone}",
                                 "*strict baseline: the run fails: 1 entry missing;*"])


def test_the_ini_key_makes_checking_strict(pytester):
    pytester.makepyfile(SUITE)
    run(pytester, "--circuitcheck-update-baseline").assert_outcomes(passed=2)
    pytester.makeini("[pytest]\ncircuitcheck_baseline_strict = true\n")
    assert run(pytester).ret == pytest.ExitCode.OK  # nothing new or missing
    pytester.makepyfile(SUITE.replace("assert_induction_head(1, 3,", "assert_induction_head(1, 2,"))  # another head: another claim
    result = run(pytester)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*strict baseline: the run fails: 1 claim not in the baseline, 1 entry missing*"])


def test_a_strict_run_that_produced_every_entry_passes_and_says_so(pytester):
    pytester.makepyfile(SUITE)
    run(pytester, "--circuitcheck-update-baseline").assert_outcomes(passed=2)
    result = run(pytester, "--circuitcheck-baseline-strict")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*strict baseline: every claim is in the baseline and no entry of a test that ran is missing"])


def test_strict_needs_a_baseline_file(pytester):
    pytester.makepyfile(SUITE)
    result = pytester.runpytest("--circuitcheck-baseline-strict")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--circuitcheck-baseline-strict needs a file*"])


def test_a_regression_counts_as_a_failed_claim_in_every_summary(pytester):
    from circuitcheck import report

    pytester.makepyfile(SUITE)
    run(pytester, "--circuitcheck-update-baseline").assert_outcomes(passed=2)
    path = pytester.path / "baseline.json"
    data = json.loads(path.read_text())
    regressed = next(key for key in data["entries"] if "previous-token" in key)
    data["entries"][regressed]["value"] += 0.3  # only this claim moves beyond its tolerance
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    result = run(pytester, "--circuitcheck-json=results.json", "--circuitcheck-report=report.html")
    result.assert_outcomes(passed=1, failed=1)
    # the terminal: the claim held its threshold, but its test failed on the move
    result.stdout.fnmatch_lines(["*2 claims held, 1 failed*", "*1 claim regressed (moved beyond the baseline tolerance; counted as failed):", f"  {regressed}"])
    document = json.loads((pytester.path / "results.json").read_text())
    claims = [claim for test in document["tests"] for claim in test["claims"]]
    assert all(claim["passed"] for claim in claims)  # each claim's own verdict is kept as data
    # the JSON's summary, counted here from the records
    expected_failed = sum(claim.get("baseline", {}).get("status") == "regressed" or not claim["passed"] for claim in claims)
    summary = report.load(pytester.path / "results.json").summary()
    assert (summary["claims_passed"], summary["claims_failed"], summary["claims_regressed"]) == (len(claims) - expected_failed, expected_failed, 1)
    assert summary["by_kind"]["previous_token_head"] == {"passed": 0, "failed": 1}
    # the report's summary and the report command
    html = (pytester.path / "report.html").read_text()
    assert '<span class="big">2</span>claims held' in html and '<span class="big">1</span>claims failed' in html
    out = pytester.run(sys.executable, "-m", "circuitcheck", "report", "results.json", "-o", "again.html")
    assert "3 claims, 2 held, 1 failed" in out.stdout.str()


def test_missing_entries_reach_the_json_and_the_html_report(pytester):
    pytester.makepyfile(SUITE)
    run(pytester, "--circuitcheck-update-baseline").assert_outcomes(passed=2)
    gone = next(key for key in _keys(pytester) if "previous-token" in key)
    pytester.makepyfile(SUITE.replace("    cc.assert_previous_token_head(0, 0, min_score=0.5)\n", ""))
    run(pytester, "--circuitcheck-json=results.json", "--circuitcheck-report=report.html").assert_outcomes(passed=2)
    document = json.loads((pytester.path / "results.json").read_text())
    (entry,) = document["baseline"]["missing"]
    stored = json.loads((pytester.path / "baseline.json").read_text())["entries"][gone]
    assert entry == {"key": gone, **stored}
    assert gone in document["environment"]["baseline"]
    html = (pytester.path / "report.html").read_text()
    assert "missing 1" in html  # the baseline box of the summary
    assert gone.replace(">", "&gt;") in html  # the environment table names it


def test_an_update_records_what_it_did_in_the_json(pytester):
    pytester.makepyfile(SUITE)
    run(pytester, "--circuitcheck-update-baseline", "--circuitcheck-json=results.json").assert_outcomes(passed=2)
    section = json.loads((pytester.path / "results.json").read_text())["baseline"]
    assert (section["mode"], section["written"], section["added"], section["stale"]) == ("update", 3, 3, [])


def test_check_run_without_pytest_matches_a_recount(tmp_path):
    from circuitcheck.claims.baseline import check_run

    path = tmp_path / "baseline.json"
    entries = {
        "t.py::test_a :: kept": {"test": "t.py::test_a", "value": 0.5},
        "t.py::test_a :: gone": {"test": "t.py::test_a", "value": 0.5},
        "t.py::test_b :: not run": {"test": "t.py::test_b", "value": 0.5},
        "t.py::test_c :: after the failure": {"test": "t.py::test_c", "value": 0.5},
    }
    path.write_text(json.dumps({"circuitcheck_baseline": 1, "entries": entries}))
    claim = {"claim": "kept", "passed": True, "value": 0.505}
    tests = [
        {"nodeid": "t.py::test_a", "outcome": "passed", "claims": [claim, {**claim, "claim": "new one", "value": 0.1},
                                                                   {**claim, "claim": "a check_* only", "value": None, "informational": True}]},
        {"nodeid": "t.py::test_c", "outcome": "failed", "claims": [{**claim, "claim": "first", "value": 0.1, "passed": False}]},
    ]
    check = check_run(Baseline.load(path), tests, strict=True)
    assert check.ok == ["t.py::test_a :: kept"]
    assert check.new == ["t.py::test_a :: new one", "t.py::test_c :: first"]
    assert list(check.missing) == ["t.py::test_a :: gone"]  # test_c stopped early: its entries are not missing
    assert check.unchecked == ["t.py::test_b :: not run", "t.py::test_c :: after the failure"]
    assert check.fails
    # informational check_* records decide nothing: never new, never written
    from circuitcheck.claims.baseline import produced_entries

    assert "t.py::test_a :: a check_* only" not in produced_entries(tests)
