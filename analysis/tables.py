"""The write-up's tables: one row per arm (quality, Δ vs baseline, cost, speed, training) and one per comparison.

Each table exists twice: a numeric DataFrame (written as CSV, for machines) and a display DataFrame of
formatted strings (written as markdown and as a LaTeX booktabs table).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from analysis.compare import NO_DIFFERENCE, Comparison, Quality
from analysis.contrasts import INTERACTION, TREND, ContrastFamily
from analysis.load import Study
from harness.evaluation.metrics import display_name
from harness.results import write_atomic
from harness.stats.factors import format_value

ARM_COLUMNS = ["arm", "n_items", "n_seeds", "quality", "quality_ci_low", "quality_ci_high", "baseline", "delta",
               "delta_ci_low", "delta_ci_high", "p_adjusted", "verdict", "cost_per_1k_calls", "items_per_call",
               "latency_p50_s", "latency_p95_s", "device_s_per_item", "tokens_per_s", "failed_calls", "train_device_s",
               "tokens_trained", "peak_mem_gb"]


@dataclass(frozen=True)
class TableFiles:
    csv: Path
    markdown: Path
    latex: Path


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


def trials_cost(study: Study, trials: Sequence[int], arm: str | None = None) -> dict[str, float]:
    """Mean device-seconds and tokens trained, the trials' whole wall time (evals included), and peak memory,
    over `trials` (their cost blocks); with `arm`, only the trainings that arm had when it was evaluated count."""
    costs = study.costs[study.costs["trial"].isin(list(trials))] if not study.costs.empty else study.costs
    if arm is not None and not costs.empty:
        costs = _arm_share(costs, arm)
    pick = lambda col, how: (float(getattr(costs[col], how)())  # noqa: E731
                             if col in costs and costs[col].notna().any() else math.nan)
    return {"train_device_s": pick("device_s", "mean"), "trial_wall_s": pick("wall_s", "mean"),
            "tokens_trained": pick("tokens_trained", "mean"), "peak_mem_gb": pick("peak_mem_gb", "max")}


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
            "verdict": c.verdict if c else None,
            "cost_per_1k_calls": cost_per_1k_calls(arm_rows, speed["device_s_per_item"], price_per_device_hour),
            "items_per_call": speed["items_per_call"], "latency_p50_s": speed["latency_p50_s"],
            "latency_p95_s": speed["latency_p95_s"], "device_s_per_item": speed["device_s_per_item"],
            "tokens_per_s": speed["tokens_per_s"], "failed_calls": speed["failed_calls"],
            **training_cost(study, q.label)})
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
        "Verdict": table["verdict"].fillna(DASH),
        "$ / 1K calls": table["cost_per_1k_calls"].map(lambda x: _num(x, 4)),
        "items / call": table["items_per_call"].map(lambda x: _num(x, 1)),
        "p50 latency / call (s)": table["latency_p50_s"].map(_num),
        "p95 latency / call (s)": table["latency_p95_s"].map(_num),
        "device-s / item": table["device_s_per_item"].map(_num),
        "tokens/s": table["tokens_per_s"].map(lambda x: _num(x, 1)),
        "train device-s": table["train_device_s"].map(lambda x: _num(x, 1)),
        "tokens trained": table["tokens_trained"].map(_count),
        "peak mem (GB)": table["peak_mem_gb"].map(lambda x: _num(x, 2)),
    })


def display_comparisons(comparisons: Sequence[Comparison], *, confidence: float = 0.95) -> pd.DataFrame:
    """Every comparison as formatted strings: Δ with CI, the test, raw/permutation/adjusted p, d_z, MDE."""
    return pd.DataFrame([{
        "A": c.a, "B": c.b, "Metric": display_name(c.metric), "Items": str(c.n), "Seeds": str(c.n_seeds),
        "mean A": _num(c.mean_a), "mean B": _num(c.mean_b),
        f"Δ = A − B [{confidence:.0%} CI]": _interval(c.diff, c.ci_low, c.ci_high, signed=True),
        "Test": c.test, "p": format_p(c.p), "perm. p": format_p(c.p_permutation), "adj. p": format_p(c.p_adjusted),
        "Item test": c.item_test, "item-test p": format_p(c.p_item_test),
        "d_z": _num(c.effect_size, 2), "MDE": _num(c.mde), "cluster SE": _num(c.cluster_se),
        "Verdict": c.verdict, "Note": c.note or DASH,
    } for c in comparisons])


# A slope or a difference of differences is read by its sign, whatever the metric's direction: (positive,
# negative, none detected).
CONTRAST_VERDICTS = {
    TREND: ("rises with the level", "falls with the level", "no detectable trend"),
    INTERACTION: ("larger effect at this level", "smaller effect at this level", "no detectable interaction"),
}


def contrast_verdict(kind: str, c: Comparison) -> str:
    """What a contrast found, in words that fit its kind: a trend rises or falls, an interaction's effect is larger
    or smaller; a level contrast keeps the comparison's verdict (better or worse by the metric's direction)."""
    if kind not in CONTRAST_VERDICTS:
        return c.verdict
    positive, negative, none = CONTRAST_VERDICTS[kind]
    return none if c.verdict == NO_DIFFERENCE else positive if c.diff > 0 else negative


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
    for name in ("Items", "Seeds", "Test", "adj. p", "d_z", "MDE"):
        columns[name] = list(stats[name])
    # "better" and "worse" read wrongly for a slope or a difference of differences: say what was found.
    columns["Verdict"] = [contrast_verdict(family.kind, c.comparison) for c in family.contrasts]
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
                "≤": r"$\leq$", "<": r"$<$", ">": r"$>$"}
_TEX_PATTERN = re.compile("|".join(re.escape(k) for k in [*_TEX_SPECIAL, *_TEX_UNICODE]))


def tex_escape(text: object) -> str:
    """Plain text as LaTeX: special characters escaped, the symbols the tables use in math mode."""
    return _TEX_PATTERN.sub(lambda m: _TEX_SPECIAL.get(m.group(), _TEX_UNICODE.get(m.group(), "")), str(text))


def latex_table(display: pd.DataFrame, *, caption: str, label: str) -> str:
    """A booktabs LaTeX table (needs \\usepackage{booktabs}) of string cells."""
    escaped = display.map(tex_escape)
    escaped.columns = [tex_escape(c) for c in display.columns]
    return escaped.to_latex(index=False, escape=False, caption=tex_escape(caption), label=label,
                            column_format="l" * len(display.columns))


def write_table(numeric: pd.DataFrame, display: pd.DataFrame, stem: Path, *, caption: str) -> TableFiles:
    """Write `stem`.csv (numeric), `stem`.md and `stem`.tex (display); return the paths."""
    stem = Path(stem)
    files = TableFiles(stem.with_suffix(".csv"), stem.with_suffix(".md"), stem.with_suffix(".tex"))
    write_atomic(files.csv, numeric.to_csv(index=False))
    write_atomic(files.markdown, markdown_table(display))
    write_atomic(files.latex, latex_table(display, caption=caption, label=f"tab:{stem.name}"))
    return files
