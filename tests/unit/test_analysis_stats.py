"""Each statistic in `harness.stats.paired` agrees with scipy / statsmodels or a published worked example."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest
import scipy.stats
import statsmodels.api as sm
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestPower

from harness.stats import paired

RNG = np.random.default_rng(20240601)
DIFFS = RNG.normal(0.15, 1.0, 80)
CLUSTERS = np.repeat([f"hood-{g}" for g in range(16)], 5)


# ---------------------------------------------------------------- McNemar


def test_mcnemar_matches_statsmodels_on_fixed_outcomes():
    a = np.array([1, 1, 0, 1, 0, 1, 1, 1, 0, 1, 1, 0, 1, 1, 1, 0, 1, 1, 1, 1])
    b = np.array([1, 0, 0, 0, 0, 1, 0, 1, 1, 0, 1, 0, 0, 1, 0, 0, 1, 0, 1, 1])
    table = [[np.sum((a == 1) & (b == 1)), np.sum((a == 1) & (b == 0))],
             [np.sum((a == 0) & (b == 1)), np.sum((a == 0) & (b == 0))]]
    assert paired.mcnemar_exact(a, b) == pytest.approx(mcnemar(table, exact=True).pvalue, rel=1e-12)


def test_mcnemar_worked_example_agresti_presidential_approval():
    """Agresti (2002) §10.1: 794 approve twice, 150 approve→disapprove, 86 disapprove→approve, 570 twice.

    The exact test is the binomial test of 86 discordant pairs out of 236 at 1/2.
    """
    a = np.repeat([1, 1, 0, 0], [794, 150, 86, 570])
    b = np.repeat([1, 0, 1, 0], [794, 150, 86, 570])
    expected = scipy.stats.binomtest(86, 236, 0.5).pvalue
    assert paired.mcnemar_exact(a, b) == pytest.approx(expected, rel=1e-9)
    assert paired.mcnemar_exact(a, b) < 1e-4  # Agresti: strong evidence of a drop in approval


def test_mcnemar_refuses_continuous_scores():
    with pytest.raises(ValueError, match="binary"):
        paired.mcnemar_exact([0.5, 1.0], [1.0, 0.0])


# ---------------------------------------------------------------- Wilcoxon


def test_wilcoxon_matches_scipy():
    d = np.round(DIFFS, 1)  # ties and zeros, as field accuracy produces
    assert paired.wilcoxon_signed_rank(d) == pytest.approx(scipy.stats.wilcoxon(d).pvalue, rel=1e-12)


def test_wilcoxon_worked_example_hollander_wolfe_depression():
    """Hollander & Wolfe (1973) p. 29, the example in R's `?wilcox.test`: V = 40, exact p = 0.03906."""
    x = np.array([1.83, 0.50, 1.62, 2.48, 1.68, 1.88, 1.55, 3.06, 1.30])
    y = np.array([0.878, 0.647, 0.598, 2.05, 1.06, 1.29, 1.06, 3.14, 1.29])
    assert paired.wilcoxon_signed_rank(x - y) == pytest.approx(0.0390625, abs=1e-6)


def test_wilcoxon_all_zero_differences_is_no_evidence():
    assert paired.wilcoxon_signed_rank(np.zeros(10)) == 1.0


# ---------------------------------------------------------------- permutation


def test_permutation_is_exact_sign_flip_for_small_n():
    d = np.array([0.3, -0.1, 0.5, 0.25, -0.4, 0.6, 0.2, 0.05, -0.15, 0.45])
    signs = np.array(list(itertools.product([-1, 1], repeat=d.size)))
    null = (signs * d).sum(axis=1)
    brute = np.mean(np.abs(null) >= abs(d.sum()) - 1e-12)
    assert paired.paired_permutation_test(d) == pytest.approx(brute, rel=1e-12)


def test_permutation_monte_carlo_is_seeded_and_close_to_scipy():
    p1 = paired.paired_permutation_test(DIFFS, seed=3)
    assert p1 == paired.paired_permutation_test(DIFFS, seed=3)
    ref = scipy.stats.permutation_test((DIFFS,), np.mean, permutation_type="samples", n_resamples=10_000,
                                       rng=np.random.default_rng(3)).pvalue
    assert p1 == pytest.approx(ref, abs=0.02)


def test_permutation_with_clusters_flips_whole_clusters():
    d = np.array([0.2, 0.3, -0.1, -0.2, 0.5, 0.4])
    clusters = ["a", "a", "b", "b", "c", "c"]
    sums = np.array([0.5, -0.3, 0.9])
    signs = np.array(list(itertools.product([-1, 1], repeat=3)))
    brute = np.mean(np.abs((signs * sums).sum(axis=1)) >= abs(sums.sum()) - 1e-12)
    assert paired.paired_permutation_test(d, clusters=clusters) == pytest.approx(brute)


