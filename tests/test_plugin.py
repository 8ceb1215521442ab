"""The pytest plugin end to end, through pytester."""

import json
import re
import subprocess
import sys
import textwrap

import pytest

TINY_SOURCE = textwrap.dedent(
    '''
    import circuitcheck

    LOADS = {}


    def build(seed=0):
        import transformer_lens.model_bridge.sources.native  # noqa: F401
        from transformer_lens.config import TransformerBridgeConfig
        from transformer_lens.model_bridge import TransformerBridge

        cfg = TransformerBridgeConfig(d_model=16, d_head=4, n_heads=4, n_layers=2, n_ctx=48, d_vocab=20, attn_only=True, seed=seed)
        return TransformerBridge.boot_native(cfg)


    @circuitcheck.hookimpl
    def circuitcheck_load_model(spec, device):
        if spec.startswith("tiny:"):
            LOADS[spec] = LOADS.get(spec, 0) + 1
            return build()


    def pytest_sessionfinish(session):
        print("LOADS", sorted(LOADS.items()))
    '''
)


@pytest.fixture
def tiny(pytester):
    pytester.makeconftest(TINY_SOURCE)
    return pytester


def test_model_fixture_defaults_to_the_zoo_induction_model(pytester):
    pytester.makepyfile(
        """
        def test_default(model):
            assert model.circuitcheck_spec == "zoo:induction-2l"
            assert not model.training
            assert not any(p.requires_grad for p in model.parameters())
        """
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_spec_resolution_order_is_marker_then_cli_then_ini(tiny):
    tiny.makeini("[pytest]\ncircuitcheck_model = tiny:from-ini\n")
    tiny.makepyfile(
        """
        import pytest

        def test_option(model, request):
            assert model.circuitcheck_spec == request.config.getoption("expected")

        @pytest.mark.circuitcheck_model("tiny:from-marker")
        def test_marker(model):
            assert model.circuitcheck_spec == "tiny:from-marker"
        """
    )
    tiny.makeconftest(TINY_SOURCE + "\n\ndef pytest_addoption(parser):\n    parser.addoption('--expected')\n")
    tiny.runpytest("--expected=tiny:from-ini").assert_outcomes(passed=2)
    tiny.runpytest("--expected=tiny:from-cli", "--circuitcheck-model=tiny:from-cli").assert_outcomes(passed=2)


def test_each_model_is_loaded_once_per_session(tiny):
    tiny.makepyfile(
        """
        import pytest

        def test_one(model): pass
        def test_two(model): pass

        @pytest.mark.circuitcheck_model("tiny:other")
        def test_three(model): pass

        @pytest.mark.circuitcheck_model("tiny:other")
        def test_four(model): pass
        """
    )
    result = tiny.runpytest("-s", "--circuitcheck-model=tiny:main")
    result.assert_outcomes(passed=4)
    result.stdout.re_match_lines([r".*LOADS \[\('tiny:main', 1\), \('tiny:other', 1\)\]"])


def test_a_plain_conftest_function_is_a_model_source(pytester):
    pytester.makeconftest(TINY_SOURCE.replace("@circuitcheck.hookimpl\n", ""))
    pytester.makepyfile("def test_plain(model):\n    assert model.circuitcheck_spec == 'tiny:plain'\n")
    pytester.runpytest("--circuitcheck-model=tiny:plain").assert_outcomes(passed=1)


def test_assertions_find_the_model_without_requesting_the_fixture(tiny):
    tiny.makepyfile(
        """
        import circuitcheck as cc

        def test_no_fixture_argument():
            result = cc.assert_previous_token_head(0, 0, min_score=0.0)
            assert result.model == "tiny:x"
        """
    )
    tiny.runpytest("--circuitcheck-model=tiny:x").assert_outcomes(passed=1)


def test_a_failed_claim_reads_like_a_lab_note_and_points_at_the_users_line(tiny):
    tiny.makepyfile(
        """
        import circuitcheck as cc

        def test_claim(model):
            cc.assert_induction_head(1, 2, min_score=0.9)
        """
    )
    result = tiny.runpytest("--circuitcheck-model=tiny:x")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "claim failed: L1H2 is an induction head (model tiny:x)",
            "*measured: induction score 0.* (95% CI * to *, n=16)",
            "*required: induction score >= 0.9, decided on the lower bound 0.*",
            "*best heads of this kind instead: L*H* 0.*",
            "",
            "test_a_failed_claim_reads_like_a_lab_note_and_points_at_the_users_line.py:4: in test_claim",
            "    cc.assert_induction_head(1, 2, min_score=0.9)",
        ]
    )
    assert "circuitcheck/checks" not in result.stdout.str()


