"""`report.md`: the study's trials, the arm table, each comparison family and contrast with its table and figure,
the judge, the figures, what each score means and the method, rendered from a `ReportContent`; the body shows
each table compact, the appendix at the end in full."""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import pandas as pd

from analysis import figures, tables
from analysis.advice import when_to_use
from analysis.contrasts import INTERACTION, MAIN, SIMPLE, TREND, ContrastFamily, slug as fam_slug
from analysis.families import QUESTION, THREE_WAY, Family, family_of
from analysis.judging import judge_markdown
from analysis.load import SCORE_PREFIX, Study
from analysis.report_content import ReportContent
from harness.evaluation.metrics import ScoreSpec, is_declared
from harness.stats.factors import format_value

METHOD = """## Method

Every comparison pairs the two arms' scores item by item (and seed by seed) on the same frozen held-out
items and reports Δ = mean(A) − mean(B), with each seed's own Δ beside it; arms evaluated on different
items are refused, never paired. The {confidence:.0%} CI is a percentile bootstrap ({n_resamples:,} resamples,
seed {seed}) over items — over whole clusters when items share a source — and, when arms have several
seeds, a hierarchical bootstrap that resamples seeds and items, so seed-to-seed variation is part of the
uncertainty. The test of record: with one seed, McNemar's exact test for binary per-item scores, else the
Wilcoxon signed-rank test; when items share a source, the sign-flip permutation test flipping whole
clusters (the item tests would count correlated items as independent evidence). With several seeds, a
t-test whose SE counts the seed-to-seed variance beside the items' (variance components of the seeds ×
items differences, Satterthwaite df), so a difference that one seed shows and another does not is not
taken for evidence; the item-only tests are shown beside it. The MDE is the smallest true difference that
test detects with 80% power (two-sided α); it is not given with 2 seeds (the seed variance has 1 df) or
without variance (identical answers, one discordant item). p-values are Holm–Bonferroni adjusted within
the families listed under "Multiple comparisons". The verdict is the test's — "better" or "worse" only when
the adjusted p is below α = {alpha} and the CI excludes 0 (which sign is better is the metric's declared
direction; a descriptive score is only "higher" or "lower"), else "not significant", which is not "no
difference". The outcome is the decision, against one tolerance for every comparison, ±{tolerance:g} of
each metric's declared range: "equivalent" when the whole CI lies inside ±tolerance (effects of that size
are ruled out), "regressed" or "improved" for a significant change whose CI reaches past it,
"inconclusive" otherwise, with about how many items would decide at the observed variance; a metric
without a finite declared range gets no equivalence claim. Effect size is Cohen's d_z (mean difference
over the SD of the per-unit differences). Cost per 1K calls is the measured device time per item (a
batch's time shared by its items) × the price per device-hour.
"""


def trials_section(study: Study) -> list[str]:
    """How many trials completed, their seeds and varying params, each trial that did not complete and why,
    what each continuing stage and the teacher did, and the study's notes."""
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
    lines.extend(f"- training data: {p}" for p in study.data_provenance)
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


def endpoints_section(study: Study) -> list[str]:
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


APPENDIX = "Appendix: full tables"
APPENDIX_ANCHOR = "#appendix-full-tables"  # GitHub's anchor of the APPENDIX heading


def _table_files(content: ReportContent, table: tables.TableFiles) -> str:
    files = f"Files: [CSV]({content.relative(table.csv)}) (every column), [LaTeX]({content.relative(table.latex)})."
    if table.full_markdown is None:
        return files
    return (f"{files} Every statistic: the [full table]({APPENDIX_ANCHOR}) in the appendix "
            f"([markdown]({content.relative(table.full_markdown)}), [LaTeX]({content.relative(table.full_latex)})).")


def _arms_section(content: ReportContent) -> list[str]:
    """The compact arm table, and what the full one adds, how to read its speed columns and what costs are priced at."""
    price = content.price_per_device_hour
    return ["## Quality, cost and speed per arm", "", content.tables["arms"].markdown.read_text(),
            f"{_table_files(content, content.tables['arms'])} "
            "The full table adds cost per 1K calls, latency, throughput, failed calls and training cost. "
            "Latency is per call, and a call answers `items / call` items (local arms generate in batches, "
            "endpoints take one item per call): compare speed by `device-s / item`. "
            + ("Cost per 1K calls: endpoint arms at their token prices; local arms need a price per device-hour "
               "(not given)." if price is None
               else f"Cost per 1K calls: endpoint arms at their token prices, local arms at ${price}/device-hour."),
            ""]


