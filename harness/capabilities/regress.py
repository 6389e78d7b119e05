"""Regression check of general capabilities: is the candidate worse than the baseline, beyond noise?

Both models answer the same lm-eval items (`harness.capabilities.evaluate`); items pair by (task, doc_id)
and each task is judged on lm-eval's per-item accuracy (`acc`), by `harness.capabilities.stats`:

* difference = candidate accuracy - baseline accuracy, over the paired items;
* its 95% CI: paired percentile bootstrap over items (`harness.stats.paired.paired_bootstrap_ci`);
* p: TWO-SIDED exact McNemar test on the discordant items (`harness.stats.paired.mcnemar_exact`), then
  Holm-adjusted across the tasks of the run, so the chance of any false alarm in one `regress`
  call stays at most alpha however many tasks it checks.

Each task gets one of three outcomes (`harness.stats.equivalence.decide`; a fourth, *improved*, for a
significant gain):

* *regressed*: Holm-adjusted p < alpha, the CI below 0 and reaching past -tolerance;
* *equivalent*: the whole 95% CI lies inside ±tolerance, so a loss of the tolerance's size is ruled out;
* *inconclusive*: neither. "No significant drop" is not "no drop": the CI still allows a loss larger than
  the tolerance, and the report says how many items, at the data's own paired variance, would decide.

`correction="none"` judges raw p instead of Holm's.

`regress_command` is the CLI's body: it prints the table and returns the exit code: 0 when every task is
equivalent (or improved), 1 when one regressed, 3 when none regressed but one is inconclusive, 2 bad input.
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
from harness.stats.equivalence import EQUIVALENT, EXIT_CODES, IMPROVED, INCONCLUSIVE, REGRESSED


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
    def inconclusive(self) -> list[TaskComparison]:
        return [c for c in self.comparisons if c.outcome == INCONCLUSIVE]

    @property
    def outcome(self) -> str:
        """Regressed if any task did, else inconclusive if any task is, else equivalent (improved if all are)."""
        if self.regressions:
            return REGRESSED
        if self.inconclusive or not self.comparisons:
            return INCONCLUSIVE
        return IMPROVED if all(c.outcome == IMPROVED for c in self.comparisons) else EQUIVALENT

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.outcome]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["outcome"] = self.outcome
        out["regressed_tasks"] = [c.task for c in self.regressions]
        out["inconclusive_tasks"] = [c.task for c in self.inconclusive]
        out["exit_code"] = self.exit_code
        return out

    def write(self, path: Path) -> Path:
        write_json(Path(path), self.to_dict())
        return Path(path)


def regress(baseline_ref: str, candidate_ref: str, tasks: list[str], *, tolerance: float = 0.02,
            alpha: float = 0.05, limit: int | None = None, out_dir: Path | None = None, batch_size: int = 8,
            device: str | None = None, correction: Literal["holm", "none"] = "holm",
            where: str = "tolerance") -> RegressionReport:
    """Evaluate baseline and candidate on `tasks` and judge each task (see the module docstring).

    References are anything `harness.capabilities.refs.parse_model_ref` takes (a base-model name,
    `random:<arch>`, a model directory, a trial directory). All input is checked before a model
    loads; two references on the same base share one loaded model (the adapter goes on and off).
    With `out_dir`: `baseline/lm_eval/…`, `candidate/lm_eval/…` (per-item rows) and `regress.json`.
    `where` names the tolerance (a spec field or an option) in its error.
    """
    if limit is not None and limit < 1:
        raise HarnessError(f"limit must be a positive number of items, got {limit}")
    judge([], tolerance=tolerance, alpha=alpha, correction=correction, where=where)  # checked before the slow part
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
                         ("verdict", "left"), ("items to decide", "right")):
        table.add_column(col, justify=justify)
    for c in report.comparisons:
        style = "bold red" if c.regression else "yellow" if c.outcome == INCONCLUSIVE else None
        table.add_row(c.task, str(c.n), pct(c.baseline_acc), pct(c.candidate_acc), pp(c.diff),
                      f"[{pp(c.ci_low)}, {pp(c.ci_high)}]", f"{c.baseline_only} / {c.candidate_only}",
                      f"{c.p_value:.3g}", f"{c.p_adjusted:.3g}" if c.p_adjusted is not None else "–", c.verdict,
                      _items_to_decide(c), style=style)
    return table


def _items_to_decide(c: TaskComparison) -> str:
    """The items the tolerance would need at this variance, where this run is inconclusive; else a dash."""
    if c.outcome != INCONCLUSIVE:
        return "–"
    return f"~{c.items_needed:,}" if c.items_needed else "?"


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

    `tasks` is a comma-separated list. Exit code 0: every task equivalent within ±tolerance (or improved);
    1: at least one task regressed; 3: none regressed but at least one is inconclusive (the items that would
    decide are printed); 2: bad input (unknown task, model or trial, a bad tolerance; the error is printed).
    `out=None` writes nothing.
    """
    from harness.progress import console

    try:
        names = [t.strip() for t in (tasks or "").split(",") if t.strip()]
        report = regress(baseline, candidate, names, tolerance=tolerance, alpha=alpha, limit=limit, out_dir=out,
                         batch_size=batch_size, correction=correction, where="--tolerance")  # type: ignore[arg-type]
    except HarnessError as e:
        console.print(f"[bold red]error:[/bold red] {e}", highlight=False)
        return 2
    console.print(render_table(report))
    for role, ref in (("baseline", baseline), ("candidate", candidate)):
        line = _trial_line(role, ref)
        if line:
            console.print(line, highlight=False)
    for line in outcome_lines(report):
        console.print(line, highlight=False)
    if out is not None:
        console.print(f"wrote {Path(out) / 'regress.json'}")
    return report.exit_code


def outcome_lines(report: RegressionReport) -> list[str]:
    """The verdict in words: which tasks regressed, which are inconclusive and what would decide them."""
    tol = f"±{100 * report.tolerance:g} points"
    if report.regressions:
        lines = [f"[bold red]regressed[/bold red] on {', '.join(c.task for c in report.regressions)} (exit 1)"]
    elif report.inconclusive:
        lines = [f"[yellow]inconclusive[/yellow]: no significant drop, but not shown equivalent within {tol} "
                 "either; this is not a pass (exit 3)"]
    else:
        lines = [f"[green]equivalent within {tol}[/green] on every task (exit 0)"]
    for c in report.inconclusive:
        lines.append(f"  {c.task}: {c.reason}")
    return lines
