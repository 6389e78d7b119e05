"""`build_report` on a synthetic study in the record.py layout: every table and figure, with data in it.

The runs of it that take more than a few seconds; the rest is tests/unit/test_analysis_report.py."""

from __future__ import annotations

import json
import re
import time

import numpy as np
import pandas as pd
import pytest

from analysis import build_report, load_study, log_report_to_wandb
from analysis.synthetic import write_synthetic_forgetting, write_synthetic_quant, write_synthetic_study
from harness.results import read_jsonl, write_jsonl
from tests.support.analysis_report import assert_png_has_data, with_length_and_edits
from tests.support.figure_layout import assert_layout_ok

FIGURES = ["loss_curves", "quality_vs_rank", "pareto_front", "paired_seeds", "deltas_headline", "deltas_secondary",
           "deltas_rank_doubling", "deltas_forgetting", "deltas_quantization"]


TABLES = ["arms", "headline", "secondary", "rank_doubling", "forgetting", "quantization"]


PRICE = 2.5  # $ per device-hour


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
    assert_layout_ok((name, fig.figure) for name, fig in report.figures.items())


def test_markdown_embeds_every_table_and_figure_by_relative_path(report):
    md = report.markdown.read_text()
    study_dir = report.markdown.parent
    for name in FIGURES:
        rel = f"report/figures/{name}.png"
        assert f"]({rel})" in md and (study_dir / rel).exists()
    assert "| tuned[lora.r=16] |" in md  # the arm table, inline
    assert "Holm-adjusted" in md and "## Multiple comparisons" in md and "Tarone 1990" in md
    assert "no detectable difference" not in md and "±0.02 of each metric's declared range" in md
    assert "trial 0006" in md and "out of memory" in md  # the failed trial is listed, not hidden


def test_report_json_has_every_comparisons_numbers(report):
    data = json.loads(report.json.read_text())
    assert data["metric"] == "field_accuracy" and data["baseline"] == "base"
    headline = [c for c in data["comparisons"] if c["family"] == "headline"]
    assert {c["a"] for c in headline} == {"tuned[lora.r=4]", "tuned[lora.r=8]", "tuned[lora.r=16]"}
    assert all(c["b"] == "base" for c in headline)
    for c in data["comparisons"]:
        for key in ("diff", "ci_low", "ci_high", "p", "p_adjusted", "n"):
            assert isinstance(c[key], (int, float)) and np.isfinite(c[key]), key
        assert c["test"] and c["verdict"] in ("better", "worse", "not significant")
        assert c["outcome"] in ("regressed", "equivalent", "improved", "inconclusive")
        assert len(c["seed_diffs"]) == c["n_seeds"]
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
    # every figure drawn but the continuing stages' diagnostics: the synthetic trials ran no DPO or GRPO (and the
    # dev curve, which a design scoring no checkpoints never asked for, is neither drawn nor listed)
    assert list(data["skipped_figures"]) == ["stage_diagnostics"] and "no continuing stage" in data["skipped_figures"]["stage_diagnostics"]
    assert data["tolerance"] == 0.02
    # The experiment's question (the named group, the quantisation deltas, the rank contrasts) is one Holm family.
    question = next(f for f in data["holm_families"] if f["name"] == "question")
    assert set(question["tables"]) == {"rank_doubling", "quantization", "contrasts_lora_r"}
    assert question["m"] + question["not_counted"] == sum(c["family"] in question["tables"]
                                                          for c in data["comparisons"])
    assert {"forgetting", "secondary", "headline"} <= {f["name"] for f in data["holm_families"]}


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


def test_latex_is_booktabs_and_escaped(report):
    tex = report.tables["arms"].full_latex.read_text()
    assert all(rule in tex for rule in (r"\toprule", r"\midrule", r"\bottomrule"))
    assert r"field\_accuracy" in tex and r"$\Delta$" in tex and r"\$ / 1K calls" in tex
    assert "Δ" not in tex and "±" not in tex
    # Every table twice, compact and full, each labelled by the study: two experiments' tables share a paper.
    for name in TABLES:
        files = report.tables[name]
        assert rf"\label{{tab:rank-grid-{name}}}" in files.latex.read_text()
        assert rf"\label{{tab:rank-grid-{name}-full}}" in files.full_latex.read_text()


def test_the_body_shows_compact_tables_and_the_appendix_at_the_end_has_them_in_full(report):
    md = report.markdown.read_text()
    study_dir = report.markdown.parent
    appendix = md.index("## Appendix: full tables")
    assert appendix > md.index("## Method") and md.count("\n## ") == md[:appendix].count("\n## ") + 1
    body, rest = md[:appendix], md[appendix:]
    for name in TABLES:
        files = report.tables[name]
        compact, full = files.markdown.read_text(), files.full_markdown.read_text()
        assert compact in body and full not in body and full in rest
        for path in (files.csv, files.latex, files.full_markdown, files.full_latex):
            assert f"]({path.relative_to(study_dir).as_posix()})" in md
    assert md.count("](#appendix-full-tables)") == len(report.tables)
    assert "| Comparison (A − B) | Metric | Δ [95% CI] | adj. p | MDE | Items × seeds | Outcome |" in body
    assert "| Note |" not in body and "| Note |" in rest  # the free-text note is the appendix's


def test_skipped_figures_say_why(tmp_path):
    study_dir = write_synthetic_study(tmp_path, ranks=(16,), seeds=(0,), failed_trial=False)
    paths = build_report(study_dir, n_resamples=200)
    data = json.loads(paths.json.read_text())
    assert "lora.r" in data["skipped_figures"]["quality_vs_rank"]
    assert "quality_vs_rank" not in paths.figures
    assert "quality_vs_rank not drawn" in paths.markdown.read_text()


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


def test_a_rendered_report_never_calls_a_length_better_or_worse(tmp_path, edits_lower_is_better):
    paths = build_report(with_length_and_edits(tmp_path), n_resamples=200)
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
