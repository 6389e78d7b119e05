"""Loading a study from disk and comparing its arms: the right test, honest pairing, clear refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
from statsmodels.stats.multitest import multipletests

from analysis import (AnalysisError, MissingSeedsError, NaNScoreError, StudyNotFoundError, UnknownArmError,
                      UnpairedItemsError, compare, load_study, quality)
from analysis.synthetic import write_synthetic_study
from harness.errors import HarnessError
from harness.results import read_jsonl, write_json, write_jsonl

N = 500  # resamples: enough for these checks, fast


@pytest.fixture
def two_seeds(tmp_path) -> Path:
    return write_synthetic_study(tmp_path, ranks=(8, 16), seeds=(0, 1))


@pytest.fixture
def one_seed(tmp_path) -> Path:
    return write_synthetic_study(tmp_path, ranks=(8, 16), seeds=(0,), n_clusters=None, failed_trial=False,
                                 n_items=120)


def edit_eval(trial_dir: Path, arm: str, change) -> None:
    path = trial_dir / "eval" / f"{arm}.jsonl"
    write_jsonl(path, change(read_jsonl(path)))


# ---------------------------------------------------------------- loading


def test_load_lists_failed_trials_but_compares_only_complete_ones(two_seeds):
    study = load_study(two_seeds)
    assert list(study.trials["status"]) == ["complete"] * 4 + ["failed"]
    assert "out of memory" in study.trials.loc[4, "reason"]
    assert 4 not in set(study.items["trial"])
    assert study.varying_params == ["lora.r"]
    assert study.arm_labels == ["base", "tuned[lora.r=8]", "tuned[lora.r=16]"]
    assert {"score.field_accuracy", "score.json_valid", "score.field.price", "latency_s", "cluster",
            "output_tokens", "seed", "trial", "arm_label"} <= set(study.items.columns)
    assert study.headline_metric == "field_accuracy"


def test_load_counts_the_repeated_base_evaluation_once_per_seed(two_seeds):
    study = load_study(two_seeds)
    base = study.rows("base")
    assert len(base) == 60 * 2  # 60 items × 2 seeds, not × 4 trials
    assert base["lora.r"].isna().all()  # an untuned model has no LoRA rank
    assert study.notes and "counted once" in study.notes[0]


def test_load_reads_the_training_only_params_from_the_manifests(tmp_path):
    """A manifest that lists a stage's prefix (here `recipe.`, a section no registered stage has) makes the
    base arm one arm across its levels; without it the base is one arm per level, as for a model.* param."""
    from analysis.synthetic import write_synthetic_grid
    from harness.stages.registry import training_only_prefixes

    study_dir = write_synthetic_grid(tmp_path, {"recipe.alpha": [0.1, 0.5]}, lambda p: p["recipe.alpha"] / 10,
                                     seeds=(0,), n_items=20)
    before = load_study(study_dir)
    assert before.training_only_prefixes == training_only_prefixes()  # manifests from before they said
    assert before.arm_labels == ["base[recipe.alpha=0.1]", "base[recipe.alpha=0.5]", "tuned[recipe.alpha=0.1]",
                                 "tuned[recipe.alpha=0.5]"]
    for manifest_path in study_dir.glob("trial-*/manifest.json"):
        manifest = json.loads(manifest_path.read_text())
        write_json(manifest_path, {**manifest, "training_only_prefixes": ["lora.", "recipe."]})
    study = load_study(study_dir)
    assert study.training_only_prefixes == ("lora.", "recipe.")
    assert study.arm_labels == ["base", "tuned[recipe.alpha=0.1]", "tuned[recipe.alpha=0.5]"]
    assert study.rows("base")["recipe.alpha"].isna().all() and len(study.rows("base")) == 20  # one evaluation
    assert study.label_for("base", {"recipe.alpha": 0.5}) == "base"


def test_load_refuses_an_empty_directory(tmp_path):
    with pytest.raises(StudyNotFoundError, match="no trial-NNNN directories"):
        load_study(tmp_path)


# ---------------------------------------------------------------- statistics chosen and computed


def test_one_seed_binary_metric_uses_mcnemar_and_numbers_match_the_files(one_seed):
    study = load_study(one_seed)
    (c,) = compare(study, [("tuned[lora.r=16]", "base")], "exact_match", n_resamples=N)
    tuned = [r["scores"]["exact_match"] for r in read_jsonl(one_seed / "trial-0001" / "eval" / "tuned.jsonl")]
    base = [r["scores"]["exact_match"] for r in read_jsonl(one_seed / "trial-0001" / "eval" / "base.jsonl")]
    assert c.test == c.item_test == "McNemar exact"
    assert c.diff == pytest.approx(np.mean(tuned) - np.mean(base))
    assert (c.n, c.n_seeds, c.n_clusters) == (120, 1, 120)
    assert c.ci_method == "paired bootstrap over items"
    assert c.ci_low < c.diff < c.ci_high
    assert np.isnan(c.cluster_se)
    assert c.effect_size_kind.startswith("Cohen's d_z")


def test_one_seed_continuous_metric_uses_wilcoxon(one_seed):
    study = load_study(one_seed)
    (c,) = compare(study, [("tuned[lora.r=16]", "base")], "field_accuracy", n_resamples=N)
    a = study.rows("tuned[lora.r=16]").sort_values("item_id")["score.field_accuracy"].to_numpy()
    b = study.rows("base").sort_values("item_id")["score.field_accuracy"].to_numpy()
    assert c.test == "Wilcoxon signed-rank"
    assert c.p == pytest.approx(scipy.stats.wilcoxon(a - b).pvalue)
    assert c.verdict == "better"


def test_several_seeds_use_the_hierarchical_bootstrap_and_clusters(two_seeds):
    (c,) = compare(load_study(two_seeds), [("tuned[lora.r=16]", "base")], "field_accuracy", n_resamples=N)
    assert c.n_seeds == 2
    assert c.ci_method == "hierarchical bootstrap (2 seeds × clusters)"
    assert c.item_test == "Wilcoxon signed-rank on per-item means over 2 seeds"
    # Several seeds: the test counts their variance, on clusters (items share sources) with Satterthwaite df.
    assert c.test.startswith(f"seeds × items t (2 seeds × {c.n_clusters} clusters, Satterthwaite df=")
    assert c.p != c.p_permutation and c.se >= c.cluster_se * np.sqrt(0.5)
    assert len(c.seed_diffs) == 2 and np.mean(c.seed_diffs) == pytest.approx(c.diff)
    assert c.n_clusters < c.n and np.isfinite(c.cluster_se)


def test_holm_is_applied_across_the_pairs_of_one_call(two_seeds):
    pairs = [("tuned[lora.r=8]", "base"), ("tuned[lora.r=16]", "base"), ("tuned[lora.r=16]", "tuned[lora.r=8]")]
    comparisons = compare(load_study(two_seeds), pairs, "field_accuracy", n_resamples=N)
    expected = multipletests([c.p for c in comparisons], method="holm")[1]
    assert [c.p_adjusted for c in comparisons] == pytest.approx(expected)


def test_verdicts_follow_sign_adjusted_p_and_ci(one_seed):
    study = load_study(one_seed)
    better, worse = compare(study, [("tuned[lora.r=16]", "base"), ("base", "tuned[lora.r=16]")], "field_accuracy",
                            n_resamples=N)
    assert (better.verdict, worse.verdict) == ("better", "worse")
    assert better.diff == pytest.approx(-worse.diff)


def test_no_significant_difference_is_read_against_the_tolerance(tmp_path):
    # Rank 8 and 4 gain the same (gain_per_doubling=0), so any difference is noise.
    study = load_study(write_synthetic_study(tmp_path, ranks=(4, 8), seeds=(0,), gain_per_doubling=0.0,
                                             n_clusters=None, failed_trial=False, n_items=40))
    (c,) = compare(study, [("tuned[lora.r=8]", "tuned[lora.r=4]")], "field_accuracy", n_resamples=N)
    assert c.verdict == "not significant"
    assert c.mde > 0 and c.tolerance == 0.02
    # 40 items cannot put the CI inside ±0.02: the outcome says so, with the items that would.
    assert c.outcome == "inconclusive" and c.items_needed > c.n and "inconclusive (±0.02)" in c.note


def test_seed_level_test_is_a_t_test_on_per_seed_means(tmp_path):
    study = load_study(write_synthetic_study(tmp_path, ranks=(16,), seeds=(0, 1, 2), failed_trial=False))
    (c,) = compare(study, [("tuned", "base")], "field_accuracy", level="seed", n_resamples=N)
    per_seed = (study.rows("tuned").groupby("seed")["score.field_accuracy"].mean()
                - study.rows("base").groupby("seed")["score.field_accuracy"].mean())
    assert c.test == "t-test on per-seed means (df=2)"
    assert c.p == pytest.approx(scipy.stats.ttest_1samp(per_seed, 0).pvalue)
    assert c.p_permutation >= 0.25  # 3 seeds: the exact sign-flip test cannot go below 2/2^3
    assert c.effect_size_kind == "Cohen's d_z (per-seed differences)"
    assert c.effect_size == pytest.approx(per_seed.mean() / per_seed.std(ddof=1))


def test_quality_interval_brackets_the_mean(two_seeds):
    q = quality(load_study(two_seeds), "tuned[lora.r=16]", "field_accuracy", n_resamples=N)
    assert q.ci_low < q.mean < q.ci_high
    assert (q.n, q.n_seeds, q.ci_method) == (60, 2, "hierarchical bootstrap")


# ---------------------------------------------------------------- refusals


def test_arms_evaluated_on_different_items_are_refused(one_seed):
    edit_eval(one_seed / "trial-0001", "tuned", lambda rows: rows[:-3])
    study = load_study(one_seed)
    with pytest.raises(UnpairedItemsError, match=r"different held-out items .*3 only in 'base'.*item-0119"):
        compare(study, [("tuned[lora.r=16]", "base")], "field_accuracy")
    with pytest.raises(UnpairedItemsError, match="would be a lie"):
        compare(study, [("tuned[lora.r=16]", "tuned[lora.r=8]")], "field_accuracy")


def test_arms_from_different_splits_are_refused(one_seed):
    manifest_path = one_seed / "trial-0001" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    write_json(manifest_path, {**manifest, "split_hash": "another-split"})
    with pytest.raises(UnpairedItemsError, match="different held-out splits"):
        compare(load_study(one_seed), [("tuned[lora.r=16]", "tuned[lora.r=8]")], "field_accuracy")


def test_seed_level_test_with_one_seed_says_what_is_missing(one_seed):
    with pytest.raises(MissingSeedsError, match=r"at least 2 seeds.*only seed \[0\].*search.seeds"):
        compare(load_study(one_seed), [("tuned[lora.r=16]", "base")], "field_accuracy", level="seed")


def test_nan_scores_are_refused_naming_the_arm_and_items(one_seed):
    def poison(rows):
        for row in rows[5:7]:
            row["scores"]["field_accuracy"] = float("nan")  # stored as null, as record.py does
        return rows

    edit_eval(one_seed / "trial-0000", "tuned", poison)
    with pytest.raises(NaNScoreError, match=r"'tuned\[lora.r=8\]' has 2 NaN.*item-0005, item-0006"):
        compare(load_study(one_seed), [("tuned[lora.r=8]", "base")], "field_accuracy")


def test_mismatched_seeds_are_refused_with_the_common_ones_named(tmp_path):
    study_dir = write_synthetic_study(tmp_path, ranks=(8, 16), seeds=(0, 1), failed_trial=False)
    result = study_dir / "trial-0003" / "result.json"  # rank 16, seed 1
    write_json(result, {**json.loads(result.read_text()), "status": "failed"})
    study = load_study(study_dir)
    with pytest.raises(UnpairedItemsError, match=r"seeds \[0, 1\] but .* has \[0\].*seeds=\[0\]"):
        compare(study, [("tuned[lora.r=8]", "tuned[lora.r=16]")], "field_accuracy")
    (c,) = compare(study, [("tuned[lora.r=8]", "tuned[lora.r=16]")], "field_accuracy", seeds=[0], n_resamples=N)
    assert c.n_seeds == 1


def test_unknown_arm_and_metric_list_what_exists(one_seed):
    study = load_study(one_seed)
    with pytest.raises(UnknownArmError, match=r"no arm 'tuned'.*known: base, tuned\[lora.r=8\]"):
        compare(study, [("tuned", "base")], "field_accuracy")
    with pytest.raises(UnknownArmError, match=r"no per-item metric 'accuracy'.*field_accuracy"):
        compare(study, [("tuned[lora.r=8]", "base")], "accuracy")


def test_refusals_are_value_errors_and_harness_errors():
    for cls in (UnpairedItemsError, MissingSeedsError, NaNScoreError, UnknownArmError, StudyNotFoundError):
        assert issubclass(cls, AnalysisError) and issubclass(cls, ValueError) and issubclass(cls, HarnessError)
