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
    ctx.objective = ctx.dev_score()
    every, steps = ctx.spec.eval.dev_every_steps, ctx.trainings[0].outcome.steps
    if ctx.on_dev_metric and not (every and steps % every == 0):  # else already reported at this step
        ctx.on_dev_metric(ctx.objective, steps)


register_stage("select", Phase.SELECT, run=run)
