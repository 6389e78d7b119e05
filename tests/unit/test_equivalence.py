"""The three-valued decision every "no difference" goes through: regressed, equivalent within ±tolerance,
inconclusive (and improved), on simulated paired items with the bootstrap CI and test the reports use."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.errors import HarnessError
from harness.stats import equivalence as eq
from harness.stats.paired import paired_bootstrap_ci, wilcoxon_signed_rank


def _decide(diffs: np.ndarray, tolerance: float) -> eq.Equivalence:
    low, high = paired_bootstrap_ci(diffs, n_resamples=4000)
    se = float(diffs.std(ddof=1) / math.sqrt(diffs.size))
    return eq.decide(float(diffs.mean()), low, high, wilcoxon_signed_rank(diffs), tolerance=tolerance,
                     se=se, n=diffs.size)


def _scores(rng: np.random.Generator, n: int, p_ref: float, p_cand: float, flip: float) -> np.ndarray:
    """candidate − reference per item: the candidate changes a `flip` share of answers, at its own accuracy."""
    ref = (rng.random(n) < p_ref).astype(float)
    changed = rng.random(n) < flip
    cand = np.where(changed, (rng.random(n) < p_cand).astype(float), ref)
    return cand - ref


def test_a_candidate_equal_to_its_reference_is_equivalent_at_a_generous_tolerance_and_inconclusive_at_a_tiny_one():
    diffs = _scores(np.random.default_rng(0), 400, 0.6, 0.6, flip=0.2)
    generous, tiny = _decide(diffs, 0.10), _decide(diffs, 0.01)
    assert generous.outcome == eq.EQUIVALENT and generous.passes and generous.exit_code == 0
    assert tiny.outcome == eq.INCONCLUSIVE and not tiny.passes and tiny.exit_code == eq.EXIT_INCONCLUSIVE
    assert tiny.items_needed > diffs.size and f"about {tiny.items_needed} paired units" in tiny.reason


def test_the_items_needed_do_decide_about_as_often_as_the_power_promises():
    rng = np.random.default_rng(1)
    needed = _decide(_scores(rng, 400, 0.6, 0.6, flip=0.2), 0.04).items_needed
    runs = [_decide(_scores(rng, needed, 0.6, 0.6, flip=0.2), 0.04).outcome for _ in range(30)]
    assert 0.6 <= runs.count(eq.EQUIVALENT) / len(runs), runs  # 80% at the true variance; this one is estimated


def test_a_planted_drop_is_regressed_and_a_planted_gain_improved():
    drop = _scores(np.random.default_rng(2), 300, 0.7, 0.3, flip=0.5)
    assert _decide(drop, 0.02).outcome == eq.REGRESSED and _decide(drop, 0.02).exit_code == 1
    gain = -drop
    assert _decide(gain, 0.02).outcome == eq.IMPROVED and _decide(gain, 0.02).exit_code == 0


def test_a_significant_drop_smaller_than_the_tolerance_is_equivalent_and_says_so():
    got = eq.decide(-0.01, -0.015, -0.005, 0.001, tolerance=0.02, se=0.0025, n=1000)
    assert got.outcome == eq.EQUIVALENT and "significant drop, smaller than the tolerance" in got.reason


def test_a_wide_ci_that_is_not_significant_is_inconclusive_never_equivalent():
    got = eq.decide(-0.011, -0.066, 0.037, 0.7, tolerance=0.02, se=0.026, n=50)
    assert got.outcome == eq.INCONCLUSIVE and got.items_needed > 50


@pytest.mark.parametrize("bad", [0, -0.1, 1.0, float("nan"), float("inf"), "two", None])
def test_bad_tolerance_values_are_clear_errors_naming_the_field(bad):
    with pytest.raises(HarnessError, match=r"forgetting\.tolerance: .*tolerance"):
        eq.check_tolerance(bad, upper=1.0, where="forgetting.tolerance")


def test_items_needed_grows_with_the_variance_and_shrinks_with_the_tolerance():
    assert eq.items_needed(0.02, 100, 0.02) > eq.items_needed(0.01, 100, 0.02) > eq.items_needed(0.01, 100, 0.04)
    assert eq.items_needed(0.0, 100, 0.02) is None and eq.items_needed(float("nan"), 100, 0.02) is None