def test_an_unknown_spec_lists_the_known_sources(pytester):
    pytester.makepyfile("def test_x(model): pass\n")
    result = pytester.runpytest("--circuitcheck-model=nosuch:thing")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*no model source recognises the spec 'nosuch:thing'*", "*zoo:NAME?@CHECKPOINT?: bundled toy models*"])


def test_an_unknown_zoo_model_lists_the_zoo(pytester):
    pytester.makepyfile("def test_x(model): pass\n")
    result = pytester.runpytest("--circuitcheck-model=zoo:induction-9l")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*no zoo model named 'induction-9l': available zoo models are induction-1l, induction-2l*"])


def test_a_missing_local_directory_is_named(pytester):
    pytester.makepyfile("def test_x(model): pass\n")
    result = pytester.runpytest("--circuitcheck-model=./no/such/dir")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*local model directory './no/such/dir' does not exist*"])


def test_cache_fixture_is_computed_once_per_model_and_prompt(tiny):
    tiny.makepyfile(
        """
        import pytest

        SEEN = []

        @pytest.mark.circuitcheck_prompt("unused")
        def test_needs_a_tokenizer(cache):
            pass

        def test_first(cache):
            SEEN.append(cache)
            assert cache["blocks.0.attn.hook_pattern"].shape[0] == 16

        def test_second(cache):
            assert cache is SEEN[0]
        """
    )
    result = tiny.runpytest("--circuitcheck-model=tiny:x")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*has no tokenizer, so string prompts cannot be used*"])


def test_cache_fixture_runs_the_prompt_marker(pytester):
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.circuitcheck_prompt("a b c d a b c")
        def test_prompt(cache, model):
            assert cache["blocks.1.attn.hook_pattern"].shape == (1, model.cfg.n_heads, 8, 8)
        """
    )
    pytester.runpytest().assert_outcomes(passed=1)


def test_seed_option_reaches_the_assertions(tiny):
    tiny.makepyfile(
        """
        import circuitcheck as cc

        def test_seed(model):
            assert cc.assert_previous_token_head(0, 0, min_score=0.0).parameters["seed"] == 7
        """
    )
    tiny.runpytest("--circuitcheck-model=tiny:x", "--circuitcheck-seed=7").assert_outcomes(passed=1)
    result = tiny.runpytest("--circuitcheck-model=tiny:x", "--circuitcheck-seed=seven")
    assert "--circuitcheck-seed='seven' is not valid: it must be an integer" in result.stdout.str() + result.stderr.str()


def test_claims_are_written_to_json_and_html(tiny):
    tiny.makepyfile(
        """
        import circuitcheck as cc

        def test_holds(model):
            cc.assert_previous_token_head(0, 0, max_score=1.0)

        def test_fails(model):
            cc.assert_induction_head(1, 1, min_score=0.99)

        def test_plain():
            pass
        """
    )
    result = tiny.runpytest("-v", "--circuitcheck-model=tiny:x", "--circuitcheck-json=out/results.json", "--circuitcheck-report=out/report.html")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        ["*circuitcheck claims*", "*::test_holds", "  held  *<= 1 *L0H0 is not a previous-token head", "*::test_fails", "  FAILED *< 0.99 *L1H1 is an induction head"]
    )
    document = json.loads((tiny.path / "out/results.json").read_text())
    assert document["complete"] is True
    outcomes = {t["nodeid"].split("::")[-1]: (t["outcome"], len(t["claims"])) for t in document["tests"]}
    assert outcomes == {"test_holds": ("passed", 1), "test_fails": ("failed", 1), "test_plain": ("passed", 0)}
    html = (tiny.path / "out/report.html").read_text()
    assert "L1H1 is an induction head" in html and 'id="summary"' in html


def test_report_text_is_escaped(tiny):
    tiny.makepyfile(
        """
        import pytest

        @pytest.mark.parametrize("text", ["<script>alert(1)</script>"])
        def test_escape(text):
            pass
        """
    )
    tiny.runpytest("--circuitcheck-report=report.html").assert_outcomes(passed=1)
    html = (tiny.path / "report.html").read_text()
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_a_foreign_file_is_never_overwritten(tiny):
    tiny.makepyfile("def test_x():\n    pass\n")
    (tiny.path / "notes.html").write_text("<p>my own notes</p>")
    result = tiny.runpytest("--circuitcheck-report=notes.html")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    # refused at session start, before any test runs
    result.stderr.fnmatch_lines(["*refusing to overwrite 'notes.html': it exists and is not a circuitcheck html report*"])
    assert (tiny.path / "notes.html").read_text() == "<p>my own notes</p>"


def test_importing_the_plugin_imports_nothing_heavy():
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", "import circuitcheck.pytest_plugin.plugin"], capture_output=True, text=True, check=True)
    imported = {line.split("|")[-1].strip() for line in out.stderr.splitlines() if "|" in line}
    heavy = {name for name in imported if name.split(".")[0] in ("torch", "transformer_lens", "transformers", "pandas", "numpy")}
    assert heavy == set()


def test_a_project_not_using_circuitcheck_pays_no_torch_import(pytester):
    pytester.makepyfile(
        """
        import sys

        def test_plain():
            assert "torch" not in sys.modules
            assert "transformer_lens" not in sys.modules
        """
    )
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)


XDIST_SUITE = """
import circuitcheck as cc

