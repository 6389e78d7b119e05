"""Supervised fine-tuning: a fresh LoRA adapter on the base, trained on the training pairs (`train.method: sft`)."""

from __future__ import annotations

from harness.backends.base import SFT_TRAINER
from harness.stages.context import TrialContext
from harness.stages.registry import Phase, register_stage


def run(ctx: TrialContext, cfg: None) -> None:
    """Train the adapter; with `eval.dev_every_steps`, report dev scores as it goes (the pruner reads them)."""
    spec = ctx.spec
    ctx.peft_model = ctx.backend.add_adapter(ctx.model, spec.lora)

    def on_step(step: int) -> None:
        every = spec.eval.dev_every_steps
        if every and ctx.data.dev and ctx.on_dev_metric and step % every == 0:
            value = ctx.dev_score()
            ctx.tracker.log({f"dev/{spec.eval.metric}": value}, step=step)
            ctx.on_dev_metric(value, step)

    outcome = ctx.backend.train_sft(ctx.peft_model, ctx.tok, ctx.training_examples, spec.train, ctx.scratch("checkpoints"),
                                    on_log=ctx.log_rows("train", at_step=True), on_step=on_step)
    ctx.add_training("sft", outcome, "train_log.jsonl")


# The adapter's shape and its optimiser: what is trained, never what the untouched base answers.
register_stage("sft", Phase.TRAIN, method="sft", produces="tuned", trainer=SFT_TRAINER, loss="cross-entropy on the completion, nats/token",
               training_only=("lora.", "train."), run=run)
