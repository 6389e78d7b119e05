"""SFT → GRPO: continue the SFT adapter with TRL's GRPOTrainer, rewarded by the task's own per-item scorer.

Each step samples `num_generations` answers to a training prompt, scores every answer with the task's
scorer against the item's reference (e.g. field accuracy plus JSON validity on `realestate`) and moves the
policy towards the answers that beat their group's mean. Prompts come from the training side only; the
frozen held-out split is never sampled. With `beta > 0` the KL term is taken against the SFT policy (TRL
copies the adapter into a frozen reference adapter, as DPO does), never against the adapter-free base.
"""

from __future__ import annotations

from typing import Any, Callable

from harness.errors import DataError
from harness.spec.stages.grpo import GRPOSpec
from harness.stages import register_runner
from harness.stages.context import TrialContext

REF_ADAPTER = "ref"  # the frozen copy TRL 1.15's GRPOTrainer makes of a PEFT adapter when beta > 0


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


@register_runner("grpo")
def run(ctx: TrialContext, cfg: GRPOSpec) -> None:
    """Continue the SFT adapter with GRPO, rewarded by the task's per-item scores on training prompts."""
    from datasets import Dataset

    from harness.backends import drop_adapter

    ctx.snapshot_arm("sft", adapter_dir="adapter-sft")  # evaluated and saved before GRPO changes it
    examples = ctx.data.train if ctx.train_examples is None else ctx.train_examples
    examples = examples[: cfg.max_prompts] if cfg.max_prompts else examples
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
            "GRPOTrainer", model, ctx.tok, dataset, cfg, ctx.scratch("grpo-checkpoints"), seed=ctx.spec.train.seed,
            config=config, tokens_per_step=cfg.batch_size * (ctx.spec.train.max_length + cfg.max_completion_length),
            trainer_kwargs={"reward_funcs": scorer_rewards(ctx.scorer, metrics)}, on_log=ctx.log_rows("grpo"),
            tokens=lambda trainer, epochs: int(trainer.state.num_input_tokens_seen))
    finally:
        drop_adapter(model, REF_ADAPTER)
    ctx.add_training("grpo", outcome, "grpo_log.jsonl", prompts=len(examples), reward=cfg.reward)
