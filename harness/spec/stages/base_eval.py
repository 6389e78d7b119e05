"""The untouched base model on the held-out split: arm `base`, evaluated once per study and cached."""

from __future__ import annotations

from harness.spec.stages import Phase, register_stage

register_stage("base_eval", Phase.BEFORE, enabled=lambda spec: spec.eval.compare_base,
               arms=lambda spec, cfg: {"base": "untuned"})
