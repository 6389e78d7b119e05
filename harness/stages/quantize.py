"""Quantization delta: the tuned model merged, then NF4 (CUDA) and each GGUF type, on the same held-out prompts."""

from __future__ import annotations

from harness.spec.stages.quantize import QuantizeSpec
from harness.stages import register_runner
from harness.stages.context import TrialContext


@register_runner("quantize")
def run(ctx: TrialContext, cfg: QuantizeSpec) -> None:
    """Arms `merged`, `nf4` (where CUDA is) and one per GGUF type, every one fed the same rendered prompts."""
    from harness.export.quant_delta import quant_delta

    ev = ctx.spec.eval
    arms = quant_delta(ctx.spec.model.base, ctx.tok, ctx.trial_dir / "adapter", ctx.heldout, ctx.scorer,
                       ctx.trial_dir / "quant", types=tuple(cfg.types), max_new_tokens=ev.max_new_tokens,
                       batch_size=ev.batch_size, n_ctx=cfg.n_ctx)
    for arm, rows in arms.items():
        ctx.add_arm(arm, rows, "derived")
