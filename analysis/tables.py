"""The write-up's tables: one row per arm (quality, Δ vs baseline, cost, speed, training) and one per comparison.

Each table exists as a numeric DataFrame (written as CSV, every column, for machines) and as two display
DataFrames of formatted strings, each written as markdown and as LaTeX: a compact one for the report's body
(`compact_arm_table`, `compact_comparisons`: the estimate, its CI, the decision) and the full one, every
statistic, for its appendix (`display_arm_table`, `display_comparisons`, `display_contrasts`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from analysis.compare import MIN_SEEDS_FOR_POWER, NOT_SIGNIFICANT, Comparison, Quality
from analysis.contrasts import INTERACTION, TREND, ContrastFamily
from analysis.load import Study
from harness.evaluation.metrics import display_name
from harness.results import write_atomic
from harness.stats.factors import format_value

ARM_COLUMNS = ["arm", "n_items", "n_seeds", "quality", "quality_ci_low", "quality_ci_high", "baseline", "delta",
               "delta_ci_low", "delta_ci_high", "p_adjusted", "verdict", "outcome", "cost_per_1k_calls",
               "items_per_call", "latency_p50_s", "latency_p95_s", "device_s_per_item", "tokens_per_s", "failed_calls",
               "train_device_s", "tokens_trained", "peak_mem_gb", "model_gb"]


@dataclass(frozen=True)
class TableFiles:
    """One table's files: the numeric CSV, the compact table (markdown, LaTeX) and, when written, the full one."""

    csv: Path
    markdown: Path
    latex: Path
    full_markdown: Path | None = None
    full_latex: Path | None = None
    title: str = ""


def eval_speed(rows: pd.DataFrame) -> dict[str, float]:
    """Latency percentiles, items per call, throughput, device-seconds per item and failed calls of one arm.

    An item's `latency_s` is the wall time of the generate call (batch) that answered it: that is the
    latency a caller sees, so percentiles are over items; throughput and device time count each call
    once, sharing its time among the items of its batch. A batched local arm and a one-call-per-item
    endpoint therefore differ in latency by about the batch size even at equal speed: `items_per_call`
    says which is which, and `device_s_per_item` is the figure to compare speed by. A failed endpoint
    call has NaN latency.
    """
    failed = int(rows["error"].notna().sum()) if "error" in rows else 0
    lat = rows["latency_s"].to_numpy(float) if "latency_s" in rows else np.array([])
    lat = lat[np.isfinite(lat)]
    if lat.size == 0:
        return {"latency_p50_s": math.nan, "latency_p95_s": math.nan, "tokens_per_s": math.nan,
                "device_s_per_item": math.nan, "items_per_call": math.nan, "failed_calls": failed}
    if "batch" in rows and rows["batch"].notna().all():
        calls = rows.drop_duplicates(["trial", "seed", "batch"])
        busy, n_calls = float(calls["latency_s"].sum()), len(calls)
    else:
        busy, n_calls = float(lat.sum()), lat.size
    tokens = rows["output_tokens"].sum() if "output_tokens" in rows else math.nan
    return {"latency_p50_s": float(np.percentile(lat, 50)), "latency_p95_s": float(np.percentile(lat, 95)),
            "tokens_per_s": float(tokens / busy) if busy > 0 else math.nan,
            "device_s_per_item": busy / len(rows), "items_per_call": len(rows) / n_calls, "failed_calls": failed}


def cost_per_1k_calls(rows: pd.DataFrame, device_s_per_item: float, price_per_device_hour: float | None) -> float:
    """USD for 1,000 calls: the priced endpoint calls' own cost (`cost_usd`) when the arm has them, else
    the measured device time per item at `price_per_device_hour` (NaN without a price)."""
    if "cost_usd" in rows and rows["cost_usd"].notna().any():
        return 1000 * float(rows["cost_usd"].fillna(0.0).mean())
    if price_per_device_hour is None or not np.isfinite(device_s_per_item):
        return math.nan
    return 1000 * device_s_per_item / 3600 * price_per_device_hour


