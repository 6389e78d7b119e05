"""Regression check of general capabilities: is the candidate worse than the baseline, beyond noise?

Both models answer the same lm-eval items (see `harness.forgetting`); items pair by (task, doc_id)
and each task is judged on lm-eval's per-item accuracy (`acc`):

* difference = candidate accuracy - baseline accuracy, over the paired items;
* its 95% CI: paired percentile bootstrap over items (`analysis.paired.paired_bootstrap_ci`);
* p: TWO-SIDED exact McNemar test on the discordant items (`analysis.paired.mcnemar_exact`), then
  Holm-adjusted across the tasks of the run, so the chance of any false alarm in one `regress`
  call stays at most alpha however many tasks it checks.

A task is a REGRESSION when difference < -tolerance AND Holm-adjusted p < alpha. The direction
comes from the first condition, so the test amounts to a one-sided test at alpha/2: conservative on
purpose, since this is what breaks a researcher's CI. `correction="none"` judges raw p instead.

`regress_command` is the CLI's body: it prints the table and returns the exit code (0 no
regression, 1 regression, 2 bad input).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from harness.errors import HarnessError
from harness.record import write_json

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


@dataclass
class RegressionReport:
    baseline: str
    candidate: str
    tolerance: float
    alpha: float
    correction: str
    limit: int | None
    comparisons: list[TaskComparison]
    test: str = TEST_DESCRIPTION
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def regressions(self) -> list[TaskComparison]:
        return [c for c in self.comparisons if c.regression]

    @property
    def exit_code(self) -> int:
        return 1 if self.regressions else 0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["regressed_tasks"] = [c.task for c in self.regressions]
        out["exit_code"] = self.exit_code
        return out

    def write(self, path: Path) -> Path:
        write_json(Path(path), self.to_dict())
        return Path(path)


def _norm_mean(rows: list[dict[str, Any]]) -> float | None:
    vals = [r.get("correct_norm") for r in rows]
    return float(np.mean(vals)) if vals and all(v is not None for v in vals) else None


def compare_results(baseline, candidate, *, tasks: list[str] | None = None) -> list[TaskComparison]:
    """Pair two `CapabilityResult`s item by item, per task; no verdict yet (see `judge`).

    Raises HarnessError when a task is missing on one side, no item pairs up, or the same doc_id
    holds different items on the two sides (their lm-eval doc hashes differ).
    """
    from analysis.paired import mcnemar_exact, paired_bootstrap_ci

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
        low, high = paired_bootstrap_ci(diffs, confidence=0.95)
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
    from analysis.paired import holm

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


def regress(baseline_ref: str, candidate_ref: str, tasks: list[str], *, tolerance: float = 0.02,
            alpha: float = 0.05, limit: int | None = None, out_dir: Path | None = None, batch_size: int = 8,
            device: str | None = None, correction: Literal["holm", "none"] = "holm") -> RegressionReport:
    """Evaluate baseline and candidate on `tasks` and judge each task (see the module docstring).

    References are anything `harness.forgetting.parse_model_ref` takes (a base-model name,
    `random:<arch>`, a model directory, a trial directory). All input is checked before a model
    loads; two references on the same base share one loaded model (the adapter goes on and off).
    With `out_dir`: `baseline/lm_eval/…`, `candidate/lm_eval/…` (per-item rows) and `regress.json`.
    """
    from harness.forgetting import evaluate_refs, parse_model_ref, resolve_tasks

    if limit is not None and limit < 1:
        raise HarnessError(f"limit must be a positive number of items, got {limit}")
    judge([], tolerance=tolerance, alpha=alpha, correction=correction)  # validate before the slow part
    resolve_tasks(tasks)
    base_ref, cand_ref = parse_model_ref(baseline_ref), parse_model_ref(candidate_ref)
    out_dir = Path(out_dir) if out_dir is not None else None
    dirs = [out_dir / "baseline", out_dir / "candidate"] if out_dir is not None else None
    baseline, candidate = evaluate_refs([base_ref, cand_ref], tasks, limit=limit, batch_size=batch_size,
                                        device=device, out_dirs=dirs)
    comparisons = judge(compare_results(baseline, candidate, tasks=list(baseline.tasks)),
                        tolerance=tolerance, alpha=alpha, correction=correction)
    report = RegressionReport(
        baseline=baseline_ref, candidate=candidate_ref, tolerance=tolerance, alpha=alpha, correction=correction,
        limit=limit, comparisons=comparisons,
        test=TEST_DESCRIPTION if correction == "holm" else TEST_DESCRIPTION.replace(
            ", Holm-adjusted across tasks", "").replace("adjusted p", "p"),
        meta={"baseline_model": base_ref.describe(), "candidate_model": cand_ref.describe(),
              "lm_eval_version": baseline.meta.get("lm_eval_version"),
              "benchmarks_root": baseline.meta.get("benchmarks_root")})
    if out_dir is not None:
        report.write(out_dir / "regress.json")
    return report


def render_table(report: RegressionReport):
    """The report as a rich Table: one row per task, the test and the rule in the caption."""
    from rich.table import Table

    pct = lambda x: f"{100 * x:.1f}%"  # noqa: E731
    pp = lambda x: f"{100 * x:+.1f}"  # noqa: E731
    table = Table(title=f"capability regression: {report.candidate} vs baseline {report.baseline}",
                  caption=f"{report.test}; tolerance {100 * report.tolerance:.1f} points, alpha {report.alpha}"
                          + (f"; first {report.limit} items per task" if report.limit else ""))
    for col, justify in (("task", "left"), ("n", "right"), ("baseline acc", "right"), ("candidate acc", "right"),
                         ("Δ points", "right"), ("95% CI", "right"), ("lost / gained", "right"),
                         ("McNemar p", "right"), ("adj. p" if report.correction == "holm" else "p used", "right"),
                         ("verdict", "left")):
        table.add_column(col, justify=justify)
    for c in report.comparisons:
        style = "bold red" if c.regression else None
        table.add_row(c.task, str(c.n), pct(c.baseline_acc), pct(c.candidate_acc), pp(c.diff),
                      f"[{pp(c.ci_low)}, {pp(c.ci_high)}]", f"{c.baseline_only} / {c.candidate_only}",
                      f"{c.p_value:.3g}", f"{c.p_adjusted:.3g}" if c.p_adjusted is not None else "–", c.verdict,
                      style=style)
    return table


def regress_command(baseline: str, candidate: str, tasks: str, tolerance: float = 0.02, alpha: float = 0.05,
                    limit: int | None = None, out: Path | None = Path("results") / "regress",
                    batch_size: int = 8, correction: str = "holm") -> int:
    """The `harness regress` command: run `regress`, print the table, return the exit code.

    `tasks` is a comma-separated list. Exit code 0: no regression; 1: at least one task regressed;
    2: bad input (unknown task, model or trial; the error is printed). `out=None` writes nothing.
    """
    from harness.progress import console

    try:
        names = [t.strip() for t in (tasks or "").split(",") if t.strip()]
        report = regress(baseline, candidate, names, tolerance=tolerance, alpha=alpha, limit=limit, out_dir=out,
                         batch_size=batch_size, correction=correction)  # type: ignore[arg-type]
    except HarnessError as e:
        console.print(f"[bold red]error:[/bold red] {e}", highlight=False)
        return 2
    console.print(render_table(report))
    if report.regressions:
        console.print(f"[bold red]regression[/bold red] on {', '.join(c.task for c in report.regressions)}")
    else:
        console.print("[green]no regression[/green]")
    if out is not None:
        console.print(f"wrote {Path(out) / 'regress.json'}")
    return report.exit_code
