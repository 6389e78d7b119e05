"""`json`: the JSON-answer scores (json_valid, exact_match, field_accuracy, field.<key>); see `harness.evaluation.scoring`."""

from __future__ import annotations

from typing import Any

from harness.evaluation.metrics import HIGHER, ScoreSpec, register_metric
from harness.evaluation.metrics.exact_match import EXACT_MATCH
from harness.evaluation.scoring import score


@register_metric("json", "JSON answers: json_valid, exact_match, field_accuracy and field.<key> per reference key",
                 scores=[ScoreSpec("json_valid", "valid JSON", HIGHER), EXACT_MATCH,
                         ScoreSpec("field_accuracy", "field accuracy", HIGHER),
                         ScoreSpec("field.*", "field {}", HIGHER)])
def json_fields(prediction: str, reference: str, options: Any) -> dict[str, float]:
    return score(prediction, reference)
