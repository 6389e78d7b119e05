"""Catastrophic forgetting: lm-eval general-capability tasks on the base (once per study) and the tuned model."""

from __future__ import annotations

from pydantic import Field

from harness.config.sections import _Strict
from harness.spec.stages import Phase, register_stage


class ForgettingSpec(_Strict):
    """General-capability check with lm-eval after training: base vs tuned, item by item."""

    tasks: list[str] = Field(min_length=1, description="lm-eval task names or the harness's local *_local tasks")
    limit: int | None = Field(None, gt=0, description="items per task")
    batch_size: int = Field(8, gt=0)
    tolerance: float = Field(0.02, ge=0, lt=1)
    alpha: float = Field(0.05, gt=0, lt=1)


register_stage("forgetting", Phase.PROBE, order=20, section="forgetting", model=ForgettingSpec, legacy=True,
               example={"tasks": ["arc_easy_local"], "limit": 4},
               blocks=("forgetting",))
