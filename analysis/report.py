"""`results/<study>/report.md` (tables and figures for the write-up) and `report.json` (every number).

The report compares every arm with its baseline on the headline metric (one Holm family), repeats
that on the secondary metrics that have a direction (a second family: which way is better is each
metric's declared direction, `harness.evaluation.metrics.score_spec`), on the descriptive metrics (a
length: differences, never improvements, in a family of their own), on any named groups of extra
pairs the caller passes, and — when the study has them — on the forgetting check (`forgetting/`) and
the quantisation deltas (folders with `quant.json`); each is its own Holm family with a delta-bar
figure. Tables land in `report/tables/`, figures in `report/figures/`.
"""

from __future__ import annotations

import math

import json
import os
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from analysis import figures, tables
from analysis.capabilities import forgetting_comparisons, quantization_comparisons
from analysis.contrasts import (INTERACTION, MAIN, SIMPLE, TREND, ContrastFamily, Contrasts, slug as fam_slug,
                                study_contrasts)
from analysis.compare import (HIGHER, LOWER, Comparison, Level, Quality, adjust, comparisons_frame,
                              pair_statistics, paired_scores, quality)
from analysis.errors import AnalysisError, UnknownArmError
from analysis.judging import judge_markdown, judge_tables
from analysis.load import SCORE_PREFIX, Study, load_study
from harness.evaluation.metrics import ScoreSpec, is_declared, score_spec
from harness.results import write_atomic, write_json
from harness.stats.factors import format_value
from harness.stats.paired import DEFAULT_RESAMPLES

SUMMARY_METRICS = ("field_accuracy", "exact_match", "json_valid")
REPORT_DIR = "report"


@dataclass
class ReportPaths:
    """Where the report's files are."""

    markdown: Path
    json: Path
    tables: dict[str, tables.TableFiles] = field(default_factory=dict)
    figures: dict[str, figures.FigureFiles] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.markdown} and {self.json}"


@dataclass(frozen=True)
class Family:
    """Comparisons adjusted together (one table) and the pairs that could not be compared, with why."""

    name: str
    title: str
    comparisons: list[Comparison]
    refused: list[tuple[str, str, str]]  # (a, b, reason)


def choose_metric(study: Study, metric: str | None) -> str:
    """`metric` if the study has it; else the spec's headline metric; else the first summary metric present."""
    available = study.score_metrics
    if metric is not None:
        if metric not in available:
            raise UnknownArmError(f"no per-item metric '{metric}' in study '{study.name}' "
                                  f"(known: {', '.join(available) or 'none'}); set eval.metric in the spec "
                                  "or pass another metric", where=study.path)
        return metric
    for candidate in (study.headline_metric, *SUMMARY_METRICS, *available):
        if candidate in available:
            return candidate
    raise AnalysisError(f"study '{study.name}' has no per-item scores to report", where=study.path)


def baseline_pairs(study: Study, baseline: str) -> tuple[list[tuple[str, str]], list[str]]:
    """(arm, its baseline) for every non-baseline arm.

    `baseline` is an arm label (`tuned[lora.r=8]`: everything is compared with it) or an arm name
    (`base`: each arm is compared with the baseline arm of the same grid point).
    """
    labels = study.arm_labels
    if baseline in labels:
        return [(a, baseline) for a in labels if a != baseline], []
    arms = set(study.items["arm"])
    if baseline not in arms:
        return [], [f"no baseline '{baseline}' in this study (arms: {', '.join(labels)}): no Δ column"]
    baseline_labels = set(study.items.loc[study.items["arm"] == baseline, "arm_label"])
    pairs, notes = [], []
    for a in labels:
        if a in baseline_labels:
            continue
        b = study.label_for(baseline, study.params_of(a))
        if b in baseline_labels:
            pairs.append((a, b))
        else:
            notes.append(f"'{a}' has no '{baseline}' arm at its grid point ({b}): not compared")
    return pairs, notes


