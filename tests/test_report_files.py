"""Report files that cannot lie or lose: ownership markers, write failures, crashes, kills.

- circuitcheck overwrites only files it wrote, recognised by structure (the
  parsed JSON document's marker key, type and keys; a meta element in the
  parsed HTML head), never by a substring a user's file can carry;
- a report that cannot be written is one error line and a failing exit status,
  with pytest's summary intact; a path that cannot be written is refused
  before any test runs;
- a worker crash under xdist loses no other test's claims, and the crashed
  test and the tests that never ran make the report incomplete, listed by
  node id;
- from session start the report files say "in progress", so a run killed by
  SIGTERM or SIGKILL never leaves the previous run's green report in place.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from circuitcheck import report
from circuitcheck.errors import CircuitCheckError
from test_plugin import TINY_SOURCE


@pytest.fixture
def tiny(pytester):
    pytester.makeconftest(TINY_SOURCE)
    return pytester


def finished_document(**environment) -> dict:
    document = report.new_document(environment or {"seed": 0})
    document["complete"] = True
    return document


# Ownership: structure, not substrings ---------------------------------------------------------------

FOREIGN_JSON = {
    "settings that name the report path": '{"circuitcheck_report": "out/report.html", "theme": "dark"}\n',
    "the key with a bool": json.dumps({"circuitcheck_report": True, "created": "x", "complete": True, "environment": {}, "tests": []}),
    "the key with a float": json.dumps({"circuitcheck_report": 1.0, "created": "x", "complete": True, "environment": {}, "tests": []}),
    "the key alone": '{"circuitcheck_report": 1}',
    "the key with tests of the wrong type": json.dumps({"circuitcheck_report": 1, "created": "x", "complete": True, "environment": {}, "tests": {}}),
    "the document nested one level down": json.dumps({"saved": finished_document()}),
    "a list of documents": json.dumps([finished_document()]),
    "the key in a string": '{"note": "\\"circuitcheck_report\\": 1, \\"tests\\": []"}',
    "not JSON but starting like a document": '{"circuitcheck_report": 1, "tests": [\n',
    "not UTF-8": b'{"circuitcheck_report": 1, "caf\xe9": []}',
}


@pytest.mark.parametrize("content", FOREIGN_JSON.values(), ids=FOREIGN_JSON.keys())
def test_a_json_file_that_is_not_a_results_document_is_never_overwritten(tmp_path, content):
    path = tmp_path / "settings.json"
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    before = path.read_bytes()
    with pytest.raises(CircuitCheckError, match=r"refusing to overwrite '.*settings.json': it exists and is not a circuitcheck results document"):
        report.write_json(path, finished_document())
    assert path.read_bytes() == before


def test_our_own_results_documents_are_replaced_finished_or_in_progress(tmp_path):
    path = tmp_path / "results.json"
    report.write_json(path, report.in_progress_document({}))
    report.write_json(path, finished_document(seed=1))
    assert json.loads(path.read_text())["environment"] == {"seed": 1}
    report.write_json(path, finished_document(seed=2))
    assert json.loads(path.read_text())["environment"] == {"seed": 2}


GENERATOR_TAG = '<meta name="generator" content="circuitcheck">'
OWNER_TAG = '<meta name="circuitcheck-report" content="results schema 1">'
FOREIGN_HTML = {
    "the generator tag in the body": f"<!doctype html><html><head><title>notes</title></head><body><p>{GENERATOR_TAG}</p></body></html>",
    "the generator tag in the head": f"<!doctype html><html><head>{GENERATOR_TAG}<title>mine</title></head><body>mine</body></html>",
    "the owner tag in a comment": f"<!doctype html><html><head><!-- {OWNER_TAG} --></head><body>mine</body></html>",
    "the owner tag in a script": f"<html><head><script>var s = '{OWNER_TAG}';</script></head><body></body></html>",
    "the owner tag in the body": f"<!doctype html><html><head><title>t</title></head><body>{OWNER_TAG}</body></html>",
    "the owner tag after the head's title": f"<html><head><title>notes about {OWNER_TAG}</title></head><body></body></html>",
    "the owner tag escaped": "<html><head></head><body>&lt;meta name=&quot;circuitcheck-report&quot;&gt;</body></html>",
    "the owner meta with another content": '<html><head><meta name="circuitcheck-report" content="yes"></head></html>',
    "a text file": "my notes\n" + OWNER_TAG,
    "not UTF-8": b"<html><head>\xff\xfe" + OWNER_TAG.encode() + b"</head></html>",
}


@pytest.mark.parametrize("content", FOREIGN_HTML.values(), ids=FOREIGN_HTML.keys())
def test_an_html_file_without_the_owner_meta_in_its_head_is_never_overwritten(tmp_path, content):
    path = tmp_path / "notes.html"
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    before = path.read_bytes()
    with pytest.raises(CircuitCheckError, match=r"refusing to overwrite '.*notes.html': it exists and is not a circuitcheck html report"):
        report.write_html(path, finished_document())
    assert path.read_bytes() == before


def test_our_own_html_reports_carry_the_owner_meta_in_the_head_and_are_replaced(tmp_path):
    path = tmp_path / "report.html"
    report.write_html(path, report.in_progress_document({}))
    head = path.read_text().split("</head>")[0]
    assert OWNER_TAG in head
    report.write_html(path, finished_document())
    assert "has not finished" not in path.read_text()


def test_a_report_path_that_is_not_a_regular_file_is_refused_without_reading_it(tmp_path):
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)  # reading it would block
    with pytest.raises(CircuitCheckError, match=r"refusing to overwrite '.*pipe.json': it exists and is not a regular file"):
        report.write_json(fifo, finished_document())


def test_a_replaced_report_keeps_the_mode_its_owner_gave_it(tmp_path):
    path = tmp_path / "results.json"
    report.write_json(path, finished_document())
    os.chmod(path, 0o640)
    report.write_json(path, finished_document())
    assert path.stat().st_mode & 0o777 == 0o640


# Write failures ---------------------------------------------------------------------------------------


def test_a_write_failure_is_a_circuitcheck_error_naming_the_path_and_the_cause(tmp_path):
    (tmp_path / "out").write_text("a file where a directory should be")
    with pytest.raises(CircuitCheckError, match=r"cannot write .*'.*out/deeper/report.html': '.*out' is a file, not a directory"):
        report.write_html(tmp_path / "out" / "deeper" / "report.html", finished_document())
    with pytest.raises(CircuitCheckError, match=r"cannot write .*'.*out/results.json': '.*out' is a file, not a directory"):
        report.write_json(tmp_path / "out" / "results.json", finished_document())


def test_a_report_that_cannot_be_written_at_the_end_is_one_error_line_with_the_summary_kept(tiny):
    tiny.makepyfile(
        """
        import pathlib, shutil
        import circuitcheck as cc

        def test_claim(model):
            cc.assert_previous_token_head(0, 0, max_score=1.0)

        def test_takes_the_directory_away():
            shutil.rmtree("out")
            pathlib.Path("out").write_text("now a file")
        """
    )
    result = tiny.runpytest_subprocess("-p", "no:cacheprovider", "--circuitcheck-model=tiny:x", "--circuitcheck-json=out/results.json", "--circuitcheck-report=out/report.html")
    output = result.stdout.str() + result.stderr.str()
    assert "Traceback" not in output and "INTERNALERROR" not in output
    errors = [line for line in result.stdout.lines if line.startswith("circuitcheck: report not written")]
    assert len(errors) == 1, output
    assert "out/results.json" in errors[0] and "out/report.html" in errors[0] and "is a file, not a directory" in errors[0]
    result.stdout.fnmatch_lines(["*2 passed*"])
    assert result.ret == pytest.ExitCode.USAGE_ERROR  # the tests passed, the run did not do what was asked


def test_a_write_failure_keeps_the_failed_tests_exit_status(tiny):
    tiny.makepyfile(
        """
        import pathlib, shutil

        def test_fails_after_taking_the_directory_away():
            shutil.rmtree("out")
            pathlib.Path("out").write_text("now a file")
            assert False
        """
    )
    result = tiny.runpytest_subprocess("-p", "no:cacheprovider", "--circuitcheck-json=out/results.json")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["circuitcheck: report not written: *out/results.json*", "*1 failed*"])


def test_a_report_path_that_cannot_be_written_is_refused_before_any_test_runs(tiny):
    tiny.makepyfile("def test_slow():\n    print('RAN')\n")
    (tiny.path / "out").write_text("a file")
    result = tiny.runpytest_subprocess("-p", "no:cacheprovider", "-s", "--circuitcheck-report=out/report.html")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*cannot write the html report 'out/report.html': 'out' is a file, not a directory*"])
    assert "RAN" not in result.stdout.str() and "Traceback" not in result.stderr.str()


def test_a_users_file_at_the_report_path_is_refused_before_any_test_runs(tiny):
    tiny.makepyfile("def test_slow():\n    print('RAN')\n")
    (tiny.path / "settings.json").write_text('{"circuitcheck_report": "out.html"}')
    result = tiny.runpytest_subprocess("-p", "no:cacheprovider", "-s", "--circuitcheck-json=settings.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*refusing to overwrite 'settings.json': it exists and is not a circuitcheck results document*"])
    assert "RAN" not in result.stdout.str()
    assert (tiny.path / "settings.json").read_text() == '{"circuitcheck_report": "out.html"}'


# Worker crashes under xdist --------------------------------------------------------------------------

CRASHING_FILE = """
import os
import circuitcheck as cc