def _arm_share(costs: pd.DataFrame, arm: str) -> pd.DataFrame:
    """The cost rows cut down to what `arm` had cost when it was evaluated: an arm evaluated before a later
    training (sft, before dpo or grpo continue it) is not charged for that training's time and tokens."""
    if "stage_costs" not in costs or "arm_trainings" not in costs:
        return costs
    costs = costs.copy()
    for i, row in costs.iterrows():
        had = row["arm_trainings"].get(arm) if isinstance(row["arm_trainings"], dict) else None
        stages = row["stage_costs"] if isinstance(row["stage_costs"], dict) else {}
        if had is None:
            continue
        for stage, summary in stages.items():
            if stage not in had:
                for col in ("device_s", "tokens_trained"):
                    if col in costs and summary.get(col) is not None:
                        costs.at[i, col] = costs.at[i, col] - summary[col]
    return costs


def _training_peak(row: pd.Series, arm: str) -> float:
    """The peak memory of the trainings `arm` had, by each stage's own peak; a trial that predates stage peaks
    has only its own (every stage's worst)."""
    stages = row.get("stage_peak_mem_gb")
    had = row["arm_trainings"].get(arm) if isinstance(row.get("arm_trainings"), dict) else None
    if not isinstance(stages, dict) or had is None:
        return float(row.get("peak_mem_gb", math.nan))
    peaks = [stages[s] for s in had if stages.get(s) is not None]
    return max(peaks) if peaks else math.nan


def trials_cost(study: Study, trials: Sequence[int], arm: str | None = None) -> dict[str, float]:
    """Mean device-seconds and tokens trained, the trials' whole wall time (evals included), and peak memory,
    over `trials` (their cost blocks); with `arm`, only the trainings that arm had when it was evaluated count,
    its peak memory theirs."""
    costs = study.costs[study.costs["trial"].isin(list(trials))] if not study.costs.empty else study.costs
    if arm is not None and not costs.empty:
        costs = _arm_share(costs, arm).assign(peak_mem_gb=[_training_peak(r, arm) for _, r in costs.iterrows()])
    pick = lambda col, how: (float(getattr(costs[col], how)())  # noqa: E731
                             if col in costs and costs[col].notna().any() else math.nan)
    return {"train_device_s": pick("device_s", "mean"), "trial_wall_s": pick("wall_s", "mean"),
            "tokens_trained": pick("tokens_trained", "mean"), "peak_mem_gb": pick("peak_mem_gb", "max")}


def model_memory_gb(study: Study, label: str) -> float:
    """The arm's own model in memory, GiB (its weights; a GGUF arm: its file), as its trials recorded it; NaN
    where they did not (an endpoint, or a trial that predates the record)."""
    rows = study.rows(label)
    arm = rows["arm"].iloc[0]
    costs = study.costs[study.costs["trial"].isin(rows["trial"].unique())] if not study.costs.empty else study.costs
    sizes = [r[arm] for r in costs.get("arm_model_bytes", []) if isinstance(r, dict) and r.get(arm) is not None]
    return float(np.mean(sizes)) / 2**30 if sizes else math.nan


def training_cost(study: Study, label: str) -> dict[str, float]:
    """`trials_cost` of the trials behind a tuned arm (NaN for an untuned arm: it was never trained)."""
    rows = study.rows(label)
    if rows["arm"].iloc[0] in study.untuned_arms:
        return trials_cost(study, [])
    return trials_cost(study, rows["trial"].unique(), arm=rows["arm"].iloc[0])