def run_family(study: Study, name: str, title: str, pairs: Sequence[tuple[str, str]], metrics: Sequence[str], *,
               level: Level, alpha: float, confidence: float, n_resamples: int, seed: int) -> Family:
    """Compare every pair on every metric, Holm-adjusting across all of them together.

    A pair whose arms have different seeds (a failed trial) is compared on the seeds both have; a pair
    that cannot be paired at all is listed with the reason instead of stopping the report.
    """
    results, refused = [], []
    for metric in metrics:
        for a, b in pairs:
            try:
                seeds_a, seeds_b = set(study.seeds(a)), set(study.seeds(b))
                common = sorted(seeds_a & seeds_b) if seeds_a != seeds_b else None
                scores = paired_scores(study, a, b, metric, seeds=common)
                c = pair_statistics(scores, level=level, confidence=confidence, n_resamples=n_resamples, seed=seed,
                                    alpha=alpha)
                results.append((c, f"compared on the seeds both arms have, {common}" if common else ""))
            except AnalysisError as e:
                refused.append((a, b, f"{metric}: {e}"))
    adjusted = adjust([c for c, _ in results], alpha=alpha)
    merged = [replace(c, note="; ".join(filter(None, [extra, c.note]))) for c, (_, extra) in zip(adjusted, results)]
    return Family(name, title, merged, refused)


def secondary_metrics(study: Study, headline: str) -> tuple[list[str], list[str]]:
    """(metrics with a direction, descriptive metrics) to compare besides `headline`: the summary metrics, then
    every other metric the spec declared (chrf, rouge_l, format.*, words, ...); not the per-field scores,
    which the field table shows. A descriptive metric never joins the family of improvements."""
    metrics = [m for m in dict.fromkeys((*SUMMARY_METRICS, *study.score_metrics))
               if m in study.score_metrics and m != headline and not m.startswith("field.")]
    return ([m for m in metrics if not score_spec(m).descriptive], [m for m in metrics if score_spec(m).descriptive])


def scores_section(metrics: Sequence[str]) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """Markdown lines and report.json's `scores`: what each compared score means, one row per declaration
    (a pattern such as `field.*` once), with the keys no one declared said to be read as descriptive."""
    declared: dict[str, ScoreSpec] = {}
    for m in metrics:
        spec = score_spec(m)
        declared.setdefault(spec.key, spec)
    better = {"higher": "higher", "lower": "lower", "neither": "neither (descriptive)"}
    lines = ["## Scores", "", "What each compared score means, as its metric declares it: the direction decides "
             "which Δ is better (a descriptive score's Δ is only higher or lower), the range bounds every CI.", "",
             "| score | name | better when | range | aggregation over items |", "|---|---|---|---|---|"]
    for key, spec in declared.items():
        lines.append(f"| `{key}` | {spec.display.replace('{}', '…')} | {better[spec.direction]} | "
                     f"{spec.range_text()} | {spec.aggregation} |")
    unknown = [m for m in metrics if not is_declared(m)]
    if unknown:
        lines += ["", f"- no metric declares {', '.join(f'`{m}`' for m in unknown)}: read as descriptive and "
                      "unbounded (a Δ with its CI, never better or worse)."]
    return lines + [""], {key: spec.to_dict() for key, spec in declared.items()}


def _relative(path: Path, start: Path) -> str:
    return os.path.relpath(path, start).replace(os.sep, "/")


def _trials_section(study: Study) -> list[str]:
    t = study.trials
    complete = t[t["status"] == "complete"]
    not_complete = len(t) - len(complete)
    lines = [f"{len(t)} trial{'' if len(t) == 1 else 's'}: {len(complete)} complete"
             + (f", {not_complete} failed or unfinished (listed below, excluded from every comparison)."
                if not_complete else "."),
             f"Seeds: {sorted(int(s) for s in complete['seed'].dropna().unique())}. "
             f"Params that vary: {', '.join(study.varying_params) or 'none'}."]
    for row in t[t["status"] != "complete"].itertuples():
        seed = int(row.seed) if isinstance(row.seed, (int, float)) and math.isfinite(row.seed) else "unknown"
        again = complete[(complete["config"] == row.config) & (complete["seed"] == row.seed)
                         & (complete["number"] > row.number)]["number"]
        lines.append(f"- trial {row.number:04d} ({row.config or 'no params'}, seed {seed}): "
                     + ("incomplete — stopped before it recorded a result (killed, or still running)"
                        if row.status == "incomplete" else row.status.replace("_", " "))
                     + (f" — {row.reason}" if isinstance(row.reason, str) else "")
                     + (f"; the grid point was run again as trial {int(again.iloc[0]):04d}" if len(again) else ""))
    lines.extend(_stage_summaries(complete))
    lines.extend(f"- note: {n}" for n in study.notes)
    return lines


