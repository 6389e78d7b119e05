"""Per-item metrics of a generated answer against its reference, for JSON-answer and plain-text tasks.

A scorer is `(prediction, reference) -> {metric: value}`; evaluation averages each metric over items.

For a reference that is a JSON object (`score`, the task scorer "json"):

- `json_valid`: 1.0 when the whole prediction, stripped of surrounding whitespace and of one ``` fence
  around it, is exactly one JSON object. Strict: trailing text makes it 0.
- `exact_match`: 1.0 when that strict parse equals the parsed reference (key order does not matter).
- `field_accuracy`: the fraction of the reference's top-level keys whose value the prediction reproduces,
  and `field.<key>` (0/1) for each key. Lenient: small models often run on after the answer, so this
  reads the first complete JSON object anywhere in the prediction. Numbers match within the relative
  `numeric_tolerance`, strings ignoring case and whitespace, lists as multisets of such strings.

For any other reference (`score_text`, the task scorer "text"), only `exact_match` on normalised text.
The metric registry (`harness.evaluation.metrics`) runs these and the spec's other metrics.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any, Callable

Scorer = Callable[[str, str], dict[str, float]]

_FENCE = re.compile(r"^```[\w-]*[ \t]*\n?(.*?)\n?```$", re.DOTALL)
_DECODER = json.JSONDecoder()


def normalise_text(text: str) -> str:
    """Case-folded, with runs of whitespace collapsed and the ends stripped."""
    return " ".join(text.split()).casefold()


def parse_object(text: str) -> dict[str, Any] | None:
    """The JSON object that is the whole of `text` (whitespace and one ``` fence allowed), else None."""
    text = text.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def first_object(text: str) -> dict[str, Any] | None:
    """The first complete JSON object in `text`, ignoring anything before or after it, else None."""
    start = text.find("{")
    while start != -1:
        try:
            value, _ = _DECODER.raw_decode(text, start)
        except ValueError:
            value = None
        if isinstance(value, dict):
            return value
        start = text.find("{", start + 1)
    return None


def _atom(value: Any) -> str:
    """A list element as a comparable string: normalised text, or canonical JSON for anything else."""
    return normalise_text(value) if isinstance(value, str) else json.dumps(value, sort_keys=True)


def values_match(predicted: Any, reference: Any, numeric_tolerance: float = 0.0) -> bool:
    """Whether a predicted field value reproduces the reference value (see the module docstring)."""
    if isinstance(reference, bool) or isinstance(predicted, bool):  # bool is an int in Python
        return predicted is reference
    if isinstance(reference, (int, float)):
        return (isinstance(predicted, (int, float))
                and abs(predicted - reference) <= numeric_tolerance * abs(reference))
    if isinstance(reference, str):
        return isinstance(predicted, str) and normalise_text(predicted) == normalise_text(reference)
    if isinstance(reference, list):
        return isinstance(predicted, list) and Counter(map(_atom, predicted)) == Counter(map(_atom, reference))
    if isinstance(reference, dict):
        return (isinstance(predicted, dict) and predicted.keys() == reference.keys()
                and all(values_match(predicted[k], v, numeric_tolerance) for k, v in reference.items()))
    return predicted == reference  # None


def score_text(prediction: str, reference: str) -> dict[str, float]:
    """`exact_match` of the normalised texts."""
    return {"exact_match": float(normalise_text(prediction) == normalise_text(reference))}


def score(prediction: str, reference: str, *, numeric_tolerance: float = 0.0) -> dict[str, float]:
    """JSON metrics when the reference is a JSON object, else `score_text` (see the module docstring)."""
    expected = parse_object(reference)
    if expected is None:
        return score_text(prediction, reference)
    strict = parse_object(prediction)
    found = strict if strict is not None else first_object(prediction)
    fields = {f"field.{key}": float(found is not None and key in found
                                    and values_match(found[key], value, numeric_tolerance))
              for key, value in expected.items()}
    accuracy = sum(fields.values()) / len(fields) if fields else float(found is not None)
    return {"json_valid": float(strict is not None), "exact_match": float(strict == expected and strict is not None),
            "field_accuracy": accuracy, **fields}
