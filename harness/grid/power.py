"""Power before a study runs: for each comparison it will make, the smallest difference its items can detect
(MDE, 80% power, two-sided alpha 0.05: `harness.stats.paired.minimum_detectable_difference`) and, where the spec
states a tolerance, the items equivalence within it would need (`harness.stats.equivalence.items_needed`).

Both scale with the SD of a paired difference, taken from the last run where there is one: the per-item rows of
the study's trials (`trial-NNNN/eval/<arm>.jsonl`, the forgetting rows in `trial-NNNN/lm_eval/` and
`forgetting-base/`), else the MDE and item count of its `report.json`; otherwise an assumption, stated: scores
in [0, 1] at p = 0.5 in two uncorrelated arms, the largest SD such a difference can have (pairing lowers it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.evaluation.metrics import score_spec
from harness.results import read_json, read_jsonl
from harness.spec import ExperimentSpec
from harness.stages.registry import final_arm, planned_arms, stage_pairs
from harness.stats.equivalence import items_needed
from harness.stats.paired import minimum_detectable_difference

# 0/1 scores at p = 0.5 in uncorrelated arms: Var(b − a) = 2·p(1 − p) = 0.5.
ASSUMED_SD = math.sqrt(0.5)
ASSUMPTION = "assumed: scores in [0, 1] at p = 0.5, arms uncorrelated (SD 0.71; pairing usually lowers it)"


@dataclass(frozen=True)
class Comparison:
    """One comparison a study's report makes: arm `a` against arm `b` on `metric`, over `n` paired items."""

    a: str
    b: str
    metric: str
    n: int | None  # None: all of an lm-eval task's items, unknown before it runs
    tolerance: float | None = None  # the spec's tolerance for it (quantize, forgetting)
    task: str | None = None  # a forgetting comparison: the lm-eval task


@dataclass(frozen=True)
class Power:
    comparison: Comparison
    n: int | None  # items (the spec's, else the last run's count for a whole lm-eval task)
    sd: float | None  # SD of a paired difference; None: no variance to go on
    basis: str  # where `sd` comes from
    mde: float | None
    items_needed: int | None


def comparisons(spec: ExperimentSpec, n_items: int) -> list[Comparison]:
    """The study's comparisons on the held-out items (`n_items` each): the final arm against the base, each
    continuing stage against the arm it continued, each contestant, each quantized form against the merged
    model; and each forgetting task, base against the final model."""
    arms = planned_arms(spec)
    metric, final = spec.eval.metric, final_arm(spec)
    out = [Comparison(final, "base", metric, n_items)] if "base" in arms else []
    out += [Comparison(a, b, metric, n_items) for a, b in stage_pairs(spec)]
    out += [Comparison(arm, final, metric, n_items) for arm, (_, role) in arms.items() if role == "endpoint"]
    q = spec.quantize
    if q is not None:
        out += [Comparison(t, "merged", metric, n_items, q.tolerance) for t in ("nf4", *q.types)]
    f = spec.forgetting
    if f is not None:
        out += [Comparison(final, "base", f"{t} acc", f.limit, f.tolerance, task=t) for t in f.tasks]
    return out


def _paired(a: dict[Any, float], b: dict[Any, float]) -> np.ndarray | None:
    both = sorted(a.keys() & b.keys(), key=str)
    return np.array([a[k] - b[k] for k in both], dtype=float) if len(both) > 1 else None


def _scores(path: Path, metric: str) -> dict[Any, float]:
    return {r["item_id"]: float(r["scores"][metric]) for r in read_jsonl(path) if metric in r.get("scores", {})}


def _correct(path: Path) -> dict[Any, float]:
    return {r["doc_id"]: float(r["correct"]) for r in read_jsonl(path) if r.get("correct") is not None}


def _trial_diffs(study_dir: Path, c: Comparison) -> np.ndarray | None:
    """The paired differences of the latest trial that has both arms' rows."""
    for trial in sorted(study_dir.glob("trial-*"), reverse=True):
        if c.task is not None:
            bases = sorted(study_dir.glob(f"forgetting-base/*/lm_eval/{c.task}.jsonl"))
            tuned = trial / "lm_eval" / f"{c.task}.jsonl"
            if tuned.exists() and bases:
                return _paired(_correct(tuned), _correct(bases[-1]))
            continue
        eval_dir = trial / "eval"
        if c.tolerance is not None:  # the quantized arms' rows, where the trial keeps them
            eval_dir = trial / "quant" / "eval" if (trial / "quant" / "eval" / f"{c.a}.jsonl").exists() else eval_dir
        pa, pb = eval_dir / f"{c.a}.jsonl", eval_dir / f"{c.b}.jsonl"
        if pa.exists() and pb.exists():
            return _paired(_scores(pa, c.metric), _scores(pb, c.metric))
    return None


def _report_sd(study_dir: Path, c: Comparison) -> tuple[float, int] | None:
    """The SD behind the MDE the study's last report gave this comparison, with its item count."""
    path = study_dir / "report.json"
    if not path.exists():
        return None
    for r in read_json(path).get("comparisons", []):
        if (r.get("a"), r.get("b"), r.get("metric")) == (c.a, c.b, c.metric) and r.get("n"):
            if r.get("mde") is None:
                return 0.0, int(r["n"])  # no spread: every pair agreed
            return float(r["mde"]) / minimum_detectable_difference(1.0, int(r["n"])), int(r["n"])
    return None


def power(spec: ExperimentSpec, n_items: int, study_dir: Path) -> list[Power]:
    """Each comparison's MDE and the items its tolerance needs, at the last run's variance or the assumption."""
    out = []
    for c in comparisons(spec, n_items):
        n, sd, basis = c.n, None, ""
        diffs = _trial_diffs(study_dir, c) if study_dir.is_dir() else None
        if diffs is not None:
            sd, basis, n = float(diffs.std(ddof=1)), f"last run: {diffs.size} paired items", n or diffs.size
        elif (found := _report_sd(study_dir, c)) is not None:
            sd, basis, n = found[0], f"last run: {study_dir.name}/report.json", n or found[1]
        else:
            spec_ = score_spec(c.metric)
            if spec_.low >= 0 and spec_.high <= 1:
                sd, basis = ASSUMED_SD, ASSUMPTION
            else:
                basis = f"no variance known: {c.metric} is not a [0, 1] score and no run has been made"
        mde = minimum_detectable_difference(sd, n) if sd is not None and n else None
        needed = (items_needed(sd / math.sqrt(n), n, c.tolerance) if sd and n and c.tolerance is not None
                  else None)
        out.append(Power(c, n, sd, basis, None if mde is None or math.isnan(mde) else mde, needed))
    return out


def power_lines(powers: list[Power]) -> list[str]:
    """One line per comparison: what it is, its items, its MDE, the tolerance's items, where the SD is from."""
    lines = []
    for p in powers:
        c = p.comparison
        what = f"{c.a} vs {c.b}, {c.metric}, " + (f"{p.n:,} items" if p.n else "all of the task's items")
        if p.mde is not None:
            figure = f"MDE {p.mde:.3f}"
        elif p.sd == 0:
            figure = "MDE undefined (every pair agreed)"
        else:
            figure = "MDE unknown"
        if c.tolerance is not None:
            figure += (f"; equivalence within ±{c.tolerance:g} needs ~{p.items_needed:,} items"
                       if p.items_needed else f"; tolerance ±{c.tolerance:g}")
        lines.append(f"{what}: {figure} ({p.basis})")
    return lines