def _stage_summaries(complete: pd.DataFrame) -> list[str]:
    """What each continuing stage (DPO, GRPO) did in each complete trial (pairs, steps, final loss, time), and
    what the distillation teacher was asked (calls, cached calls, tokens, cost, latency)."""
    blocks: dict[str, list[str]] = {}
    for col in complete.columns:
        if col.startswith("metrics.training.") and complete[col].notna().any():
            stage, _, key = col[len("metrics.training."):].partition(".")
            blocks.setdefault(f"metrics.training.{stage}", []).append(key)
        elif col.startswith("metrics.teacher.") and complete[col].notna().any():
            blocks.setdefault("metrics.teacher", []).append(col[len("metrics.teacher."):])

    def fmt(v: Any) -> str:
        if isinstance(v, float) and math.isfinite(v):
            return str(int(v)) if v.is_integer() else f"{v:.4g}"
        return str(v)

    lines = []
    for block, keys in blocks.items():
        rows = complete[complete[[f"{block}.{k}" for k in keys]].notna().any(axis=1)]
        values = "; ".join(f"{k} " + ", ".join(fmt(v) for v in rows[f"{block}.{k}"]) for k in keys)
        numbers = ", ".join(f"{n:04d}" for n in rows["number"])
        lines.append(f"- {block.rsplit('.', 1)[-1]}, per trial (trials {numbers}): {values}")
    return lines


def field_table(study: Study) -> list[str]:
    """Markdown rows: each arm's mean score on every answer field (`field.*` scores), so a reader sees which
    facts an arm learnt, not only their average. [] for a task without per-field scores."""
    fields = [m for m in study.score_metrics if m.startswith("field.")]
    if not fields:
        return []
    names = [f[len("field."):] for f in fields]
    lines = ["| Arm | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for label in study.arm_labels:
        rows = study.rows(label)
        lines.append(f"| {label} | " + " | ".join(tables.format_score(rows[SCORE_PREFIX + f].mean()) for f in fields)
                     + " |")
    return ["### Per field", "", "Mean score of each answer field per arm, over items and seeds.", "", *lines, ""]


def _endpoints_section(study: Study) -> list[str]:
    """What each endpoint arm, teacher or judge was: a reader must know which model stood behind a name."""
    lines = []
    for e in study.endpoints:
        host = e["url"].split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0]
        where = " (a server on this machine)" if host in ("127.0.0.1", "localhost", "::1", "[::1]") else ""
        price = (f"; priced at ${e.get('price_input_per_m', 0):g} / ${e.get('price_output_per_m', 0):g} per "
                 "million input / output tokens")
        lines.append(f"- {e['role']} `{e['name']}`: model `{e.get('model')}` at {e['url']}{where}{price}."
                     + (f" {e['note'].strip()}" if e.get("note") else ""))
    return ["## Endpoints", "", *lines, ""] if lines else []


def _family_section(family: Family, table: tables.TableFiles | None, figure: figures.FigureFiles | None,
                    md_dir: Path) -> list[str]:
    lines = [f"## {family.title}", ""]
    if family.comparisons:
        lines.append(table.markdown.read_text() if table else "")
        lines.append(f"Files: [CSV]({_relative(table.csv, md_dir)}), [LaTeX]({_relative(table.latex, md_dir)}). "
                     "Holm-adjusted across the rows of this table.")
    else:
        lines.append("No comparisons.")
    for a, b, reason in family.refused:
        lines.append(f"- not compared, {a} vs {b}: {reason}")
    if figure:
        lines += ["", f"![{figure.caption}]({_relative(figure.png, md_dir)})", ""]
    return lines + [""]


