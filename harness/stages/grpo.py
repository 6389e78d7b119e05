"""SFT → GRPO: continue the SFT adapter with TRL's GRPOTrainer, rewarded by the task's own per-item scorer.

Each step samples `num_generations` answers to a training prompt, scores every answer with the task's
scorer against the item's reference (e.g. field accuracy plus JSON validity on `realestate`) and moves the
policy towards the answers that beat their group's mean. Prompts come from the training side only; the
frozen held-out split is never sampled. With `beta > 0` the KL term is taken against the SFT policy (TRL
copies the adapter into a frozen reference adapter, as DPO does), never against the adapter-free base."""

from __future__ import annotations

from typing import Any, Callable

from pydantic import Field, field_validator, model_validator

from harness.config import OptimArgs
from harness.errors import DataError
from harness.stages.context import TrialContext
from harness.stages.registry import Phase, register_stage


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


LOG_FILE = "grpo_log.jsonl"
TRAINER = "GRPOTrainer"


def scorer_rewards(scorer: Callable[[str, str], dict[str, float]], metrics: list[str]) -> list[Callable]:
    """One TRL reward function per metric: the scorer's value for each sampled answer against its reference
    (TRL logs each under `rewards/<metric>/mean`)."""

    def make(metric: str) -> Callable:
        def reward(completions: list[Any], reference: list[str], **_: Any) -> list[float]:
            texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
            out = []
            for text, ref in zip(texts, reference):
                scores = scorer(text.strip(), ref)
                if metric not in scores:
                    raise DataError(f"field 'grpo.reward': '{metric}' is not a score of this task "
                                    f"(its scorer gives: {', '.join(sorted(scores))})")
                out.append(float(scores[metric]))
            return out

        reward.__name__ = metric
        return reward

    return [make(m) for m in metrics]


def run(ctx: TrialContext, cfg: GRPOSpec) -> None:
    """Continue the SFT adapter with GRPO, rewarded by the task's per-item scores on training prompts."""
    from datasets import Dataset

    from harness.backends import REF_ADAPTER, drop_adapter

    ctx.snapshot_arm("sft", adapter_dir="adapter-sft")  # evaluated and saved before GRPO changes it
    examples = ctx.training_examples[: cfg.max_prompts] if cfg.max_prompts else ctx.training_examples
    if not examples:
        raise DataError("GRPO has no training prompts to sample")
    dataset = Dataset.from_list([{"prompt": ex.prompt, "reference": ex.reference} for ex in examples])
    metrics = list(cfg.reward)
    config = dict(num_generations=cfg.num_generations, max_completion_length=cfg.max_completion_length,
                  temperature=cfg.temperature, beta=cfg.beta, reward_weights=[cfg.reward[m] for m in metrics],
                  lr_scheduler_type="linear", sync_ref_model=False)
    model = ctx.peft_model
    try:
        outcome = ctx.backend.fit(
            TRAINER, model, ctx.tok, dataset, cfg, ctx.scratch("grpo-checkpoints"), seed=ctx.spec.train.seed,
            config=config, tokens_per_step=cfg.batch_size * (ctx.spec.train.max_length + cfg.max_completion_length),
            trainer_kwargs={"reward_funcs": scorer_rewards(ctx.scorer, metrics)}, on_log=ctx.log_rows("grpo"),
            on_step=ctx.dev_checkpoints("grpo"),
            tokens=lambda trainer, epochs: int(trainer.state.num_input_tokens_seen))
    finally:
        drop_adapter(model, REF_ADAPTER)
    ctx.add_training("grpo", outcome, LOG_FILE, prompts=len(examples), reward=cfg.reward)


register_stage("grpo", Phase.CONTINUE, section="grpo", model=GRPOSpec, arms=lambda spec, cfg: {"sft": "stage"},
               example={"num_generations": 2, "batch_size": 2, "max_completion_length": 4, "max_prompts": 2,
                        "max_steps": 1},
               produces="grpo", after="sft", trainer=TRAINER, loss="GRPO loss", training_only=("grpo.",),
               log_file=LOG_FILE, diagnostics=(("reward", "mean reward of the sampled answers"),
                                               ("reward_std", "reward spread within a group"),
                                               ("frac_reward_zero_std", "share of groups with no advantage")), run=run)