# ---------------------------------------------------------------- Holm, effect size, power


def test_holm_matches_statsmodels_and_hand_computation():
    p = [0.01, 0.04, 0.03, 0.005]
    # Sorted 0.005, 0.01, 0.03, 0.04 -> ×4, ×3, ×2, ×1 = 0.02, 0.03, 0.06, 0.04 -> monotone: 0.06 for the last.
    assert paired.holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    many = RNG.uniform(0, 0.2, 12)
    assert paired.holm(many) == pytest.approx(multipletests(many, method="holm")[1])
    tied = [0.5, 0.01, 0.5, 0.9, 0.01, 1.0]  # ties and products above 1 (capped at 1)
    assert paired.holm(tied) == pytest.approx(multipletests(tied, method="holm")[1])


def test_holm_leaves_missing_p_values_out_of_the_family():
    out = paired.holm([0.01, np.nan, 0.04])
    assert np.isnan(out[1])
    assert out[[0, 2]] == pytest.approx(multipletests([0.01, 0.04], method="holm")[1])


def test_cohens_dz_is_mean_over_sd_of_differences():
    assert paired.cohens_dz(DIFFS) == pytest.approx(DIFFS.mean() / DIFFS.std(ddof=1))
    assert np.isnan(paired.cohens_dz(np.ones(5)))


def test_mde_matches_statsmodels_power_and_the_normal_approximation():
    sd, n = 0.45, 200
    mde = paired.minimum_detectable_difference(sd, n)
    power = TTestPower().power(effect_size=mde / sd, nobs=n, alpha=0.05, alternative="two-sided")
    assert power == pytest.approx(0.80, abs=1e-4)  # the root finder's tolerance
    z = scipy.stats.norm.ppf(0.975) + scipy.stats.norm.ppf(0.80)
    assert mde == pytest.approx(z * sd / np.sqrt(n), rel=0.01)  # ≈ 2.8 SE for large n
    assert np.isnan(paired.minimum_detectable_difference(sd, 1))


# ---------------------------------------------------------------- cluster-robust SE


def test_cluster_se_matches_statsmodels_and_the_sandwich_formula():
    fit = sm.OLS(DIFFS, np.ones((DIFFS.size, 1))).fit(cov_type="cluster",
                                                       cov_kwds={"groups": np.unique(CLUSTERS, return_inverse=True)[1]})
    se = paired.cluster_robust_se(DIFFS, CLUSTERS)
    assert se == pytest.approx(fit.bse[0], rel=1e-10)
    # By hand: sqrt(G/(G-1) * sum_g (sum of residuals in g)^2) / n, statsmodels' default correction.
    resid = DIFFS - DIFFS.mean()
    sums = np.array([resid[CLUSTERS == g].sum() for g in np.unique(CLUSTERS)])
    g = sums.size
    assert se == pytest.approx(np.sqrt(g / (g - 1) * np.sum(sums ** 2)) / DIFFS.size, rel=1e-10)


def test_cluster_se_is_nan_with_a_single_cluster():
    assert np.isnan(paired.cluster_robust_se(DIFFS[:5], ["x"] * 5))


# ---------------------------------------------------------------- bootstraps


def test_paired_bootstrap_is_seeded_and_agrees_with_scipy_percentile():
    ci = paired.paired_bootstrap_ci(DIFFS, seed=1)
    assert ci == paired.paired_bootstrap_ci(DIFFS, seed=1)
    assert ci != paired.paired_bootstrap_ci(DIFFS, seed=2)
    ref = scipy.stats.bootstrap((DIFFS,), np.mean, method="percentile", n_resamples=10_000,
                                rng=np.random.default_rng(1)).confidence_interval
    inflation = np.sqrt(DIFFS.size / (DIFFS.size - 1))  # ours is spread to the unbiased variance
    assert (ci[1] - ci[0]) == pytest.approx((ref.high - ref.low) * inflation, rel=0.04)
    assert (ci[0] + ci[1]) / 2 == pytest.approx((ref.low + ref.high) / 2, abs=0.02)


def test_cluster_bootstrap_widens_the_ci_to_match_the_cluster_se():
    u = np.random.default_rng(5).normal(0, 0.6, 16)
    d = 0.1 + np.repeat(u, 5) + np.random.default_rng(6).normal(0, 0.3, 80)
    naive = paired.paired_bootstrap_ci(d)
    clustered = paired.paired_bootstrap_ci(d, clusters=CLUSTERS)
    assert clustered[1] - clustered[0] > 1.5 * (naive[1] - naive[0])
    assert (clustered[1] - clustered[0]) / (2 * 1.96) == pytest.approx(paired.cluster_robust_se(d, CLUSTERS), rel=0.15)