def _contrasts_section(contrasts: Contrasts, study_dir: Path, written: Mapping[str, tables.TableFiles],
                       drawn: Mapping[str, figures.FigureFiles]) -> list[str]:
    """The contrasts: per factor its level contrasts, trend and figures; then simple effects and interactions."""
    factors = "; ".join(f"{f.name} ({', '.join(map(format_value, f.levels))}; reference {format_value(f.reference)})"
                        for f in contrasts.factors)
    lines = ["## Contrasts between levels", "",
             "What each factor the study varies did to the trained arms: every level against the factor's "
             "reference level (`report.reference` in the spec; default the grid's first level), paired item by item "
             "and seed by seed on the same frozen items, with the CI, tests and MDE of the tables above, "
             f"Holm-adjusted within each table. Factors: {factors}.", ""]
    lines += [f"- {n}" for n in contrasts.notes]

    def family(fam: ContrastFamily, heading: str) -> list[str]:
        out = [f"{heading} {fam.title}", ""] + ([fam.note, ""] if fam.note else [])
        table = written.get(fam.name)
        if fam.contrasts and table:
            out += [table.markdown.read_text(),
                    f"Files: [CSV]({_relative(table.csv, study_dir)}), [LaTeX]({_relative(table.latex, study_dir)}). "
                    "Holm-adjusted across the rows of this table.", ""]
        elif not fam.refused:
            out += ["No contrasts.", ""]
        out += [f"- not compared, {a} vs {b}: {reason}" for a, b, reason in fam.refused]
        return out + ([""] if fam.refused else [])

    def figure(name: str) -> list[str]:
        fig = drawn.get(name)
        if not fig:
            return [f"- figure {name} not drawn: {fig.skipped}", ""] if fig is not None else []
        return [f"![{fig.caption}]({_relative(fig.png, study_dir)})", "",
                f"{fig.caption} [PDF]({_relative(fig.paths[-1], study_dir)})", ""]

    for f in contrasts.factors:
        lines += [f"### {f.name}", ""]
        for fam in contrasts.families:
            if fam.factor == f.name and fam.kind in (MAIN, TREND):
                lines += family(fam, "####")
                lines += figure(f"deltas_{fam.name}") if fam.kind == MAIN else []
        lines += figure(f"levels_{fam_slug(f.name)}")
        for fam in contrasts.families:
            if fam.factor == f.name and fam.kind == SIMPLE:
                lines += family(fam, "####")
    interactions = [fam for fam in contrasts.families if fam.kind == INTERACTION]
    if interactions:
        lines += ["### Interactions", "", "The figures of each factor above draw them: one line per level of the "
                  "second factor; lines that are not parallel are an interaction.", ""]
        for fam in interactions:
            lines += family(fam, "####")
    return lines


METHOD = """## Method

Every comparison pairs the two arms' scores item by item (and seed by seed) on the same frozen held-out
items and reports Δ = mean(A) − mean(B); arms evaluated on different items are refused, never paired.
The {confidence:.0%} CI is a percentile bootstrap ({n_resamples:,} resamples, seed {seed}) over items — over
whole clusters when items share a source — and, when arms have several seeds, a hierarchical bootstrap
that resamples seeds and items, so seed-to-seed variation is part of the uncertainty. The item test is
McNemar's exact test for binary per-item scores with one seed, otherwise the Wilcoxon signed-rank test
(on per-item means over seeds); a sign-flip permutation test is reported beside it. When items share
a source, the permutation test flipping whole clusters is the test of record (the item test would
count correlated items as independent evidence) and the MDE counts clusters, not items. p-values are
Holm–Bonferroni adjusted within each table. The verdict is "better" or "worse" only when the adjusted p
is below α = {alpha} and the CI excludes 0 — which sign is better is the metric's declared direction (a
drop of a lower-is-better score is better), and a descriptive score (a length) is only ever "higher" or
"lower" — otherwise "no detectable difference", with a note saying
whether the eval was underpowered: the MDE is the smallest true difference a paired test on this many
units detects with 80% power (two-sided α). Effect size is Cohen's d_z (mean difference over the SD of
the per-unit differences). Cost per 1K calls is the measured device time per item (a batch's time
shared by its items) × the price per device-hour.
"""


