"""Helpers shared by tests/unit/test_distill.py and tests/e2e/test_distill.py."""

from __future__ import annotations

from harness.data.example import Example
from harness.evaluation.endpoint import EndpointSpec

SYSTEM = {"role": "system", "content": "Answer in one short sentence."}


QUESTIONS = ["What is 2+2?", "Name a colour.", "What is the capital of Italy?", "Name a fruit."]


def examples(n: int = 4) -> list[Example]:
    return [Example(id=f"ex{i}", prompt=[SYSTEM, {"role": "user", "content": q}], reference=f"original {i}",
                    cluster=f"c{i % 2}", meta={"source": "unit"})
            for i, q in enumerate(QUESTIONS[:n])]


def teacher(url: str, **kw) -> EndpointSpec:
    base = {"url": url, "model": "teacher", "max_tokens": 16, "backoff_base_s": 0.01, "timeout_s": 120,
            "price_input_per_m": 3.0, "price_output_per_m": 15.0}
    return EndpointSpec(**{**base, **kw})
