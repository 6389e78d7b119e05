"""`results/summary.md`, `summary.csv` and `summary.tex`: every experiment's primary comparisons in one compact
table, and `summary_forest.png`/`.pdf`, their forest plot, read from the `report.json` each report wrote (no study
is loaded again).

A primary comparison is one the experiment was run to answer: its headline family (each arm vs its baseline on
the headline metric) and the tables of its question (stage pairs, quantisation deltas, endpoint contestants, the
main contrasts of each factor: `analysis.families.declare_families`). A report that predates some field (the
outcome, the items that would decide) shows a dash there.

    python -m analysis summary results     # or: from analysis.summary import write_summary
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from analysis import figures, tables
from analysis.compare import Comparison
from analysis.contrasts import MAIN
from analysis.errors import AnalysisError
from analysis.families import FORGETTING, QUESTION
from analysis.labels import short_labels
from harness.results import write_atomic

SUMMARY = "summary"
FOREST = "summary_forest"
# The tables that are never the question (a report that predates declared Holm families does not say which are).
_NOT_QUESTION = frozenset({"headline", "secondary", "descriptive", FORGETTING})
NUMERIC_COLUMNS = ["experiment", "family", "a", "b", "metric", "n", "n_seeds", "diff", "ci_low", "ci_high",
                   "p_adjusted", "mde", "outcome", "items_needed", "report"]


@dataclass(frozen=True)
class Report:
    """One experiment's report.json and where it lies."""

    path: Path
    data: Mapping[str, Any]

    @property
    def name(self) -> str:
        return self.data.get("study") or self.path.parent.name

    def primary_tables(self) -> list[str]:
        """The headline table, then the question's tables: as the report declared them, else (an older report)
        every table but the headline's, secondary, descriptive and forgetting ones and the contrasts other than
        the main ones."""
        present = list(dict.fromkeys(c["family"] for c in self.data.get("comparisons", [])))
        declared = next((f["tables"] for f in self.data.get("holm_families") or [] if f["name"] == QUESTION), None)
        if declared is None:
            kinds = {f["name"]: f["kind"] for f in self.data.get("contrasts", {}).get("families", [])}
            declared = [t for t in present if t not in _NOT_QUESTION and kinds.get(t, MAIN) == MAIN]
        return [t for t in dict.fromkeys(["headline", *declared]) if t in present]

    def kind(self, table: str) -> str | None:
        """The contrast kind of `table` (main, trend, simple, interaction), None for a comparison family."""
        return next((f["kind"] for f in self.data.get("contrasts", {}).get("families", []) if f["name"] == table),
                    None)


def read_reports(results_root: str | Path) -> list[Report]:
    """Every `<results_root>/*/report.json`, by folder name."""
    root = Path(results_root)
    paths = sorted(root.glob("*/report.json"))
    if not paths:
        raise AnalysisError(f"no report.json under {root}: write reports first (harness report NAME)", where=root)
    reports = []
    for path in paths:
        try:
            reports.append(Report(path, json.loads(path.read_text())))
        except json.JSONDecodeError as e:
            raise AnalysisError(f"{path} is not valid JSON ({e}): write the report again", where=path) from e
    return reports


def _comparison(report: Report, row: Mapping[str, Any]) -> Comparison:
    try:
        return Comparison.from_dict(row)
    except TypeError as e:
        raise AnalysisError(f"a comparison in {report.path} lacks a field the summary needs ({e}): write the "
                            "report again", where=report.path) from e


def _outcome(report: Report, table: str, row: Mapping[str, Any], c: Comparison) -> str:
    if not row.get("outcome"):
        return tables.DASH  # the report predates outcomes: its verdict is not one
    return tables.contrast_verdict(report.kind(table), c) if report.kind(table) else tables.outcome_text(c)


def summary_rows(reports: list[Report]) -> list[tuple[str, Comparison]]:
    """(experiment, comparison) for every primary comparison of each report, in report and table order."""
    return [(report.name, _comparison(report, r)) for report in reports for table in report.primary_tables()
            for r in report.data["comparisons"] if r["family"] == table]


