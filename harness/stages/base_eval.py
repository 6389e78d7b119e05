"""The untouched base model on the held-out split: arm `base`, evaluated once per study and cached."""

from __future__ import annotations

from harness.results import base_eval_key, read_jsonl, write_jsonl
from harness.stages import register_runner
from harness.stages.context import TrialContext


@register_runner("base_eval")
def run(ctx: TrialContext, cfg: None) -> None:
    """Arm `base`: every trial of the study with the same model, split, prompt and eval settings shares it."""
    cache = ctx.study_dir / "base-eval" / f"{base_eval_key(ctx.spec, ctx.data.split.split_hash)}.jsonl"
    rows = read_jsonl(cache) if cache.exists() else ctx.evaluate("base", model=ctx.model)
    write_jsonl(cache, rows)
    ctx.add_arm("base", rows, "untuned")
