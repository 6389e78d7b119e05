"""`json`: the JSON-answer scores (json_valid, exact_match, field_accuracy, field.<key>); see `harness.evaluation.scoring`."""

from __future__ import annotations

from typing import Any

from harness.evaluation.metrics import register_metric
from harness.evaluation.scoring import score


@register_metric("json", "JSON answers: json_valid, exact_match, field_accuracy and field.<key> per reference key")
def json_fields(prediction: str, reference: str, options: Any) -> dict[str, float]:
    return score(prediction, reference)
