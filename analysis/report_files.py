"""The report's tables (`report/tables/`: CSV, markdown and LaTeX each) and figures (`report/figures/`: PNG and PDF)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Sequence

import pandas as pd

from analysis import figures, tables
from analysis.compare import Quality, comparisons_frame
from analysis.contrasts import MAIN, Contrasts
from analysis.families import Family
from analysis.load import Study
from harness.stats.factors import format_value


def write_tables(study: Study, arms: pd.DataFrame, families: Sequence[Family], contrasts: Contrasts, out_dir: Path,
                 metric: str, confidence: float) -> dict[str, tables.TableFiles]:
    """The arm table, one table per family that compared anything, one per contrast family with contrasts."""
    written = {"arms": tables.write_table(arms, tables.display_arm_table(arms, metric, confidence=confidence),
                                          out_dir / "arms", caption=f"{study.name}: {metric}, cost and speed per arm")}
    for fam in families:
        if fam.comparisons:
            written[fam.name] = tables.write_table(comparisons_frame(fam.comparisons),
                                                   tables.display_comparisons(fam.comparisons, confidence=confidence),
                                                   out_dir / fam.name, caption=f"{study.name}: {fam.title}")
    for cfam in contrasts.families:
        if cfam.contrasts:
            written[cfam.name] = tables.write_table(
                tables.contrast_table(study, cfam), tables.display_contrasts(study, cfam, confidence=confidence),
                out_dir / cfam.name, caption=f"{study.name}: {cfam.title}")
    return written


def draw_figures(study: Study, qualities: Sequence[Quality], arms: pd.DataFrame, families: Sequence[Family],
                 metric: str, out_dir: Path) -> dict[str, figures.FigureFiles]:
    """Training loss, quality against rank, the quality-cost front, the headline's paired seeds, and one Δ bar
    figure per family (`deltas_<family>`); the first family is the headline."""
    return {f.name: f for f in [
        figures.loss_curves(study, out_dir),
        figures.quality_vs_rank(study, qualities, metric, out_dir),
        figures.pareto_front(arms, metric, out_dir),
        figures.paired_seed_dots(study, families[0].comparisons, out_dir),
        *[figures.delta_bars(fam.comparisons, out_dir, name=f"deltas_{fam.name}", title=fam.figure_title)
          for fam in families],
    ]}


def draw_contrast_figures(contrasts: Contrasts, metric: str, out_dir: Path) -> dict[str, figures.FigureFiles]:
    """Each factor's level means (`levels_<factor>`) and a Δ bar figure per family of level contrasts."""
    return {f.name: f for f in [
        *[figures.factor_levels(contrasts.level_means, factor, metric, out_dir, others=contrasts.factors)
          for factor in contrasts.factors],
        *[figures.delta_bars([replace(c.comparison, a=f"{c.arm} {format_value(c.level)}", b=format_value(c.reference))
                              for c in fam.contrasts], out_dir, name=f"deltas_{fam.name}",
                             title=f"Δ {metric}: {fam.title}")
          for fam in contrasts.families if fam.kind == MAIN and fam.contrasts]]}
