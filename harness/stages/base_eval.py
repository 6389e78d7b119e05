"""The untouched base model on the held-out split: arm `base`, evaluated once per study and cached."""

from __future__ import annotations

from harness.results import base_eval_key, cached_rows
from harness.stages.context import TrialContext
from harness.stages.registry import Phase, register_stage


def run(ctx: TrialContext, cfg: None) -> None:
    """Arm `base`: every trial of the study with the same model, split, prompt and eval settings shares it."""
    cache = ctx.study_dir / "base-eval" / f"{base_eval_key(ctx.spec, ctx.data.split.split_hash)}.jsonl"
    ctx.add_arm("base", cached_rows(cache, lambda: ctx.evaluate("base", model=ctx.model)), "untuned", model=ctx.model)


register_stage("base_eval", Phase.BEFORE, enabled=lambda spec: spec.eval.compare_base,
               arms=lambda spec, cfg: {"base": "untuned"}, run=run)
