"""Quantization delta: the tuned model merged, then NF4 (CUDA) and each GGUF type, on the same held-out prompts."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from harness.config.sections import ADDED_LATER, _Strict
from harness.stages.context import TrialContext
from harness.stages.registry import Phase, register_stage


class QuantizeSpec(_Strict):
    """Quantization delta after training: the merged model vs NF4 (CUDA) vs each GGUF type, same prompts."""

    types: list[str] = Field(default_factory=lambda: ["q8_0", "q4_k_m"], min_length=1)
    n_ctx: int | None = Field(None, gt=0)
    tolerance: float = Field(0.02, json_schema_extra=ADDED_LATER,
                             description="the largest change of the headline metric that does not matter, in its "
                                         "own units: a quantized arm is equivalent to the merged model when the "
                                         "paired 95% CI lies inside ±tolerance")

    @field_validator("tolerance", mode="before")
    @classmethod
    def _tolerance(cls, value: Any) -> float:
        from harness.stats.equivalence import check_tolerance

        return check_tolerance(value, where="quantize.tolerance")


def _tolerance_within_the_metric(spec, cfg: QuantizeSpec) -> None:
    """A tolerance as wide as the headline metric's whole range would call any two models equivalent."""
    from harness.evaluation.metrics import score_spec
    from harness.stats.equivalence import check_tolerance

    metric = score_spec(spec.eval.metric)
    check_tolerance(cfg.tolerance, upper=metric.high - metric.low, where="quantize.tolerance")


def run(ctx: TrialContext, cfg: QuantizeSpec) -> None:
    """Arms `merged`, `nf4` (where CUDA is) and one per GGUF type, every one fed the same rendered prompts."""
    from harness.export.quant_delta import QUANT_FILE, quant_delta
    from harness.results import read_json

    ev = ctx.spec.eval
    arms = quant_delta(ctx.spec.model.base, ctx.tok, ctx.trial_dir / "adapter", ctx.heldout, ctx.scorer,
                       ctx.trial_dir / "quant", types=tuple(cfg.types), max_new_tokens=ev.max_new_tokens,
                       batch_size=ev.batch_size, n_ctx=cfg.n_ctx)
    sizes = read_json(ctx.trial_dir / "quant" / QUANT_FILE)["arms"]  # each model's own: weights or GGUF file
    for arm, rows in arms.items():
        ctx.add_arm(arm, rows, "derived", model_bytes=sizes.get(arm, {}).get("size_bytes"))


register_stage("quantize", Phase.PROBE, order=10, section="quantize", model=QuantizeSpec, legacy=True,
               example={"types": ["q8_0"]}, check=_tolerance_within_the_metric,
               arms=lambda spec, cfg: {arm: "derived" for arm in ("merged", "nf4", *cfg.types)}, run=run)
