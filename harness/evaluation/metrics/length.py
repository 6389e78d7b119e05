"""`length`: how long the prediction is, in whitespace-separated words (for length drift between arms)."""

from __future__ import annotations

import math
from typing import Any

from harness.evaluation.metrics import NEITHER, ScoreSpec, register_metric


# Descriptive: a longer or shorter answer is neither better nor worse in itself (a task that wants a length
# says so with a format rule, whose pass rate has a direction).
@register_metric("length", "words: the prediction's length in whitespace-separated words",
                 scores=[ScoreSpec("words", "length (words)", NEITHER, 0.0, math.inf)])
def length(prediction: str, reference: str, options: Any) -> dict[str, float]:
    return {"words": float(len(prediction.split()))}
