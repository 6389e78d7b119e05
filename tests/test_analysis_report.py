"""`build_report` on a synthetic study in the record.py layout: every table and figure, with data in it.

Building the full report draws six figures as PNG and PDF (TrueType-embedded), about 5 s of CPU, so
the tests that use it are marked slow; the figure and W&B pieces are also tested on their own, fast.
"""

from __future__ import annotations

import json
import re
import sys
import time
import types
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from analysis import ReportPaths, build_report, compare, load_study, log_report_to_wandb, quality
from analysis import figures, tables
from analysis.compare import Comparison
from analysis.synthetic import write_synthetic_forgetting, write_synthetic_quant, write_synthetic_study
from harness.results import read_jsonl, write_jsonl

FIGURES = ["loss_curves", "quality_vs_rank", "pareto_front", "paired_seeds", "deltas_headline", "deltas_secondary",
           "deltas_rank_doubling", "deltas_forgetting", "deltas_quantization"]
TABLES = ["arms", "headline", "secondary", "rank_doubling", "forgetting", "quantization"]
PRICE = 2.5  # $ per device-hour
COMPARISON = Comparison(
    a="tuned-q4", b="tuned", metric="field_accuracy", n=100, n_seeds=1, mean_a=0.6, mean_b=0.62, diff=-0.02,
    ci_low=-0.05, ci_high=0.01, ci_method="paired bootstrap over items", test="Wilcoxon signed-rank", p=0.2,
    p_permutation=0.2, item_test="Wilcoxon signed-rank", p_item_test=0.2, p_adjusted=0.2, effect_size=-0.1,
    effect_size_kind="Cohen's d_z (per-item differences)", mde=0.05, cluster_se=float("nan"), n_clusters=100,
    level="item", verdict="no detectable difference")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """2 arms (base, tuned) × 2 seeds × a LoRA-rank grid of 3, one failed trial, a forgetting check and
    the quantisation deltas of one trial."""
    study_dir = write_synthetic_study(tmp_path_factory.mktemp("results"), name="rank-grid", ranks=(4, 8, 16),
                                      seeds=(0, 1))
    write_synthetic_forgetting(study_dir, n_items=60)
    write_synthetic_quant(study_dir / "trial-0005" / "quant", n_items=60)
    return build_report(study_dir, price_per_device_hour=PRICE, n_resamples=1000,
                        groups={"rank_doubling": [("tuned[lora.r=8]", "tuned[lora.r=4]"),
                                                  ("tuned[lora.r=16]", "tuned[lora.r=8]")]})


def assert_png_has_data(path: Path) -> None:
    """Not blank: a real plot has many colours and a good share of non-white pixels."""
    rgb = (matplotlib.image.imread(path)[..., :3] * 255).astype(np.uint32)
    non_white = np.mean(np.any(rgb < 230, axis=-1))
    colours = len(np.unique((rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]))
    assert non_white > 0.02, f"{path.name}: {non_white:.1%} non-white pixels"
    assert colours > 20, f"{path.name}: only {colours} colours"


@pytest.mark.slow
def test_report_writes_markdown_json_tables_and_figures(report):
    study_dir = report.markdown.parent
    assert report.markdown == study_dir / "report.md" and report.json == study_dir / "report.json"
    for name in TABLES:
        files = report.tables[name]
        assert files.csv.exists() and files.markdown.exists() and files.latex.exists()
    for name in FIGURES:
        fig = report.figures[name]
        assert [p.suffix for p in fig.paths] == [".png", ".pdf"]
        assert all(p.stat().st_size > 1000 for p in fig.paths)
        assert fig.paths[1].read_bytes().startswith(b"%PDF")
        assert_png_has_data(fig.png)


@pytest.mark.slow
def test_markdown_embeds_every_table_and_figure_by_relative_path(report):
    md = report.markdown.read_text()
    study_dir = report.markdown.parent
    for name in FIGURES:
        rel = f"report/figures/{name}.png"
        assert f"]({rel})" in md and (study_dir / rel).exists()
    assert "| tuned[lora.r=16] |" in md  # the arm table, inline
    assert "Holm-adjusted" in md
    assert "trial 0006" in md and "out of memory" in md  # the failed trial is listed, not hidden