def _is_endpoint(study: Study, label: str) -> bool:
    rows = study.rows(label)
    return "cost_usd" in rows and bool(rows["cost_usd"].notna().any())


def _ratio(a: float, b: float) -> str:
    if not (math.isfinite(a) and math.isfinite(b)) or b == 0:
        return "an unknown multiple of"
    return f"{a / b:.2g}x"


def when_to_use(comparisons: Sequence[Comparison], arms, metric: str, confidence: float) -> list[str]:
    """One paragraph per tuned-vs-contestant comparison, written from its numbers (no canned verdict)."""
    by_arm = {row.arm: row for row in arms.itertuples()}
    out = []
    for c in comparisons:
        tuned, other = by_arm.get(c.a), by_arm.get(c.b)
        if tuned is None or other is None:
            continue
        gap = (f"{c.a} scores {c.diff:+.3f} {metric} against {c.b} ({confidence:.0%} CI [{c.ci_low:+.3f}, "
               f"{c.ci_high:+.3f}], adjusted p = {c.p_adjusted:.3g}, n = {c.n})")
        cost = (f"costs {_ratio(tuned.cost_per_1k_calls, other.cost_per_1k_calls)} as much per 1K calls "
                f"(${tuned.cost_per_1k_calls:.4g} vs ${other.cost_per_1k_calls:.4g})")
        latency = (f"answers with {_ratio(tuned.latency_p50_s, other.latency_p50_s)} the median latency per call "
                   f"({tuned.latency_p50_s:.3g} s vs {other.latency_p50_s:.3g} s, at {tuned.items_per_call:.3g} vs "
                   f"{other.items_per_call:.3g} items per call: a batched call's latency is its batch's) and "
                   f"{_ratio(tuned.device_s_per_item, other.device_s_per_item)} the time per item "
                   f"({tuned.device_s_per_item:.3g} s vs {other.device_s_per_item:.3g} s)")
        cost_ratio = (tuned.cost_per_1k_calls / other.cost_per_1k_calls
                      if math.isfinite(tuned.cost_per_1k_calls) and math.isfinite(other.cost_per_1k_calls)
                      and other.cost_per_1k_calls > 0 else math.nan)
        if c.verdict == "better" and cost_ratio <= 1:
            advice = f"Use {c.a}: it is better on {metric} and no dearer per call."
        elif c.verdict == "better" and cost_ratio > 1:
            advice = (f"{c.a} is better on {metric} but dearer per call at these prices: use it where the gain is "
                      f"worth {cost_ratio:.2g}x the cost (a cheaper device-hour, or a faster device, lowers it).")
        elif c.verdict == "better":
            advice = f"{c.a} is better on {metric}; with no price for one side, the cost comparison is open."
        elif c.verdict == "worse":
            advice = (f"Use {c.b} where {metric} matters more than the difference in cost and latency; "
                      f"{c.a} is measurably worse.")
        elif c.verdict in (HIGHER, LOWER):
            advice = (f"{metric} is descriptive (neither direction is better): it does not choose between them; "
                      "the cost and latency do.")
        else:
            advice = (f"No difference in {metric} was detected at this sample size (smallest detectable difference "
                      f"≈ {c.mde:.3f}); if that bound is acceptable, the cheaper and faster arm is the choice.")
        out.append(f"{gap}; it {cost} and {latency}. {advice}")
    return out


