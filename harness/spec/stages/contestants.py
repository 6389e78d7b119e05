"""Contestants: other models (any OpenAI-compatible endpoint) answering the same held-out prompts."""

from __future__ import annotations

from pydantic import Field

from harness.config.endpoint import EndpointSpec
from harness.config.loading import FieldConflict
from harness.config.sections import _Strict
from harness.spec.stages import Phase, register_stage


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


register_stage("contestants", Phase.PROBE, order=30, section="contestants", model=list[ContestantSpec], many=True,
               example=[{"name": "frontier", "endpoint": {"url": "http://127.0.0.1:8080/v1", "model": "m"}}],
               legacy=True, arms=lambda spec, cfg: _arms(cfg))
