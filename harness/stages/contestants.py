"""Contestants: other models (any OpenAI-compatible endpoint) answering the same held-out prompts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.spec.stages.contestants import ContestantSpec
from harness.stages import register_runner
from harness.stages.context import TrialContext


@register_runner("contestants")
def run(ctx: TrialContext, contestants: list[ContestantSpec]) -> None:
    for contestant in contestants:
        ctx.add_arm(contestant.name, ask(contestant, ctx.heldout, ctx.scorer, ctx.study_dir), "endpoint")


def ask(contestant: ContestantSpec, heldout, scorer, study_dir: Path) -> list[dict[str, Any]]:
    """Every held-out prompt, one call each (per-call latency and cost); cached per study, failures per item."""
    from harness.evaluation.endpoint import Completion, Endpoint, run_many
    from harness.progress import item_progress

    with Endpoint(contestant.endpoint, study_dir / "contestant-cache") as endpoint:
        with item_progress(f"ask {contestant.name}", len(heldout)) as advance:
            def call(ep, ex):
                out = ep.chat(ex.prompt)
                advance(1)
                return out

            answers = run_many(endpoint, heldout, call)
    rows = []
    for i, (ex, a) in enumerate(zip(heldout, answers)):
        ok = isinstance(a, Completion)
        text = a.text.strip() if ok else ""
        rows.append({"item_id": ex.id, "arm": contestant.name, "prediction": text, "reference": ex.reference,
                     "scores": scorer(text, ex.reference), "latency_s": a.latency_s if ok else float("nan"),
                     "input_tokens": a.input_tokens if ok else 0, "output_tokens": a.output_tokens if ok else 0,
                     "cost_usd": a.cost_usd if ok else 0.0, "batch": i, "cluster": ex.cluster,
                     "error": None if ok else str(a)})
    return rows
