"""`label`: classification outputs, where the answer is one label ("positive", "spam", "B")."""

from __future__ import annotations

import re
from typing import Any

from harness.evaluation.metrics import HIGHER, ScoreSpec, register_metric
from harness.evaluation.scoring import normalise_text

_EDGE = re.compile(r"^[\W_]+|[\W_]+$")


def first_label(text: str) -> str:
    """The first line of `text`, normalised, without surrounding punctuation or quotes ("**Spam**." → "spam")."""
    line = next((part for part in text.strip().splitlines() if part.strip()), "")
    return _EDGE.sub("", normalise_text(line.removeprefix("Label:").removeprefix("label:")))


@register_metric("label", "label_accuracy: the first line of the prediction is the reference label "
                          "(case, whitespace and surrounding punctuation ignored)",
                 scores=[ScoreSpec("label_accuracy", "label accuracy", HIGHER)])
def label_accuracy(prediction: str, reference: str, options: Any) -> dict[str, float]:
    return {"label_accuracy": float(first_label(prediction) == first_label(reference))}
