"""SFT → GRPO: continue the SFT adapter with TRL's GRPOTrainer, rewarded by the task's own per-item scorer."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from harness.config import OptimArgs
from harness.spec.stages import Phase, register_stage


class GRPOSpec(OptimArgs):
    """The `grpo:` block: which scores reward an answer and how GRPO samples and steps."""

    reward: dict[str, float] = Field(default_factory=lambda: {"field_accuracy": 1.0, "json_valid": 0.5},
                                     description="per-item metric of the task's scorer → its weight in the reward")
    learning_rate: float = Field(5e-6, gt=0)
    batch_size: int = Field(8, gt=0, description="sampled answers per step (a multiple of num_generations)")
    num_generations: int = Field(4, ge=2, description="answers sampled per prompt (the group)")
    max_completion_length: int = Field(160, gt=0)
    temperature: float = Field(1.0, gt=0)
    beta: float = Field(0.0, ge=0, description="KL coefficient against the SFT policy (0: no reference forward)")
    max_prompts: int | None = Field(None, gt=0, description="train on the first N training prompts")
    logging_steps: int = Field(1, gt=0)

    @field_validator("reward")
    @classmethod
    def _some_reward(cls, v: dict[str, float]) -> dict[str, float]:
        if not v:
            raise ValueError("reward is empty: name at least one per-item metric, e.g. {field_accuracy: 1.0}")
        return v

    @model_validator(mode="after")
    def _whole_groups(self) -> "GRPOSpec":
        if (self.batch_size * self.grad_accum) % self.num_generations:
            raise ValueError(f"batch_size*grad_accum ({self.batch_size * self.grad_accum}) must be a multiple of "
                             f"num_generations ({self.num_generations}): every group is sampled whole")
        return self


register_stage("grpo", Phase.CONTINUE, section="grpo", model=GRPOSpec, arms=lambda spec, cfg: {"sft": "stage"},
               example={"num_generations": 2, "batch_size": 2, "max_completion_length": 4, "max_prompts": 2,
                        "max_steps": 1},
               produces="grpo", after="sft")
