"""By simulation on synthetic per-item data with a known truth: CIs cover it, tests hold their size.

The runs of it that take more than a few seconds; the rest is tests/unit/test_analysis_calibration.py."""

from __future__ import annotations

import numpy as np

from harness.stats import paired
from tests.support.analysis_calibration import false_positive_rate, null_field_accuracy_diffs


def test_permutation_false_positive_rate():
    rate = false_positive_rate(lambda rng: (rng.normal(0, 1, 100),),
                               lambda d, r: paired.paired_permutation_test(d, n_resamples=199, seed=r), repeats=2000)
    tied = false_positive_rate(null_field_accuracy_diffs,
                               lambda d, r: paired.paired_permutation_test(d, n_resamples=199, seed=r), repeats=2000)
    assert 0.03 <= rate <= 0.07, rate
    assert 0.03 <= tied <= 0.07, tied


def test_cluster_permutation_holds_its_size_where_item_tests_do_not():
    """Null with shared sources: each neighbourhood favours one arm or the other at random."""
    clusters = np.repeat(np.arange(30), 4)

    def draw(rng):
        return (rng.normal(0, 0.5, 30)[clusters] + rng.normal(0, 0.5, 120),)

    by_cluster = false_positive_rate(
        draw, lambda d, r: paired.paired_permutation_test(d, clusters=clusters, n_resamples=199, seed=r), repeats=1000)
    by_item = false_positive_rate(draw, lambda d, r: paired.wilcoxon_signed_rank(d), repeats=1000)
    assert 0.03 <= by_cluster <= 0.07, by_cluster
    assert by_item > 0.15, by_item
