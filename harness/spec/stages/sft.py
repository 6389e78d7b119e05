"""Supervised fine-tuning: a fresh LoRA adapter on the base, trained on the training pairs (`train.method: sft`)."""

from __future__ import annotations

from harness.spec.stages import Phase, register_stage

register_stage("sft", Phase.TRAIN, method="sft", produces="tuned")
