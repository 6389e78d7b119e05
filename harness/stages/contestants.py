"""Contestants: other models (any OpenAI-compatible endpoint) answering the same held-out prompts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from harness.config.endpoint import EndpointSpec
from harness.config.loading import FieldConflict
from harness.config.sections import _Strict
from harness.stages.context import TrialContext
from harness.stages.registry import Phase, register_stage


class ContestantSpec(_Strict):
    """Another model answering the same held-out prompts: any OpenAI-compatible endpoint."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="its arm name in results and reports")
    endpoint: EndpointSpec


def _arms(contestants: list[ContestantSpec]) -> dict[str, str]:
    names = [c.name for c in contestants]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise FieldConflict(f"contestant name '{name}' is given twice: each contestant is its own arm",
                                ("contestants", i, "name"))
    return {name: "endpoint" for name in names}


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


register_stage("contestants", Phase.PROBE, order=30, section="contestants", model=list[ContestantSpec], many=True,
               example=[{"name": "frontier", "endpoint": {"url": "http://127.0.0.1:8080/v1", "model": "m"}}],
               legacy=True, arms=lambda spec, cfg: _arms(cfg), run=run)