def test_bootstraps_are_fast_enough_for_reports():
    d = RNG.normal(size=100)
    start = time.perf_counter()
    paired.paired_bootstrap_ci(d, n_resamples=10_000)
    paired.hierarchical_bootstrap_ci(RNG.normal(size=(3, 100)), n_resamples=10_000)
    assert time.perf_counter() - start < 1.0


def test_hierarchical_bootstrap_degenerate_and_refused_inputs():
    assert paired.hierarchical_bootstrap_ci(np.full((3, 20), 0.25)) == pytest.approx((0.25, 0.25))
    with pytest.raises(ValueError, match="at least 2 seeds"):
        paired.hierarchical_bootstrap_ci(np.zeros((1, 20)))
    with pytest.raises(ValueError, match="NaN"):
        paired.hierarchical_bootstrap_ci(np.array([[0.0, np.nan], [1.0, 0.0]]))


def test_hierarchical_bootstrap_counts_seed_variance():
    """Items identical within a seed: all uncertainty is between seeds, which the item bootstrap misses."""
    offsets = np.array([-0.1, 0.0, 0.1, 0.2])
    d = offsets[:, None] + np.zeros((4, 50))
    low, high = paired.hierarchical_bootstrap_ci(d, n_resamples=20_000)
    assert low < 0.0 and high > 0.1
    sd_of_mean = offsets.std(ddof=1) / np.sqrt(offsets.size)
    assert (high - low) / (2 * 1.96) == pytest.approx(sd_of_mean, rel=0.25)
    assert paired.paired_bootstrap_ci(d.mean(axis=0)) == pytest.approx((0.05, 0.05))


# 29 of 31 items go from wrong to right, two stay put: a real report's Δ exact match +0.935 [+0.847, +1.001].
FLIPS = np.r_[np.ones(29), np.zeros(2)]
BOUNDED_CIS = {
    "items": lambda d, b: paired.paired_bootstrap_ci(d, bounds=b),
    "clusters": lambda d, b: paired.paired_bootstrap_ci(d, clusters=np.arange(d.size) // 2, bounds=b),
    "seeds": lambda d, b: paired.hierarchical_bootstrap_ci(np.vstack([d, d, np.roll(d, 1)]), bounds=b),
    "seeds and clusters": lambda d, b: paired.hierarchical_bootstrap_ci(np.vstack([d, np.roll(d, 1)]),
                                                                        clusters=np.arange(d.size) // 3, bounds=b),
}
UNIT, DIFFERENCE = (0.0, 1.0), (-1.0, 1.0)  # the range of a mean of [0, 1] scores, and of a paired difference


@pytest.mark.parametrize("method", sorted(BOUNDED_CIS))
def test_bootstrap_cis_stay_within_the_declared_bounds(method):
    """A 0/1 difference near +1 (or one arm's 0/1 scores near 1) gets a CI ending at 1 at most, never past it,
    and likewise at the lower bound; so does a bounded continuous score near its bound."""
    ci = BOUNDED_CIS[method]
    for scores in (FLIPS, np.r_[np.ones(30), 0.0], np.r_[np.full(25, 1.0), np.linspace(0.6, 0.95, 6)]):
        for bounds in (UNIT, DIFFERENCE):
            low, high = ci(scores, bounds)
            assert scores.mean() - 0.25 < low < scores.mean() < high <= 1.0
        low, high = ci(-scores, DIFFERENCE)
        assert -1.0 <= low < -scores.mean() < high
        low, high = ci(1 - scores, UNIT)  # the other arm's mean near 0
        assert 0.0 <= low < 1 - scores.mean() < high


@pytest.mark.parametrize("method", sorted(BOUNDED_CIS))
def test_an_unbounded_score_is_not_cut_at_the_largest_value_seen(method):
    """Word counts piled at 10 with one 0: the variance correction carries the upper draws past 10, the most any
    item scored; the mean of an unbounded score can lie there, so without bounds the CI keeps them. With the
    same values declared in [0, 10] it ends at 10, and no bound is ever drawn in from outside."""
    ci = BOUNDED_CIS[method]
    words = 10 * np.r_[np.ones(30), 0.0]
    unbounded = ci(words, None)
    assert unbounded[1] > words.max()
    assert ci(words, (0.0, 10.0)) == (unbounded[0], 10.0)
    assert ci(words, (-np.inf, np.inf)) == unbounded


def test_nan_inputs_are_refused_by_every_statistic():
    bad = np.array([0.1, np.nan, 0.2])
    for fn in (paired.paired_bootstrap_ci, paired.wilcoxon_signed_rank, paired.paired_permutation_test,
               paired.cohens_dz):
        with pytest.raises(ValueError, match="NaN"):
            fn(bad)
