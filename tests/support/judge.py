"""Helpers shared by tests/unit/test_judge.py and tests/e2e/test_judge.py."""

from __future__ import annotations

from harness.data.example import Example

RUBRIC = {"text": "Closer to the reference in content and form.", "scale": {"min": 1, "max": 5}}


def judged_items(n: int) -> list[Example]:
    return [Example(id=f"i{i}", prompt=[{"role": "system", "content": "sys"}, {"role": "user", "content": f"facts {i}"}],
                    reference=f"listing {i}", cluster=f"c{i % 2}") for i in range(n)]


def judged_arms(items: list[Example], tuned_chrf: list[float]) -> dict[str, list[dict]]:
    def row(arm, ex, text, chrf):
        return {"item_id": ex.id, "arm": arm, "prediction": text, "reference": ex.reference, "cluster": ex.cluster,
                "scores": {"chrf": chrf, "format_ok": 1.0}}
    return {"tuned": [row("tuned", ex, f"tuned answer {ex.id}", c) for ex, c in zip(items, tuned_chrf)],
            "base": [row("base", ex, f"base answer {ex.id}", 0.5) for ex in items]}
