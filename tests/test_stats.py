"""Statistics: seeded bootstrap intervals, and the fewest examples an interval is computed from."""

from __future__ import annotations

import numpy as np
import pytest

import circuitcheck as cc
from circuitcheck.claims import stats


def test_one_example_is_an_error_not_a_zero_width_interval():
    with pytest.raises(stats.TooFewExamples, match=r"1 example cannot give a confidence interval.*at least 2 examples"):
        stats.bootstrap_mean([0.9])
    with pytest.raises(stats.TooFewExamples, match="at least 2 examples"):
        stats.bootstrap_statistics(np.ones((2, 1)), lambda means: means[..., :1])


def test_two_examples_give_an_interval_spanning_them():
    estimate = stats.bootstrap_mean([0.2, 0.8], seed=0)
    assert estimate.mean == pytest.approx(0.5)
    assert estimate.low == pytest.approx(0.2) and estimate.high == pytest.approx(0.8)


def test_the_interval_matches_a_resampling_written_here():
    values = np.random.default_rng(3).normal(size=40)
    estimate = stats.bootstrap_mean(values, seed=7, resamples=4000)
    rng = np.random.default_rng(11)
    means = np.array([rng.choice(values, size=values.size).mean() for _ in range(4000)])
    low, high = np.quantile(means, [0.025, 0.975])
    assert estimate.low == pytest.approx(low, abs=0.03) and estimate.high == pytest.approx(high, abs=0.03)


def test_a_head_claim_on_one_prompt_is_an_error(induction_2l):
    with pytest.raises(stats.TooFewExamples, match="at least 2 examples"):
        cc.check_head(1, 0, "induction", model=induction_2l, n_prompts=1)


def test_a_causal_claim_on_one_example_is_an_error(induction_2l):
    task = cc.tasks.induction(induction_2l, n_prompts=1, seq_len=12)
    with pytest.raises(stats.TooFewExamples, match="at least 2 examples"):
        cc.check_sufficient("L1H0 L1H3", model=induction_2l, task=task)
