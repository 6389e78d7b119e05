"""Contrasts between grid levels on synthetic studies with effects planted in advance: they find what was
planted (a rank effect, its trend, an interaction of rank and target modules) and nothing else at α = 0.05."""

from __future__ import annotations

import numpy as np
import pytest

from analysis import load_study
from analysis.compare import NOT_SIGNIFICANT, paired_scores
from analysis.contrasts import INTERACTION, MAIN, TREND, linear_contrast, study_contrasts, study_factors, trend_weights
from analysis.synthetic import write_synthetic_grid
from harness.errors import SpecError
from harness.stats.factors import same_level
from tests.support.analysis_contrasts import NOT_RUN


def test_trend_weights_recover_the_slope_of_a_line():
    ranks = [2, 4, 16, 64]
    assert trend_weights(ranks, log_scale=True) @ (0.5 + 0.07 * np.log2(ranks)) == pytest.approx(0.07)
    assert trend_weights([0.1, 0.3, 0.5], log_scale=False) @ np.array([1.0, 1.4, 1.8]) == pytest.approx(2.0)
    assert trend_weights(ranks, log_scale=True).sum() == pytest.approx(0.0)  # a constant has no slope


def test_a_contrast_of_two_cells_is_their_paired_comparison(tmp_path):
    study = load_study(write_synthetic_grid(tmp_path, {"lora.r": [2, 8]}, lambda p: 0.05 * (p["lora.r"] == 8),
                                            n_items=50))
    scores, note = linear_contrast(study, "field_accuracy", {"tuned[lora.r=8]": 1.0}, {"tuned[lora.r=2]": 1.0},
                                   a_label="a", b_label="b")
    direct = paired_scores(study, "tuned[lora.r=8]", "tuned[lora.r=2]", "field_accuracy")
    assert np.array_equal(scores.a, direct.a) and np.array_equal(scores.b, direct.b) and note == ""
    assert scores.seeds == direct.seeds == (0, 1) and scores.item_ids == direct.item_ids


def test_levels_match_across_number_types_but_not_bool():
    assert same_level(16, 16.0) and same_level(np.int64(8), 8) and same_level("2r", "2r")
    assert not same_level(True, 1) and not same_level(False, 0.0) and same_level(np.bool_(True), True)


def test_the_reference_level_comes_from_the_spec_or_defaults_to_the_first(tmp_path):
    study_dir = write_synthetic_grid(tmp_path, {"lora.r": [2, 8, 32]}, lambda p: 0.0, n_items=20,
                                     reference={"lora.r": 8})
    study = load_study(study_dir)
    assert study.grid == {"lora.r": [2, 8, 32]} and study.report_reference == {"lora.r": 8}
    (factor,) = study_factors(study, study.report_reference)
    assert factor.reference == 8 and factor.levels == (2, 8, 32) and factor.numeric and factor.log_scale
    assert study_factors(study)[0].reference == 2
    found = study_contrasts(study, "field_accuracy", n_resamples=200)  # the manifests' reference
    assert [(c.level, c.reference) for c in found.family("contrasts_lora_r").contrasts] == [(2, 8), (32, 8)]
    found = study_contrasts(study, "field_accuracy", reference={}, n_resamples=200)  # the spec says none
    assert [(c.level, c.reference) for c in found.family("contrasts_lora_r").contrasts] == [(8, 2), (32, 2)]


def test_a_reference_that_is_not_a_level_or_not_a_factor_is_refused_naming_the_field(tmp_path):
    study = load_study(write_synthetic_grid(tmp_path, {"lora.r": [2, 8]}, lambda p: 0.0, n_items=20))
    with pytest.raises(SpecError, match=r"'report\.reference\.lora\.r': 4 is not one of its levels \['2', '8'\]"):
        study_contrasts(study, "field_accuracy", reference={"lora.r": 4})
    with pytest.raises(SpecError, match=r"'report\.reference\.train\.learning_rate'.*not a factor.*lora\.r"):
        study_contrasts(study, "field_accuracy", reference={"train.learning_rate": 1e-4})


