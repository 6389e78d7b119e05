"""`results/<study>/report.md` (tables and figures for the write-up) and `report.json` (every number).

The report compares every arm with its baseline on the headline metric and on the secondary and
descriptive metrics, on any named groups of extra pairs, on the forgetting check and the quantisation
deltas, and the tuned arms with any endpoint contestant (`analysis.families`: each its own Holm family
with a delta-bar figure); contrasts the levels of each factor a grid varies (`analysis.contrasts`);
and tabulates each arm's quality, cost and speed. Tables land in `report/tables/`, figures in
`report/figures/` (`analysis.report_files`); `analysis.markdown` and `analysis.report_json` write the
two documents.
"""

from __future__ import annotations

import shutil

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from analysis.capabilities import task_chance
from analysis.compare import DEFAULT_TOLERANCE, Level, Quality, quality
from analysis.contrasts import study_contrasts
from analysis.errors import AnalysisError
from analysis.families import choose_metric, declare_families, stage_groups, study_families
from analysis.figures import FigureFiles
from analysis.judging import judge_tables
from analysis.load import Study, load_study
from analysis.markdown import render_markdown
from analysis.report_content import ReportContent
from analysis.report_files import draw_contrast_figures, draw_figures, write_tables
from analysis.report_json import report_json
from analysis.settings import ComparisonSettings
from analysis.tables import TableFiles, arm_table, stable_numbers
from harness.results import write_atomic, write_json
from harness.stats.equivalence import check_tolerance
from harness.stats.paired import DEFAULT_RESAMPLES

REPORT_DIR = "report"


@dataclass
class ReportPaths:
    """Where the report's files are."""

    markdown: Path
    json: Path
    tables: dict[str, TableFiles] = field(default_factory=dict)
    figures: dict[str, FigureFiles] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.markdown} and {self.json}"


def _arm_qualities(study: Study, metric: str, settings: ComparisonSettings) -> tuple[list[Quality], list[str]]:
    """Each arm's mean `metric` with its CI, and a note for each arm that has none (e.g. NaN scores): it is left
    out of the arm table, and the report says why."""
    qualities, notes = [], []
    for label in study.arm_labels:
        try:
            qualities.append(quality(study, label, metric, confidence=settings.confidence,
                                     n_resamples=settings.n_resamples, seed=settings.seed))
        except AnalysisError as e:
            notes.append(f"'{label}' left out of the arm table: {e}")
    return qualities, notes


def _write_config(study: Study, out: Path) -> Path | None:
    """The resolved spec the trials ran, as YAML beside the report's tables (None when no trial recorded one)."""
    import yaml

    spec = study.provenance.spec if study.provenance is not None else {}
    if not spec:
        return None
    path = out / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, yaml.safe_dump(spec, sort_keys=False, allow_unicode=True))
    return path


def build_report(study_dir: str | Path, baseline: str = "base", metric: str | None = None, *,
                 groups: Mapping[str, Sequence[tuple[str, str]]] | None = None,
                 price_per_device_hour: float | None = None, level: Level = "item", alpha: float = 0.05,
                 confidence: float = 0.95, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                 reference: Mapping[str, Any] | None = None, tolerance: float | None = None) -> ReportPaths:
    """Write `report.md` and `report.json` (plus tables and figures under `report/`) into `study_dir`.

    `groups` names extra comparison tables of the experiment's question, e.g. {"dpo_vs_sft": [("dpo", "sft")]}
    (default: the stage pairs the trials recorded, `stage_groups`). `reference` is the spec's `report.reference`
    (factor → the level its contrasts are taken against; default: what the trials' manifests recorded, else each
    factor's first level). `tolerance` is the equivalence margin as a share of each metric's declared range
    (default: the spec's `report.tolerance`, else `analysis.compare.DEFAULT_TOLERANCE`).
    """
    study_dir = Path(study_dir)
    study = load_study(study_dir)
    if study.items.empty:
        raise AnalysisError(f"study '{study.name}' has no complete trial with evaluations yet "
                            f"({len(study.trials)} trial directories)", where=study_dir)
    metric = choose_metric(study, metric)
    tolerance = tolerance if tolerance is not None else study.report_tolerance
    settings = ComparisonSettings(level=level, alpha=alpha, confidence=confidence, n_resamples=n_resamples, seed=seed,
                                  tolerance=check_tolerance(tolerance if tolerance is not None else DEFAULT_TOLERANCE,
                                                            upper=1.0, where="report.tolerance"))
    contrasts = study_contrasts(study, metric, reference=reference, **settings.options)  # first: it checks `reference`
    if groups is None:
        groups = stage_groups(study_dir, study.arm_labels)
    families, notes = study_families(study, study_dir, metric, baseline, groups, settings)
    families, contrasts, holm_families = declare_families(families, contrasts, settings)

    price = price_per_device_hour if price_per_device_hour is not None else study.device_price_per_hour
    qualities, left_out = _arm_qualities(study, metric, settings)
    headline = families[0]
    arms = arm_table(study, qualities, headline.comparisons, price_per_device_hour=price)
    out = study_dir / REPORT_DIR
    for folder in (out / "tables", out / "figures"):  # a figure no longer drawn must not outlive its report
        shutil.rmtree(folder, ignore_errors=True)
    written = write_tables(study, arms, families, contrasts, out / "tables", metric, confidence)
    drawn = draw_figures(study, qualities, arms, families, metric, out / "figures", contrasts=contrasts,
                         chance=task_chance(study_dir, study.varying_params), price_per_device_hour=price,
                         confidence=settings.confidence, seed=settings.seed)
    contrast_figures = draw_contrast_figures(contrasts, metric, out / "figures")
    config_file = _write_config(study, out)
    judge_pairwise, judge_single = judge_tables(study, alpha=alpha, confidence=confidence, n_resamples=n_resamples,
                                                seed=seed)
    content = ReportContent(
        study=study, study_dir=study_dir, metric=metric, baseline=baseline, settings=settings,
        price_per_device_hour=price, families=families, contrasts=contrasts, holm_families=holm_families,
        arms=arms, notes=[*notes, *left_out],
        tables=written, figures=drawn, contrast_figures=contrast_figures, judge_pairwise=judge_pairwise,
        judge_single=judge_single, config_file=config_file)

    md_path, json_path = study_dir / "report.md", study_dir / "report.json"
    write_atomic(md_path, render_markdown(content))
    write_json(json_path, stable_numbers(report_json(content)))
    return ReportPaths(md_path, json_path, written, {k: v for k, v in content.all_figures.items() if v})
