"""Contrasts between grid levels on synthetic studies with effects planted in advance: they find what was
planted (a rank effect, its trend, an interaction of rank and target modules) and nothing else at α = 0.05.

The runs of it that take more than a few seconds; the rest is tests/unit/test_analysis_contrasts.py."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from analysis import build_report, load_study
from analysis.compare import NOT_SIGNIFICANT
from analysis.contrasts import INTERACTION, MAIN, SIMPLE, TREND, study_contrasts, trend_weights
from analysis.synthetic import write_synthetic_grid
from harness.stats.paired import holm
from tests.support.analysis_contrasts import ALL_LINEAR_AT_32, ALPHA, NOT_RUN, PER_DOUBLING


def rows(contrasts, name: str) -> dict:
    """A family's contrasts by (level, by_level)."""
    return {(c.level, c.by_level): c.comparison for c in contrasts.family(name).contrasts}


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


def test_the_trend_across_ranks_is_the_slope_per_doubling(contrasts):
    (trend,) = contrasts.family("trend_lora_r").contrasts
    marginal = np.array([0.0, 2 * PER_DOUBLING, 4 * PER_DOUBLING + ALL_LINEAR_AT_32 / 2])
    truth = float(trend_weights([2, 8, 32], log_scale=True) @ marginal)  # least-squares slope on log2(r)
    c = trend.comparison
    assert trend.kind == TREND and trend.scale == "log2" and trend.level == (2, 8, 32)
    assert c.verdict == "better" and c.ci_low <= truth <= c.ci_high, c
    assert contrasts.family("trend_lora_r").kind == TREND
    assert [f.name for f in contrasts.families if f.kind == TREND] == ["trend_lora_r"]  # only the numeric factor


def test_a_factor_without_effect_is_not_declared_to_have_one(contrasts):
    (policy,) = contrasts.family("contrasts_lora_alpha_policy").contrasts
    assert policy.comparison.verdict == NOT_SIGNIFICANT and policy.comparison.ci_low <= 0 <= policy.comparison.ci_high
    for name in ("simple_lora_alpha_policy_by_lora_r", "simple_lora_alpha_policy_by_lora_target_modules",
                 "interaction_lora_alpha_policy_x_lora_r", "interaction_lora_alpha_policy_x_lora_target_modules"):
        assert {c.verdict for c in contrasts.family(name).comparisons} == {NOT_SIGNIFICANT}, name


def test_the_interaction_is_found_where_it_was_planted_and_only_there(contrasts):
    at_rank = rows(contrasts, "simple_lora_target_modules_by_lora_r")
    assert {k: c.verdict for k, c in at_rank.items()} == {
        ("all-linear", 2): NOT_SIGNIFICANT, ("all-linear", 8): NOT_SIGNIFICANT, ("all-linear", 32): "better"}
    c32 = at_rank[("all-linear", 32)]
    assert c32.ci_low <= ALL_LINEAR_AT_32 <= c32.ci_high
    interaction = {c.level: c for c in contrasts.family("interaction_lora_r_x_lora_target_modules").contrasts}
    assert interaction[8].comparison.verdict == NOT_SIGNIFICANT
    assert interaction[32].comparison.verdict == "better"
    assert interaction[32].comparison.ci_low <= ALL_LINEAR_AT_32 <= interaction[32].comparison.ci_high
    # The difference of differences is the simple effect at all-linear minus the one at attention.
    simple = rows(contrasts, "simple_lora_r_by_lora_target_modules")
    assert interaction[32].comparison.diff == pytest.approx(
        simple[(32, "all-linear")].diff - simple[(32, "attention")].diff)
    assert (interaction[32].by_level, interaction[32].by_reference) == ("all-linear", "attention")


def test_each_family_is_holm_adjusted_on_its_own(contrasts):
    for family in contrasts.families:
        raw = [c.p for c in family.comparisons]
        assert [c.p_adjusted for c in family.comparisons] == pytest.approx(list(holm(raw))), family.name
    kinds = Counter(f.kind for f in contrasts.families)
    assert kinds == {MAIN: 3, TREND: 1, SIMPLE: 6, INTERACTION: 3}


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
            errors[family.name] += any(c.verdict != NOT_SIGNIFICANT for c in family.comparisons)
    assert len(errors) == 6
    assert max(errors.values()) <= 6, errors
    assert sum(errors.values()) <= 21, errors


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
    for name in ("levels_lora_r", "deltas_contrasts_lora_r"):
        assert f"](report/figures/{name}.png)" in md and report.figures[name].png.exists()
    # Only one level of 4-bit has a complete trial: no figure draws an empty level and a mean of one.
    assert "- figure levels_model_load_in_4bit not drawn: only model.load_in_4bit=False has a complete trial" in md
    # Memory and time of each side, from the trials' cost blocks (the synthetic trials cost 1 + r/64 GB, 30 + r s).
    table = pd.read_csv(report.tables["contrasts_lora_r"].csv)
    row = table.set_index("factor_level").loc[32]
    assert row["peak_mem_gb_a"] == pytest.approx(1.5) and row["peak_mem_gb_b"] == pytest.approx(1 + 2 / 64)
    assert row["trial_wall_s_a"] == pytest.approx(62.0) and row["trial_wall_s_b"] == pytest.approx(32.0)
    assert "| 1.50 / 1.03 | 62.0 / 32.0 |" in report.tables["contrasts_lora_r"].full_markdown.read_text()
    data = json.loads(report.json.read_text())
    assert [f["name"] for f in data["contrasts"]["factors"]] == ["lora.r", "model.load_in_4bit"]
    families = {f["name"]: f for f in data["contrasts"]["families"]}
    assert families["contrasts_model_load_in_4bit"]["rows"] == []
    assert "not run" in families["contrasts_model_load_in_4bit"]["refused"][0]["reason"]
    assert {c["family"] for c in data["comparisons"]} >= {"contrasts_lora_r", "trend_lora_r"}
