"""Statistics, tables and figures for a study's trials: what each change did, with its uncertainty.

    from analysis import load_study, compare, build_report
    study = load_study("results/my-study")
    compare(study, [("tuned[lora.r=16]", "base")], "field_accuracy")
    build_report("results/my-study")        # writes report.md, report.json, report/tables, report/figures
"""

from analysis.capabilities import forgetting_comparisons, quantization_comparisons
from analysis.compare import Comparison, PairedScores, Quality, compare, pair_statistics, paired_scores, quality
from analysis.errors import (AnalysisError, MissingSeedsError, NaNScoreError, StudyNotFoundError, UnknownArmError,
                             UnpairedItemsError)
from analysis.load import Study, load_study
from analysis.report import ReportPaths, build_report
from analysis.wandb_logging import log_report_to_wandb

__all__ = [
    "AnalysisError", "Comparison", "MissingSeedsError", "NaNScoreError", "PairedScores", "Quality", "ReportPaths",
    "Study", "StudyNotFoundError", "UnknownArmError", "UnpairedItemsError", "build_report", "compare",
    "forgetting_comparisons", "load_study", "log_report_to_wandb", "pair_statistics", "paired_scores", "quality",
    "quantization_comparisons",
]
