"""Claims across training checkpoints."""

import json

import pytest

from circuitcheck import zoo

STEPS = zoo.checkpoints("induction-2l")
FIRST, LAST = STEPS[0], STEPS[-1]

SUITE = """
import circuitcheck as cc

def test_induction_head(model):
    cc.assert_induction_head(1, 0, min_score=0.8)

def test_previous_token_head(model):
    cc.assert_previous_token_head(0, 2, min_score=0.8)
"""


def test_the_option_parametrises_the_model_fixture_and_ids_show_the_checkpoint(pytester):
    pytester.makepyfile(SUITE)
    result = pytester.runpytest("-v", f"--circuitcheck-checkpoints={FIRST},{LAST}", "--circuitcheck-json=results.json")
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines([f"*test_induction_head[[]{FIRST}] FAILED*", f"*test_induction_head[[]{LAST}] PASSED*"])
    tests = json.loads((pytester.path / "results.json").read_text())["tests"]
    by = {(t["test"].split("::")[-1], t["checkpoint"]): t for t in tests}
    assert by[("test_induction_head", FIRST)]["claims"][0]["passed"] is False
    assert by[("test_induction_head", LAST)]["claims"][0]["passed"] is True
    assert by[("test_induction_head", LAST)]["claims"][0]["checkpoint"] == LAST
    assert by[("test_induction_head", LAST)]["claims"][0]["model"] == f"zoo:induction-2l@{LAST}"


def test_the_marker_names_checkpoints_and_all_lists_them(pytester):
    pytester.makepyfile(
        """
        import pytest
        import circuitcheck as cc

        @pytest.mark.circuitcheck_checkpoints("all")
        def test_every_checkpoint(model):
            assert model.circuitcheck_checkpoint in %r
        """
        % (STEPS,)
    )
    pytester.runpytest().assert_outcomes(passed=len(STEPS))


def test_the_ini_key_names_checkpoints(pytester):
    pytester.makeini(f"[pytest]\ncircuitcheck_checkpoints = {LAST}\n")
    pytester.makepyfile(SUITE)
    pytester.runpytest().assert_outcomes(passed=2)


def test_checkpoints_load_once_each_and_one_at_a_time(pytester):
    pytester.makeconftest(
        """
        import pytest

        def pytest_sessionfinish(session):
            from circuitcheck.pytest_plugin.plugin import _STATE
            store = session.config.stash[_STATE].models
            print("LOADS", sorted(store.loads.values()), "HELD", len(store.models))
        """
    )
    pytester.makepyfile(SUITE + "\n\ndef test_third(model):\n    pass\n")
    result = pytester.runpytest("-s", f"--circuitcheck-checkpoints={FIRST},{STEPS[3]},{LAST}")
    result.assert_outcomes(passed=5, failed=4)
    result.stdout.fnmatch_lines(["*LOADS [[]1, 1, 1] HELD 1*"])


def test_an_unknown_checkpoint_lists_the_real_ones(pytester):
    pytester.makepyfile(SUITE)
    result = pytester.runpytest("--circuitcheck-checkpoints=step123456")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines([f"*step123456*{FIRST}*"])


def test_a_spec_that_pins_a_checkpoint_cannot_run_over_checkpoints(pytester):
    pytester.makepyfile(SUITE)
    result = pytester.runpytest(f"--circuitcheck-model=zoo:induction-2l@{LAST}", f"--circuitcheck-checkpoints={FIRST}")
    result.stdout.fnmatch_lines(["*already names a checkpoint*"])


def test_local_directories_with_a_checkpoint_placeholder(pytester, tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    from circuitcheck.zoo.tokenizer import build_tokenizer

    for step in ("10", "9", "100"):
        directory = tmp_path / f"ckpt-{step}"
        GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=64, n_positions=64)).save_pretrained(directory)
        build_tokenizer().save_pretrained(directory)
    pytester.makepyfile(
        """
        def test_it(model):
            assert model.cfg.n_layers == 1
            print("CKPT", model.circuitcheck_checkpoint)
        """
    )
    result = pytester.runpytest("-s", "-v", f"--circuitcheck-model={tmp_path}/ckpt-{{checkpoint}}", "--circuitcheck-checkpoints=all")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*test_it[[]9]*", "*test_it[[]10]*", "*test_it[[]100]*"])


def test_under_xdist_checkpoints_are_grouped_per_worker(pytester):
    pytester.makepyfile(SUITE)
    result = pytester.runpytest_subprocess("-n", "2", f"--circuitcheck-checkpoints={FIRST},{LAST}", "--circuitcheck-json=results.json")
    result.assert_outcomes(passed=2, failed=2)
    tests = json.loads((pytester.path / "results.json").read_text())["tests"]
    assert sorted(t["test_id"] for t in tests) == sorted(
        f"test_under_xdist_checkpoints_are_grouped_per_worker.py::{name}[{step}]"
        for name in ("test_induction_head", "test_previous_token_head")
        for step in (FIRST, LAST)
    )


def test_the_example_spec_flips_at_the_phase_change(pytester):
    """The example suite's spec, run across induction-2l's checkpoints: L1H0 becomes an induction head."""
    from pathlib import Path

    spec = (Path(__file__).parent.parent / "example_suites" / "induction-2l.circuit.yaml").read_text()
    steps = ["step0", "step550", "step600", "step1000", "step2400", "step3000"]
    assert set(steps) <= set(STEPS)
    spec = spec.replace("model: zoo:induction-2l\n", f"model: zoo:induction-2l\ncheckpoints: [{', '.join(steps)}]\n", 1)
    pytester.makefile(".circuit.yaml", **{"induction-2l": spec})
    result = pytester.runpytest("-v", "-k", "induction_head and L1H0", "--circuitcheck-json=results.json")
    result.assert_outcomes(passed=2, failed=4)
    verdicts = {t["checkpoint"]: t["claims"][0]["passed"] for t in json.loads((pytester.path / "results.json").read_text())["tests"]}
    assert verdicts == {"step0": False, "step550": False, "step600": False, "step1000": False, "step2400": True, "step3000": True}