def build_report(study_dir: str | Path, baseline: str = "base", metric: str | None = None, *,
                 groups: Mapping[str, Sequence[tuple[str, str]]] | None = None,
                 price_per_device_hour: float | None = None, level: Level = "item", alpha: float = 0.05,
                 confidence: float = 0.95, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                 reference: Mapping[str, Any] | None = None) -> ReportPaths:
    """Write `report.md` and `report.json` (plus tables and figures under `report/`) into `study_dir`.

    `groups` names extra comparison families, e.g. {"quantization": [("tuned-q4", "tuned")]}. `reference`
    is the spec's `report.reference` (factor → the level its contrasts are taken against; default: what
    the trials' manifests recorded, else each factor's first level).
    """
    study_dir = Path(study_dir)
    study = load_study(study_dir)
    if study.items.empty:
        raise AnalysisError(f"study '{study.name}' has no complete trial with evaluations yet "
                            f"({len(study.trials)} trial directories)", where=study_dir)
    metric = choose_metric(study, metric)
    out = study_dir / REPORT_DIR
    fig_dir, table_dir = out / "figures", out / "tables"
    options = dict(level=level, alpha=alpha, confidence=confidence, n_resamples=n_resamples, seed=seed)
    contrasts = study_contrasts(study, metric, reference=reference, **options)  # first: it checks `reference`

    pairs, pair_notes = baseline_pairs(study, baseline)
    headline = run_family(study, "headline", f"Comparisons vs baseline: {metric}", pairs, [metric], **options)
    directed, descriptive = secondary_metrics(study, metric)
    secondary = run_family(study, "secondary", "Secondary metrics vs baseline", pairs, directed, **options)
    extra = [run_family(study, "descriptive", "Descriptive metrics vs baseline (differences, not improvements)",
                        pairs, descriptive, **options)] if descriptive else []
    extra += [run_family(study, name, f"{name}: comparisons", group_pairs, [metric], **options)
              for name, group_pairs in (groups or {}).items()]
    for name, title, (found, refused) in (
            ("forgetting", "Forgetting: general capabilities, adapter vs base (lm-eval accuracy)",
             forgetting_comparisons(study_dir, study.varying_params, **options)),
            ("quantization", f"Quantization: {metric}, quantised vs reference",
             quantization_comparisons(study, metric, **options))):
        if found or refused:
            extra.append(Family(name, title, adjust(found, alpha=alpha), refused))
    endpoint_arms = [a for a in study.arm_labels if _is_endpoint(study, a)]
    tuned_arms = [a for a in study.arm_labels if a not in study.untuned_arms]
    verdict_pairs = [(t, e) for e in endpoint_arms for t in tuned_arms]
    if verdict_pairs:
        extra.append(run_family(study, "three_way", f"Tuned vs endpoint contestants: {metric}", verdict_pairs,
                                [metric], **options))
    families = [headline, secondary, *extra]

    price_per_device_hour = price_per_device_hour if price_per_device_hour is not None else study.device_price_per_hour
    qualities: list[Quality] = []
    for label in study.arm_labels:
        try:
            qualities.append(quality(study, label, metric, confidence=confidence, n_resamples=n_resamples, seed=seed))
        except AnalysisError as e:  # e.g. NaN scores: the arm is left out of the table, and the report says why
            pair_notes.append(f"'{label}' left out of the arm table: {e}")
    arms = tables.arm_table(study, qualities, headline.comparisons, price_per_device_hour=price_per_device_hour)
    written = {"arms": tables.write_table(arms, tables.display_arm_table(arms, metric, confidence=confidence),
                                          table_dir / "arms", caption=f"{study.name}: {metric}, cost and speed per arm")}
    for fam in families:
        if fam.comparisons:
            written[fam.name] = tables.write_table(comparisons_frame(fam.comparisons),
                                                   tables.display_comparisons(fam.comparisons, confidence=confidence),
                                                   table_dir / fam.name, caption=f"{study.name}: {fam.title}")
    for cfam in contrasts.families:
        if cfam.contrasts:
            written[cfam.name] = tables.write_table(
                tables.contrast_table(study, cfam), tables.display_contrasts(study, cfam, confidence=confidence),
                table_dir / cfam.name, caption=f"{study.name}: {cfam.title}")

    drawn = {f.name: f for f in [
        figures.loss_curves(study, fig_dir),
        figures.quality_vs_rank(study, qualities, metric, fig_dir),
        figures.pareto_front(arms, metric, fig_dir),
        figures.paired_seed_dots(study, headline.comparisons, fig_dir),
        figures.delta_bars(headline.comparisons, fig_dir, name="deltas_headline", title=f"Δ {metric} vs baseline"),
        figures.delta_bars(secondary.comparisons, fig_dir, name="deltas_secondary",
                           title="Δ secondary metrics vs baseline"),
        *[figures.delta_bars(fam.comparisons, fig_dir, name=f"deltas_{fam.name}", title=fam.title) for fam in extra],
    ]}
    contrast_figures = {f.name: f for f in [
        *[figures.factor_levels(contrasts.level_means, factor, metric, fig_dir, others=contrasts.factors)
          for factor in contrasts.factors],
        *[figures.delta_bars([replace(c.comparison, a=f"{c.arm} {format_value(c.level)}", b=format_value(c.reference))
                              for c in fam.contrasts], fig_dir, name=f"deltas_{fam.name}",
                             title=f"Δ {metric}: {fam.title}")
          for fam in contrasts.families if fam.kind == MAIN and fam.contrasts]]}

    md_path, json_path = study_dir / "report.md", study_dir / "report.json"
    md = [f"# {study.name}: report", "",
          f"Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC. Headline metric: **{metric}**. "
          f"Baseline: **{baseline}**. α = {alpha}, {confidence:.0%} CIs, {level}-level tests.", "",
          "## Trials", "", *_trials_section(study), "", *_endpoints_section(study),
          "## Quality, cost and speed per arm", "", written["arms"].markdown.read_text(),
          f"Files: [CSV]({_relative(written['arms'].csv, study_dir)}), "
          f"[LaTeX]({_relative(written['arms'].latex, study_dir)}). "
          "Latency is per call, and a call answers `items / call` items (local arms generate in batches, "
          "endpoints take one item per call): compare speed by `device-s / item`. "
          + ("Cost per 1K calls: endpoint arms at their token prices; local arms need a price per device-hour "
             "(not given)." if price_per_device_hour is None
             else f"Cost per 1K calls: endpoint arms at their token prices, local arms at "
                  f"${price_per_device_hour}/device-hour."), ""]
    md += field_table(study)
    three_way = next((f for f in families if f.name == "three_way"), None)
    if three_way is not None and three_way.comparisons:
        md += ["## When to use which", "", *when_to_use(three_way.comparisons, arms, metric, confidence), ""]
    md += [f"- {n}" for n in pair_notes]
    md += [f"- {row.arm}: {int(row.failed_calls)} of {int(row.n_items * row.n_seeds)} calls failed (scored as given)"
           for row in arms.itertuples() if row.failed_calls]
    for fam in families:
        md += _family_section(fam, written.get(fam.name), drawn.get(f"deltas_{fam.name}"), study_dir)
    if contrasts.factors:
        md += _contrasts_section(contrasts, study_dir, written, contrast_figures)
    judge_pairwise, judge_single = judge_tables(study, alpha=alpha, confidence=confidence,
                                                n_resamples=n_resamples, seed=seed)
    md += judge_markdown(judge_pairwise, judge_single, confidence=confidence)
    md += ["## Figures", ""]
    for fig in drawn.values():
        if fig and not fig.name.startswith("deltas_"):
            md += [f"### {fig.name.replace('_', ' ')}", "", f"![{fig.caption}]({_relative(fig.png, study_dir)})", "",
                   f"{fig.caption} [PDF]({_relative(fig.paths[-1], study_dir)})", ""]
    drawn.update(contrast_figures)
    skipped = {f.name: f.skipped for f in drawn.values() if f.skipped}
    md += [f"- {name} not drawn: {reason}" for name, reason in skipped.items()]
    score_lines, score_meanings = scores_section(
        list(dict.fromkeys([*study.score_metrics, *(c.metric for fam in families for c in fam.comparisons)])))
    md += ["", *score_lines, METHOD.format(confidence=confidence, n_resamples=n_resamples, seed=seed, alpha=alpha)]
    write_atomic(md_path, "\n".join(md))

    t = study.trials
    write_json(json_path, {
        "study": study.name, "path": str(study_dir), "project": study.project, "metric": metric, "baseline": baseline,
        "alpha": alpha, "confidence": confidence, "level": level, "n_resamples": n_resamples, "seed": seed,
        "price_per_device_hour": price_per_device_hour,
        "generated_at": datetime.now(timezone.utc).isoformat(),
        "trials": {"complete": int((t["status"] == "complete").sum()),
                   "not_complete": [{"number": int(r.number), "status": r.status,
                                     "reason": r.reason if isinstance(r.reason, str) else None}
                                    for r in t[t["status"] != "complete"].itertuples()]},
        "comparisons": [{"family": fam.name, **c.to_dict()} for fam in [*families, *contrasts.families]
                        for c in fam.comparisons],
        "contrasts": {
            "factors": [{"name": f.name, "levels": list(f.levels), "reference": f.reference, "numeric": f.numeric}
                        for f in contrasts.factors],
            "families": [{"name": fam.name, "title": fam.title, "kind": fam.kind, "factor": fam.factor, "by": fam.by,
                          "note": fam.note, "rows": json.loads(tables.contrast_table(study, fam).to_json(orient="records")),
                          "refused": [{"a": a, "b": b, "reason": r} for a, b, r in fam.refused]}
                         for fam in contrasts.families],
            "notes": contrasts.notes},
        "refused": [{"family": fam.name, "a": a, "b": b, "reason": r} for fam in families for a, b, r in fam.refused],
        "arms": json.loads(arms.to_json(orient="records")),
        "tables": {k: {"csv": _relative(v.csv, study_dir), "markdown": _relative(v.markdown, study_dir),
                       "latex": _relative(v.latex, study_dir)} for k, v in written.items()},
        "figures": {k: [_relative(p, study_dir) for p in v.paths] for k, v in drawn.items() if v},
        "skipped_figures": skipped, "notes": [*study.notes, *pair_notes], "scores": score_meanings,
        **({"judge": {"pairwise": json.loads(judge_pairwise.to_json(orient="records")),
                      "single": json.loads(judge_single.to_json(orient="records"))}}
           if not (judge_pairwise.empty and judge_single.empty) else {}),
    })
    return ReportPaths(md_path, json_path, written, {k: v for k, v in drawn.items() if v})


