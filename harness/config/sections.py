"""The experiment's core YAML sections as pydantic models: pure data, no implementation imported.

Sections that belong to one stage (`dpo:`, `quantize:`, ...) live in that stage's file
(`harness/stages/`); `harness.spec` assembles the whole spec from these and the declared stages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class ModelSpec(_Strict):
    base: str = Field("smollm2-135m-instruct", description="local dir, hub id, embedded name or random:<arch>")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    load_in_4bit: bool = Field(False, description="QLoRA (bitsandbytes NF4); needs CUDA")


class DataSpec(_Strict):
    builtin: str | None = Field(None, description="a built-in dataset, e.g. 'realestate'")
    train: Path | None = None
    heldout: Path | None = None
    file: Path | None = Field(None, description="one file split once into train/held-out, then frozen")
    heldout_fraction: float | None = Field(None, gt=0, lt=1)
    seed: int = Field(0, description="seed of the built-in builder or of the one-file split")
    format: Literal["auto", "alpaca", "chat", "preference"] = "auto"
    train_limit: int | None = Field(None, gt=0, description="use only the first N training items")
    dev_size: int = Field(0, ge=0, description="items carved from the training side for selection")
    system_prompt: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> "DataSpec":
        pair = self.train is not None or self.heldout is not None
        single = self.file is not None
        if sum([self.builtin is not None, pair, single]) > 1:
            raise ValueError("give one of: builtin, train+heldout, or file+heldout_fraction")
        if pair and (self.train is None or self.heldout is None):
            raise ValueError("train and heldout must be given together")
        if single and self.heldout_fraction is None:
            raise ValueError("file needs heldout_fraction (e.g. 0.15)")
        if not pair and not single and self.builtin is None:
            self.builtin = "realestate"
        return self


class LoraSpec(_Strict):
    r: int = Field(16, gt=0)
    alpha: float | None = Field(None, gt=0, description="explicit lora_alpha; overrides alpha_policy")
    alpha_policy: Literal["2r", "r", "rslora"] = Field(
        "2r", description="alpha = 2r, alpha = r, or rsLoRA (scale alpha/sqrt(r) with alpha fixed, default 16)")
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear", "attention"] = "all-linear"

    @property
    def lora_alpha(self) -> float:
        if self.alpha is not None:
            return self.alpha
        return {"2r": 2.0 * self.r, "r": float(self.r), "rslora": 16.0}[self.alpha_policy]


class OptimArgs(_Strict):
    """What every training method's section shares (SFT's `train:`, `dpo:`, `grpo:`, ...)."""

    learning_rate: float = Field(2e-4, gt=0)
    epochs: float = Field(1.0, gt=0)
    max_steps: int = Field(-1, description="-1: run the epochs")
    batch_size: int = Field(4, gt=0)
    grad_accum: int = Field(1, gt=0)
    logging_steps: int = Field(5, gt=0)


class TrainSpec(OptimArgs):
    method: str = Field("sft", description="the training stage that makes the adapter (registered TRAIN stages)")
    max_length: int = Field(512, gt=0)
    seed: int = 0
    completion_only_loss: bool = True
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    lr_scheduler: str = "linear"
    gradient_checkpointing: bool | Literal["auto"] = Field(
        "auto", description="auto: recompute only as many layers as the device's memory needs")
    packing: Literal["auto", "padding_free", "bfd", "none"] = Field(
        "auto", description="padding_free: batches flattened without pad tokens (same examples per step); "
                            "bfd: TRL's best-fit packing; none: padded batches; auto: padding_free where the "
                            "attention kernel takes packed sequences natively (flash-attention, Unsloth), else none")
    # A registered backend's name: the spec checks it against the registry (config sits below backends).
    backend: str = Field(
        "auto", description="auto: Unsloth when CUDA and unsloth are present, else HF (+ Liger on CUDA)")


# Fields added to a core section after studies existed: left out of a spec's dump (fingerprint, manifest) while
# they hold their default, so adding one never changes an existing study (see `harness.spec.fingerprint.spec_dump`).
ADDED_LATER = {"added_later": True}


class FormatRule(_Strict):
    """A length or format check of a free-text answer (metric `format`): every condition given must hold."""

    name: str = Field(pattern=r"^[A-Za-z0-9_]+$", description="its score is format.<name>")
    must_match: str | None = Field(None, description="a Python regex the answer must contain (re.search)")
    must_not_match: str | None = Field(None, description="a Python regex the answer must not contain")
    min_words: int | None = Field(None, ge=0)
    max_words: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _valid(self) -> "FormatRule":
        import re

        if all(v is None for v in (self.must_match, self.must_not_match, self.min_words, self.max_words)):
            raise ValueError(f"format rule '{self.name}' checks nothing: give must_match, must_not_match, "
                             "min_words or max_words")
        for key in ("must_match", "must_not_match"):
            pattern = getattr(self, key)
            if pattern is not None:
                try:
                    re.compile(pattern)
                except re.error as e:
                    raise ValueError(f"format rule '{self.name}': {key} is not a valid regex ({e})") from None
        if self.min_words is not None and self.max_words is not None and self.min_words > self.max_words:
            raise ValueError(f"format rule '{self.name}': min_words > max_words")
        return self


class EvalSpec(_Strict):
    max_new_tokens: int = Field(160, gt=0)
    batch_size: int = Field(16, gt=0)
    compare_base: bool = True
    limit: int | None = Field(None, gt=0, description="evaluate only the first N held-out items (smoke runs)")
    metric: str = Field("field_accuracy", description="the headline metric")
    dev_every_steps: int | None = Field(None, gt=0, description="score the dev split every N optimiser steps: the dev learning curve (dev_curve.jsonl) a pruner reads")
    metrics: list[str] = Field(default_factory=list, json_schema_extra=ADDED_LATER,
                               description="registered metrics scored beside the task's own (chrf, rouge_l, ...)")
    format: list[FormatRule] = Field(default_factory=list, json_schema_extra=ADDED_LATER,
                                     description="length and format rules of free-text answers (metric 'format')")


class TrackingSpec(_Strict):
    wandb: Literal["auto", "online", "offline", "disabled"] = "auto"
    project: str = "harness"


class Distribution(_Strict):
    """A hyper-parameter distribution for a sampler: a float/int range (log optional) or choices."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    int: bool = False
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _range_or_choices(self) -> "Distribution":
        if self.choices is not None:
            if not self.choices:
                raise ValueError("choices is an empty list")
        elif self.low is None or self.high is None or self.low > self.high:
            raise ValueError("give low <= high, or choices")
        return self


