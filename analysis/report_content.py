"""What one report says, computed once: its settings, comparison families, contrasts, arm table, judge tables and
the files written for them. The markdown document and report.json both render it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analysis.contrasts import Contrasts
from analysis.families import Family, HolmFamily
from analysis.figures import FigureFiles
from analysis.load import Study
from analysis.settings import ComparisonSettings
from analysis.tables import TableFiles
from harness.evaluation.metrics import ScoreSpec, score_spec


@dataclass(frozen=True)
class ReportContent:
    """Everything a report shows, for its renderers."""

    study: Study
    study_dir: Path
    metric: str
    baseline: str
    settings: ComparisonSettings
    price_per_device_hour: float | None
    families: list[Family]
    contrasts: Contrasts
    holm_families: list[HolmFamily]
    arms: pd.DataFrame
    notes: list[str]  # on pairs not compared and arms left out of the arm table
    tables: dict[str, TableFiles]
    figures: dict[str, FigureFiles]  # the arms' and families' figures
    contrast_figures: dict[str, FigureFiles]
    judge_pairwise: pd.DataFrame
    judge_single: pd.DataFrame
    config_file: Path | None = None  # the resolved spec the trials ran (report/config.yaml)

    def relative(self, path: Path) -> str:
        """`path` as a link from the study folder, where report.md lies."""
        return os.path.relpath(path, self.study_dir).replace(os.sep, "/")

    @property
    def all_figures(self) -> dict[str, FigureFiles]:
        return {**self.figures, **self.contrast_figures}

    @property
    def skipped_figures(self) -> dict[str, str]:
        """Each figure not drawn, with why."""
        return {f.name: f.skipped for f in self.all_figures.values() if f.skipped}

    @property
    def compared_metrics(self) -> list[str]:
        """The study's per-item metrics, then any other metric a family compared (lm-eval accuracies)."""
        return list(dict.fromkeys([*self.study.score_metrics,
                                   *(c.metric for fam in self.families for c in fam.comparisons)]))

    def score_meanings(self) -> dict[str, ScoreSpec]:
        """The declaration behind each compared metric, one per declaration (a pattern such as `field.*` once)."""
        declared: dict[str, ScoreSpec] = {}
        for m in self.compared_metrics:
            spec = score_spec(m)
            declared.setdefault(spec.key, spec)
        return declared