def arm_table(study: Study, qualities: Sequence[Quality], comparisons: Sequence[Comparison], *,
              price_per_device_hour: float | None = None) -> pd.DataFrame:
    """One numeric row per arm: quality and CI, Δ vs its baseline, cost, speed, training cost."""
    by_a = {c.a: c for c in comparisons}
    rows = []
    for q in qualities:
        c = by_a.get(q.label)
        arm_rows = study.rows(q.label)
        speed = eval_speed(arm_rows)
        rows.append({
            "arm": q.label, "n_items": q.n, "n_seeds": q.n_seeds, "quality": q.mean, "quality_ci_low": q.ci_low,
            "quality_ci_high": q.ci_high, "baseline": c.b if c else None,
            "delta": c.diff if c else math.nan, "delta_ci_low": c.ci_low if c else math.nan,
            "delta_ci_high": c.ci_high if c else math.nan, "p_adjusted": c.p_adjusted if c else math.nan,
            "verdict": c.verdict if c else None, "outcome": c.outcome if c else None,
            "cost_per_1k_calls": cost_per_1k_calls(arm_rows, speed["device_s_per_item"], price_per_device_hour),
            "items_per_call": speed["items_per_call"], "latency_p50_s": speed["latency_p50_s"],
            "latency_p95_s": speed["latency_p95_s"], "device_s_per_item": speed["device_s_per_item"],
            "tokens_per_s": speed["tokens_per_s"], "failed_calls": speed["failed_calls"],
            **training_cost(study, q.label), "model_gb": model_memory_gb(study, q.label)})
    return pd.DataFrame(rows, columns=ARM_COLUMNS)


# ---------------------------------------------------------------- display formatting

DASH = "—"


def _num(x: float | None, digits: int = 3) -> str:
    return DASH if x is None or not np.isfinite(x) else f"{x:.{digits}f}".replace("-", "−")


def format_score(x: float | None) -> str:
    """A mean score as the tables print it (three decimals, a dash when missing)."""
    return _num(x)


def _signed(x: float) -> str:
    return DASH if not np.isfinite(x) else f"{x:+.3f}".replace("-", "−")  # a typographic minus


def format_p(p: float | None) -> str:
    if p is None or not np.isfinite(p):
        return DASH
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _interval(estimate: float, low: float, high: float, signed: bool = False) -> str:
    if not np.isfinite(estimate):
        return DASH
    f = _signed if signed else _num
    return f"{f(estimate)} [{f(low)}, {f(high)}]"


def _count(x: float) -> str:
    return DASH if not np.isfinite(x) else f"{x:,.0f}"


def display_arm_table(table: pd.DataFrame, metric: str, *, confidence: float = 0.95) -> pd.DataFrame:
    """The arm table as formatted strings, with headers that name metric and units."""
    level = f"{confidence:.0%} CI"
    return pd.DataFrame({
        "Arm": table["arm"],
        "Seeds": table["n_seeds"].astype(int).astype(str),
        "Items": table["n_items"].astype(int).astype(str),
        f"{display_name(metric)} [{level}]": [_interval(r.quality, r.quality_ci_low, r.quality_ci_high) for r in table.itertuples()],
        f"Δ vs baseline [{level}]": [_interval(r.delta, r.delta_ci_low, r.delta_ci_high, signed=True)
                                     for r in table.itertuples()],
        "Baseline": table["baseline"].fillna(DASH),
        "adj. p": table["p_adjusted"].map(format_p),
        "Outcome": table["outcome"].fillna(DASH),
        "$ / 1K calls": table["cost_per_1k_calls"].map(lambda x: _num(x, 4)),
        "items / call": table["items_per_call"].map(lambda x: _num(x, 1)),
        "p50 latency / call (s)": table["latency_p50_s"].map(_num),
        "p95 latency / call (s)": table["latency_p95_s"].map(_num),
        "device-s / item": table["device_s_per_item"].map(_num),
        "tokens/s": table["tokens_per_s"].map(lambda x: _num(x, 1)),
        "train device-s": table["train_device_s"].map(lambda x: _num(x, 1)),
        "tokens trained": table["tokens_trained"].map(_count),
        "train peak mem (GB)": table["peak_mem_gb"].map(lambda x: _num(x, 2)),
        "model (GB)": table["model_gb"].map(lambda x: _num(x, 3)),
    })


def items_by_seeds(n_items: float, n_seeds: float) -> str:
    """"50 × 3": paired items and seeds, the size of the evidence behind a row."""
    if not (np.isfinite(n_items) and np.isfinite(n_seeds)):
        return DASH
    return f"{int(n_items)} × {int(n_seeds)}"


