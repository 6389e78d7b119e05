"""The experiment spec: the core sections (`harness.config`) plus one section per stage (`harness.stages`,
each declares its own), loaded from YAML with errors that name file, line and field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, create_model, model_validator

from harness.backends.registry import unknown_backend
from harness.config import (DataSpec, Distribution, EndpointSpec, EvalSpec, LoraSpec, ModelSpec, OptimArgs,
                            PricingSpec, ReportSpec, SearchSpec, TrackingSpec, TrainSpec, deep_merge,
                            set_dotted)
from harness.config.loading import FieldConflict, _describe
from harness.config.sections import _Strict
from harness.errors import SpecError
from harness.evaluation.metrics import check_metrics
from harness.stages import registry as stages
from harness.spec.fingerprint import spec_dump, spec_fingerprint

__all__ = ["DataSpec", "Distribution", "EndpointSpec", "EvalSpec", "ExperimentSpec", "LoraSpec", "ModelSpec",
           "OptimArgs", "PricingSpec", "ReportSpec", "SearchSpec", "TrackingSpec", "TrainSpec", "deep_merge", "load_spec",
           "set_dotted", "spec_dump", "spec_fingerprint", "validate_spec"]


class _CoreSpec(_Strict):
    name: str
    description: str = Field(description="the question this experiment answers, in one sentence")
    model: ModelSpec = Field(default_factory=ModelSpec)
    data: DataSpec = Field(default_factory=DataSpec)
    lora: LoraSpec = Field(default_factory=LoraSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    eval: EvalSpec = Field(default_factory=EvalSpec)
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)
    search: SearchSpec = Field(default_factory=SearchSpec)
    pricing: PricingSpec = Field(default_factory=PricingSpec)
    report: ReportSpec = Field(default_factory=ReportSpec)
    presets: dict[str, dict[str, Any]] = Field(default_factory=dict, description="named overrides, e.g. smoke")

    source: Path | None = Field(None, exclude=True)

    @model_validator(mode="after")
    def _consistent(self) -> "_CoreSpec":
        # Choosing among trials on held-out scores would leak the held-out split into selection.
        if self.search.sampler != "grid" and self.data.dev_size == 0:
            raise ValueError("a sampler selects trials: set data.dev_size so it selects on a dev split")
        if self.search.pruner != "none" and (self.data.dev_size == 0 or self.eval.dev_every_steps is None):
            raise ValueError("a pruner needs data.dev_size and eval.dev_every_steps (intermediate dev scores)")
        if self.eval.dev_every_steps is not None and self.data.dev_size == 0:  # the held-out split is never scored mid-training
            raise FieldConflict("eval.dev_every_steps scores the dev split during training: set data.dev_size",
                                ("eval", "dev_every_steps"))
        try:
            check_metrics(self.eval.metrics, self.eval)
        except ValueError as e:
            raise FieldConflict(str(e), ("eval", "metrics")) from None
        unknown = unknown_backend(self.train.backend)  # whether it can run here, the trial's preflight says
        if unknown:
            raise FieldConflict(unknown, ("train", "backend"))
        methods = stages.train_methods()
        if self.train.method not in methods:
            raise ValueError(f"train.method '{self.train.method}' is not a training method "
                             f"(registered: {', '.join(methods)})")
        for stage, cfg in stages.pipeline(self):  # each stage's own cross-section rules
            if stage.check is not None:
                stage.check(self, cfg)
        stages.planned_arms(self)  # no two stages write one arm or block
        return self


def _section_field(stage: stages.Stage) -> tuple[Any, Any]:
    if stage.many:
        return stage.model, Field(default_factory=list, description=stage.description)
    return stage.model | None, Field(None, description=stage.description)


# One section per declared stage (`dpo:`, `quantize:`, ...): a new stage file adds its section here.
ExperimentSpec = create_model(
    "ExperimentSpec", __base__=_CoreSpec, __module__=__name__,
    **{stage.section: _section_field(stage) for stage in stages.sections()})


# ---------------------------------------------------------------- loading with locations


def load_spec(path: str | Path, preset: str | None = None, overrides: dict[str, Any] | None = None) -> ExperimentSpec:
    """Load and validate an experiment YAML; `preset` applies a named block of `presets:`."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise SpecError(f"cannot read spec: {e.strerror}", where=path) from e
    try:
        root = yaml.compose(text)
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else path
        raise SpecError(f"not valid YAML: {getattr(e, 'problem', e)}", where=where) from e
    if not isinstance(raw, dict):
        raise SpecError("a spec is a mapping of sections (name, description, model, data, ...)", where=path)
    raw.setdefault("name", path.stem)
    if preset is not None:
        presets = raw.get("presets") or {}
        if preset not in presets:
            known = ", ".join(sorted(presets)) or "none"
            raise SpecError(f"no preset '{preset}' (known: {known})", where=path)
        raw = deep_merge(raw, presets[preset])
    for key, value in (overrides or {}).items():
        raw = set_dotted(raw, key, value)
    return validate_spec(raw, source=str(path), root=root)


def validate_spec(raw: dict[str, Any], source: str = "<spec>", root: yaml.Node | None = None) -> ExperimentSpec:
    try:
        spec = ExperimentSpec.model_validate(raw)
    except ValidationError as e:
        raise SpecError("invalid spec\n" + _describe(e, source, root)) from e
    spec.source = Path(source) if source != "<spec>" else None
    return spec
