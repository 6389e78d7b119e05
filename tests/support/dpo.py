"""Helpers shared by tests/unit/test_dpo.py and tests/e2e/test_dpo.py."""

from __future__ import annotations

import json

from harness.data.example import Example
from harness.evaluation.scoring import score


def dev_items(n: int = 6) -> list[Example]:
    return [Example(id=f"d{i}", prompt=[{"role": "user", "content": f"Item {i} as JSON, please."}],
                    reference=json.dumps({"id": i, "name": f"item {i}"}), cluster=f"c{i % 2}",
                    origin=f"dev.jsonl:{i + 1}") for i in range(n)]


def row(ex: Example, prediction: str) -> dict:
    return {"item_id": ex.id, "prediction": prediction, "reference": ex.reference,
            "scores": score(prediction, ex.reference)}
