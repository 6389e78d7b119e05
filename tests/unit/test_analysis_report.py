"""`build_report` on a synthetic study in the record.py layout: every table and figure, with data in it.

Building the full report draws six figures as PNG and PDF (TrueType-embedded), about 5 s of CPU, so
the tests that use it are marked slow; the figure and W&B pieces are also tested on their own, fast."""

from __future__ import annotations

import json
import re
import sys
import types

import pandas as pd
import pytest

from analysis import ReportPaths, compare, figures, load_study, log_report_to_wandb, quality, tables
from analysis.compare import Comparison
from analysis.synthetic import write_synthetic_study
from harness.results import read_jsonl, write_jsonl
from tests.support.analysis_report import assert_png_has_data, with_length_and_edits

COMPARISON = Comparison(
    a="tuned-q4", b="tuned", metric="field_accuracy", n=100, n_seeds=1, mean_a=0.6, mean_b=0.62, diff=-0.02,
    ci_low=-0.05, ci_high=0.01, ci_method="paired bootstrap over items", test="Wilcoxon signed-rank", p=0.2,
    p_permutation=0.2, item_test="Wilcoxon signed-rank", p_item_test=0.2, p_adjusted=0.2, effect_size=-0.1,
    effect_size_kind="Cohen's d_z (per-item differences)", mde=0.05, cluster_se=float("nan"), n_clusters=100,
    level="item", verdict="not significant")


@pytest.mark.parametrize("seeds, n_clusters", [((0,), None), ((0,), 8), ((0, 1), None), ((0, 1), 8)],
                         ids=["items", "clusters", "seeds", "seeds and clusters"])
def test_table_intervals_stay_within_the_metric_range(tmp_path, seeds, n_clusters):
    """Tuned gets 29 of 31 items exactly right (28 with seed 1), base none: Δ exact match ≈ +0.935, whose CI once
    read [+0.847, +1.001]. Every interval the arm and comparison tables print stays in [0, 1] or [−1, 1]."""
    study_dir = write_synthetic_study(tmp_path, ranks=(16,), seeds=seeds, n_items=31, n_clusters=n_clusters,
                                      failed_trial=False)
    for s, trial in enumerate(sorted(study_dir.glob("trial-*"))):
        for arm, first_right in (("tuned", 2 + s), ("base", 31)):
            path = trial / "eval" / f"{arm}.jsonl"
            write_jsonl(path, [{**r, "scores": {**r["scores"], "exact_match": float(i >= first_right)}}
                               for i, r in enumerate(read_jsonl(path))])
    study = load_study(study_dir)
    (c,) = compare(study, [("tuned", "base")], "exact_match", n_resamples=2000)
    qualities = [quality(study, label, "exact_match", n_resamples=2000) for label in ("base", "tuned")]
    assert c.diff > 0.9 and c.ci_high <= 1.0 and all(0.0 <= q.ci_low <= q.ci_high <= 1.0 for q in qualities)
    arms = tables.display_arm_table(tables.arm_table(study, qualities, [c]), "exact_match")
    # The note quotes the CI in its outcome's reason: the cells that print an interval of their own.
    shown_comparison = tables.display_comparisons([c]).drop(columns="Note")
    printed = [cell for frame in (arms, shown_comparison) for cell in frame.to_numpy().ravel()]
    intervals = [(float(lo.replace("−", "-")), float(hi.replace("−", "-")))
                 for cell in printed for lo, hi in re.findall(r"\[([−+]?[\d.]+), ([−+]?[\d.]+)\]", str(cell))]
    assert len(intervals) == 4  # base's and tuned's quality, tuned's Δ in both tables
    assert all(-1.0 <= lo <= hi <= 1.0 for lo, hi in intervals), intervals
    assert max(hi for _, hi in intervals) == 1.0
    shown = tables.display_comparisons([c]).iloc[0]  # the levels beside the difference
    assert (float(shown["mean A"]), float(shown["mean B"])) == (round(c.mean_a, 3), round(c.mean_b, 3))