def test_a(model):
    cc.assert_previous_token_head(0, 0, max_score=1.0)

def test_b(model):
    cc.assert_previous_token_head(0, 1, max_score=1.0)

def test_c(model):
    cc.assert_previous_token_head(1, 0, max_score=1.0)

def test_d(model):
    cc.assert_previous_token_head(1, 1, max_score=1.0)
"""


def test_under_xdist_the_controller_writes_one_report_with_every_claim(tiny):
    tiny.makepyfile(XDIST_SUITE)
    result = tiny.runpytest_subprocess("-n", "2", "-p", "xdist", "--circuitcheck-model=tiny:x", "--circuitcheck-json=results.json", "--circuitcheck-report=report.html")
    result.assert_outcomes(passed=4)
    document = json.loads((tiny.path / "results.json").read_text())
    claims = sorted(claim["claim"] for test in document["tests"] for claim in test["claims"])
    assert claims == ["L0H0 is not a previous-token head", "L0H1 is not a previous-token head", "L1H0 is not a previous-token head", "L1H1 is not a previous-token head"]
    assert document["complete"] is True
    assert "L1H1 is not a previous-token head" in (tiny.path / "report.html").read_text()
    assert not list(tiny.path.glob(".results.json.*")) and not list(tiny.path.glob(".report.html.*"))


def test_without_xdist_the_same_suite_writes_the_same_claims(tiny):
    tiny.makepyfile(XDIST_SUITE)
    tiny.runpytest("-p", "no:xdist", "--circuitcheck-model=tiny:x", "--circuitcheck-json=results.json").assert_outcomes(passed=4)
    document = json.loads((tiny.path / "results.json").read_text())
    assert sum(len(test["claims"]) for test in document["tests"]) == 4


def test_a_run_stopped_by_x_still_writes_an_incomplete_report(tiny):
    tiny.makepyfile(
        """
        import circuitcheck as cc

        def test_first(model):
            cc.assert_induction_head(1, 0, min_score=0.99)

        def test_never_runs(model):
            pass
        """
    )
    result = tiny.runpytest("-x", "--circuitcheck-model=tiny:x", "--circuitcheck-json=results.json", "--circuitcheck-report=report.html")
    result.assert_outcomes(failed=1)
    document = json.loads((tiny.path / "results.json").read_text())
    assert document["complete"] is False
    assert [t["nodeid"].split("::")[-1] for t in document["tests"]] == ["test_first"]
    assert document["tests"][0]["claims"][0]["passed"] is False


def test_a_keyboard_interrupt_still_writes_an_incomplete_report(tiny):
    tiny.makepyfile(
        """
        import circuitcheck as cc

        def test_first(model):
            cc.assert_previous_token_head(0, 0, max_score=1.0)

        def test_interrupted():
            raise KeyboardInterrupt

        def test_never_runs():
            pass
        """
    )
    # in a subprocess: an in-process KeyboardInterrupt would stop this very test run
    result = tiny.runpytest_subprocess("--circuitcheck-model=tiny:x", "--circuitcheck-json=results.json")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    document = json.loads((tiny.path / "results.json").read_text())
    assert document["complete"] is False
    assert document["tests"][0]["claims"][0]["claim"] == "L0H0 is not a previous-token head"


def test_a_crashing_test_is_recorded_and_the_report_written(tiny):
    tiny.makepyfile(
        """
        import pytest
        import circuitcheck as cc

        @pytest.fixture
        def broken():
            raise RuntimeError("setup exploded")

        def test_setup_error(broken):
            pass

        def test_crash(model):
            cc.assert_previous_token_head(0, 0, max_score=1.0)
            raise ValueError("boom")
        """
    )
    tiny.runpytest("--circuitcheck-model=tiny:x", "--circuitcheck-json=results.json").assert_outcomes(failed=1, errors=1)
    tests = {t["nodeid"].split("::")[-1]: t for t in json.loads((tiny.path / "results.json").read_text())["tests"]}
    assert tests["test_setup_error"]["outcome"] == "error"
    assert tests["test_crash"]["outcome"] == "failed" and len(tests["test_crash"]["claims"]) == 1


def test_claims_are_junit_properties(tiny):
    tiny.makepyfile("import circuitcheck as cc\n\ndef test_p(model):\n    cc.assert_previous_token_head(0, 0, max_score=1.0)\n")
    tiny.runpytest("--circuitcheck-model=tiny:x", "--junitxml=junit.xml").assert_outcomes(passed=1)
    xml = (tiny.path / "junit.xml").read_text()
    assert '<property name="circuitcheck[0].claim" value="L0H0 is not a previous-token head"' in xml
    assert '<property name="circuitcheck[0].verdict" value="held"' in xml
    assert 'name="circuitcheck[0].value"' in xml


def test_sweeps_run_in_a_test_reach_the_report(tiny):
    tiny.makepyfile(
        """
        import torch
        import circuitcheck as cc

        def test_sweep(model, patcher):
            clean = torch.randint(0, 20, (3, 6), generator=torch.Generator().manual_seed(0))
            task = cc.tasks.from_tokens(clean, clean.flip(1), answers=clean[:, 0], wrong_answers=clean[:, 1])
            patcher.sweep(task, "head_out")
        """
    )
    tiny.runpytest("--circuitcheck-model=tiny:x", "--circuitcheck-json=results.json").assert_outcomes(passed=1)
    sweeps = json.loads((tiny.path / "results.json").read_text())["tests"][0]["sweeps"]
    assert sweeps[0]["what"] == "head_out" and sweeps[0]["axes"] == ["layer", "head"]
    assert len(sweeps[0]["matrix"]["data"]) == 2


def test_the_terminal_summary_lists_only_failed_claims_unless_verbose(tiny):
    tiny.makepyfile(
        """
        import circuitcheck as cc

        def test_mixed(model):
            cc.assert_previous_token_head(0, 0, max_score=1.0)
            cc.assert_induction_head(1, 1, min_score=0.99)
        """
    )
    result = tiny.runpytest("--circuitcheck-model=tiny:x")
    result.stdout.fnmatch_lines(["*circuitcheck claims*", "1 claims held, 1 failed (-v lists every claim)", "*::test_mixed", "  FAILED*L1H1 is an induction head"])
    assert "L0H0 is not a previous-token head" not in result.stdout.str().split("circuitcheck claims")[1]


def test_claims_appear_in_the_pytest_html_report(tiny):
    pytest.importorskip("pytest_html")
    tiny.makepyfile(
        """
        import circuitcheck as cc

        def test_p(model):
            cc.assert_previous_token_head(0, 0, max_score=1.0)
            cc.assert_previous_token_head(0, 1, max_score=1.0)
        """
    )
    tiny.runpytest("--circuitcheck-model=tiny:x", "--html=page.html", "--self-contained-html").assert_outcomes(passed=1)
    page = (tiny.path / "page.html").read_text()
    assert "circuitcheck claims" in page and "L0H1 is not a previous-token head" in page


def test_without_pytest_html_nothing_changes(tiny):
    tiny.makepyfile("import circuitcheck as cc\n\ndef test_p(model):\n    cc.assert_previous_token_head(0, 0, max_score=1.0)\n")
    tiny.runpytest("-p", "no:html", "--circuitcheck-model=tiny:x").assert_outcomes(passed=1)


# The plugin's duties as plugin objects --------------------------------------------

DUTIES = {
    "circuitcheck-state": "CircuitCheckState",
    "circuitcheck-collect": "ReportCollector",
    "circuitcheck-baseline": "BaselinePlugin",
    "circuitcheck-checkpoints": "CheckpointsPlugin",
    "circuitcheck-summary": "TerminalSummary",
}


def test_each_duty_is_a_plugin_object_registered_for_the_run_and_removed_at_unconfigure(pytester):
    config = pytester.parseconfigure("-p", "no:xdist")
    registered = {name: type(config.pluginmanager.get_plugin(name)).__name__ for name in DUTIES}
    assert registered == DUTIES
    assert config.pluginmanager.get_plugin("circuitcheck-xdist") is None  # its hook exists only with xdist
    config._ensure_unconfigure()
    assert [name for name in DUTIES if config.pluginmanager.get_plugin(name) is not None] == []


def test_the_xdist_merger_is_registered_only_when_xdist_is_present(pytester):
    config = pytester.parseconfigure("-p", "xdist")
    assert type(config.pluginmanager.get_plugin("circuitcheck-xdist")).__name__ == "XdistMerge"


def _call_report(nodeid: str) -> pytest.TestReport:
    return pytest.TestReport(nodeid=nodeid, location=("t.py", 0, nodeid), keywords={}, outcome="passed", longrepr=None, when="call")


def test_the_collector_records_forwarded_worker_reports_with_their_claims_and_crashes_as_crashed(pytester):
    from types import SimpleNamespace

    from circuitcheck.pytest_plugin.collect import XdistMerge

    config = pytester.parseconfigure("-p", "no:xdist")
    collector = config.pluginmanager.get_plugin("circuitcheck-collect")
    collector.pytest_runtest_logreport(_call_report("t.py::local"))
    forwarded = _call_report("t.py::on_a_worker")
    forwarded.node = object()  # what xdist's controller sets on a worker's report
    forwarded.circuitcheck = [{"kind": "k", "claim": "a claim", "passed": True}]  # travelled with the report
    collector.pytest_runtest_logreport(forwarded)
    crash = pytest.TestReport(nodeid="t.py::crashes", location=("t.py", None, "t.py"), keywords={}, outcome="failed",
                              longrepr="worker 'gw0' crashed while running 't.py::crashes'", when="???")
    crash.node = SimpleNamespace(gateway=SimpleNamespace(id="gw0"))
    merge = XdistMerge(collector)
    merge.pytest_xdist_node_collection_finished(node=None, ids=["t.py::local", "t.py::on_a_worker", "t.py::crashes", "t.py::never"])
    merge.pytest_testnodedown(node=crash.node, error="Not properly terminated")
    collector.pytest_runtest_logreport(crash)
    assert [(test["nodeid"], test["outcome"]) for test in collector.tests] == [
        ("t.py::local", "passed"), ("t.py::on_a_worker", "passed"), ("t.py::crashes", "crashed")]
    assert collector.tests[1]["claims"] == [{"kind": "k", "claim": "a claim", "passed": True}]
    assert collector.not_run() == ["t.py::never"]
    assert collector.worker_errors == {}  # the crash report says it
    # the baseline plugin reads the very same list at session finish
    assert config.pluginmanager.get_plugin("circuitcheck-baseline").tests is collector.tests


def test_a_worker_that_goes_down_with_an_error_makes_the_run_incomplete(pytester):
    from types import SimpleNamespace

    from circuitcheck.pytest_plugin.collect import XdistMerge

    config = pytester.parseconfigure("-p", "no:xdist")
    collector = config.pluginmanager.get_plugin("circuitcheck-collect")
    XdistMerge(collector).pytest_testnodedown(node=SimpleNamespace(gateway=SimpleNamespace(id="gw1")), error=None)
    XdistMerge(collector).pytest_testnodedown(node=SimpleNamespace(gateway=SimpleNamespace(id="gw2")), error="Not properly terminated")
    session = SimpleNamespace(shouldstop=False, shouldfail=False)
    assert collector.incomplete_reasons(session) == ["xdist worker gw2 went down: Not properly terminated"]


def test_the_terminal_summary_uses_the_claim_formatter(tiny):
    tiny.makepyfile(
        """
        import circuitcheck as cc

        def test_claim(model):
            cc.assert_previous_token_head(0, 0, max_score=1.0)
        """
    )
    result = tiny.runpytest("--circuitcheck-model=tiny:x", "-v")
    lines = result.stdout.str().split("circuitcheck claims")[1].splitlines()
    line = next(line for line in lines if "L0H0 is not a previous-token head" in line)
    assert line.startswith("  held ") and re.search(r"  upper bound 0\.\d{3} <= 1  L0H0 is not a previous-token head$", line)


def test_claims_of_xfailed_tests_are_counted_apart_from_failed_ones(tiny):
    tiny.makepyfile(
        """
        import pytest
        import circuitcheck as cc

        @pytest.mark.xfail(reason="a documented false claim")
        def test_false_claim(model):
            cc.assert_previous_token_head(0, 1, max_score=1.0)   # holds
            cc.assert_induction_head(1, 1, min_score=0.99)       # fails, as expected

        def test_real_failure(model):
            cc.assert_induction_head(1, 2, min_score=0.99)
        """
    )
    result = tiny.runpytest("--circuitcheck-model=tiny:x", "--circuitcheck-json=results.json")
    result.assert_outcomes(failed=1, xfailed=1)
    result.stdout.fnmatch_lines(["1 claims held, 1 failed, 1 xfailed (in tests marked xfail) (-v lists every claim)"])
    listed = result.stdout.str().split("circuitcheck claims")[1]
    assert "test_real_failure" in listed and "test_false_claim" not in listed  # expected failures only with -v
    verbose = tiny.runpytest("--circuitcheck-model=tiny:x", "-v").stdout.str().split("circuitcheck claims")[1]
    assert re.search(r"\n  xfailed +0\.\d{3}  lower bound .* < 0\.99  L1H1 is an induction head", verbose)
    from circuitcheck import report

    summary = report.summarize(json.loads((tiny.path / "results.json").read_text()))
    assert (summary["claims"], summary["claims_passed"], summary["claims_failed"], summary["claims_xfailed"]) == (3, 1, 1, 1)


def test_a_task_error_is_shown_once_per_task_and_checkpoint(pytester):
    pytester.makefile(
        ".circuit.yaml",
        bad=textwrap.dedent(
            """\
            model: zoo:induction-2l
            checkpoints: [step0, step3000]
            task: {name: induction, n_prompts: 8, seq_len: 200}
            claims:
              - {kind: necessary, circuit: L1H0, min_drop: 0.1}
              - {kind: sufficient, circuit: L1H0, min_recovery: 0.1}
              - {kind: minimal, circuit: L1H0 L1H3, min_contribution: 0.0}
            """
        ),
    )
    result = pytester.runpytest()
    result.assert_outcomes(failed=6)
    text = result.stdout.str().split("short test summary")[0]
    assert text.count("error: half_len=200 is not valid") == 2  # in full once per checkpoint
    for step in ("step0", "step3000"):
        assert text.count(f"error: same error as above (the task at bad.circuit.yaml:3 on zoo:induction-2l@{step}, "
                          f"shown in full for necessary L1H0[{step}])") == 2