class SearchSpec(_Strict):
    grid: dict[str, list[Any]] = Field(default_factory=dict, description="dotted key -> values (every combination)")
    seeds: list[int] = Field(default_factory=lambda: [0], description="every point runs once per seed")
    sampler: Literal["grid", "tpe", "random"] = "grid"
    distributions: dict[str, Distribution] = Field(default_factory=dict, description="for tpe/random")
    n_trials: int | None = Field(None, gt=0, description="points a sampler draws (each run for every seed)")
    pruner: Literal["none", "median"] = "none"

    @model_validator(mode="after")
    def _consistent(self) -> "SearchSpec":
        for key, values in self.grid.items():
            if not values:
                raise ValueError(f"grid '{key}' is an empty list")
        if not self.seeds:
            raise ValueError("seeds is an empty list")
        if self.sampler == "grid" and self.distributions:
            raise ValueError("distributions need sampler: tpe or random")
        if self.sampler != "grid" and (not self.distributions or self.n_trials is None):
            raise ValueError(f"sampler {self.sampler} needs distributions and n_trials")
        if self.sampler != "grid" and self.grid:
            raise ValueError("use either grid or a sampler with distributions, not both")
        return self


class PricingSpec(_Strict):
    device_price_per_hour: float | None = Field(None, ge=0, description="USD per device-hour for local models")


class ReportSpec(_Strict):
    """How `harness report` reads the study; it changes no trial, so it is not part of the study's fingerprint."""

    reference: dict[str, Any] = Field(
        default_factory=dict, description="per grid factor, the level every other level is contrasted with "
                                          "(default: the grid's first), e.g. {lora.r: 16}")
    tolerance: float | None = Field(
        None, gt=0, lt=1, description="equivalence margin as a share of each metric's declared range (default "
                                      "0.02): a CI inside ±it reads 'equivalent', one reaching past it 'inconclusive'")

    @field_validator("reference", mode="before")
    @classmethod
    def _dotted(cls, value: Any) -> Any:
        # `--set report.reference.lora.r=16` arrives nested as {lora: {r: 16}}: the factor is `lora.r`.
        def flat(prefix: str, node: Any, out: dict[str, Any]) -> dict[str, Any]:
            if isinstance(node, dict) and (not prefix or node):
                for k, v in node.items():
                    flat(f"{prefix}.{k}" if prefix else str(k), v, out)
            else:
                out[prefix] = node
            return out

        return flat("", value, {}) if isinstance(value, dict) else value