@pytest.mark.slow
def test_report_json_has_every_comparisons_numbers(report):
    data = json.loads(report.json.read_text())
    assert data["metric"] == "field_accuracy" and data["baseline"] == "base"
    headline = [c for c in data["comparisons"] if c["family"] == "headline"]
    assert {c["a"] for c in headline} == {"tuned[lora.r=4]", "tuned[lora.r=8]", "tuned[lora.r=16]"}
    assert all(c["b"] == "base" for c in headline)
    for c in data["comparisons"]:
        for key in ("diff", "ci_low", "ci_high", "p", "p_adjusted", "n"):
            assert isinstance(c[key], (int, float)) and np.isfinite(c[key]), key
        assert c["test"] and c["verdict"] in ("better", "worse", "no detectable difference")
        assert c["ci_low"] <= c["diff"] <= c["ci_high"]
    secondary = [c for c in data["comparisons"] if c["family"] == "secondary"]
    assert {c["metric"] for c in secondary} == {"exact_match", "json_valid"}
    group = [c for c in data["comparisons"] if c["family"] == "rank_doubling"]
    assert [(c["a"], c["b"]) for c in group] == [("tuned[lora.r=8]", "tuned[lora.r=4]"),
                                                  ("tuned[lora.r=16]", "tuned[lora.r=8]")]
    forgetting = [c for c in data["comparisons"] if c["family"] == "forgetting"]
    assert len(forgetting) == 3 * 2 and {c["metric"] for c in forgetting} == {"arc_easy_local acc", "piqa_local acc"}
    quantization = {c["a"]: c for c in data["comparisons"] if c["family"] == "quantization"}
    assert set(quantization) == {"q8_0", "q4_k_m"} and quantization["q4_k_m"]["diff"] < 0
    assert [(r["family"], r["a"], r["reason"].split(":")[0]) for r in data["refused"]] == [
        ("quantization", "nf4", "not run")]  # recorded by quant_delta, listed with its reason
    assert data["trials"]["complete"] == 6 and data["trials"]["not_complete"][0]["status"] == "failed"
    assert data["skipped_figures"] == {}


@pytest.mark.slow
def test_arm_table_has_quality_delta_cost_speed_and_training(report):
    arms = pd.read_csv(report.tables["arms"].csv)
    assert list(arms["arm"]) == ["base", "tuned[lora.r=4]", "tuned[lora.r=8]", "tuned[lora.r=16]"]
    tuned = arms.set_index("arm").loc["tuned[lora.r=16]"]
    assert tuned["quality_ci_low"] < tuned["quality"] < tuned["quality_ci_high"]
    assert tuned["verdict"] == "better" and tuned["delta"] > 0
    assert tuned["train_device_s"] == pytest.approx(18.0) and tuned["tokens_trained"] == 40_000
    assert tuned["peak_mem_gb"] == pytest.approx(1.25)
    assert tuned["latency_p50_s"] <= tuned["latency_p95_s"] and tuned["tokens_per_s"] > 0
    # Cost: device time per item (batch time shared by its items) × price.
    rows = load_study(report.markdown.parent).rows("tuned[lora.r=16]")
    busy = rows.drop_duplicates(["trial", "seed", "batch"])["latency_s"].sum()
    assert tuned["cost_per_1k_calls"] == pytest.approx(1000 * busy / len(rows) / 3600 * PRICE)
    base = arms.set_index("arm").loc["base"]
    assert np.isnan(base["train_device_s"]) and np.isnan(base["delta"])  # never trained, it is the baseline


@pytest.mark.slow
def test_latex_is_booktabs_and_escaped(report):
    tex = report.tables["arms"].latex.read_text()
    assert all(rule in tex for rule in (r"\toprule", r"\midrule", r"\bottomrule"))
    assert r"field\_accuracy" in tex and r"$\Delta$" in tex and r"\$ / 1K calls" in tex
    assert "Δ" not in tex and "±" not in tex


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
    printed = [cell for frame in (arms, tables.display_comparisons([c])) for cell in frame.to_numpy().ravel()]
    intervals = [(float(lo.replace("−", "-")), float(hi.replace("−", "-")))
                 for cell in printed for lo, hi in re.findall(r"\[([−+]?[\d.]+), ([−+]?[\d.]+)\]", str(cell))]
    assert len(intervals) == 4  # base's and tuned's quality, tuned's Δ in both tables
    assert all(-1.0 <= lo <= hi <= 1.0 for lo, hi in intervals), intervals
    assert max(hi for _, hi in intervals) == 1.0
    shown = tables.display_comparisons([c]).iloc[0]  # the levels beside the difference
    assert (float(shown["mean A"]), float(shown["mean B"])) == (round(c.mean_a, 3), round(c.mean_b, 3))


@pytest.mark.slow
def test_skipped_figures_say_why(tmp_path):
    study_dir = write_synthetic_study(tmp_path, ranks=(16,), seeds=(0,), failed_trial=False)
    paths = build_report(study_dir, n_resamples=200)
    data = json.loads(paths.json.read_text())
    assert "lora.r" in data["skipped_figures"]["quality_vs_rank"]
    assert "quality_vs_rank" not in paths.figures
    assert "quality_vs_rank not drawn" in paths.markdown.read_text()


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


# ---------------------------------------------------------------- W&B


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


