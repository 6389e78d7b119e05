"""Supervised fine-tuning: a fresh LoRA adapter on the base, trained on the training pairs (`train.method: sft`)."""

from __future__ import annotations

from harness.backends.base import SFT_TRAINER
from harness.stages.context import TrialContext
from harness.stages.registry import Phase, register_stage


def run(ctx: TrialContext, cfg: None) -> None:
    """Train the adapter; with `eval.dev_every_steps`, score the dev split as it goes (the dev learning curve,
    which the pruner reads)."""
    spec = ctx.spec
    ctx.peft_model = ctx.backend.add_adapter(ctx.model, spec.lora)
    outcome = ctx.backend.train_sft(ctx.peft_model, ctx.tok, ctx.training_examples, spec.train, ctx.scratch("checkpoints"),
                                    on_log=ctx.log_rows("train", at_step=True), on_step=ctx.dev_checkpoints("sft"))
    ctx.add_training("sft", outcome, "train_log.jsonl")


# The adapter's shape and its optimiser: what is trained, never what the untouched base answers.
register_stage("sft", Phase.TRAIN, method="sft", produces="tuned", trainer=SFT_TRAINER, loss="cross-entropy on the completion, nats/token",
               training_only=("lora.", "train."), run=run)
