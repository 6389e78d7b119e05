"""Paired statistics of two models' lm-eval rows, the one place both the harness and `analysis` take them from.

Rows pair by doc_id: both models must have answered the same items, and where both rows carry
lm-eval's `doc_hash`, the same item under each doc_id (`pair_rows`). Per task (`compare_task`):
the accuracy difference candidate - baseline, its 95% CI (paired bootstrap over items, kept within
the range a difference of lm-eval accuracies can take: `ACC_DIFF_BOUNDS`) and the two-sided exact
McNemar p; across the tasks of one run, Holm-adjusted p and the three-valued outcome (`judge`:
`harness.stats.equivalence.decide`). The regression gate's rules are in `harness.capabilities.regress`.
`analysis.capabilities` pairs the same rows with `pair_rows` and takes them on through its own statistics
(seeds pooled).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Literal

import numpy as np

from harness.errors import HarnessError
from harness.evaluation.metrics.external import LM_EVAL_ACC
from harness.stats.equivalence import EQUIVALENT, IMPROVED, INCONCLUSIVE, REGRESSED, check_tolerance, decide
from harness.stats.paired import DEFAULT_RESAMPLES, holm, mcnemar_exact, paired_bootstrap_ci

TEST_DESCRIPTION = ("two-sided exact McNemar test on paired items, Holm-adjusted across tasks; regressed = adjusted "
                    "p < alpha with the 95% CI below 0 and past -tolerance; equivalent = the 95% CI inside "
                    "±tolerance; inconclusive = neither")
REGRESSION = "REGRESSION"
# The word a table prints for each outcome (`TaskComparison.verdict`).
VERDICTS = {REGRESSED: REGRESSION, EQUIVALENT: "equivalent", IMPROVED: "improved", INCONCLUSIVE: "inconclusive"}
# What a paired difference of lm-eval accuracies (0/1 per item) can take: the CI is kept within it.
ACC_DIFF_BOUNDS = LM_EVAL_ACC.range_of((1.0, -1.0))


def accuracy_metric(task: str) -> str:
    """The score name of a task's lm-eval accuracy, as `harness.evaluation.metrics.external` declares it."""
    return f"{task} acc"


class UnpairedRowsError(HarnessError):
    """Two models' lm-eval rows that cannot be paired honestly: different items, a changed item under one
    doc_id, or an item without a score."""


@dataclass(frozen=True)
class PairedRows:
    """Two models' per-item lm-eval correctness on one task, aligned by doc_id (in doc_id order)."""

    task: str
    doc_ids: tuple[Any, ...]
    baseline: np.ndarray  # 0/1 per item
    candidate: np.ndarray
    baseline_norm: np.ndarray | None  # acc_norm per item; None where some row has none
    candidate_norm: np.ndarray | None


def _by_doc(rows: Iterable[dict[str, Any]]) -> dict[Any, dict[str, Any]]:
    return {r["doc_id"]: r for r in rows}


def _scores(rows: dict[Any, dict[str, Any]], doc_ids: list[Any], key: str) -> np.ndarray | None:
    values = [rows[d].get(key) for d in doc_ids]
    return None if any(v is None for v in values) else np.array(values, dtype=float)


def pair_rows(task: str, baseline: Iterable[dict[str, Any]], candidate: Iterable[dict[str, Any]], *,
              names: tuple[str, str] = ("the baseline", "the candidate")) -> PairedRows:
    """Align two models' rows of one task by doc_id; `names` say who they are in an error.

    Raises `UnpairedRowsError` when no item was answered, the two answered different items (pairing
    part of them would hide what the rest did), a doc_id holds different items on the two sides (their
    lm-eval doc hashes differ), or a row has no `correct`.
    """
    base, cand = _by_doc(baseline), _by_doc(candidate)
    if not base and not cand:
        raise UnpairedRowsError(f"task '{task}': no item was answered by either model")
    only_base, only_cand = base.keys() - cand.keys(), cand.keys() - base.keys()
    if only_base or only_cand:
        raise UnpairedRowsError(
            f"task '{task}': {names[0]} and {names[1]} answered different items ({len(only_base)} only by "
            f"{names[0]}, {len(only_cand)} only by {names[1]}): pairing them would be a lie; evaluate both on "
            "the same items (the same tasks and limit)")
    doc_ids = sorted(base)
    changed = [d for d in doc_ids if base[d].get("doc_hash") and cand[d].get("doc_hash")
               and base[d]["doc_hash"] != cand[d]["doc_hash"]]
    if changed:
        raise UnpairedRowsError(f"task '{task}': doc_id {changed[0]} holds different items for {names[0]} and "
                                f"{names[1]} ({len(changed)} such); were they evaluated on different data?")
    a, b = _scores(base, doc_ids, "correct"), _scores(cand, doc_ids, "correct")
    for name, rows, values in ((names[0], base, a), (names[1], cand, b)):
        if values is None:
            missing = sum(rows[d].get("correct") is None for d in doc_ids)
            raise UnpairedRowsError(f"task '{task}': {name} has no 'correct' on {missing} items; no test may "
                                    "silently drop them: evaluate them again")
    return PairedRows(task, tuple(doc_ids), a, b, _scores(base, doc_ids, "correct_norm"),
                      _scores(cand, doc_ids, "correct_norm"))


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
    se: float = float("nan")  # SE of the mean difference (per-item SD / √n): what `items_needed` scales from
    regression: bool = False
    verdict: str = ""  # VERDICTS[outcome]
    outcome: str = ""  # harness.stats.equivalence: regressed | equivalent | improved | inconclusive
    tolerance: float | None = None
    items_needed: int | None = None  # items at this variance for a CI inside ±tolerance
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _mean(values: np.ndarray | None) -> float | None:
    return float(values.mean()) if values is not None else None