def compact_arm_table(table: pd.DataFrame, metric: str, *, confidence: float = 0.95) -> pd.DataFrame:
    """The arm table of the report's body: size, quality, Δ vs baseline, outcome and device time per item (the
    cost, latency and training columns are the full table's, `display_arm_table`)."""
    level = f"{confidence:.0%} CI"
    return pd.DataFrame({
        "Arm": table["arm"],
        "Items × seeds": [items_by_seeds(r.n_items, r.n_seeds) for r in table.itertuples()],
        f"{display_name(metric)} [{level}]": [_interval(r.quality, r.quality_ci_low, r.quality_ci_high)
                                             for r in table.itertuples()],
        f"Δ vs baseline [{level}]": [_interval(r.delta, r.delta_ci_low, r.delta_ci_high, signed=True)
                                     for r in table.itertuples()],
        "Outcome": table["outcome"].fillna(DASH).replace("", DASH),
        "device-s / item": table["device_s_per_item"].map(_num),
    })


def seed_deltas(c: Comparison) -> str:
    """Each seed's own Δ, beside the pooled one (a dash with one seed: the pooled Δ is that seed's)."""
    return ", ".join(_signed(d) for d in c.seed_diffs) if len(c.seed_diffs) > 1 else DASH


def mde_text(c: Comparison) -> str:
    """The MDE, or why there is none: no variance, one discordant item, too few seeds to estimate their variance."""
    if c.degenerate:
        return c.degenerate
    if c.level == "item" and 2 <= c.n_seeds < MIN_SEEDS_FOR_POWER:
        return f"{c.n_seeds} seeds: seed variance has {c.n_seeds - 1} df"
    return _num(c.mde)


def outcome_text(c: Comparison) -> str:
    """The outcome with its tolerance, and for an inconclusive one the units that would decide (or more seeds, when
    the seed-to-seed variation alone keeps the CI wider than the tolerance)."""
    if not c.outcome:
        return c.verdict
    tol = f" (±{c.tolerance:.3g})" if np.isfinite(c.tolerance) else " (no tolerance: unbounded metric)"
    needed = ""
    if c.outcome == "inconclusive" and c.items_needed and c.items_needed > c.n_clusters:
        needed = f"; ~{c.items_needed:,} {'clusters' if c.n_clusters < c.n else 'items'} would decide"
    elif (c.outcome == "inconclusive" and c.items_needed is None and np.isfinite(c.tolerance) and c.level == "item"
          and c.n_seeds >= MIN_SEEDS_FOR_POWER and c.se_seeds > 0):
        needed = "; more seeds would decide, not more items"
    return f"{c.outcome}{tol}{needed}"


def display_comparisons(comparisons: Sequence[Comparison], *, confidence: float = 0.95) -> pd.DataFrame:
    """Every comparison as formatted strings: Δ with CI and per-seed Δs, the test, its SE, raw/permutation/adjusted
    p, d_z, MDE, and the outcome against the report's tolerance."""
    return pd.DataFrame([{
        "A": c.a, "B": c.b, "Metric": display_name(c.metric), "Items": str(c.n), "Seeds": str(c.n_seeds),
        "mean A": _num(c.mean_a), "mean B": _num(c.mean_b),
        f"Δ = A − B [{confidence:.0%} CI]": _interval(c.diff, c.ci_low, c.ci_high, signed=True),
        "Δ per seed": seed_deltas(c), "SE": _num(c.se),
        "Test": c.test, "p": format_p(c.p), "perm. p": format_p(c.p_permutation),
        "adj. p": format_p(c.p_adjusted) + ("" if c.counted else " (not in m)"),
        "Item test": c.item_test, "item-test p": format_p(c.p_item_test),
        "d_z": _num(c.effect_size, 2), "MDE": mde_text(c), "cluster SE": _num(c.cluster_se),
        "Outcome": outcome_text(c), "Note": c.note or DASH,
    } for c in comparisons])


def comparison_label(a: str, b: str) -> str:
    """"A − B", or A alone when B is the constant 0 (a trend's slope)."""
    return a if b == "0" else f"{a} − {b}"