@pytest.mark.slow
def test_wandb_offline_run_holds_the_report(report, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from harness.tracking import read_offline_run

    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    run_id = log_report_to_wandb(report, "rank-grid", mode="offline")
    run_dirs = list(report.json.parent.glob(f"wandb/offline-run-*-{run_id}"))
    assert run_dirs, "no offline run directory"
    # wandb's service can still be flushing the transaction log when finish() returns: a read can see
    # part of the summary, so wait for the key itself.
    key = "headline/field_accuracy/tuned[lora.r=16] vs base"
    deadline = time.monotonic() + 30
    while key not in (summary := read_offline_run(run_dirs[0])["summary"]) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert key in summary, sorted(summary)


@pytest.mark.slow
def test_an_arm_with_nan_scores_is_reported_not_fatal(tmp_path):
    study_dir = write_synthetic_study(tmp_path, ranks=(16,), seeds=(0,), failed_trial=False)
    path = study_dir / "trial-0000" / "eval" / "tuned.jsonl"
    rows = read_jsonl(path)
    rows[0]["scores"]["field_accuracy"] = None
    write_jsonl(path, rows)
    paths = build_report(study_dir, n_resamples=200)
    data = json.loads(paths.json.read_text())
    assert [a["arm"] for a in data["arms"]] == ["base"]
    assert any("field_accuracy" in r["reason"] and "item-0000" in r["reason"] for r in data["refused"])
    assert "left out of the arm table" in paths.markdown.read_text()


# ---------------------------------------------------------------- what each score means


@pytest.fixture
def edits_lower_is_better(monkeypatch):
    """`edits` (edits from the answer to the reference) declared lower-is-better for this test only."""
    import harness.evaluation.metrics as registry

    registry.all_metrics()
    monkeypatch.setattr(registry, "_SCORES", dict(registry._SCORES))
    registry.declare_scores([registry.ScoreSpec("edits", "edits to the reference", registry.LOWER, 0.0, np.inf)],
                            by="this test")


def _with_length_and_edits(tmp_path: Path) -> Path:
    """One seed, base and tuned: tuned answers 5-11 words longer (a real difference, but not a better one) and
    needs 2 fewer edits on every item (lower is better: an improvement)."""
    study_dir = write_synthetic_study(tmp_path, ranks=(16,), seeds=(0,), n_items=60, n_clusters=None,
                                      failed_trial=False)
    for path in study_dir.glob("trial-*/eval/*.jsonl"):
        tuned = path.stem == "tuned"
        write_jsonl(path, [{**r, "scores": {**r["scores"], "words": 40.0 + i % 9 + (5 + i % 7 if tuned else 0),
                                            "edits": 5.0 + i % 3 - (2 if tuned else 0)}}
                           for i, r in enumerate(read_jsonl(path))])
    return study_dir


def test_a_drop_of_a_lower_is_better_score_is_better_and_a_length_is_only_higher(tmp_path, edits_lower_is_better):
    from analysis.families import secondary_metrics

    study = load_study(_with_length_and_edits(tmp_path))
    fewer, more = compare(study, [("tuned", "base"), ("base", "tuned")], "edits", n_resamples=200)
    assert fewer.diff == -2.0 and (fewer.verdict, more.verdict) == ("better", "worse")
    longer, shorter = compare(study, [("tuned", "base"), ("base", "tuned")], "words", n_resamples=200)
    assert longer.diff > 5 and (longer.verdict, shorter.verdict) == ("higher", "lower")
    # Unbounded scores: the CI is the bootstrap's, not cut at the range the items happened to span.
    assert longer.ci_low < longer.diff < longer.ci_high
    directed, descriptive = secondary_metrics(study, "field_accuracy")
    assert "edits" in directed and "words" not in directed and descriptive == ["words"]


@pytest.mark.slow
def test_a_rendered_report_never_calls_a_length_better_or_worse(tmp_path, edits_lower_is_better):
    paths = build_report(_with_length_and_edits(tmp_path), n_resamples=200)
    data = json.loads(paths.json.read_text())
    by_family: dict[str, dict[str, str]] = {}
    for c in data["comparisons"]:
        by_family.setdefault(c["family"], {})[c["metric"]] = c["verdict"]
    assert "words" not in by_family["secondary"] and by_family["secondary"]["edits"] == "better"
    assert by_family["descriptive"] == {"words": "higher"}
    assert data["scores"]["words"] == {"key": "words", "display": "length (words)", "direction": "neither",
                                       "low": 0.0, "high": None, "aggregation": "mean"}
    assert data["scores"]["edits"]["direction"] == "lower" and data["scores"]["field.*"]["display"] == "field {}"
    md = paths.markdown.read_text()
    about_words = [line for line in md.splitlines() if "length (words)" in line or "`words`" in line]
    assert len(about_words) >= 2  # its comparison row and its declared meaning
    assert not [line for line in about_words if re.search(r"\b(better|worse)\b", line)], about_words
    assert "## Descriptive metrics vs baseline" in md and "deltas_descriptive" in data["figures"]