def summary_tables(reports: list[Report], *, confidence: float = 0.95) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(numeric, display): one row per primary comparison of each report, in report and table order."""
    numeric, display = [], []
    for report in reports:
        # arms by what tells them apart within the experiment (the CSV keeps the full labels)
        names = short_labels([x for e, c in summary_rows([report]) for x in (c.a, c.b)])
        for table in report.primary_tables():
            rows = [r for r in report.data["comparisons"] if r["family"] == table]
            comparisons = [_comparison(report, r) for r in rows]
            shown = tables.compact_comparisons([replace(c, a=names[c.a], b=names[c.b]) for c in comparisons],
                                               confidence=confidence,
                                               outcomes=[_outcome(report, table, r, c)
                                                         for r, c in zip(rows, comparisons)])
            shown.insert(0, "Experiment", report.name)
            display.append(shown)
            numeric += [{"experiment": report.name, "family": table, **{k: r.get(k) for k in NUMERIC_COLUMNS[2:-1]},
                         "report": f"{report.path.parent.name}/report.md"} for r in rows]
    columns = ["Experiment", *tables.compact_columns(confidence)]
    numeric_frame = pd.DataFrame(numeric, columns=NUMERIC_COLUMNS).astype({"items_needed": "Int64"})
    return (numeric_frame,
            pd.concat(display, ignore_index=True) if display else pd.DataFrame(columns=columns))


def _confidence(reports: list[Report]) -> float:
    levels = {r.data.get("confidence", 0.95) for r in reports}
    if len(levels) > 1:
        raise AnalysisError(f"the reports use different CI levels ({', '.join(f'{c:.0%}' for c in sorted(levels))}): "
                            "one summary table cannot label them; write them again at one level")
    return levels.pop()


def _markdown(reports: list[Report], display: pd.DataFrame, files: tables.TableFiles,
              figure: figures.FigureFiles) -> str:
    def tolerance(r: Report) -> str:
        t = r.data.get("tolerance")
        return (f"tolerance ±{t:g} of each metric's range" if isinstance(t, (int, float))
                else f"tolerance {tables.DASH} (the report predates outcomes)")

    sources = [f"- [{r.name}]({r.path.parent.name}/report.md): headline metric `{r.data.get('metric')}`, "
               f"{tolerance(r)}; tables {', '.join(f'`{t}`' for t in r.primary_tables()) or 'none'}" for r in reports]
    return "\n".join([
        "# Summary: every experiment's primary comparisons", "",
        "One row per comparison an experiment was run to answer: its headline (each arm vs its baseline on the "
        "headline metric) and the tables of its question (stage pairs, quantisation deltas, endpoint contestants, "
        "main contrasts). p is Holm-adjusted within each report's declared families; the outcome is read against "
        "that report's tolerance, and an inconclusive one says about how many items would decide. A dash: the "
        "report predates that field or has no value for it. Every other table is in each report.", "",
        tables.markdown_table(display),
        f"Files: [CSV]({files.csv.name}), [LaTeX]({files.latex.name}).", "",
        *([f"![{figure.caption}]({figure.png.name})", "", f"*{figure.caption}* ([PDF]({figure.name}.pdf))", ""]
          if figure else []),
        "## Reports", "", *sources, ""])


def write_summary(results_root: str | Path) -> tables.TableFiles:
    """Write `summary.md`, `summary.csv`, `summary.tex` and the forest plot into `results_root` from every
    `*/report.json` in it; return the table's paths. The LaTeX needs booktabs and graphicx (`analysis.tables.latex_table`)."""
    root = Path(results_root)
    reports = read_reports(root)
    confidence = _confidence(reports)
    numeric, display = summary_tables(reports, confidence=confidence)
    files = tables.TableFiles(root / f"{SUMMARY}.csv", root / f"{SUMMARY}.md", root / f"{SUMMARY}.tex",
                              title="Every experiment's primary comparisons")
    write_atomic(files.csv, tables.stable_csv(numeric))
    write_atomic(files.latex, tables.latex_table(display, caption=files.title, label=f"tab:{SUMMARY}"))
    figure = figures.forest(summary_rows(reports), root, name=FOREST)
    write_atomic(files.markdown, _markdown(reports, display, files, figure))
    return files
