"""By simulation on synthetic per-item data with a known truth: CIs cover it, tests hold their size.

Every simulation is seeded, so each run is the same; the repeat counts make the Monte Carlo error
small against the bands (coverage 93–97%, false-positive rate 0.03–0.07 at α = 0.05): with 2000
repeats the SE of a rate near 0.95 or 0.05 is about 0.005, so each band is about ±4 SE.

Known limits (documented, not hidden): the exact McNemar test is conservative (size ≈ 0.04 at these
sizes, because the binomial is discrete); the percentile bootstrap over ~25 clusters undercovers
slightly (≈ 0.93); and with 2–3 seeds whose variance dominates, no interval can be exact (the
hierarchical bootstrap then covers ≈ 0.89) — seed variance estimated from 3 seeds is just that noisy."""

from __future__ import annotations

import numpy as np

from harness.stats import paired
from tests.support.analysis_calibration import false_positive_rate, null_field_accuracy_diffs

TRUE_DIFF = 0.1


def coverage(draw, ci, repeats: int, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    hits = 0
    for r in range(repeats):
        low, high = ci(draw(rng), r)
        hits += low <= TRUE_DIFF <= high
    return hits / repeats


def binary_item_diffs(rng: np.random.Generator, n: int = 100) -> np.ndarray:
    """Tuned minus base correctness; each item's tuned probability is its base one plus U(0, 0.2)."""
    p = rng.uniform(0.3, 0.6, n)
    return (rng.random(n) < p + rng.uniform(0, 0.2, n)).astype(float) - (rng.random(n) < p)


def binary_seed_item_diffs(rng: np.random.Generator, seeds: int = 3, n: int = 100, seed_spread: float = 0.1):
    """As above over several training seeds, each shifting the tuned probability by U(-spread, spread);
    the base model is deterministic, so its answers are shared by all seeds (as the harness caches it)."""
    p = rng.uniform(0.3, 0.6, n)
    shift = rng.uniform(-seed_spread, seed_spread, (seeds, 1))
    base = rng.random(n) < p
    return (rng.random((seeds, n)) < p + rng.uniform(0, 0.2, n) + shift).astype(float) - base


def test_paired_bootstrap_covers_a_continuous_difference():
    cov = coverage(lambda rng: rng.normal(TRUE_DIFF, 1.0, 100),
                   lambda d, r: paired.paired_bootstrap_ci(d, n_resamples=1000, seed=r), repeats=2000)
    assert 0.93 <= cov <= 0.97, cov


def test_paired_bootstrap_covers_a_binary_difference():
    cov = coverage(binary_item_diffs, lambda d, r: paired.paired_bootstrap_ci(d, n_resamples=1000, seed=r),
                   repeats=2000)
    assert 0.93 <= cov <= 0.97, cov


def test_cluster_bootstrap_covers_when_items_share_sources():
    clusters = np.repeat(np.arange(50), 2)

    def draw(rng):
        return TRUE_DIFF + rng.normal(0, 0.5, 50)[clusters] + rng.normal(0, 0.7, 100)

    cov = coverage(draw, lambda d, r: paired.paired_bootstrap_ci(d, clusters=clusters, n_resamples=1000, seed=r),
                   repeats=2000)
    assert 0.93 <= cov <= 0.97, cov
    naive = coverage(draw, lambda d, r: paired.paired_bootstrap_ci(d, n_resamples=1000, seed=r), repeats=500)
    assert naive < 0.90  # why clusters matter: treating the items as independent undercovers


def test_hierarchical_bootstrap_covers_binary_scores_over_seeds():
    cov = coverage(binary_seed_item_diffs,
                   lambda d, r: paired.hierarchical_bootstrap_ci(d, n_resamples=1000, seed=r), repeats=1000)
    assert 0.93 <= cov <= 0.97, cov


def test_hierarchical_bootstrap_covers_a_seed_item_normal_model():
    """d[s, i] = Δ + seed effect (SD 0.05) + item effect (SD 0.3) + seed×item noise (SD 0.4), 3 seeds."""
    def draw(rng):
        return (TRUE_DIFF + 0.05 * rng.standard_normal((3, 1)) + 0.3 * rng.standard_normal((1, 100))
                + 0.4 * rng.standard_normal((3, 100)))

    cov = coverage(draw, lambda d, r: paired.hierarchical_bootstrap_ci(d, n_resamples=1000, seed=r), repeats=1000)
    assert 0.93 <= cov <= 0.97, cov
    items_only = coverage(draw, lambda d, r: paired.paired_bootstrap_ci(d.mean(axis=0), n_resamples=1000, seed=r),
                          repeats=1000)
    assert items_only < cov  # ignoring seeds understates the uncertainty


def null_binary_pair(rng, n=300):
    """Both arms answer each item correctly with the same probability: no difference."""
    p = rng.uniform(0.2, 0.8, n)
    return (rng.random(n) < p).astype(float), (rng.random(n) < p).astype(float)


def test_mcnemar_false_positive_rate():
    rate = false_positive_rate(null_binary_pair, lambda a, b, r: paired.mcnemar_exact(a, b), repeats=2000)
    assert 0.03 <= rate <= 0.07, rate


def test_wilcoxon_false_positive_rate_continuous_and_tied_scores():
    normal = false_positive_rate(lambda rng: (rng.normal(0, 1, 100),),
                                 lambda d, r: paired.wilcoxon_signed_rank(d), repeats=2000)
    tied = false_positive_rate(null_field_accuracy_diffs, lambda d, r: paired.wilcoxon_signed_rank(d), repeats=2000)
    assert 0.03 <= normal <= 0.07, normal
    assert 0.03 <= tied <= 0.07, tied