def log_report_to_wandb(report: ReportPaths, run_group: str, *, project: str | None = None,
                        mode: str | None = None) -> str | None:
    """Log the report's tables, figures and comparison numbers as one W&B run in the study's group.

    `mode` defaults to the harness rule (WANDB_MODE, else online when logged in, else offline); a no-op
    returning None when it resolves to "disabled". Returns the run id.
    """
    from harness.tracking import wandb_mode

    mode = mode or wandb_mode("auto")
    if mode == "disabled":
        return None
    import wandb

    data = json.loads(Path(report.json).read_text())
    run = wandb.init(project=project or data.get("project") or "harness", group=run_group, job_type="report",
                     name=f"{data['study']}/report", mode=mode, dir=str(Path(report.json).parent),
                     config={k: data.get(k) for k in ("metric", "baseline", "alpha", "confidence", "level",
                                                       "n_resamples", "seed", "price_per_device_hour")},
                     reinit="create_new")
    try:
        for name, files in report.tables.items():
            run.log({f"report/table/{name}": wandb.Table(dataframe=pd.read_csv(files.csv))})
        for name, fig in report.figures.items():
            if fig.png is not None:
                run.log({f"report/figure/{name}": wandb.Image(str(fig.png), caption=fig.caption)})
        run.summary.update({f"{c['family']}/{c['metric']}/{c['a']} vs {c['b']}": {
            k: c[k] for k in ("diff", "ci_low", "ci_high", "p", "p_adjusted", "test", "n", "verdict")}
            for c in data["comparisons"]})
        run_id = run.id
    finally:
        run.finish()
    return run_id
