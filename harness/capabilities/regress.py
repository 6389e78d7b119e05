"""Regression check of general capabilities: is the candidate worse than the baseline, beyond noise?

Both models answer the same lm-eval items (`harness.capabilities.evaluate`); items pair by (task, doc_id)
and each task is judged on lm-eval's per-item accuracy (`acc`), by `harness.capabilities.stats`:

* difference = candidate accuracy - baseline accuracy, over the paired items;
* its 95% CI: paired percentile bootstrap over items (`harness.stats.paired.paired_bootstrap_ci`);
* p: TWO-SIDED exact McNemar test on the discordant items (`harness.stats.paired.mcnemar_exact`), then
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

from harness.capabilities.refs import evaluate_refs, parse_model_ref
from harness.capabilities.stats import TEST_DESCRIPTION, TaskComparison, compare_results, judge
from harness.capabilities.tasks import resolve_tasks
from harness.errors import HarnessError
from harness.results import write_json


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


def regress(baseline_ref: str, candidate_ref: str, tasks: list[str], *, tolerance: float = 0.02,
            alpha: float = 0.05, limit: int | None = None, out_dir: Path | None = None, batch_size: int = 8,
            device: str | None = None, correction: Literal["holm", "none"] = "holm") -> RegressionReport:
    """Evaluate baseline and candidate on `tasks` and judge each task (see the module docstring).

    References are anything `harness.capabilities.refs.parse_model_ref` takes (a base-model name,
    `random:<arch>`, a model directory, a trial directory). All input is checked before a model
    loads; two references on the same base share one loaded model (the adapter goes on and off).
    With `out_dir`: `baseline/lm_eval/…`, `candidate/lm_eval/…` (per-item rows) and `regress.json`.
    """
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


def _trial_line(role: str, ref: str) -> str | None:
    """`candidate: trial-0003 of rank_ablation: r=8 alpha=2r seed=1` for a trial directory, else None."""
    from harness.labels import compact
    from harness.results import RESULT_FILE, read_json

    path = Path(ref)
    if not (path / RESULT_FILE).is_file():
        return None
    return f"{role}: {path.name} of {path.absolute().parent.name}: {compact(read_json(path / RESULT_FILE).get('params'))}"


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
    for role, ref in (("baseline", baseline), ("candidate", candidate)):
        line = _trial_line(role, ref)
        if line:
            console.print(line, highlight=False)
    if report.regressions:
        console.print(f"[bold red]regression[/bold red] on {', '.join(c.task for c in report.regressions)}")
    else:
        console.print("[green]no regression[/green]")
    if out is not None:
        console.print(f"wrote {Path(out) / 'regress.json'}")
    return report.exit_code
