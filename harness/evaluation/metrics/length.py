"""`length`: how long the prediction is, in whitespace-separated words (for length drift between arms)."""

from __future__ import annotations

from typing import Any

from harness.evaluation.metrics import register_metric


@register_metric("length", "words: the prediction's length in whitespace-separated words")
def length(prediction: str, reference: str, options: Any) -> dict[str, float]:
    return {"words": float(len(prediction.split()))}
