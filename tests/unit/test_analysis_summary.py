"""`write_summary` / `python -m analysis summary`: every experiment's primary comparisons in one table, from the
report.json files a results folder holds (the committed reports under results/, copied: real reports)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from analysis.__main__ import main
from analysis.errors import AnalysisError
from analysis.families import QUESTION
from analysis.summary import write_summary
from tests.support.ci import ROOT

QUANT, DPO = "quant_delta-cpu", "sft_vs_dpo-cpu"
PREDATES = ("outcome", "items_needed", "tolerance")  # the fields a report written before outcomes lacks


def copy_reports(tmp_path, *names: str, edit=None):
    """`tmp_path/<name>/report.json` for each committed report, passed through `edit(data)` when given."""
    for name in names:
        data = json.loads((ROOT / "results" / name / "report.json").read_text())
        (tmp_path / name).mkdir()
        (tmp_path / name / "report.json").write_text(json.dumps(edit(data) if edit else data))
    return tmp_path


def without_outcomes(data: dict) -> dict:
    """The report as one written before outcomes and declared Holm families would read."""
    data["comparisons"] = [{k: v for k, v in c.items() if k not in PREDATES} for c in data["comparisons"]]
    data.pop("holm_families", None)
    data.pop("tolerance", None)
    return data


def test_the_summary_reads_two_reports_and_writes_one_row_per_primary_comparison(tmp_path):
    files = write_summary(copy_reports(tmp_path, QUANT, DPO))
    assert (files.markdown, files.csv, files.latex) == (tmp_path / "summary.md", tmp_path / "summary.csv",
                                                       tmp_path / "summary.tex")
    rows = pd.read_csv(files.csv)
    for name in (QUANT, DPO):
        data = json.loads((tmp_path / name / "report.json").read_text())
        question = next((f["tables"] for f in data.get("holm_families", []) if f["name"] == QUESTION), [])
        primary = {"headline", *question} if question else {"headline", "dpo_vs_sft"}
        expected = [(c["family"], c["a"], c["b"], c["metric"]) for c in data["comparisons"] if c["family"] in primary]
        got = rows[rows["experiment"] == name]
        assert sorted(zip(got["family"], got["a"], got["b"], got["metric"])) == sorted(expected)
        assert "secondary" not in set(got["family"])  # a secondary metric is not what the experiment asked
        assert set(got["report"]) == {f"{name}/report.md"}
    assert set(rows["experiment"]) == {QUANT, DPO}
    md = files.markdown.read_text()
    assert "| Experiment | Comparison (A − B) | Metric | Δ [95% CI] | adj. p | MDE | Items × seeds | Outcome |" in md
    assert md.count(f"| {QUANT} |") == (rows["experiment"] == QUANT).sum()
    assert f"]({QUANT}/report.md)" in md and "](summary.csv)" in md and "](summary.tex)" in md
    tex = files.latex.read_text()
    assert r"\label{tab:summary}" in tex and tex.count(r"\\") == len(rows) + 1  # header and one line per row
    assert r"quant\_delta-cpu" in tex and r"\resizebox" in tex


def test_a_report_without_outcomes_still_summarises_with_a_dash(tmp_path):
    write_summary(copy_reports(tmp_path, QUANT, DPO, edit=without_outcomes))
    rows = pd.read_csv(tmp_path / "summary.csv")
    # Without declared families the question is read off the tables: the quantisation deltas, not the secondary ones.
    assert set(rows[rows["experiment"] == QUANT]["family"]) == {"headline", "quantization"}
    assert rows["outcome"].isna().all() and rows["items_needed"].isna().all()
    md = (tmp_path / "summary.md").read_text()
    table = [line for line in md.splitlines() if line.startswith(f"| {QUANT} |")]
    assert table and all(line.endswith("| — |") for line in table)
    assert "tolerance — (the report predates outcomes)" in md


def test_the_command_line_writes_the_summary_and_refuses_an_empty_folder(tmp_path, capsys):
    (tmp_path / "results").mkdir()
    results = copy_reports(tmp_path / "results", DPO)
    assert main(["summary", str(results)]) == 0
    assert "summary.md" in capsys.readouterr().out and (results / "summary.tex").exists()
    (tmp_path / "empty").mkdir()
    assert main(["summary", str(tmp_path / "empty")]) == 2
    assert "no report.json" in capsys.readouterr().err
    with pytest.raises(AnalysisError, match="no report.json"):
        write_summary(tmp_path / "empty")


def test_the_forest_plot_draws_every_primary_comparison_under_its_experiment(tmp_path):
    from analysis import figures
    from analysis.summary import FOREST, read_reports, summary_rows
    from tests.support.figure_layout import layout_problems

    root = copy_reports(tmp_path, QUANT, DPO)
    write_summary(root)
    rows = pd.read_csv(root / "summary.csv")
    assert (root / f"{FOREST}.png").exists() and (root / f"{FOREST}.pdf").exists()
    assert f"]({FOREST}.png)" in (root / "summary.md").read_text()
    drawn = figures.forest(summary_rows(read_reports(root)), tmp_path / "again")
    assert layout_problems(drawn.figure) == []
    from matplotlib.collections import PathCollection

    points = sum(len(c.get_offsets()) for ax in drawn.figure.axes for c in ax.collections
                 if isinstance(c, PathCollection))
    assert points == len(rows)  # one point per row of the table, none dropped
    labels = [t.get_text() for ax in drawn.figure.axes for t in ax.get_yticklabels()]
    quant = [c for e, c in summary_rows(read_reports(root)) if e == QUANT]
    assert labels.count(QUANT) == len(figures.delta_panels(quant))  # a heading in each panel it has rows in
    assert DPO in labels and "dpo − sft" in labels  # experiments head their rows; arms by their short names
