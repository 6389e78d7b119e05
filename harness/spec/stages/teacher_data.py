"""Teacher-written data (YAML section `distill:`): a teacher model writes the training targets for N prompts,
compared with k·N original pairs (grid over `distill.arm`); the runner is `harness.stages.teacher_data`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from harness.config.endpoint import EndpointSpec
from harness.spec.stages import Phase, register_stage


class DistillSpec(BaseModel):
    """`answer`: the teacher answers each training prompt itself. `rewrite`: the teacher gets the prompt
    and the original reference and rewrites the reference in the required format."""

    model_config = ConfigDict(extra="forbid")

    teacher: EndpointSpec
    n: int = Field(ge=1, description="how many training prompts the teacher handles (the first n given)")
    mode: Literal["answer", "rewrite"] = "answer"


class DistillPlan(DistillSpec):
    """Teacher-written data vs more data: train on the teacher's answers to the first n prompts
    (`arm: distilled`) or on the first k*n original pairs (`arm: original`); grid over `distill.arm`."""

    k: int = Field(4, ge=1, description="the original-data arm trains on k*n pairs")
    arm: Literal["distilled", "original"] = "distilled"


register_stage("teacher_data", Phase.DATA, section="distill", model=DistillPlan, legacy=True, blocks=("teacher",),
               example={"teacher": {"url": "http://127.0.0.1:8080/v1", "model": "teacher", "max_tokens": 16},
                        "n": 2, "k": 2})
