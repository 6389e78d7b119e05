"""The base model prompted with k solved training examples (YAML `base_fewshot: {k: 3}`, or `base_fewshot: 3`):
arm `base_fewshot`.

A base that never writes the answer's format scores 0 and "Δ vs base" then mostly measures the format; a
few-shot base is the honest untuned baseline. The k demonstrations are the first k items of the training
split (never held-out items), shown as earlier user/assistant turns of the same chat, each answered with its
reference; the system prompt stays first. Like `base`, it is evaluated once per study and cached, and the
report compares the final arm with it."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from harness.data.example import Example
from harness.errors import DataError
from harness.results import base_eval_key, cached_rows
from harness.stages.context import TrialContext
from harness.stages.registry import Phase, final_arm, register_stage

ARM = "base_fewshot"


class FewShotSpec(BaseModel):
    """`base_fewshot:` the base model with k solved training examples in its prompt (arm `base_fewshot`)."""

    model_config = ConfigDict(extra="forbid")
    k: int = Field(gt=0, le=64, description="solved training examples shown before each held-out prompt")

    @model_validator(mode="before")
    @classmethod
    def _bare_k(cls, value: Any) -> Any:
        return {"k": value} if isinstance(value, int) and not isinstance(value, bool) else value


def with_demonstrations(example: Example, demos: list[Example]) -> Example:
    """`example` with `demos` as earlier turns: system prompt first, then each demo's question and answer."""
    system = [m for m in example.prompt[:1] if m["role"] == "system"]
    turns: list[dict[str, str]] = []
    for demo in demos:
        turns += [m for m in demo.prompt if m["role"] != "system"]
        turns.append({"role": "assistant", "content": demo.reference})
    rest = example.prompt[len(system):]
    return Example(id=example.id, prompt=[*system, *turns, *rest], reference=example.reference,
                   cluster=example.cluster, origin=example.origin, meta=example.meta)


def demonstrations(ctx: TrialContext, k: int) -> list[Example]:
    train = ctx.data.train
    if len(train) < k:
        raise DataError(f"base_fewshot: {k} needs {k} training examples; the training split has {len(train)}")
    return train[:k]


def run(ctx: TrialContext, cfg: FewShotSpec) -> None:
    demos = demonstrations(ctx, cfg.k)
    key = hashlib.sha256(json.dumps([base_eval_key(ctx.spec, ctx.data.split.split_hash), cfg.k,
                                     [d.to_json() for d in demos]], sort_keys=True).encode()).hexdigest()[:16]
    cache = ctx.study_dir / "base-eval" / f"fewshot-{key}.jsonl"
    rows = cached_rows(cache, lambda: ctx.evaluate(ARM, [with_demonstrations(ex, demos) for ex in ctx.heldout],
                                                   model=ctx.model))
    ctx.add_arm(ARM, rows, "untuned", model=ctx.model)


register_stage("base_fewshot", Phase.BEFORE, order=60, section="base_fewshot", model=FewShotSpec,
               example={"k": 2}, arms=lambda spec, cfg: {ARM: "untuned"},
               pairs=lambda spec, cfg: [(final_arm(spec), ARM)], run=run)
