"""After all training: keep the final adapter, and score the dev split, the objective trials are selected on."""

from __future__ import annotations

from harness.spec.stages import Phase, register_stage

register_stage("select", Phase.SELECT)
