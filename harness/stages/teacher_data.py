"""Teacher-written data (YAML section `distill:`): a teacher model writes the training targets for N prompts.

The study then trains a student on those N teacher-written pairs and compares it with one trained on k·N
original pairs (grid over `distill.arm`). This is data distillation, not logit distillation. The teacher is any OpenAI-compatible endpoint; its calls are cached on disk, so a
rerun (or a run that failed part way) pays only for what is not cached yet.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.data.example import Example
from harness.errors import DataError
from harness.evaluation.endpoint import Completion, Endpoint, latency_percentiles
from harness.spec.stages.teacher_data import DistillPlan, DistillSpec
from harness.stages import register_runner
from harness.stages.context import TrialContext

REWRITE_TEMPLATE = (
    "Rewrite the reference answer below so that it answers the task exactly in the format the task asks "
    "for. Keep its facts; do not add new ones. Reply with the rewritten answer only.\n\n"
    "Task:\n{prompt}\n\nReference answer:\n{reference}"
)


@dataclass
class DistillResult:
    """The distilled examples and what the teacher calls cost (`cost_usd`: all N calls at the teacher's
    prices; `paid_usd`: only the calls made in this run, the rest came from the cache)."""

    examples: list[Example]
    completions: list[Completion]
    input_tokens: int
    output_tokens: int
    cost_usd: float
    paid_usd: float
    cached: int
    teacher: str
    mode: str
    latency: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """Everything but the examples, for a manifest or metrics file."""
        return {"teacher": self.teacher, "mode": self.mode, "n": len(self.examples),
                "input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
                "cost_usd": self.cost_usd, "paid_usd": self.paid_usd, "cached_calls": self.cached,
                **self.latency}


def teacher_messages(example: Example, mode: str) -> list[dict[str, str]]:
    """What the teacher is sent for one example."""
    if mode == "answer":
        return [dict(m) for m in example.prompt]
    return [{"role": "user",
             "content": REWRITE_TEMPLATE.format(prompt=example.prompt_text, reference=example.reference)}]


def teacher_written(examples: list[Example], spec: DistillSpec, cache_dir: Path) -> DistillResult:
    """The first `spec.n` examples with their references replaced by the teacher's text (same ids and
    prompts; `meta["distilled_from"]` names the teacher model).

    A teacher call that fails for good raises `EndpointError`; every call finished before it is already
    cached, so the rerun resumes where this one stopped.
    """
    if len(examples) < spec.n:
        raise DataError(f"distillation asks for n={spec.n} prompts but only {len(examples)} training "
                        "examples were given")
    chosen = examples[:spec.n]
    with Endpoint(spec.teacher, cache_dir) as teacher:
        completions = [teacher.chat(teacher_messages(ex, spec.mode)) for ex in chosen]
    empty = [ex.id for ex, c in zip(chosen, completions) if not c.text]
    if empty:
        # Training on empty targets would silently teach the student to say nothing.
        raise DataError(f"teacher {spec.teacher.model} returned an empty answer for {len(empty)} item(s): "
                        f"{', '.join(empty[:10])}; raise teacher.max_tokens or check the teacher")
    distilled = [
        dataclasses.replace(ex, reference=c.text,
                            meta={**ex.meta, "distilled_from": spec.teacher.model, "distill_mode": spec.mode})
        for ex, c in zip(chosen, completions)
    ]
    return DistillResult(
        examples=distilled,
        completions=completions,
        input_tokens=sum(c.input_tokens for c in completions),
        output_tokens=sum(c.output_tokens for c in completions),
        cost_usd=sum(c.cost_usd for c in completions),
        paid_usd=sum(c.cost_usd for c in completions if not c.cached),
        cached=sum(c.cached for c in completions),
        teacher=spec.teacher.model,
        mode=spec.mode,
        latency=latency_percentiles(completions),
    )


@register_runner("teacher_data")
def run(ctx: TrialContext, plan: DistillPlan) -> None:
    """What SFT trains on: the teacher's n answers, or the first k*n original pairs."""
    train = ctx.data.train
    if plan.arm == "original":
        need = plan.k * plan.n
        if len(train) < need:
            raise DataError(f"distill.k*n = {need} original pairs asked for, only {len(train)} training items")
        ctx.train_examples = train[:need]
        return
    # The teacher's answers are cached per study: every seed and rerun reuses them without paying again.
    result = teacher_written(train, plan, cache_dir=ctx.study_dir / "teacher-cache")
    ctx.train_examples = result.examples
    ctx.add_block("teacher", result.summary())