def test_a_study_without_a_grid_has_no_contrasts(tmp_path):
    study_dir = write_synthetic_grid(tmp_path, {"lora.r": [16]}, lambda p: 0.0, n_items=20)
    found = study_contrasts(load_study(study_dir), "field_accuracy")
    assert found.factors == [] and found.families == []


def test_not_run_qlora_cells_are_refused_with_their_reason_and_the_rest_is_compared(tmp_path):
    grid = {"lora.r": [2, 8], "model.load_in_4bit": [False, True]}
    study_dir = write_synthetic_grid(tmp_path, grid, lambda p: 0.0, n_items=30,
                                     not_run=lambda p: NOT_RUN if p["model.load_in_4bit"] else None)
    found = study_contrasts(load_study(study_dir), "field_accuracy", n_resamples=200)
    qlora = found.family("contrasts_model_load_in_4bit")
    assert qlora.contrasts == [] and len(qlora.refused) == 1
    assert "no complete trial of 'tuned' at model.load_in_4bit=True (4 trials not run: " + NOT_RUN in \
        qlora.refused[0][2]
    at_rank = found.family("simple_model_load_in_4bit_by_lora_r")  # the QLoRA question, rank by rank
    assert [r[2].split(" (")[0] for r in at_rank.refused] == [
        "no complete trial of 'tuned' at lora.r=2, model.load_in_4bit=True",
        "no complete trial of 'tuned' at lora.r=8, model.load_in_4bit=True"]
    (rank,) = found.family("contrasts_lora_r").contrasts  # LoRA alone still answers the rank question
    assert rank.combinations == (1, 2) and rank.comparison.n_seeds == 2


def test_a_failed_cell_leaves_its_seed_out_and_says_so(tmp_path):
    study_dir = write_synthetic_grid(tmp_path, {"lora.r": [2, 8]}, lambda p: 0.0, n_items=30,
                                     not_run=lambda p: "RuntimeError: out of memory" if p == {
                                         "lora.r": 8, "train.seed": 1} else None)
    (c,) = study_contrasts(load_study(study_dir), "field_accuracy", n_resamples=200).family("contrasts_lora_r").contrasts
    assert c.comparison.n_seeds == 1 and "on the seeds every cell has, [0] (without [1])" in c.comparison.note


def test_a_trend_or_interaction_is_read_by_its_sign_whatever_the_metric_direction():
    """A falling slope of a lower-is-better score is "better", yet it falls: the table says what was found."""
    from types import SimpleNamespace

    from analysis.tables import contrast_verdict

    falling_errors = SimpleNamespace(diff=-0.4, verdict="better")
    assert contrast_verdict(TREND, falling_errors) == "falls with the level"
    assert contrast_verdict(INTERACTION, falling_errors) == "smaller effect at this level"
    assert contrast_verdict(TREND, SimpleNamespace(diff=0.4, verdict="worse")) == "rises with the level"
    flat = SimpleNamespace(diff=0.004, verdict=NOT_SIGNIFICANT, outcome="equivalent", tolerance=0.02)
    assert contrast_verdict(TREND, flat) == "flat within ±0.02"
    assert contrast_verdict(INTERACTION, flat) == "no interaction beyond ±0.02"
    assert contrast_verdict(TREND, SimpleNamespace(diff=0.4, verdict=NOT_SIGNIFICANT, outcome="inconclusive",
                                                   tolerance=0.02)) == "inconclusive"
    # A level contrast reads as its outcome (regressed, equivalent, improved, inconclusive).
    assert contrast_verdict(MAIN, SimpleNamespace(diff=-0.4, verdict="better", outcome="improved", tolerance=0.02,
                                                  items_needed=None, n=10, n_clusters=10)) == "improved (±0.02)"