def compare_task(pair: PairedRows, *, confidence: float = 0.95, n_resamples: int = DEFAULT_RESAMPLES,
                 seed: int = 0) -> TaskComparison:
    """The paired statistics of one task: accuracies, difference, its bootstrap CI, exact McNemar p; no verdict."""
    a, b = pair.baseline, pair.candidate
    diffs = b - a
    low, high = paired_bootstrap_ci(diffs, confidence=confidence, n_resamples=n_resamples, seed=seed,
                                    bounds=ACC_DIFF_BOUNDS)
    return TaskComparison(
        task=pair.task, n=len(pair.doc_ids), baseline_acc=float(a.mean()), candidate_acc=float(b.mean()),
        diff=float(diffs.mean()), ci_low=low, ci_high=high,
        baseline_only=int(np.sum((a == 1) & (b == 0))), candidate_only=int(np.sum((a == 0) & (b == 1))),
        p_value=mcnemar_exact(a, b), se=float(diffs.std(ddof=1) / np.sqrt(diffs.size)) if diffs.size > 1 else math.nan,
        baseline_acc_norm=_mean(pair.baseline_norm), candidate_acc_norm=_mean(pair.candidate_norm))


def compare_results(baseline, candidate, *, tasks: list[str] | None = None) -> list[TaskComparison]:
    """Pair two `CapabilityResult`s item by item (`pair_rows`) and compare them per task; no verdict yet (`judge`).

    Raises HarnessError when a task is missing on one side or its rows cannot be paired.
    """
    out = []
    for task in tasks or list(baseline.tasks):
        if task not in baseline.tasks or task not in candidate.tasks:
            raise HarnessError(f"task '{task}' was not evaluated on both models")
        out.append(compare_task(pair_rows(task, baseline.rows_for(task), candidate.rows_for(task))))
    return out


def judge(comparisons: list[TaskComparison], *, tolerance: float, alpha: float,
          correction: Literal["holm", "none"] = "holm", where: str = "tolerance") -> list[TaskComparison]:
    """Set p_adjusted (Holm across `comparisons`, or raw p) and the outcome of each, in place; returns them.

    Each task is decided by `harness.stats.equivalence.decide` on its 95% CI and adjusted p. Holm guards the
    regression calls; equivalence needs no adjustment to hold for every task at once (an intersection-union
    test: all must pass). `where` names the tolerance's field or option in an error.
    """
    if not 0 < alpha < 1:
        raise HarnessError(f"alpha must be in (0, 1), got {alpha}")
    tolerance = check_tolerance(tolerance, upper=1, where=where)  # an accuracy difference: below 1
    if correction not in ("holm", "none"):
        raise HarnessError(f"correction must be 'holm' or 'none', got {correction!r}")
    pvals = np.array([c.p_value for c in comparisons], dtype=float)
    adjusted = holm(pvals) if correction == "holm" else pvals
    for c, p in zip(comparisons, adjusted):
        c.p_adjusted = float(p)
        d = decide(c.diff, c.ci_low, c.ci_high, c.p_adjusted, tolerance=tolerance, alpha=alpha, se=c.se, n=c.n)
        c.outcome, c.tolerance, c.items_needed, c.reason = d.outcome, d.tolerance, d.items_needed, d.reason
        c.verdict = VERDICTS[d.outcome]
        c.regression = d.outcome == REGRESSED
    return comparisons