def appendix_section(content: ReportContent) -> list[str]:
    """Every table in full (each statistic, the test's notes, cost and speed), in the order the report shows them."""
    full = [t for t in content.tables.values() if t.full_markdown is not None]
    if not full:
        return []
    lines = [f"## {APPENDIX}", "", "The tables above in full: every statistic of each row (raw, permutation and "
             "item-test p, SE, d_z, the per-seed Δs, the outcome's reasons) and the arms' cost and speed.", ""]
    for t in full:
        lines += [f"### {t.title}", "", t.full_markdown.read_text(),
                  f"Files: [CSV]({content.relative(t.csv)}), [markdown]({content.relative(t.full_markdown)}), "
                  f"[LaTeX]({content.relative(t.full_latex)}).", ""]
    return lines


def _when_to_use_section(content: ReportContent) -> list[str]:
    three_way = next((f for f in content.families if f.name == THREE_WAY), None)
    if three_way is None or not three_way.comparisons:
        return []
    return ["## When to use which", "",
            *when_to_use(three_way.comparisons, content.arms, content.metric, content.settings.confidence), ""]


def _holm_line(content: ReportContent, table: str) -> str:
    fam = family_of(content.holm_families, table)
    if fam is None:
        return ""
    where = "the experiment's question, across tables" if fam.name == QUESTION else "the rows of this table"
    return f"Holm family `{fam.name}` ({where}; m = {fam.m})."


def multiple_comparisons_section(content: ReportContent) -> list[str]:
    """The Holm families the report declared, their tables and sizes, and the rule behind them."""
    if not content.holm_families:
        return []
    lines = ["## Multiple comparisons", "",
             "p-values are Holm-adjusted within each family below. The experiment's question (the stage pairs, "
             "quantisation deltas, endpoint contestants and main contrasts of each factor it varies; else the "
             "headline comparisons vs baseline) is one family across its tables; secondary metrics, forgetting "
             "tasks, trends, simple effects and interactions are families of their own. A row whose arms "
             "answered identically is shown but not counted in m: it cannot reach significance whatever m is "
             "(Tarone 1990).", "", "| family | tables | m (counted) | not counted (identical answers) |",
             "|---|---|---|---|"]
    lines += [f"| `{f.name}` | {', '.join(f'`{t}`' for t in f.tables)} | {f.m} | {f.excluded} |"
              for f in content.holm_families]
    return lines + [""]


def _family_section(content: ReportContent, family: Family) -> list[str]:
    table, figure = content.tables.get(family.name), content.figures.get(f"deltas_{family.name}")
    lines = [f"## {family.title}", ""]
    if family.comparisons:
        lines.append(table.markdown.read_text() if table else "")
        lines.append(f"{_table_files(content, table)} {_holm_line(content, family.name)}")
    else:
        lines.append("No comparisons.")
    for a, b, reason in family.refused:
        lines.append(f"- not compared, {a} vs {b}: {reason}")
    if figure:
        lines += ["", f"![{figure.caption}]({content.relative(figure.png)})", ""]
    return lines + [""]


def _contrast_family(content: ReportContent, fam: ContrastFamily, heading: str) -> list[str]:
    out = [f"{heading} {fam.title}", ""] + ([fam.note, ""] if fam.note else [])
    table = content.tables.get(fam.name)
    if fam.contrasts and table:
        out += [table.markdown.read_text(), f"{_table_files(content, table)} {_holm_line(content, fam.name)}", ""]
    elif not fam.refused:
        out += ["No contrasts.", ""]
    out += [f"- not compared, {a} vs {b}: {reason}" for a, b, reason in fam.refused]
    return out + ([""] if fam.refused else [])


def _figure(content: ReportContent, fig: figures.FigureFiles) -> list[str]:
    """A drawn figure inline, with its caption and a link to its PDF."""
    return [f"![{fig.caption}]({content.relative(fig.png)})", "",
            f"{fig.caption} [PDF]({content.relative(fig.paths[-1])})", ""]


def _contrast_figure(content: ReportContent, name: str) -> list[str]:
    fig = content.contrast_figures.get(name)
    if not fig:
        return [f"- figure {name} not drawn: {fig.skipped}", ""] if fig is not None else []
    return _figure(content, fig)


