"""The report's tables (`report/tables/`: CSV, markdown and LaTeX each) and figures (`report/figures/`: PNG and PDF)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Sequence

import pandas as pd

from analysis import figures, tables
from analysis.compare import Quality, comparisons_frame
from analysis.contrasts import MAIN, Contrasts
from analysis.families import FORGETTING, Family
from analysis.load import Study
from harness.stats.factors import format_value


def write_tables(study: Study, arms: pd.DataFrame, families: Sequence[Family], contrasts: Contrasts, out_dir: Path,
                 metric: str, confidence: float) -> dict[str, tables.TableFiles]:
    """The arm table, one table per family that compared anything, one per contrast family with contrasts: each
    compact (`<name>.md`, `.tex`) and full (`<name>-full.md`, `.tex`), with one CSV of every column, LaTeX labels
    namespaced by the study (`tables.table_label`)."""
    def write(name: str, numeric: pd.DataFrame, compact: pd.DataFrame, full: pd.DataFrame,
              title: str) -> tables.TableFiles:
        return tables.write_table(numeric, compact, out_dir / name, caption=f"{study.name}: {title}",
                                  label=tables.table_label(study.name, name), full=full, title=title)

    written = {"arms": write("arms", arms, tables.compact_arm_table(arms, metric, confidence=confidence),
                             tables.display_arm_table(arms, metric, confidence=confidence),
                             f"Quality, cost and speed per arm: {metric}")}
    for fam in families:
        if fam.comparisons:
            written[fam.name] = write(fam.name, comparisons_frame(fam.comparisons),
                                      tables.compact_comparisons(fam.comparisons, confidence=confidence),
                                      tables.display_comparisons(fam.comparisons, confidence=confidence), fam.title)
    for cfam in contrasts.families:
        if cfam.contrasts:
            written[cfam.name] = write(cfam.name, tables.contrast_table(study, cfam),
                                       tables.compact_contrasts(cfam, confidence=confidence),
                                       tables.display_contrasts(study, cfam, confidence=confidence), cfam.title)
    return written


def seed_comparisons(families: Sequence[Family], metric: str, contrasts: Contrasts | None = None,
                     arm_labels: Sequence[str] = ()) -> list:
    """What the paired-seed figure draws: the experiment's question first (its stage pairs, contestants, and the
    main level contrasts whose two sides are arms of their own, as in a one-factor grid), then the headline's
    comparisons vs baseline, on the headline metric, each pair once."""
    level_pairs = [replace(c.comparison, a=_contrast_side(c.arm, c.factor, c.level),
                           b=_contrast_side(c.arm, c.factor, c.reference))
                   for fam in (contrasts.families if contrasts else []) if fam.kind == MAIN for c in fam.contrasts]
    ordered = ([c for fam in families if fam.question for c in fam.comparisons]
               + [c for c in level_pairs if c.a in arm_labels and c.b in arm_labels] + list(families[0].comparisons))
    seen, out = set(), []
    for c in ordered:
        if c.metric == metric and (c.a, c.b) not in seen:
            seen.add((c.a, c.b))
            out.append(c)
    return out


def draw_figures(study: Study, qualities: Sequence[Quality], arms: pd.DataFrame, families: Sequence[Family],
                 metric: str, out_dir: Path, *, contrasts: Contrasts | None = None,
                 chance: dict[str, float] | None = None, price_per_device_hour: float | None = None,
                 confidence: float = 0.95, seed: int = 0) -> dict[str, figures.FigureFiles]:
    """Training loss, the dev learning curve, the continuing stages' diagnostics, quality against rank, the
    quality-cost front, the paired seeds of the question's and the headline's comparisons, one Δ bar figure per
    family (`deltas_<family>`; the first family is the headline), and the lm-eval tasks' accuracies against their `chance` (by accuracy metric)."""
    return {f.name: f for f in [
        figures.loss_curves(study, out_dir),
        figures.dev_curve(study, out_dir),
        figures.stage_diagnostics(study, out_dir),
        figures.quality_vs_rank(study, qualities, metric, out_dir),
        figures.pareto_front(study, arms, metric, out_dir, price_per_device_hour=price_per_device_hour,
                             confidence=confidence, seed=seed),
        figures.paired_seed_dots(study, seed_comparisons(families, metric, contrasts, study.arm_labels), out_dir),
        *[figures.delta_bars(fam.comparisons, out_dir, name=f"deltas_{fam.name}", title=fam.figure_title)
          for fam in families],
        figures.capability_levels([c for fam in families if fam.name == FORGETTING for c in fam.comparisons],
                                  chance or {}, out_dir),
    ] if f is not None}  # None: a figure the design never asked for (a dev curve where no checkpoint is scored)


def _contrast_side(arm: str, factor: str, level) -> str:
    """One side of a level contrast as an arm label (`tuned[lora.r=32]`), for `analysis.labels` to shorten."""
    return f"{arm}[{factor}={format_value(level)}]"


def draw_contrast_figures(contrasts: Contrasts, metric: str, out_dir: Path) -> dict[str, figures.FigureFiles]:
    """Each factor's level means (`levels_<factor>`) and a Δ bar figure per family of level contrasts."""
    return {f.name: f for f in [
        *[figures.factor_levels(contrasts.level_means, factor, metric, out_dir, others=contrasts.factors)
          for factor in contrasts.factors],
        *[figures.delta_bars([replace(c.comparison, a=_contrast_side(c.arm, c.factor, c.level),
                                      b=_contrast_side(c.arm, c.factor, c.reference)) for c in fam.contrasts],
                             out_dir, name=f"deltas_{fam.name}", title=f"Δ {metric}: {fam.title}")
          for fam in contrasts.families if fam.kind == MAIN and fam.contrasts]]}
