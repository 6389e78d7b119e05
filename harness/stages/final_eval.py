"""The finished model on the frozen held-out split: the final arm (`tuned`, or the last training stage's)."""

from __future__ import annotations

from harness.stages.context import TrialContext
from harness.stages.registry import Phase, final_arm, register_stage


def run(ctx: TrialContext, cfg: None) -> None:
    ctx.add_arm(ctx.final_arm, ctx.evaluate(ctx.final_arm), "final", model=ctx.peft_model)


register_stage("final_eval", Phase.EVALUATE, arms=lambda spec, cfg: {final_arm(spec): "final"}, run=run)