def _contrasts_section(content: ReportContent) -> list[str]:
    """The contrasts: per factor its level contrasts, trend and figures; then simple effects and interactions."""
    contrasts = content.contrasts
    factors = "; ".join(f"{f.name} ({', '.join(map(format_value, f.levels))}; reference {format_value(f.reference)})"
                        for f in contrasts.factors)
    lines = ["## Contrasts between levels", "",
             "What each factor the study varies did to the trained arms: every level against the factor's "
             "reference level (`report.reference` in the spec; default the grid's first level), paired item by item "
             "and seed by seed on the same frozen items, with the CI, tests and MDE of the tables above, "
             "Holm-adjusted within the families listed under Multiple comparisons (the main contrasts are part of "
             f"the experiment's question). Factors: {factors}.", ""]
    lines += [f"- {n}" for n in contrasts.notes]
    for f in contrasts.factors:
        lines += [f"### {f.name}", ""]
        for fam in contrasts.families:
            if fam.factor == f.name and fam.kind in (MAIN, TREND):
                lines += _contrast_family(content, fam, "####")
                lines += _contrast_figure(content, f"deltas_{fam.name}") if fam.kind == MAIN else []
        lines += _contrast_figure(content, f"levels_{fam_slug(f.name)}")
        for fam in contrasts.families:
            if fam.factor == f.name and fam.kind == SIMPLE:
                lines += _contrast_family(content, fam, "####")
    interactions = [fam for fam in contrasts.families if fam.kind == INTERACTION]
    if interactions:
        lines += ["### Interactions", "", "The figures of each factor above draw them: one line per level of the "
                  "second factor; lines that are not parallel are an interaction.", ""]
        for fam in interactions:
            lines += _contrast_family(content, fam, "####")
    return lines


def _figures_section(content: ReportContent) -> list[str]:
    """The arms' figures (the Δ figures sit with their families), then every figure not drawn, with why."""
    lines = ["## Figures", ""]
    for fig in content.figures.values():
        if fig and not fig.name.startswith("deltas_"):
            lines += [f"### {fig.name.replace('_', ' ')}", "", *_figure(content, fig)]
    return lines + [f"- {name} not drawn: {reason}" for name, reason in content.skipped_figures.items()]


def scores_section(metrics: Sequence[str], declared: Mapping[str, ScoreSpec]) -> list[str]:
    """What each compared score means, one row per declaration, with the keys no one declared said to be read
    as descriptive."""
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
    return lines + [""]


def provenance_lines(content: ReportContent) -> list[str]:
    """Where the report's trials came from and how to run them again (from the trials, never the clock)."""
    p = content.study.provenance
    if p is None or not p.commits:
        return ["Trials: no commit recorded."]
    when = f"; the last finished {p.finished_at[:16].replace('T', ' ')} UTC" if p.finished_at else ""
    commits = [c[:7] + ("-dirty" if c.endswith("-dirty") else "") for c in p.commits]
    line = f"Trials run at commit{'s' if len(commits) > 1 else ''} {', '.join(commits)}{when}."
    if content.config_file is not None:
        line += f" Resolved config: [{content.relative(content.config_file)}]({content.relative(content.config_file)})."
    if p.commands:
        line += " Reproduce: " + ", then ".join(f"`{c}`" for c in p.commands) + "."
    return [line]


def render_markdown(content: ReportContent) -> str:
    """The whole of report.md."""
    s, study = content.settings, content.study
    md = [f"# {study.name}: report", "",
          *provenance_lines(content), "",
          f"Headline metric: **{content.metric}**. "
          f"Baseline: **{content.baseline}**. α = {s.alpha}, {s.confidence:.0%} CIs, {s.level}-level tests. "
          f"Outcomes are read against one tolerance, ±{s.tolerance:g} of each metric's declared range "
          f"(±{s.tolerance:g} for a score in [0, 1]): a CI inside it is \"equivalent\".", "",
          "## Trials", "", *trials_section(study), "", *endpoints_section(study), *_arms_section(content)]
    md += field_table(study)
    md += _when_to_use_section(content)
    md += [f"- {n}" for n in content.notes]
    md += [f"- {row.arm}: {int(row.failed_calls)} of {int(row.n_items * row.n_seeds)} calls failed (scored as given)"
           for row in content.arms.itertuples() if row.failed_calls]
    for fam in content.families:
        md += _family_section(content, fam)
    if content.contrasts.factors:
        md += _contrasts_section(content)
    md += multiple_comparisons_section(content)
    md += judge_markdown(content.judge_pairwise, content.judge_single, confidence=s.confidence)
    md += _figures_section(content)
    md += ["", *scores_section(content.compared_metrics, content.score_meanings()),
           METHOD.format(confidence=s.confidence, n_resamples=s.n_resamples, seed=s.seed, alpha=s.alpha,
                         tolerance=s.tolerance), *appendix_section(content)]
    return "\n".join(md)