def compact_comparisons(comparisons: Sequence[Comparison], *, confidence: float = 0.95,
                        outcomes: Sequence[str] | None = None) -> pd.DataFrame:
    """A family's table for the report's body: what was compared, on which metric, Δ with its CI, the adjusted p,
    the MDE, the items × seeds behind it and the outcome (with the items that would decide an inconclusive one).
    `outcomes` replaces `outcome_text` (a contrast's verdict, or a dash where a report predates outcomes)."""
    outcomes = list(outcomes) if outcomes is not None else [outcome_text(c) for c in comparisons]
    return pd.DataFrame([{
        "Comparison (A − B)": comparison_label(c.a, c.b), "Metric": display_name(c.metric),
        f"Δ [{confidence:.0%} CI]": _interval(c.diff, c.ci_low, c.ci_high, signed=True),
        "adj. p": format_p(c.p_adjusted) + ("" if c.counted else " (not in m)"),
        "MDE": mde_text(c), "Items × seeds": items_by_seeds(c.n, c.n_seeds), "Outcome": outcome,
    } for c, outcome in zip(comparisons, outcomes)], columns=compact_columns(confidence))


def compact_columns(confidence: float = 0.95) -> list[str]:
    """The columns of `compact_comparisons`, also those of an empty one."""
    return ["Comparison (A − B)", "Metric", f"Δ [{confidence:.0%} CI]", "adj. p", "MDE", "Items × seeds", "Outcome"]


# A slope or a difference of differences is read by its sign, whatever the metric's direction: (positive,
# negative, within the tolerance).
CONTRAST_VERDICTS = {
    TREND: ("rises with the level", "falls with the level", "flat within"),
    INTERACTION: ("larger effect at this level", "smaller effect at this level", "no interaction beyond"),
}


def contrast_verdict(kind: str, c: Comparison) -> str:
    """What a contrast found, in words that fit its kind: a trend rises or falls or is flat within the tolerance,
    an interaction's effect is larger or smaller or absent within it, else inconclusive; a level contrast keeps
    the comparison's outcome (regressed, equivalent, improved, inconclusive by the metric's direction)."""
    if kind not in CONTRAST_VERDICTS:
        return outcome_text(c)
    positive, negative, within = CONTRAST_VERDICTS[kind]
    if c.verdict != NOT_SIGNIFICANT:
        return positive if c.diff > 0 else negative
    return f"{within} ±{c.tolerance:.3g}" if c.outcome == "equivalent" else "inconclusive"


def compact_contrasts(family: ContrastFamily, *, confidence: float = 0.95) -> pd.DataFrame:
    """`compact_comparisons` of a contrast family, each row's outcome in the words of its kind (`contrast_verdict`)."""
    return compact_comparisons(family.comparisons, confidence=confidence,
                               outcomes=[contrast_verdict(family.kind, c) for c in family.comparisons])


def contrast_table(study: Study, family: ContrastFamily) -> pd.DataFrame:
    """One numeric row per contrast: what was contrasted, its statistics, and each side's training cost."""
    rows = []
    for c in family.contrasts:
        row = c.to_dict()
        for side, trials in (("a", c.trials_a), ("b", c.trials_b)):
            row.update({f"{k}_{side}": v for k, v in trials_cost(study, trials).items()})
        rows.append(row)
    return pd.DataFrame(rows)


def _pair(a: float, b: float, digits: int) -> str:
    return DASH if not (np.isfinite(a) or np.isfinite(b)) else f"{_num(a, digits)} / {_num(b, digits)}"


