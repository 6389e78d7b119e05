"""The finished model on the frozen held-out split: the final arm (`tuned`, or the last training stage's)."""

from __future__ import annotations

from harness.spec.stages import Phase, final_arm, register_stage

register_stage("final_eval", Phase.EVALUATE, arms=lambda spec, cfg: {final_arm(spec): "final"})
