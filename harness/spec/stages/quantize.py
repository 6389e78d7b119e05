"""Quantization delta: the tuned model merged, then NF4 (CUDA) and each GGUF type, on the same held-out prompts."""

from __future__ import annotations

from pydantic import Field

from harness.config.sections import _Strict
from harness.spec.stages import Phase, register_stage


class QuantizeSpec(_Strict):
    """Quantization delta after training: the merged model vs NF4 (CUDA) vs each GGUF type, same prompts."""

    types: list[str] = Field(default_factory=lambda: ["q8_0", "q4_k_m"], min_length=1)
    n_ctx: int | None = Field(None, gt=0)


register_stage("quantize", Phase.PROBE, order=10, section="quantize", model=QuantizeSpec, legacy=True,
               example={"types": ["q8_0"]},
               arms=lambda spec, cfg: {arm: "derived" for arm in ("merged", "nf4", *cfg.types)})
