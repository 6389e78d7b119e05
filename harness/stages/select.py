"""After all training: keep the final adapter, and score the dev split, the objective trials are selected on."""

from __future__ import annotations

from harness.stages.context import TrialContext
from harness.stages.registry import Phase, register_stage


def run(ctx: TrialContext, cfg: None) -> None:
    adapter_dir = ctx.trial_dir / "adapter"
    ctx.peft_model.save_pretrained(adapter_dir)
    ctx.adapter_bytes = sum(p.stat().st_size for p in adapter_dir.rglob("*") if p.is_file())
    if not ctx.data.dev:  # no dev split: nothing to select on (the held-out split never is)
        return
    steps = sum(t.outcome.steps for t in ctx.trainings)
    last = ctx.dev_curve[-1] if ctx.dev_curve else None
    if last is not None and last["step"] == steps:  # scored at the last step already: the same adapter
        ctx.objective = last["value"]
    else:
        ctx.objective = ctx.dev_score()
        if ctx.dev_curve:  # the curve ends at the final adapter
            ctx.record_dev(ctx.trainings[-1].stage, steps, ctx.objective)
        elif ctx.on_dev_metric:
            ctx.on_dev_metric(ctx.objective, steps)


register_stage("select", Phase.SELECT, run=run)
