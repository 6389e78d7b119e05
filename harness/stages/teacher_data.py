"""What the first training sees in a teacher-vs-data study (YAML section `distill:`, grid over `distill.arm`).

`distilled`: a teacher endpoint writes the training targets for the first N prompts (sequence-level
distillation); `logits`: the first N prompts, trained by the `kd` stage on a teacher model's token
distributions (the arm chooses `train.method: kd`, so one grid key carries all the arms and a report contrasts
them as levels of one factor, one Holm family); `original_n`: the first N original pairs, the same optimiser
steps as the teacher arms (teacher quality without more data); `original`: the first k·N original pairs (more
data). The teacher endpoint is any OpenAI-compatible server; its calls are cached on disk, so a rerun (or a run
that failed part way) pays only for what is not cached yet. Only the `distilled` arm calls it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from harness.config.endpoint import EndpointSpec
from harness.data.example import Example
from harness.errors import DataError
from harness.evaluation.endpoint import Completion, Endpoint, latency_percentiles
from harness.stages.context import TrialContext
from harness.stages.registry import Phase, register_stage


class DistillSpec(BaseModel):
    """`answer`: the teacher answers each training prompt itself. `rewrite`: the teacher gets the prompt
    and the original reference and rewrites the reference in the required format."""

    model_config = ConfigDict(extra="forbid")

    teacher: EndpointSpec
    n: int = Field(ge=1, description="how many training prompts the teacher handles (the first n given)")
    mode: Literal["answer", "rewrite"] = "answer"


class DistillPlan(DistillSpec):
    """Teacher-written data vs more data: train on the teacher's answers to the first n prompts
    (`arm: distilled`), on a teacher's logits for them (`logits`, the `kd` stage), on the first n original
    pairs (`original_n`) or on the first k*n (`original`); grid over `distill.arm`."""

    k: int = Field(4, ge=1, description="the original-data arm trains on k*n pairs")
    arm: Literal["distilled", "logits", "original_n", "original"] = "distilled"


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


def train_size(spec, plan: DistillPlan, n: int) -> int:
    """How many pairs the first training sees: n (teacher answers, logits or originals), or k*n originals."""
    return min(n, plan.k * plan.n if plan.arm == "original" else plan.n)


def chooses_method(spec, plan: DistillPlan) -> str | None:
    """The logits arm trains with the `kd` stage; the others with `train.method` (SFT)."""
    return "kd" if plan.arm == "logits" else None


def check(spec, plan: DistillPlan) -> None:
    from harness.config.loading import FieldConflict

    if plan.arm == "logits" and getattr(spec, "kd", None) is None:
        raise FieldConflict("arm 'logits' trains on a teacher's logits: add a kd: section naming the teacher",
                            ("distill", "arm"))


def run(ctx: TrialContext, plan: DistillPlan) -> None:
    """What the first training sees: the teacher's n answers, or the first n (or k*n) original pairs."""
    train = ctx.data.train
    if plan.arm != "distilled":
        need = plan.k * plan.n if plan.arm == "original" else plan.n
        if len(train) < need:
            raise DataError(f"distill.arm {plan.arm}: {need} original pairs asked for, only {len(train)} training "
                            "items")
        ctx.train_examples = train[:need]
        return
    # The teacher's answers are cached per study: every seed and rerun reuses them without paying again.
    result = teacher_written(train, plan, cache_dir=ctx.study_dir / "teacher-cache")
    ctx.train_examples = result.examples
    ctx.add_block("teacher", result.summary())


register_stage("teacher_data", Phase.DATA, section="distill", model=DistillPlan, legacy=True, blocks=("teacher",),
               example={"teacher": {"url": "http://127.0.0.1:8080/v1", "model": "teacher", "max_tokens": 16},
                        "n": 2, "k": 2},
               training_only=("distill.",), train_size=train_size, chooses_method=chooses_method, check=check,
               run=run)  # the base model never sees its data