def test_figures_skip_with_a_reason_when_the_study_lacks_the_data(tmp_path):
    study = load_study(write_synthetic_study(tmp_path, ranks=(16,), seeds=(0,), failed_trial=False))
    out = figures.quality_vs_rank(study, [], "field_accuracy", tmp_path / "figures")
    assert not out and out.paths == () and "does not vary 'lora.r'" in out.skipped
    study.train_log = study.train_log.iloc[0:0]
    assert "no training loss" in figures.loss_curves(study, tmp_path / "figures").skipped
    assert not (tmp_path / "figures").exists()


def test_a_blank_figure_is_refused_before_it_is_saved(tmp_path):
    fig, _ = figures._figure()
    with pytest.raises(RuntimeError, match="blank axes"):
        figures._save(fig, tmp_path, "empty", "")
    assert not list(tmp_path.iterdir())


def test_delta_bars_draw_bars_and_error_bars(tmp_path):
    out = figures.delta_bars([COMPARISON], tmp_path, name="quantization", title="quantization: q4 vs full precision")
    assert out and out.png.exists()
    assert_png_has_data(out.png)
    assert not figures.delta_bars([], tmp_path, name="forgetting") and "no comparisons" in \
        figures.delta_bars([], tmp_path, name="forgetting").skipped


@pytest.fixture
def small_report(tmp_path) -> ReportPaths:
    """A report's files without building one: a table, a figure and report.json."""
    table = tables.write_table(pd.DataFrame({"arm": ["base"], "quality": [0.5]}),
                               pd.DataFrame({"Arm": ["base"], "Quality": ["0.500"]}), tmp_path / "arms", caption="x")
    fig = figures.delta_bars([COMPARISON], tmp_path, name="deltas_headline")
    (tmp_path / "report.json").write_text(json.dumps({
        "study": "rank-grid", "project": "harness-test", "metric": "field_accuracy",
        "comparisons": [{"family": "headline", **COMPARISON.to_dict()}]}))
    return ReportPaths(tmp_path / "report.md", tmp_path / "report.json", {"arms": table}, {fig.name: fig})


def test_wandb_logging_is_a_no_op_when_disabled(small_report, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setitem(sys.modules, "wandb", None)  # importing it would fail: it must not be imported
    assert log_report_to_wandb(small_report, "rank-grid") is None


def test_wandb_logging_logs_tables_and_figures_to_the_group(small_report, monkeypatch):
    calls: dict = {"log": {}}

    class Run:
        id = "run-123"
        summary: dict = {}

        def log(self, values):
            calls["log"].update(values)

        def finish(self):
            calls["finished"] = True

    fake = types.SimpleNamespace(
        init=lambda **kw: calls.update(init=kw) or Run(),
        Table=lambda dataframe: ("table", len(dataframe)),
        Image=lambda path, caption=None: ("image", path))
    monkeypatch.setitem(sys.modules, "wandb", fake)
    assert log_report_to_wandb(small_report, "rank-grid", mode="offline") == "run-123"
    assert calls["init"]["group"] == "rank-grid" and calls["init"]["job_type"] == "report"
    assert calls["init"]["project"] == "harness-test"  # from the study's spec
    assert set(calls["log"]) == {"report/table/arms", "report/figure/deltas_headline"}
    assert "headline/field_accuracy/tuned-q4 vs tuned" in Run.summary
    assert calls["finished"]


def test_a_drop_of_a_lower_is_better_score_is_better_and_a_length_is_only_higher(tmp_path, edits_lower_is_better):
    from analysis.families import secondary_metrics

    study = load_study(with_length_and_edits(tmp_path))
    fewer, more = compare(study, [("tuned", "base"), ("base", "tuned")], "edits", n_resamples=200)
    assert fewer.diff == -2.0 and (fewer.verdict, more.verdict) == ("better", "worse")
    longer, shorter = compare(study, [("tuned", "base"), ("base", "tuned")], "words", n_resamples=200)
    assert longer.diff > 5 and (longer.verdict, shorter.verdict) == ("higher", "lower")
    # Unbounded scores: the CI is the bootstrap's, not cut at the range the items happened to span.
    assert longer.ci_low < longer.diff < longer.ci_high
    directed, descriptive = secondary_metrics(study, "field_accuracy")
    assert "edits" in directed and "words" not in directed and descriptive == ["words"]
