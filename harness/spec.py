"""Experiment specs: pydantic models loaded from YAML, with errors that name file, line and field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from harness.distill import DistillSpec
from harness.dpo import DPOSpec
from harness.endpoint import EndpointSpec
from harness.errors import SpecError


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


class TrainSpec(_Strict):
    method: Literal["sft"] = "sft"
    learning_rate: float = Field(2e-4, gt=0)
    epochs: float = Field(1.0, gt=0)
    max_steps: int = Field(-1, description="-1: run the epochs")
    batch_size: int = Field(4, gt=0)
    grad_accum: int = Field(1, gt=0)
    max_length: int = Field(512, gt=0)
    seed: int = 0
    completion_only_loss: bool = True
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    lr_scheduler: str = "linear"
    logging_steps: int = Field(5, gt=0)
    gradient_checkpointing: bool | Literal["auto"] = Field(
        "auto", description="auto: recompute only as many layers as the device's memory needs")
    packing: Literal["auto", "padding_free", "bfd", "none"] = Field(
        "auto", description="padding_free: batches flattened without pad tokens (same examples per step); "
                            "bfd: TRL's best-fit packing; none: padded batches; auto: padding_free where the "
                            "attention kernel takes packed sequences natively (flash-attention, Unsloth), else none")
    backend: Literal["auto", "hf", "unsloth"] = Field(
        "auto", description="auto: Unsloth when CUDA and unsloth are present, else HF (+ Liger on CUDA)")


class EvalSpec(_Strict):
    max_new_tokens: int = Field(160, gt=0)
    batch_size: int = Field(16, gt=0)
    compare_base: bool = True
    limit: int | None = Field(None, gt=0, description="evaluate only the first N held-out items (smoke runs)")
    metric: str = Field("field_accuracy", description="the headline metric")
    dev_every_steps: int | None = Field(None, gt=0, description="evaluate the dev split every N steps (pruning)")


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


class DistillPlan(DistillSpec):
    """Distillation vs more data: train on the teacher's answers to the first n prompts (`arm: distilled`)
    or on the first k*n original pairs (`arm: original`); grid over `distill.arm` to compare."""

    k: int = Field(4, ge=1, description="the original-data arm trains on k*n pairs")
    arm: Literal["distilled", "original"] = "distilled"


class ContestantSpec(_Strict):
    """Another model answering the same held-out prompts: any OpenAI-compatible endpoint."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="its arm name in results and reports")
    endpoint: EndpointSpec


class PricingSpec(_Strict):
    device_price_per_hour: float | None = Field(None, ge=0, description="USD per device-hour for local models")


class ForgettingSpec(_Strict):
    """General-capability check with lm-eval after training: base vs tuned, item by item."""

    tasks: list[str] = Field(min_length=1, description="lm-eval task names or the harness's local *_local tasks")
    limit: int | None = Field(None, gt=0, description="items per task")
    batch_size: int = Field(8, gt=0)
    tolerance: float = Field(0.02, ge=0, lt=1)
    alpha: float = Field(0.05, gt=0, lt=1)


class QuantizeSpec(_Strict):
    """Quantization delta after training: the merged model vs NF4 (CUDA) vs each GGUF type, same prompts."""

    types: list[str] = Field(default_factory=lambda: ["q8_0", "q4_k_m"], min_length=1)
    n_ctx: int | None = Field(None, gt=0)


class ReportSpec(_Strict):
    """How `harness report` reads the study; it changes no trial, so it is not part of the study's fingerprint."""

    reference: dict[str, Any] = Field(
        default_factory=dict, description="per grid factor, the level every other level is contrasted with "
                                          "(default: the grid's first), e.g. {lora.r: 16}")

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


class ExperimentSpec(_Strict):
    name: str
    description: str = Field(description="the question this experiment answers, in one sentence")
    model: ModelSpec = Field(default_factory=ModelSpec)
    data: DataSpec = Field(default_factory=DataSpec)
    lora: LoraSpec = Field(default_factory=LoraSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    eval: EvalSpec = Field(default_factory=EvalSpec)
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)
    search: SearchSpec = Field(default_factory=SearchSpec)
    distill: DistillPlan | None = None
    dpo: DPOSpec | None = Field(None, description="after SFT: DPO on mined (or given) preference pairs")
    contestants: list[ContestantSpec] = Field(default_factory=list, description="endpoints judged beside the model")
    pricing: PricingSpec = Field(default_factory=PricingSpec)
    forgetting: ForgettingSpec | None = None
    quantize: QuantizeSpec | None = None
    report: ReportSpec = Field(default_factory=ReportSpec)
    presets: dict[str, dict[str, Any]] = Field(default_factory=dict, description="named overrides, e.g. smoke")

    source: Path | None = Field(None, exclude=True)

    @model_validator(mode="after")
    def _selection_reads_dev_only(self) -> "ExperimentSpec":
        # Choosing among trials on held-out scores would leak the held-out split into selection.
        if self.search.sampler != "grid" and self.data.dev_size == 0:
            raise ValueError("a sampler selects trials: set data.dev_size so it selects on a dev split")
        if self.dpo is not None and self.dpo.pairs == "mined" and self.data.dev_size == 0:
            raise ValueError("dpo.pairs: mined needs data.dev_size (pairs come from the SFT model's dev failures)")
        if self.search.pruner != "none" and (self.data.dev_size == 0 or self.eval.dev_every_steps is None):
            raise ValueError("a pruner needs data.dev_size and eval.dev_every_steps (intermediate dev scores)")
        return self


# ---------------------------------------------------------------- loading with locations


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """1-based line of the deepest YAML node that `loc` reaches."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = [(k, v) for k, v in node.value if k.value == str(part)]
            if not match:
                break
            key, node = match[0]
            line = key.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _describe(errors: ValidationError, source: str, root: yaml.Node | None, prefix: tuple = ()) -> str:
    lines = []
    for err in errors.errors():
        loc = prefix + tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        field = ".".join(str(p) for p in loc) or "(top level)"
        line = _line_of(root, loc)
        where = f"{source}:{line}" if line else source
        msg = "unknown field (check the spelling)" if err["type"] == "extra_forbidden" else err["msg"]
        lines.append(f"{where}: field '{field}': {msg}")
    return "\n".join(lines)


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """Return a copy of `raw` with `a.b.c` set to value."""
    out = copy.deepcopy(raw)
    node: Any = out
    parts = key.split(".")
    for part in parts[:-1]:
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]  # e.g. contestants.0.endpoint.url
        elif isinstance(node, dict):
            node = node.setdefault(part, {})
        else:
            raise SpecError(f"'{key}': '{part}' is not a section")
    if isinstance(node, list) and parts[-1].isdigit() and int(parts[-1]) < len(node):
        node[int(parts[-1])] = value
    elif isinstance(node, dict):
        node[parts[-1]] = value
    else:
        raise SpecError(f"'{key}': cannot set '{parts[-1]}' there")
    return out


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