def display_contrasts(study: Study, family: ContrastFamily, *, confidence: float = 0.95) -> pd.DataFrame:
    """A contrast family as formatted strings: the levels, the statistics of `display_comparisons`, and
    (for level contrasts) peak memory and training time of the level beside the reference."""
    stats = display_comparisons(family.comparisons, confidence=confidence)
    delta = f"Δ = A − B [{confidence:.0%} CI]"
    level = lambda v: DASH if v is None else format_value(v)  # noqa: E731
    used = lambda c: f"{c.combinations[0]}/{c.combinations[1]}" if c.averaged_over else DASH  # noqa: E731
    columns: dict[str, list] = {"Arm": [c.arm for c in family.contrasts]}
    if family.kind == TREND:
        columns["Levels"] = [", ".join(map(format_value, c.level)) for c in family.contrasts]
        columns["Scale"] = [c.scale for c in family.contrasts]
        columns["Combinations"] = [used(c) for c in family.contrasts]
        columns[f"slope [{confidence:.0%} CI]"] = list(stats[delta])
    elif family.kind == INTERACTION:
        columns[family.by] = [f"{level(c.by_level)} vs {level(c.by_reference)}" for c in family.contrasts]
        columns[family.factor] = [f"{level(c.level)} vs {level(c.reference)}" for c in family.contrasts]
        columns["Combinations"] = [used(c) for c in family.contrasts]
        columns["Δ at level"] = [_signed(c.comparison.mean_a) for c in family.contrasts]
        columns["Δ at reference"] = [_signed(c.comparison.mean_b) for c in family.contrasts]
        columns[f"difference of Δs [{confidence:.0%} CI]"] = list(stats[delta])
    else:
        if family.by:
            columns[family.by] = [level(c.by_level) for c in family.contrasts]
        columns["Level (A)"] = [level(c.level) for c in family.contrasts]
        columns["Reference (B)"] = [level(c.reference) for c in family.contrasts]
        columns["Combinations"] = [used(c) for c in family.contrasts]
        columns["mean A"] = [_num(c.comparison.mean_a) for c in family.contrasts]
        columns["mean B"] = [_num(c.comparison.mean_b) for c in family.contrasts]
        columns[delta] = list(stats[delta])
    for name in ("Δ per seed", "Items", "Seeds", "Test", "SE", "adj. p", "d_z", "MDE"):
        columns[name] = list(stats[name])
    # "better" and "worse" read wrongly for a slope or a difference of differences: say what was found.
    columns["Outcome"] = [contrast_verdict(family.kind, c.comparison) for c in family.contrasts]
    if family.kind not in (TREND, INTERACTION):
        costs = [(trials_cost(study, c.trials_a), trials_cost(study, c.trials_b)) for c in family.contrasts]
        columns["peak mem GB (A / B)"] = [_pair(a["peak_mem_gb"], b["peak_mem_gb"], 2) for a, b in costs]
        columns["trial wall s (A / B)"] = [_pair(a["trial_wall_s"], b["trial_wall_s"], 1) for a, b in costs]
        columns["train device-s (A / B)"] = [_pair(a["train_device_s"], b["train_device_s"], 1) for a, b in costs]
    columns["Note"] = list(stats["Note"])
    return pd.DataFrame(columns)


# ---------------------------------------------------------------- rendering

