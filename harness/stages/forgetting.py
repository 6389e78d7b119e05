"""Catastrophic forgetting: lm-eval general-capability tasks on the base (once per study) and the tuned model."""

from __future__ import annotations

from harness.errors import HarnessError
from harness.results import forgetting_base_key
from harness.spec.stages.forgetting import ForgettingSpec
from harness.stages import register_runner
from harness.stages.context import TrialContext


def _tasks_have_data(spec, f: ForgettingSpec) -> None:
    """Before any trial: each task's items are here (local subsets) or lm-eval can fetch its own task."""
    from harness.capabilities.tasks import resolve_tasks

    resolve_tasks(f.tasks)


@register_runner("forgetting", preflight=_tasks_have_data)
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
    comparisons = judge(compare_results(base, tuned), tolerance=f.tolerance, alpha=f.alpha)
    ctx.add_block("forgetting", {
        c.task: {"base_acc": c.baseline_acc, "tuned_acc": c.candidate_acc, "diff": c.diff, "ci": [c.ci_low, c.ci_high],
                 "p": c.p_value, "p_adjusted": c.p_adjusted, "n": c.n, "regression": c.regression}
        for c in comparisons})
