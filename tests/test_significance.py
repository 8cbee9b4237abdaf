"""benchmark.evaluation.significance: the paired randomization test and bootstrap interval against scipy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from benchmark.evaluation import significance as sig


def _mean_diff(x, y, axis=-1):
    return np.mean(x - y, axis=axis)


def test_p_value_matches_scipys_exact_paired_permutation_test():
    """n = 12 pairs: scipy enumerates all 2^12 sign flips (exact); ours is Monte Carlo."""
    rng = np.random.default_rng(3)
    a = rng.normal(0.6, 1.0, 12)
    b = rng.normal(0.0, 1.0, 12)
    exact = stats.permutation_test((a, b), _mean_diff, permutation_type="samples", vectorized=True,
                                   n_resamples=np.inf, alternative="two-sided").pvalue
    ours = sig.paired_test(a, b, resamples=40_000, seed=1)
    assert 0.01 < exact < 0.5  # a case where the value matters
    assert ours.p_value == pytest.approx(exact, abs=0.01)
    assert ours.diff == pytest.approx(float(np.mean(a - b)))


@pytest.mark.parametrize("shift", [0.0, 4.0, 9.0])
def test_p_value_on_hits_matches_scipy_monte_carlo_and_the_t_test(shift):
    """0/100 hit vectors of 600 paired queries (the tables' case), several effect sizes."""
    rng = np.random.default_rng(int(shift))
    base = rng.random(600)
    a = 100.0 * (base < 0.40 + shift / 100)
    b = 100.0 * (rng.random(600) * 0.5 + base * 0.5 < 0.40)
    scipy_p = stats.permutation_test((a, b), _mean_diff, permutation_type="samples", vectorized=True,
                                     n_resamples=20_000, random_state=7).pvalue
    ours = sig.paired_test(a, b, resamples=20_000, seed=0)
    assert ours.p_value == pytest.approx(scipy_p, abs=0.015)
    t_p = stats.ttest_rel(a, b).pvalue  # large n: the t approximation is close
    assert ours.p_value == pytest.approx(t_p, abs=0.03)


def test_identical_rows_are_not_different_and_a_large_gap_is():
    rng = np.random.default_rng(0)
    a = 100.0 * (rng.random(500) < 0.5)
    same = sig.paired_test(a, a.copy())
    assert same.diff == 0.0 and same.p_value == 1.0 and same.ci == (0.0, 0.0) and not same.significant
    worse = np.where(rng.random(500) < 0.5, 0.0, a)  # b loses half of a's hits
    gap = sig.paired_test(a, worse)
    assert gap.significant and gap.p_value == pytest.approx(1 / (1 + sig.RESAMPLES))
    assert 0 < gap.ci[0] < gap.diff < gap.ci[1]


def test_interval_matches_scipys_percentile_bootstrap_of_the_paired_difference():
    rng = np.random.default_rng(5)
    a = 100.0 * rng.random(400)
    b = a - rng.normal(2.0, 15.0, 400)
    ours = sig.paired_test(a, b, resamples=20_000, seed=3)
    ref = stats.bootstrap((a - b,), np.mean, n_resamples=20_000, method="percentile", random_state=11).confidence_interval
    assert ours.ci[0] == pytest.approx(ref.low, abs=0.25) and ours.ci[1] == pytest.approx(ref.high, abs=0.25)
    assert ours.ci[0] < ours.diff < ours.ci[1]


def test_seeded_and_deterministic_and_rejects_unpaired_input():
    rng = np.random.default_rng(1)
    a, b = rng.random(50), rng.random(50)
    assert sig.paired_test(a, b, seed=4) == sig.paired_test(a, b, seed=4)
    assert sig.paired_test(a, b, seed=4).p_value != sig.paired_test(a, b, seed=5).p_value
    with pytest.raises(ValueError, match="one length"):
        sig.paired_test(a, b[:-1])


def test_on_hits_the_sign_flip_p_value_is_the_exact_mcnemar_binomial_one():
    """For 0/100 hit vectors only discordant queries move the sum: the sign-flip null is
    Binomial(discordant, 1/2), so the Monte-Carlo p must approach scipy's exact binomtest
    (the in-page comparison of the site computes this exact value)."""
    rng = np.random.default_rng(9)
    a = 100.0 * (rng.random(900) < 0.36)
    b = np.where(rng.random(900) < 0.2, 100.0 - a, a)  # flip a fifth of the outcomes
    b[:30] = 0.0
    up, down = int(((a > 0) & (b == 0)).sum()), int(((a == 0) & (b > 0)).sum())
    exact = stats.binomtest(up, up + down, 0.5).pvalue
    ours = sig.paired_test(a, b, resamples=40_000, seed=2)
    assert 0.005 < exact < 0.5 and ours.p_value == pytest.approx(exact, abs=0.01)


def test_metrics_tested_together_equal_each_tested_alone():
    rng = np.random.default_rng(4)
    a = {"R1": 100.0 * (rng.random(300) < 0.5), "mAP": 100.0 * rng.random(300)}
    b = {"R1": 100.0 * (rng.random(300) < 0.4), "mAP": 100.0 * rng.random(300)}
    both = sig.paired_tests(a, b)
    for m in ("R1", "mAP"):  # same draws; the column-wise matrix products may round differently
        alone = sig.paired_test(a[m], b[m], metric=m)
        assert both[m].p_value == alone.p_value and both[m].diff == pytest.approx(alone.diff, abs=1e-9)
        assert both[m].ci == pytest.approx(alone.ci, abs=1e-9)
