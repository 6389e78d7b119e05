"""Outcomes against one tolerance, the seed-aware test of record, degenerate wording and declared Holm families."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from statsmodels.stats.multitest import multipletests

from analysis.compare import (CONSTANT, IDENTICAL, MIN_SEEDS_FOR_POWER, NOT_SIGNIFICANT, ONE_DISCORDANT, PairedScores,
                              adjust, pair_statistics)
from analysis.contrasts import Contrasts
from analysis.families import QUESTION, Family, declare_families
from analysis.markdown import multiple_comparisons_section
from analysis.settings import ComparisonSettings
from analysis.tables import display_comparisons
from harness.evaluation.metrics import score_spec
from harness.stats import paired

N = 1000  # resamples


def scores(a, b, metric: str = "exact_match") -> PairedScores:
    a, b = np.atleast_2d(np.asarray(a, float)), np.atleast_2d(np.asarray(b, float))
    return PairedScores("candidate", "reference", metric, a, b, tuple(range(a.shape[0])),
                        tuple(f"i{k:04d}" for k in range(a.shape[1])), None, score_spec(metric).range_of((1.0, -1.0)))


def judged(s: PairedScores, tolerance: float, **options):
    return adjust([pair_statistics(s, n_resamples=N, **options)], tolerance=tolerance)[0]


def flip(values: np.ndarray, share: float, frm: float, rng: np.random.Generator) -> np.ndarray:
    """`values` with `share` of the items scored `frm` flipped to 1 - frm."""
    out = values.copy()
    idx = np.flatnonzero(values == frm)
    out[rng.choice(idx, int(share * idx.size), replace=False)] = 1 - frm
    return out


def test_a_candidate_equal_to_its_reference_is_equivalent_at_a_generous_tolerance_inconclusive_at_a_tiny_one():
    rng = np.random.default_rng(0)
    reference = (rng.random(3000) < 0.7).astype(float)
    # The same model re-run: a few answers change, as many each way.
    candidate = flip(flip(reference, 0.03, 1.0, rng), 0.07, 0.0, rng)
    generous, tiny = (judged(scores(candidate, reference), t) for t in (0.05, 0.002))
    assert abs(generous.diff) < 0.01
    assert generous.outcome == "equivalent" and generous.tolerance == 0.05
    assert "equivalent (±0.05)" in generous.note and "ruled out" in generous.note
    assert tiny.outcome == "inconclusive"
    assert tiny.items_needed is not None and tiny.items_needed > tiny.n  # more items would decide
    assert f"about {tiny.items_needed} paired units" in tiny.note
    shown = display_comparisons([tiny]).iloc[0]
    assert shown["Outcome"].startswith("inconclusive (±0.002); ~") and "items would decide" in shown["Outcome"]
    assert "no detectable difference" not in " ".join(map(str, shown))


def test_a_planted_drop_is_a_regression():
    rng = np.random.default_rng(1)
    reference = (rng.random(400) < 0.7).astype(float)
    candidate = flip(reference, 0.15, 1.0, rng)  # a tenth of all answers turn wrong
    c = judged(scores(candidate, reference), 0.02)
    assert c.diff < -0.05 and c.ci_high < -0.02
    assert (c.verdict, c.outcome) == ("worse", "regressed")


def test_a_significant_drop_smaller_than_the_tolerance_is_equivalent_not_a_regression():
    rng = np.random.default_rng(2)
    reference = (rng.random(20000) < 0.7).astype(float)
    candidate = flip(reference, 0.01, 1.0, rng)
    c = judged(scores(candidate, reference), 0.05)
    assert c.verdict == "worse" and c.outcome == "equivalent"


def test_identical_answers_have_no_variance_and_no_mde():
    reference = (np.arange(50) % 3 == 0).astype(float)
    c = judged(scores(reference, reference), 0.02)
    assert c.degenerate == IDENTICAL == "no variance: identical answers"
    assert np.isnan(c.mde) and c.verdict == NOT_SIGNIFICANT
    shown = display_comparisons([c]).iloc[0]
    assert shown["MDE"] == "no variance: identical answers" and "0.000" not in shown["MDE"]


def test_one_discordant_item_is_named_not_given_an_mde():
    reference = (np.arange(50) % 2 == 0).astype(float)
    candidate = reference.copy()
    candidate[1] = 1.0
    c = judged(scores(candidate, reference), 0.02)
    assert c.degenerate == ONE_DISCORDANT == "one discordant item"
    assert np.isnan(c.mde) and display_comparisons([c]).iloc[0]["MDE"] == "one discordant item"
    assert "one discordant item" in c.note


def test_a_constant_difference_with_float_noise_gets_no_mde():
    """json_valid going 0 -> 1 on every item once printed "MDE 0.000" from an SE of 2e-16."""
    rng = np.random.default_rng(3)
    reference = rng.uniform(0, 0.6, 50)
    candidate = reference + 0.3  # the same shift everywhere, up to rounding
    assert 0 < np.std(candidate - reference) < 1e-12
    c = judged(scores(candidate, reference, "field_accuracy"), 0.02)
    assert c.degenerate == CONSTANT and np.isnan(c.mde) and np.isnan(c.effect_size)
    assert np.isnan(paired.minimum_detectable_difference(2e-16, 50, scale=1.0))
    assert paired.minimum_detectable_difference(0.3, 50, scale=1.0) > 0


def test_several_seeds_test_the_seed_variance_and_show_each_seeds_delta():
    rng = np.random.default_rng(4)
    n = 200
    reference = (rng.random((1, n)) < 0.6).astype(float).repeat(3, axis=0)
    # The seeds disagree: one helps, one does nothing, one hurts.
    candidate = np.stack([flip(reference[0], share, frm, rng) for share, frm in ((0.2, 0.0), (0.0, 0.0),
                                                                                   (0.1, 1.0))])
    three = judged(scores(candidate, reference), 0.02)
    assert three.test.startswith("seeds × items t (3 seeds") and "Satterthwaite" in three.test
    assert len(three.seed_diffs) == 3 and three.seed_diffs[0] > 0 > three.seed_diffs[2]
    item_only_se = (candidate - reference).mean(axis=0).std(ddof=1) / np.sqrt(n)
    assert three.se > item_only_se and three.se_seeds > 0  # the seeds' variance is in the SE
    assert np.isfinite(three.mde) and three.mde > 2 * item_only_se * 1.96
    two = judged(scores(candidate[:2], reference[:2]), 0.02)
    assert MIN_SEEDS_FOR_POWER == 3 and np.isnan(two.mde) and two.items_needed is None
    assert "2 seeds: the seed-to-seed variance has 1 df" in two.note
    shown = display_comparisons([two]).iloc[0]
    assert shown["MDE"] == "2 seeds: seed variance has 1 df"
    assert shown["Δ per seed"] == ", ".join(f"{d:+.3f}".replace("-", "−") for d in two.seed_diffs)


def test_an_unbounded_metric_gets_no_equivalence_claim_and_a_descriptive_one_no_improvement():
    rng = np.random.default_rng(5)
    reference = rng.normal(100, 10, 80)
    unknown = judged(scores(reference + rng.normal(0, 1, 80), reference, "mystery_score"), 0.02)
    assert np.isnan(unknown.tolerance) and unknown.outcome == "inconclusive"
    assert "no equivalence claim" in unknown.note
    words = judged(scores(reference + 20 + rng.normal(0, 1, 80), reference, "words"), 0.02)
    assert words.outcome == "higher"  # a length is longer, never improved


def test_identical_rows_are_shown_but_not_counted_in_holm():
    rng = np.random.default_rng(6)
    reference = (rng.random(300) < 0.6).astype(float)
    rows = [pair_statistics(scores(reference, reference), n_resamples=N),
            pair_statistics(scores(flip(reference, 0.1, 1.0, rng), reference), n_resamples=N),
            pair_statistics(scores(flip(reference, 0.05, 0.0, rng), reference), n_resamples=N)]
    out = adjust(rows)
    assert [c.counted for c in out] == [False, True, True]
    assert out[0].p_adjusted == out[0].p == 1.0 and "Tarone 1990" in out[0].note
    assert [c.p_adjusted for c in out[1:]] == pytest.approx(multipletests([c.p for c in rows[1:]], method="holm")[1])
    assert display_comparisons(out).iloc[0]["adj. p"].endswith("(not in m)")


def test_the_experiments_question_is_one_family_across_tables_and_the_report_lists_them():
    rng = np.random.default_rng(7)
    reference = (rng.random(300) < 0.6).astype(float)
    row = lambda share: pair_statistics(scores(flip(reference, share, 1.0, rng), reference),  # noqa: E731
                                        n_resamples=N)
    same = pair_statistics(scores(reference, reference), n_resamples=N)
    families = [Family("headline", "vs baseline", [row(0.1), row(0.2)], []),
                Family("secondary", "secondary", [row(0.05), same], []),
                Family("dpo_vs_sft", "dpo vs sft", [row(0.04)], [], question=True),
                Family("three_way", "contestants", [row(0.03), same], [], question=True)]
    adjusted, _, declared = declare_families(families, Contrasts([]), ComparisonSettings())
    by_name = {f.name: f for f in declared}
    assert set(by_name) == {QUESTION, "headline", "secondary"}
    assert by_name[QUESTION].tables == ("dpo_vs_sft", "three_way")
    assert (by_name[QUESTION].m, by_name[QUESTION].excluded) == (2, 1)
    assert (by_name["secondary"].m, by_name["secondary"].excluded) == (1, 1)
    question_p = [c.p for f in families[2:] for c in f.comparisons if c.counted and c is not same]
    expected = multipletests(question_p, method="holm")[1]
    assert [adjusted[2].comparisons[0].p_adjusted, adjusted[3].comparisons[0].p_adjusted] == pytest.approx(expected)
    text = "\n".join(multiple_comparisons_section(SimpleNamespace(holm_families=declared)))
    assert "| `question` | `dpo_vs_sft`, `three_way` | 2 | 1 |" in text and "Tarone 1990" in text


def test_without_a_question_the_headline_is_the_question():
    rng = np.random.default_rng(8)
    reference = (rng.random(100) < 0.6).astype(float)
    c = pair_statistics(scores(flip(reference, 0.1, 1.0, rng), reference), n_resamples=N)
    _, _, declared = declare_families([Family("headline", "vs baseline", [c], [])], Contrasts([]),
                                      ComparisonSettings())
    assert [(f.name, f.tables, f.m) for f in declared] == [(QUESTION, ("headline",), 1)]
