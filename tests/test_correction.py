"""Multiple comparisons: p-values of decisions, Holm and Benjamini-Hochberg, and --circuitcheck-correction end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats as scipy_stats

import circuitcheck as cc
from circuitcheck.claims import correction, stats
from circuitcheck.claims.result import CheckResult

pytest_plugins = ["pytester"]


# p-values of decisions -------------------------------------------------------------------------


def test_the_p_value_says_the_same_as_the_interval_at_the_claims_own_level():
    rng = np.random.default_rng(0)
    agree = total = 0
    for trial in range(300):
        values = rng.normal(0.5, 0.2, size=24)
        threshold = float(rng.uniform(0.35, 0.6))
        decision = stats.decide(stats.bootstrap_mean(values, seed=trial), threshold, None)
        total += 1
        agree += decision.passed == (decision.p.value <= 0.025)
    # they differ only where the threshold sits between two neighbouring draws (the quantile interpolates)
    assert agree / total >= 0.98


def test_far_tail_p_values_are_the_one_sample_t_test_written_here():
    rng = np.random.default_rng(1)
    values = rng.normal(1.0, 1.0, size=30)
    threshold = float(values.mean() - 4.2 * values.std(ddof=1) / np.sqrt(values.size))  # far beyond 1000 resamples
    p = stats.bootstrap_mean(values, seed=0).p_value(threshold, None)
    expected = scipy_stats.ttest_1samp(values, threshold, alternative="greater").pvalue
    assert p.method == "t tail" and expected < 1e-3
    assert np.log(p.value) == pytest.approx(np.log(expected), abs=np.log(2.0))  # within a factor 2 (Monte-Carlo spread)


def test_a_claim_between_two_bounds_has_the_larger_one_sided_p_value():
    estimate = stats.bootstrap_mean(np.random.default_rng(2).normal(0.5, 0.3, size=20), seed=0)
    low, high = estimate.p_value(0.4, None), estimate.p_value(None, 0.55)
    assert estimate.p_value(0.4, 0.55).value == max(low.value, high.value)


def test_the_monte_carlo_p_value_against_a_null_sample():
    null = np.random.default_rng(3).normal(size=199)
    above = float(np.sort(null)[-20])  # 20 samples reach it
    assert stats.exceedance_p_value(above, null).value == pytest.approx(21 / 200)
    far = stats.exceedance_p_value(6.0, null)
    assert far.method == "t tail" and far.value < 1e-5


def test_head_claims_record_their_p_value(induction_2l):
    weak = cc.check_head(1, 1, "induction", model=induction_2l, n_prompts=2, min_score=0.72)
    strong = cc.check_head(1, 3, "induction", model=induction_2l, min_score=0.7)
    assert not weak.passed and weak.p_value > 0.025
    assert strong.passed and strong.p_value < 1e-4
    assert json.loads(json.dumps(strong.to_dict()))["p_value"] == pytest.approx(strong.p_value)


# Holm and Benjamini-Hochberg --------------------------------------------------------------------


def _holm_by_definition(p, alpha):
    """Step down: the i-th smallest p-value (from 0) against alpha / (m - i); stop at the first that misses."""
    held = set()
    for i, index in enumerate(np.argsort(p, kind="stable")):
        if p[index] > alpha / (len(p) - i):
            break
        held.add(int(index))
    return held


def _bh_by_definition(p, alpha):
    """Step up: the largest k with p_(k) <= k alpha / m; the k smallest hold."""
    order = np.argsort(p, kind="stable")
    k = max((i + 1 for i in range(len(p)) if p[order[i]] <= (i + 1) * alpha / len(p)), default=0)
    return {int(i) for i in order[:k]}


@pytest.mark.parametrize("method, by_definition", [("holm", _holm_by_definition), ("bh", _bh_by_definition)])
def test_adjusted_p_values_decide_as_the_procedure_does(method, by_definition):
    rng = np.random.default_rng(4)
    for _ in range(300):
        m = int(rng.integers(1, 25))
        p = np.concatenate([rng.uniform(0, 0.01, size=m // 2), rng.uniform(0, 1, size=m - m // 2)])
        adjusted = correction.adjusted_p_values(p, method)
        assert {i for i, a in enumerate(adjusted) if a <= 0.025} == by_definition(p, 0.025)


def test_a_bad_method_or_p_value_is_a_clear_error():
    with pytest.raises(ValueError, match="correction 'bonferoni' is not valid: use one of none, holm, bh"):
        correction.check_method("bonferoni")
    with pytest.raises(ValueError, match="p-value 1.5 is not valid"):
        correction.adjusted_p_values([0.1, 1.5], "holm")


def _claim(values, threshold, seed):
    """A synthetic claim "mean >= threshold" decided by the same code as every claim kind, as the report holds it."""
    estimate = stats.bootstrap_mean(values, seed=seed)
    decision = stats.decide(estimate, threshold, None)
    return CheckResult(kind="synthetic", claim=f"claim {seed}", value=estimate.mean, metric="mean", min_value=threshold,
                       **decision.fields(), **estimate.interval_fields()).to_dict()


def _simulate(method, repetitions, n_null, n_true, seed=0):
    """Family-wise false-pass rate and false discovery rate over seeded runs of n_null false + n_true true claims."""
    rng = np.random.default_rng(seed)
    any_false, fdp, true_held = 0, [], 0
    for r in range(repetitions):
        # false claims: the true mean is exactly the threshold (the hardest false claim); true ones sit 1 sd above
        claims = [_claim(rng.normal(0.0, 1.0, size=32), 0.0, seed=r * 100 + i) for i in range(n_null)]
        claims += [_claim(rng.normal(1.0, 1.0, size=32), 0.0, seed=r * 100 + n_null + i) for i in range(n_true)]
        if method != "none":
            correction.apply(claims, method)
        held = [c["passed"] for c in claims]
        false_held = sum(held[:n_null])
        any_false += false_held > 0
        fdp.append(false_held / max(sum(held), 1))
        true_held += sum(held[n_null:])
    return any_false / repetitions, float(np.mean(fdp)), true_held / max(repetitions * n_true, 1)


def test_holm_keeps_the_family_wise_false_pass_rate_of_20_false_claims_at_or_below_5_percent():
    holm, _, _ = _simulate("holm", repetitions=400, n_null=20, n_true=0)
    none, _, _ = _simulate("none", repetitions=400, n_null=20, n_true=0)
    assert holm <= 0.05
    assert none >= 0.25  # each at its own 2.5% level, 20 of them: about 1 - 0.975^20 = 40% of runs pass a false claim


def test_corrections_still_pass_clearly_true_claims_and_bh_bounds_the_false_discovery_rate():
    _, fdr, power = _simulate("bh", repetitions=150, n_null=10, n_true=10, seed=1)
    assert fdr <= 0.05 and power >= 0.95
    _, _, holm_power = _simulate("holm", repetitions=150, n_null=10, n_true=10, seed=1)
    assert holm_power >= 0.9


def test_a_claim_that_fails_under_the_correction_says_so_and_exact_claims_stay_out():
    marginal = [_claim(np.random.default_rng(i).normal(0.45, 1.0, size=40), 0.0, seed=i) for i in range(6)]
    held_own = [c for c in marginal if c["passed"]]
    exact = CheckResult(kind="copying_head", claim="L1H0 is a copying head", value=0.9, passed=True, n=1, metric="score",
                        min_value=0.5, decided_on="value (exact)", p_method="exact (weights only)").to_dict()
    summary = correction.apply([*marginal, exact], "holm")
    assert summary.family_size == 6 and summary.left_out == 1 and exact["correction"]["in_family"] is False
    assert held_own and summary.failed_under_correction  # the draw makes some marginal claims hold alone
    failed = next(c for c in marginal if c["correction"]["held_at_own_level"] and not c["correction"]["held"])
    assert failed["passed"] is False and "fails under the holm correction over 6 claims" in failed["notes"][-1]
    from circuitcheck.claims import format as claim_format

    assert "held at its own level; fails holm over 6 claims" in claim_format.terminal_line(failed)
    assert "family-wise error rate <= 0.025" in summary.describe()


# --circuitcheck-correction end to end -------------------------------------------------------------


def _marginal_thresholds(model):
    """For four heads on 8 prompts: a min_score each claim clears at its own level with p about 1.5%."""
    thresholds = {}
    for head in range(4):
        result = cc.check_head(1, head, "induction", model=model, n_prompts=8, seed=0)
        estimate = stats.bootstrap_mean(result.evidence["per_prompt"]["score"].to_numpy(), seed=0)
        thresholds[head] = round(float(np.quantile(estimate.draws, 0.015)), 6)
    return thresholds


@pytest.fixture(scope="module")
def marginal_suite(induction_2l):
    lines = ["import circuitcheck as cc", ""]
    for head, threshold in _marginal_thresholds(induction_2l).items():
        lines += [f"def test_head_{head}():", f"    cc.assert_induction_head(1, {head}, min_score={threshold}, n_prompts=8)", ""]
    return "\n".join(lines)


def test_without_a_correction_the_marginal_claims_hold(pytester, marginal_suite):
    pytester.makepyfile(test_marginal=marginal_suite)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)
    assert result.ret == 0 and "multiple comparisons" not in result.stdout.str()


def test_holm_fails_the_run_and_reports_family_and_levels(pytester, marginal_suite):
    pytester.makepyfile(test_marginal=marginal_suite)
    result = pytester.runpytest("-p", "no:cacheprovider", "--circuitcheck-correction=holm", "--circuitcheck-json=out.json",
                                "--circuitcheck-report=out.html", "-v")
    assert result.ret == 1
    result.stdout.fnmatch_lines([
        "*circuitcheck multiple comparisons*",
        "holm over a family of 4 claims: family-wise error rate <= 0.025 (claims decided at 0.00625 to 0.025)*",
        "4 claims held at their own level but fail under the holm correction (the run fails):",
    ])
    assert "held at its own level; fails holm over 4 claims" in result.stdout.str()
    document = json.loads((pytester.path / "out.json").read_text())
    assert document["correction"]["family_size"] == 4 and document["correction"]["alpha"] == 0.025
    claims = [c for t in document["tests"] for c in t["claims"]]
    assert all(not c["passed"] and c["correction"]["held_at_own_level"] and 0.0125 < c["p_value"] < 0.025 for c in claims)
    assert "holm over a family of 4 claims" in document["environment"]["multiple comparisons"]
    html = (pytester.path / "out.html").read_text()
    assert "multiple comparisons" in html and "holm over a family of 4 claims" in html


def test_benjamini_hochberg_from_the_ini_key_passes_claims_holm_fails(pytester, marginal_suite):
    pytester.makepyfile(test_marginal=marginal_suite)
    pytester.makeini("[pytest]\ncircuitcheck_correction = bh\n")
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert result.ret == 0  # every p-value is below 4/4 x 0.025: the step-up keeps all four
    result.stdout.fnmatch_lines(["bh over a family of 4 claims: false discovery rate <= 0.025*4 of 4 claims*still hold*"])


def test_a_bad_correction_is_a_usage_error(pytester):
    pytester.makepyfile("def test_x(): pass\n")
    result = pytester.runpytest("--circuitcheck-correction=bonferroni")
    assert result.ret == 4
    result.stderr.fnmatch_lines(["*--circuitcheck-correction='bonferroni' is not valid: use none, holm or bh*"])


def test_under_xdist_the_family_is_every_workers_claims(pytester, marginal_suite):
    pytest.importorskip("xdist")
    pytester.makepyfile(test_marginal=marginal_suite)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2", "--circuitcheck-correction=holm",
                                           "--circuitcheck-json=out.json")
    assert result.ret == 1
    document = json.loads((pytester.path / "out.json").read_text())
    assert document["correction"]["family_size"] == 4 and len(document["correction"]["failed_under_correction"]) == 4
