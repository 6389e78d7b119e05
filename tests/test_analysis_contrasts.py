"""Contrasts between grid levels on synthetic studies with effects planted in advance: they find what was
planted (a rank effect, its trend, an interaction of rank and target modules) and nothing else at α = 0.05."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from analysis import build_report, load_study
from analysis.compare import NO_DIFFERENCE, paired_scores
from analysis.contrasts import (INTERACTION, MAIN, SIMPLE, TREND, linear_contrast, study_contrasts, study_factors,
                                trend_weights)
from analysis.synthetic import write_synthetic_grid
from harness.errors import SpecError
from harness.stats.factors import same_level
from harness.stats.paired import holm

ALPHA = 0.05
GRID = {"lora.r": [2, 8, 32], "lora.alpha_policy": ["r", "2r"], "lora.target_modules": ["attention", "all-linear"]}
PER_DOUBLING = 0.03  # rank: + 0.03 field accuracy per doubling
ALL_LINEAR_AT_32 = 0.10  # all-linear beats attention by 0.10, at rank 32 only: an interaction
NOT_RUN = "4-bit QLoRA (bitsandbytes NF4) needs CUDA; this machine has none"


def planted(params: dict) -> float:
    """The alpha policy does nothing; rank helps; all-linear helps at rank 32 only."""
    gain = PER_DOUBLING * np.log2(params["lora.r"] / 2)
    return gain + (ALL_LINEAR_AT_32 if params["lora.target_modules"] == "all-linear" and params["lora.r"] == 32
                   else 0.0)


def rows(contrasts, name: str) -> dict:
    """A family's contrasts by (level, by_level)."""
    return {(c.level, c.by_level): c.comparison for c in contrasts.family(name).contrasts}


@pytest.fixture(scope="module")
def grid_study(tmp_path_factory):
    return write_synthetic_grid(tmp_path_factory.mktemp("results"), GRID, planted, seeds=(0, 1, 2), n_items=300,
                                base_p=0.3)


@pytest.fixture(scope="module")
def contrasts(grid_study):
    return study_contrasts(load_study(grid_study), "field_accuracy", alpha=ALPHA, n_resamples=1000)


# ---------------------------------------------------------------- what was planted, and nothing else


@pytest.mark.slow
def test_the_rank_effect_is_found_as_the_marginal_contrast_averaged_over_the_other_factors(contrasts):
    rank = rows(contrasts, "contrasts_lora_r")
    assert set(rank) == {(8, None), (32, None)}  # each level against the first, r=2
    # Averaged over policy (no effect) and target modules (all-linear adds 0.10 at r=32: half of it on average).
    for level, truth in ((8, 2 * PER_DOUBLING), (32, 4 * PER_DOUBLING + ALL_LINEAR_AT_32 / 2)):
        c = rank[(level, None)]
        assert c.verdict == "better" and c.ci_low <= truth <= c.ci_high, (level, c)
        assert c.n == 300 and c.n_seeds == 3
    family = contrasts.family("contrasts_lora_r")
    assert all(x.averaged_over == ("lora.alpha_policy", "lora.target_modules") and x.combinations == (4, 4)
               for x in family.contrasts)
    assert "averaged over the 4 combinations of lora.alpha_policy × lora.target_modules" in family.note


@pytest.mark.slow
def test_the_trend_across_ranks_is_the_slope_per_doubling(contrasts):
    (trend,) = contrasts.family("trend_lora_r").contrasts
    marginal = np.array([0.0, 2 * PER_DOUBLING, 4 * PER_DOUBLING + ALL_LINEAR_AT_32 / 2])
    truth = float(trend_weights([2, 8, 32], log_scale=True) @ marginal)  # least-squares slope on log2(r)
    c = trend.comparison
    assert trend.kind == TREND and trend.scale == "log2" and trend.level == (2, 8, 32)
    assert c.verdict == "better" and c.ci_low <= truth <= c.ci_high, c
    assert contrasts.family("trend_lora_r").kind == TREND
    assert [f.name for f in contrasts.families if f.kind == TREND] == ["trend_lora_r"]  # only the numeric factor


@pytest.mark.slow
def test_a_factor_without_effect_is_not_declared_to_have_one(contrasts):
    (policy,) = contrasts.family("contrasts_lora_alpha_policy").contrasts
    assert policy.comparison.verdict == NO_DIFFERENCE and policy.comparison.ci_low <= 0 <= policy.comparison.ci_high
    for name in ("simple_lora_alpha_policy_by_lora_r", "simple_lora_alpha_policy_by_lora_target_modules",
                 "interaction_lora_alpha_policy_x_lora_r", "interaction_lora_alpha_policy_x_lora_target_modules"):
        assert {c.verdict for c in contrasts.family(name).comparisons} == {NO_DIFFERENCE}, name


@pytest.mark.slow
def test_the_interaction_is_found_where_it_was_planted_and_only_there(contrasts):
    at_rank = rows(contrasts, "simple_lora_target_modules_by_lora_r")
    assert {k: c.verdict for k, c in at_rank.items()} == {
        ("all-linear", 2): NO_DIFFERENCE, ("all-linear", 8): NO_DIFFERENCE, ("all-linear", 32): "better"}
    c32 = at_rank[("all-linear", 32)]
    assert c32.ci_low <= ALL_LINEAR_AT_32 <= c32.ci_high
    interaction = {c.level: c for c in contrasts.family("interaction_lora_r_x_lora_target_modules").contrasts}
    assert interaction[8].comparison.verdict == NO_DIFFERENCE
    assert interaction[32].comparison.verdict == "better"
    assert interaction[32].comparison.ci_low <= ALL_LINEAR_AT_32 <= interaction[32].comparison.ci_high
    # The difference of differences is the simple effect at all-linear minus the one at attention.
    simple = rows(contrasts, "simple_lora_r_by_lora_target_modules")
    assert interaction[32].comparison.diff == pytest.approx(
        simple[(32, "all-linear")].diff - simple[(32, "attention")].diff)
    assert (interaction[32].by_level, interaction[32].by_reference) == ("all-linear", "attention")