def test_before(model):
    cc.assert_previous_token_head(0, 0, max_score=1.0)

def test_crash(model):
    cc.assert_previous_token_head(0, 1, max_score=1.0)
    os._exit(1)

def test_after(model):
    cc.assert_previous_token_head(1, 0, max_score=1.0)
"""


WORKER_CRASH_SUITE = """
import os, pathlib
import pytest
import circuitcheck as cc

RAN = []

@pytest.mark.parametrize("layer", [0, 1])
@pytest.mark.parametrize("head", [0, 1, 2, 3])
def test_claim(model, layer, head):
    cc.assert_previous_token_head(layer, head, max_score=1.0)
    # worker gw0 crashes once, in its second test: after it recorded a whole test's claims
    if os.environ.get("PYTEST_XDIST_WORKER") == "gw0" and RAN and not pathlib.Path("crashed").exists():
        pathlib.Path("crashed").write_text(os.environ["PYTEST_CURRENT_TEST"].split(" ")[0])
        os._exit(1)
    RAN.append(1)
"""


def test_a_worker_crash_loses_no_other_claim_and_makes_the_report_incomplete(tiny):
    tiny.makepyfile(test_crashing=WORKER_CRASH_SUITE)
    result = tiny.runpytest_subprocess("-p", "no:cacheprovider", "-p", "xdist", "-n", "2", "--circuitcheck-model=tiny:x",
                                       "--circuitcheck-json=results.json", "--circuitcheck-report=report.html")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    crashed = (tiny.path / "crashed").read_text()
    document = json.loads((tiny.path / "results.json").read_text())
    tests = {test["nodeid"]: test for test in document["tests"]}
    assert len(tests) == len(document["tests"]) == 8
    assert tests[crashed]["outcome"] == "crashed" and tests[crashed]["claims"] == []
    # every other test's claim is there, those gw0 recorded before its crash too
    assert {nodeid: test["outcome"] for nodeid, test in tests.items() if nodeid != crashed} == {nodeid: "passed" for nodeid in tests if nodeid != crashed}
    assert all(len(test["claims"]) == 1 for nodeid, test in tests.items() if nodeid != crashed)
    assert document["complete"] is False
    assert any(crashed in reason and "crashed" in reason for reason in document["incomplete_reasons"])
    banner = (tiny.path / "report.html").read_text().split('id="incomplete"')[1].split("</div>")[0]
    assert crashed in banner


def test_tests_that_never_ran_after_a_crash_are_listed_by_node_id(tiny):
    tiny.makepyfile(test_crashing=CRASHING_FILE)
    result = tiny.runpytest_subprocess("-p", "no:cacheprovider", "-p", "xdist", "-n", "1", "--max-worker-restart=0", "--circuitcheck-model=tiny:x",
                                       "--circuitcheck-json=results.json", "--circuitcheck-report=report.html")
    assert result.ret != pytest.ExitCode.OK
    document = json.loads((tiny.path / "results.json").read_text())
    assert document["complete"] is False
    assert document["not_run"] == ["test_crashing.py::test_after"]
    results = report.load(tiny.path / "results.json")
    assert not results.complete and results.not_run == ["test_crashing.py::test_after"] and "1 test did not run" in results.incomplete_reasons
    assert [test["nodeid"].split("::")[-1] for test in document["tests"]] == ["test_before", "test_crash"]
    banner = (tiny.path / "report.html").read_text().split('id="incomplete"')[1].split("</div>")[0]
    assert "test_crashing.py::test_after" in banner and "1 test did not run" in banner


def test_a_run_stopped_early_lists_the_tests_it_did_not_run(tiny):
    tiny.makepyfile("def test_first():\n    assert False\n\ndef test_second():\n    pass\n\ndef test_third():\n    pass\n")
    tiny.runpytest("-x", "-p", "no:cacheprovider", "--circuitcheck-json=results.json").assert_outcomes(failed=1)
    document = json.loads((tiny.path / "results.json").read_text())
    assert document["complete"] is False
    assert document["not_run"] == ["test_a_run_stopped_early_lists_the_tests_it_did_not_run.py::test_second",
                                   "test_a_run_stopped_early_lists_the_tests_it_did_not_run.py::test_third"]


def test_a_finished_run_is_complete_with_nothing_left_out(tiny):
    tiny.makepyfile("import pytest\n\ndef test_a():\n    pass\n\n@pytest.mark.skip\ndef test_b():\n    pass\n")
    tiny.runpytest("-p", "no:cacheprovider", "--circuitcheck-json=results.json", "--deselect", "test_a_finished_run_is_complete_with_nothing_left_out.py::test_a"
                   ).assert_outcomes(skipped=1, deselected=1)
    document = json.loads((tiny.path / "results.json").read_text())
    assert document["complete"] is True and document["not_run"] == [] and document["incomplete_reasons"] == []
    assert "in_progress" not in document


# Killed runs --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_killed_run_leaves_a_report_marked_in_progress_not_the_previous_green_one(pytester, sig):
    pytester.makepyfile(test_green="def test_ok():\n    pass\n")
    pytester.runpytest("-p", "no:cacheprovider", "--circuitcheck-json=results.json", "--circuitcheck-report=report.html").assert_outcomes(passed=1)
    assert json.loads((pytester.path / "results.json").read_text())["complete"] is True

    pytester.makepyfile(test_green="import pathlib, time\n\ndef test_hangs():\n    pathlib.Path('started').touch()\n    time.sleep(120)\n")
    process = subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--circuitcheck-json=results.json", "--circuitcheck-report=report.html"],
                               cwd=pytester.path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (pytester.path / "started").exists():
            assert process.poll() is None and time.monotonic() < deadline, "the run did not reach its test"
            time.sleep(0.1)
        process.send_signal(sig)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -sig
    document = report.read_json(pytester.path / "results.json")
    assert document["in_progress"] is True and document["complete"] is False and document["tests"] == []
    assert document["pid"] == process.pid
    results = report.load(pytester.path / "results.json")
    assert results.in_progress and not results.complete and results.frame().empty
    html = (pytester.path / "report.html").read_text()
    banner = html.split('id="incomplete"')[1].split("</div>")[0]
    assert "has not finished" in banner
    # the next run replaces the marked files with its own
    pytester.makepyfile(test_green="def test_ok():\n    pass\n")
    pytester.runpytest("-p", "no:cacheprovider", "--circuitcheck-json=results.json", "--circuitcheck-report=report.html").assert_outcomes(passed=1)
    assert "in_progress" not in json.loads((pytester.path / "results.json").read_text())
