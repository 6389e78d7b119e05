"""`exact_match`: the prediction equals the reference up to case and whitespace."""

from __future__ import annotations

from typing import Any

from harness.evaluation.metrics import HIGHER, ScoreSpec, register_metric
from harness.evaluation.scoring import score_text

EXACT_MATCH = ScoreSpec("exact_match", "exact match", HIGHER)


@register_metric("exact_match", "1 when the prediction equals the reference, ignoring case and runs of whitespace",
                 scores=[EXACT_MATCH])
def exact_match(prediction: str, reference: str, options: Any) -> dict[str, float]:
    return score_text(prediction, reference)
