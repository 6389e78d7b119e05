"""Paired statistics of two models' lm-eval answers: per task, the accuracy difference, its CI, the McNemar
test and the regression verdict (see `harness.capabilities.regress` for the rules)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from harness.errors import HarnessError


TEST_DESCRIPTION = ("two-sided exact McNemar test on paired items, Holm-adjusted across tasks; regression = "
                    "candidate - baseline < -tolerance and adjusted p < alpha")


@dataclass
class TaskComparison:
    """Baseline vs candidate on one task, over the items both answered."""

    task: str
    n: int
    baseline_acc: float
    candidate_acc: float
    diff: float  # candidate - baseline
    ci_low: float
    ci_high: float
    baseline_only: int  # items the baseline got right and the candidate wrong
    candidate_only: int  # items the candidate got right and the baseline wrong
    p_value: float  # two-sided exact McNemar
    p_adjusted: float | None = None  # Holm across the tasks of the run
    baseline_acc_norm: float | None = None
    candidate_acc_norm: float | None = None
    regression: bool = False
    verdict: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _norm_mean(rows: list[dict[str, Any]]) -> float | None:
    vals = [r.get("correct_norm") for r in rows]
    return float(np.mean(vals)) if vals and all(v is not None for v in vals) else None


def compare_results(baseline, candidate, *, tasks: list[str] | None = None) -> list[TaskComparison]:
    """Pair two `CapabilityResult`s item by item, per task; no verdict yet (see `judge`).

    Raises HarnessError when a task is missing on one side, no item pairs up, or the same doc_id
    holds different items on the two sides (their lm-eval doc hashes differ).
    """
    from harness.evaluation.metrics.external import LM_EVAL_ACC
    from harness.stats.paired import mcnemar_exact, paired_bootstrap_ci

    tasks = tasks or list(baseline.tasks)
    out = []
    for task in tasks:
        if task not in baseline.tasks or task not in candidate.tasks:
            raise HarnessError(f"task '{task}' was not evaluated on both models")
        base_rows = {r["doc_id"]: r for r in baseline.rows_for(task)}
        cand_rows = {r["doc_id"]: r for r in candidate.rows_for(task)}
        ids = sorted(base_rows.keys() & cand_rows.keys())
        if not ids:
            raise HarnessError(f"task '{task}': no item was answered by both models")
        changed = [i for i in ids if base_rows[i].get("doc_hash") and cand_rows[i].get("doc_hash")
                   and base_rows[i]["doc_hash"] != cand_rows[i]["doc_hash"]]
        if changed:
            raise HarnessError(f"task '{task}': doc_id {changed[0]} holds different items for the two models "
                               f"({len(changed)} such); were they evaluated on different data?")
        a = np.array([base_rows[i]["correct"] for i in ids], dtype=float)
        b = np.array([cand_rows[i]["correct"] for i in ids], dtype=float)
        diffs = b - a
        low, high = paired_bootstrap_ci(diffs, confidence=0.95, bounds=LM_EVAL_ACC.range_of((1.0, -1.0)))
        out.append(TaskComparison(
            task=task, n=len(ids), baseline_acc=float(a.mean()), candidate_acc=float(b.mean()),
            diff=float(diffs.mean()), ci_low=low, ci_high=high,
            baseline_only=int(np.sum((a == 1) & (b == 0))), candidate_only=int(np.sum((a == 0) & (b == 1))),
            p_value=mcnemar_exact(a, b),
            baseline_acc_norm=_norm_mean([base_rows[i] for i in ids]),
            candidate_acc_norm=_norm_mean([cand_rows[i] for i in ids])))
    return out


def judge(comparisons: list[TaskComparison], *, tolerance: float, alpha: float,
          correction: Literal["holm", "none"] = "holm") -> list[TaskComparison]:
    """Set p_adjusted, regression and verdict on each comparison (in place); returns them."""
    from harness.stats.paired import holm

    if not 0 < alpha < 1:
        raise HarnessError(f"alpha must be in (0, 1), got {alpha}")
    if not 0 <= tolerance < 1:
        raise HarnessError(f"tolerance must be in [0, 1) (an accuracy difference), got {tolerance}")
    if correction not in ("holm", "none"):
        raise HarnessError(f"correction must be 'holm' or 'none', got {correction!r}")
    pvals = np.array([c.p_value for c in comparisons], dtype=float)
    adjusted = holm(pvals) if correction == "holm" else pvals
    for c, p in zip(comparisons, adjusted):
        c.p_adjusted = float(p)
        drop = c.diff < -tolerance
        significant = p < alpha
        c.regression = bool(drop and significant)
        if c.regression:
            c.verdict = "REGRESSION"
        elif drop:
            c.verdict = "ok: drop not significant"
        elif c.diff < 0 and significant:
            c.verdict = "ok: drop within tolerance"
        else:
            c.verdict = "ok"
    return comparisons
