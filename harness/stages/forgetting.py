"""Catastrophic forgetting: lm-eval general-capability tasks on the base (once per study) and the tuned model."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from harness.config.sections import ADDED_LATER, _Strict
from harness.errors import HarnessError
from harness.results import forgetting_base_key
from harness.stages.context import TrialContext
from harness.stages.registry import Phase, register_stage


class ForgettingSpec(_Strict):
    """General-capability check with lm-eval after training: base vs tuned, item by item."""

    tasks: list[str] = Field(min_length=1, description="lm-eval task names or the harness's local *_local tasks")
    limit: int | None = Field(None, gt=0, description="items per task")
    batch_size: int = Field(8, gt=0)
    tolerance: float = Field(0.02, description="the largest accuracy loss that does not matter, in (0, 1): a task "
                                                "is equivalent when its 95% CI lies inside ±tolerance")
    alpha: float = Field(0.05, gt=0, lt=1)
    divergence_text: str = Field(
        "tasks", description="text the tuned model's per-token divergence from the base (KL, top-1 agreement, "
        "Δ log-likelihood) is measured on: 'tasks' (each forgetting item's question and correct answer, from the "
        "tasks' own data), a path to a .jsonl file of {\"text\": ...} rows, or 'none'",
        json_schema_extra=ADDED_LATER)

    @field_validator("tolerance", mode="before")
    @classmethod
    def _tolerance(cls, value: Any) -> float:
        from harness.stats.equivalence import check_tolerance

        return check_tolerance(value, upper=1, where="forgetting.tolerance")


def _tasks_have_data(spec, f: ForgettingSpec) -> None:
    """Before any trial: each task's items are here (local subsets) or lm-eval can fetch its own task."""
    from harness.capabilities.tasks import resolve_tasks

    from harness.capabilities.divergence import check_source

    resolve_tasks(f.tasks)
    check_source(f.divergence_text)


def run(ctx: TrialContext, f: ForgettingSpec) -> None:
    """lm-eval on the base (once per study) and on the tuned model in memory; paired per item."""
    from harness.capabilities.evaluate import CapabilityResult, evaluate_capabilities
    from harness.capabilities.stats import compare_results, judge

    key = forgetting_base_key(ctx.spec.model.model_dump(mode="json"), f.tasks, f.limit)
    base_dir = ctx.study_dir / "forgetting-base" / key
    model, tok = ctx.peft_model, ctx.tok
    try:
        base = CapabilityResult.read(base_dir)
    except HarnessError:
        with model.disable_adapter():  # the untouched base, without reloading it
            base = evaluate_capabilities(model, tok, f.tasks, limit=f.limit, batch_size=f.batch_size,
                                         out_dir=base_dir, label="base")
    tuned = evaluate_capabilities(model, tok, f.tasks, limit=f.limit, batch_size=f.batch_size,
                                  out_dir=ctx.trial_dir, label="tuned")
    comparisons = judge(compare_results(base, tuned), tolerance=f.tolerance, alpha=f.alpha,
                        where="forgetting.tolerance")
    # `regression` stays for the readers of older trials; `outcome` is the three-valued verdict.
    ctx.add_block("forgetting", {
        c.task: {"base_acc": c.baseline_acc, "tuned_acc": c.candidate_acc, "diff": c.diff, "ci": [c.ci_low, c.ci_high],
                 "p": c.p_value, "p_adjusted": c.p_adjusted, "n": c.n, "regression": c.regression,
                 "outcome": c.outcome, "tolerance": c.tolerance, "items_needed": c.items_needed}
        for c in comparisons})
    if f.divergence_text != "none":
        from harness.capabilities.divergence import adapter_divergence, divergence_path, summary, texts_for
        from harness.results import write_jsonl

        rows = adapter_divergence(model, texts_for(f.divergence_text, f.tasks, f.limit, tok))
        write_jsonl(divergence_path(ctx.trial_dir), rows)
        ctx.add_block("forgetting_divergence", summary(rows, f.divergence_text))


register_stage("forgetting", Phase.PROBE, order=20, section="forgetting", model=ForgettingSpec, legacy=True,
               example={"tasks": ["arc_easy_local"], "limit": 4},
               blocks=("forgetting", "forgetting_divergence"), run=run, preflight=_tasks_have_data)