@pytest.mark.slow
def test_each_family_is_holm_adjusted_on_its_own(contrasts):
    for family in contrasts.families:
        raw = [c.p for c in family.comparisons]
        assert [c.p_adjusted for c in family.comparisons] == pytest.approx(list(holm(raw))), family.name
    kinds = Counter(f.kind for f in contrasts.families)
    assert kinds == {MAIN: 3, TREND: 1, SIMPLE: 6, INTERACTION: 3}


@pytest.mark.slow
def test_without_any_effect_no_family_declares_one_beyond_alpha(tmp_path):
    """40 null studies (no factor does anything): each family errs in at most α of them, as Holm promises.
    Under α = 0.05, 7 or more errors in 40 has probability 0.003, and 22 or more of the 240 family tests 0.005."""
    errors: Counter = Counter()
    repeats = 40
    for rep in range(repeats):
        study_dir = write_synthetic_grid(tmp_path, {"lora.r": [2, 8, 32], "lora.alpha_policy": ["r", "2r"]},
                                         lambda p: 0.0, name=f"null-{rep}", n_items=100, seed=rep)
        found = study_contrasts(load_study(study_dir), "field_accuracy", alpha=ALPHA, n_resamples=500)
        for family in found.families:
            errors[family.name] += any(c.verdict != NO_DIFFERENCE for c in family.comparisons)
    assert len(errors) == 6
    assert max(errors.values()) <= 6, errors
    assert sum(errors.values()) <= 21, errors


# ---------------------------------------------------------------- the linear combinations


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


# ---------------------------------------------------------------- reference levels and refusals


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


# ---------------------------------------------------------------- in the report


@pytest.mark.slow
def test_the_report_has_a_contrasts_section_with_tables_figures_and_costs(tmp_path):
    grid = {"lora.r": [2, 8, 32], "model.load_in_4bit": [False, True]}
    study_dir = write_synthetic_grid(tmp_path, grid, lambda p: 0.02 * np.log2(p["lora.r"]), n_items=60,
                                     not_run=lambda p: NOT_RUN if p["model.load_in_4bit"] else None)
    report = build_report(study_dir, n_resamples=300)
    md = report.markdown.read_text()
    assert "## Contrasts between levels" in md and "### Interactions" in md
    assert "#### lora.r: each level vs lora.r=2" in md and "#### model.load_in_4bit at each level of lora.r" in md
    assert f"not compared, tuned[model.load_in_4bit=True,lora.r=8] vs tuned[model.load_in_4bit=False,lora.r=8]: " \
           f"no complete trial of 'tuned' at lora.r=8, model.load_in_4bit=True (2 trials not run: {NOT_RUN})" in md
    for name in ("contrasts_lora_r", "trend_lora_r", "simple_lora_r_by_model_load_in_4bit"):
        assert f"](report/tables/{name}.csv)" in md and report.tables[name].latex.exists()
    for name in ("levels_lora_r", "levels_model_load_in_4bit", "deltas_contrasts_lora_r"):
        assert f"](report/figures/{name}.png)" in md and report.figures[name].png.exists()
    # Memory and time of each side, from the trials' cost blocks (the synthetic trials cost 1 + r/64 GB, 30 + r s).
    table = pd.read_csv(report.tables["contrasts_lora_r"].csv)
    row = table.set_index("factor_level").loc[32]
    assert row["peak_mem_gb_a"] == pytest.approx(1.5) and row["peak_mem_gb_b"] == pytest.approx(1 + 2 / 64)
    assert row["trial_wall_s_a"] == pytest.approx(62.0) and row["trial_wall_s_b"] == pytest.approx(32.0)
    assert "| 1.50 / 1.03 | 62.0 / 32.0 |" in report.tables["contrasts_lora_r"].markdown.read_text()
    data = json.loads(report.json.read_text())
    assert [f["name"] for f in data["contrasts"]["factors"]] == ["lora.r", "model.load_in_4bit"]
    families = {f["name"]: f for f in data["contrasts"]["families"]}
    assert families["contrasts_model_load_in_4bit"]["rows"] == []
    assert "not run" in families["contrasts_model_load_in_4bit"]["refused"][0]["reason"]
    assert {c["family"] for c in data["comparisons"]} >= {"contrasts_lora_r", "trend_lora_r"}


def test_a_trend_or_interaction_is_read_by_its_sign_whatever_the_metric_direction():
    """A falling slope of a lower-is-better score is "better", yet it falls: the table says what was found."""
    from types import SimpleNamespace

    from analysis.tables import contrast_verdict

    falling_errors = SimpleNamespace(diff=-0.4, verdict="better")
    assert contrast_verdict(TREND, falling_errors) == "falls with the level"
    assert contrast_verdict(INTERACTION, falling_errors) == "smaller effect at this level"
    assert contrast_verdict(TREND, SimpleNamespace(diff=0.4, verdict="worse")) == "rises with the level"
    assert contrast_verdict(TREND, SimpleNamespace(diff=0.4, verdict=NO_DIFFERENCE)) == "no detectable trend"
    assert contrast_verdict(MAIN, falling_errors) == "better"
