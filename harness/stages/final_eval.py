"""The finished model on the frozen held-out split: the final arm (`tuned`, or the last training stage's)."""

from __future__ import annotations

from harness.stages import register_runner
from harness.stages.context import TrialContext


@register_runner("final_eval")
def run(ctx: TrialContext, cfg: None) -> None:
    ctx.add_arm(ctx.final_arm, ctx.evaluate(ctx.final_arm), "final")
