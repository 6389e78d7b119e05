"""Quantization delta: the tuned model merged, then NF4 (CUDA) and each GGUF type, on the same held-out prompts."""

from __future__ import annotations

from pydantic import Field

from harness.config.sections import _Strict
from harness.stages import Phase, register_stage
from harness.stages.context import TrialContext


class QuantizeSpec(_Strict):
    """Quantization delta after training: the merged model vs NF4 (CUDA) vs each GGUF type, same prompts."""

    types: list[str] = Field(default_factory=lambda: ["q8_0", "q4_k_m"], min_length=1)
    n_ctx: int | None = Field(None, gt=0)


@register_stage("quantize", Phase.PROBE, order=10, section="quantize", model=QuantizeSpec, legacy=True,
                example={"types": ["q8_0"]},
                arms=lambda spec, cfg: {arm: "derived" for arm in ("merged", "nf4", *cfg.types)})
def run(ctx: TrialContext, cfg: QuantizeSpec) -> None:
    """Arms `merged`, `nf4` (where CUDA is) and one per GGUF type, every one fed the same rendered prompts."""
    from harness.export.quant_delta import quant_delta

    ev = ctx.spec.eval
    arms = quant_delta(ctx.spec.model.base, ctx.tok, ctx.trial_dir / "adapter", ctx.heldout, ctx.scorer,
                       ctx.trial_dir / "quant", types=tuple(cfg.types), max_new_tokens=ev.max_new_tokens,
                       batch_size=ev.batch_size, n_ctx=cfg.n_ctx)
    for arm, rows in arms.items():
        ctx.add_arm(arm, rows, "derived")