def markdown_table(display: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown pipe table of string cells."""
    def cell(x: object) -> str:
        return str(x).replace("|", "\\|").replace("\n", " ")

    header = "| " + " | ".join(cell(c) for c in display.columns) + " |"
    rule = "|" + "|".join("---" for _ in display.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in display.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


_TEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_TEX_UNICODE = {"Δ": r"$\Delta$", "±": r"$\pm$", "−": "$-$", "—": "---", "×": r"$\times$", "≥": r"$\geq$",
                "≤": r"$\leq$", "<": r"$<$", ">": r"$>$", "‖": r"$\Vert$", "≈": r"$\approx$", "…": r"\ldots{}"}
_TEX_SYMBOLS = {"d_z": "$d_z$"}  # whole words that are symbols (Cohen's d_z), not names with an underscore
_TEX = {**_TEX_SPECIAL, **_TEX_UNICODE, **_TEX_SYMBOLS}
_TEX_PATTERN = re.compile("|".join([*(rf"\b{re.escape(k)}\b" for k in _TEX_SYMBOLS),
                                    *(re.escape(k) for k in [*_TEX_SPECIAL, *_TEX_UNICODE])]))
# A cell that is a number, an interval, a pair or a count ("+0.411 [+0.354, +0.459]", "1.50 / 1.03", "50 × 3",
# "<0.001"), with an optional remark in parentheses ("1.000 (not in m)"): right-aligned in LaTeX.
_NUMERIC_CELL = re.compile(r"[<>≤≥]?[−+\-]?\d[\d\s.,+\-−\[\]/×%]*(\s*\([^()]*\))?")


def tex_escape(text: object) -> str:
    """Plain text as LaTeX: special characters escaped, the symbols the tables use in math mode."""
    return _TEX_PATTERN.sub(lambda m: _TEX[m.group()], str(text))


def _numeric_column(column: pd.Series) -> bool:
    """Numbers (by dtype, or every cell but the dashes reads as a number): a column to right-align."""
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        return True
    cells = [str(x).strip() for x in column if str(x).strip() not in ("", DASH)]
    return bool(cells) and all(_NUMERIC_CELL.fullmatch(x) for x in cells)


def column_format(display: pd.DataFrame) -> str:
    """The LaTeX column spec of a display table: `r` for a numeric column, `l` for text."""
    return "".join("r" if _numeric_column(display.iloc[:, i]) else "l" for i in range(display.shape[1]))


def table_label(study: str, table: str) -> str:
    """`tab:<study>-<table>` (e.g. `tab:quant_delta-cpu-headline`): two experiments' tables in one paper keep
    apart. Characters a LaTeX label cannot hold become `-`."""
    return "tab:" + re.sub(r"[^A-Za-z0-9_.:+-]", "-", f"{study}-{table}")


def latex_table(display: pd.DataFrame, *, caption: str, label: str) -> str:
    r"""A booktabs LaTeX table of string cells, numeric columns right-aligned, set in `\small` and shrunk to the
    line width when wider (never enlarged). The preamble needs `\usepackage{booktabs}` and
    `\usepackage{graphicx}` (for `\resizebox`)."""
    escaped = display.map(tex_escape)
    escaped.columns = [tex_escape(c) for c in display.columns]
    tabular = escaped.to_latex(index=False, escape=False, column_format=column_format(display)).rstrip("\n")
    return "\n".join([r"\begin{table}[htbp]", r"\centering", rf"\caption{{{tex_escape(caption)}}}",
                      rf"\label{{{label}}}", r"\small",
                      # \width is the tabular's natural width: shrink it to \linewidth, leave a narrow one alone.
                      r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%",
                      tabular + "}", r"\end{table}", ""])


# Written numbers keep 10 significant digits: plenty for any re-analysis, and short of the last-bit noise of
# vectorised sums, which differ between CPUs (SIMD widths): a report re-renders byte for byte on another machine.
SIGNIFICANT_DIGITS = 10


def stable_numbers(value: Any) -> Any:
    """`value` with every finite float in it (in dicts, lists and tuples too) rounded to `SIGNIFICANT_DIGITS`."""
    if isinstance(value, (float, np.floating)):
        return float(f"{value:.{SIGNIFICANT_DIGITS}g}") if math.isfinite(value) else float(value)
    if isinstance(value, dict):
        return {k: stable_numbers(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(stable_numbers(v) for v in value)
    return value


def stable_csv(frame: pd.DataFrame) -> str:
    """`frame` as CSV with its numbers rounded by `stable_numbers`."""
    return frame.map(stable_numbers).to_csv(index=False)


def write_table(numeric: pd.DataFrame, display: pd.DataFrame, stem: Path, *, caption: str,
                label: str | None = None, full: pd.DataFrame | None = None, title: str = "") -> TableFiles:
    """Write `stem`.csv (numeric, every column), `stem`.md and `stem`.tex (`display`) and, given the `full` display
    table, `stem`-full.md and `stem`-full.tex; return the paths. `label` is the LaTeX label (`table_label`; default
    `tab:<stem name>`), the full table's gets `-full`; `title` names the table in a document (default: `caption`)."""
    stem = Path(stem)
    label = label or f"tab:{stem.name}"
    full_stem = stem.with_name(f"{stem.name}-full")
    files = TableFiles(stem.with_suffix(".csv"), stem.with_suffix(".md"), stem.with_suffix(".tex"),
                       full_stem.with_suffix(".md") if full is not None else None,
                       full_stem.with_suffix(".tex") if full is not None else None, title=title or caption)
    write_atomic(files.csv, stable_csv(numeric))
    write_atomic(files.markdown, markdown_table(display))
    write_atomic(files.latex, latex_table(display, caption=caption, label=label))
    if full is not None:
        write_atomic(files.full_markdown, markdown_table(full))
        write_atomic(files.full_latex, latex_table(full, caption=f"{caption} (full table)", label=f"{label}-full"))
    return files
