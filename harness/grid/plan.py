"""`harness plan`: what a grid will cost before it runs — per point, the estimated peak memory on a device
(`harness.backends.memory_plan`), tokens trained, and time; for the grid, time on N GPUs and its price.

Time comes from measured throughput only: `results/bench/<device>/train-*.json` for the model's
architecture when such a figure exists, else the finished trials of the study, else it says it cannot
estimate. Nothing is loaded but the model's config (a meta-device model counts its parameters).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from harness.backends.memory_plan import GIB, ModelShape, plan_checkpointing
from harness.errors import HarnessError
from harness.grid.study import trial_spec, validate_search
from harness.labels import labeller
from harness.spec import ExperimentSpec

DEVICES_GIB: dict[str, float | None] = {"h100": 80, "h200": 141, "a100": 80, "gb10": 128, "cpu": None}


@dataclass
class PointPlan:
    index: int
    label: str
    peak_gib: float
    verdict: str
    tokens: int
    seconds: float | None


@dataclass
class GridPlan:
    device: str
    gpus: int
    points: list[PointPlan]
    time_source: str  # where the time per trial came from, or why there is none
    price_per_hour: float | None

    @property
    def grid_seconds(self) -> float | None:
        if any(p.seconds is None for p in self.points):
            return None
        waves = sorted((p.seconds for p in self.points), reverse=True)  # longest first over the GPUs
        lanes = [0.0] * max(1, self.gpus)
        for s in waves:
            lanes[lanes.index(min(lanes))] += s
        return max(lanes)

    @property
    def cost(self) -> float | None:
        if self.price_per_hour is None or self.grid_seconds is None:
            return None
        return self.price_per_hour * self.gpus * self.grid_seconds / 3600


def _config(spec: ExperimentSpec):
    from transformers import AutoConfig, LlamaConfig

    from harness.models import ARCHITECTURES, load_tokenizer, resolve_model

    resolved = resolve_model(spec.model.base)
    if resolved.kind == "random":
        return LlamaConfig(**{"vocab_size": len(load_tokenizer(resolved)), **ARCHITECTURES[resolved.arch]})
    try:
        return AutoConfig.from_pretrained(resolved.path)
    except OSError as e:
        raise HarnessError(f"cannot read the config of '{spec.model.base}': {e}") from e


def _sizes(config, spec: ExperimentSpec) -> tuple[int, int]:
    """(weight bytes, LoRA trainable parameters) from a meta-device model: nothing is allocated."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    targets = spec.lora.target_modules
    weight_bytes = trainable = 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and "lm_head" not in name:
            n = module.in_features * module.out_features
            weight_bytes += n // 2 if spec.model.load_in_4bit else 2 * n  # NF4 packs two weights a byte
            if targets == "all-linear" or any(name.endswith(t) for t in targets):
                trainable += spec.lora.r * (module.in_features + module.out_features)
    linear = sum(m.in_features * m.out_features for n, m in model.named_modules()
                 if isinstance(m, torch.nn.Linear) and "lm_head" not in n)
    weight_bytes += 2 * (sum(p.numel() for p in model.parameters()) - linear)
    return weight_bytes, trainable


def _memory(spec: ExperimentSpec, shape: ModelShape, config, device_gib: float | None) -> tuple[float, str]:
    weight_bytes, trainable = _sizes(config, spec)
    tokens = spec.train.batch_size * spec.train.max_length
    setting = spec.train.gradient_checkpointing
    device_bytes = int(device_gib * GIB) if device_gib else None
    kwargs = dict(weight_bytes=weight_bytes, trainable_params=trainable, tokens_per_step=tokens,
                  device_bytes=device_bytes)
    plan = plan_checkpointing(setting, shape, **kwargs)
    if device_bytes is None:
        return plan.estimated_peak_gib, "cpu: host memory"
    if plan.estimated_peak_gib > plan.budget_gib:
        every = plan_checkpointing(True, shape, **kwargs)
        if every.estimated_peak_gib <= every.budget_gib:
            return plan.estimated_peak_gib, "does not fit without checkpointing: set gradient_checkpointing: auto"
        return plan.estimated_peak_gib, ("does not fit: lower train.batch_size or max_length"
                                         + ("" if spec.model.load_in_4bit else ", or load_in_4bit: true"))
    if plan.checkpointed_layers:
        return plan.estimated_peak_gib, f"fits, checkpointing {plan.checkpointed_layers}/{plan.total_layers} layers"
    return plan.estimated_peak_gib, "fits"


def _tokens(spec: ExperimentSpec, typical_len: int, n_train: int) -> int:
    per_example = min(typical_len, spec.train.max_length)
    if spec.train.max_steps > 0:
        return spec.train.max_steps * spec.train.batch_size * spec.train.grad_accum * per_example
    return int(spec.train.epochs * n_train * per_example)


def bench_throughput(root: Path, device: str, arch: str, data: str | None = None) -> tuple[float, str] | None:
    """(tokens/s, file) of the harness path for `arch` measured on `device`, from `results/bench/`; a figure
    measured on the same data first (real lengths pack differently from random tokens)."""
    paths = sorted((root / "bench" / device).glob("train-*.json"), key=lambda p: f"-{data}-" not in p.name)
    for path in paths:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        measured = data.get("harness") or {}
        if measured.get("tok_s") and data.get("arch") and arch.startswith(str(data["arch"])):
            return float(measured["tok_s"]), str(path)
    return None


def study_seconds(study) -> float | None:
    """Mean wall time of the study's finished trials, or None without one."""
    durations = [t.user_attrs["duration_s"] for t in study.get_trials(deepcopy=False)
                 if t.user_attrs.get("duration_s")] if study is not None else []
    return sum(durations) / len(durations) if durations else None


def plan_grid(spec: ExperimentSpec, device: str, gpus: int, results_root: Path, study=None) -> GridPlan:
    """Estimate every grid point on `device`, and the grid on `gpus` of them."""
    from harness.data.formats import summarize
    from harness.data.prepare import prepare_data
    from harness.models import harness_home, load_tokenizer, resolve_model

    if device not in DEVICES_GIB:
        raise HarnessError(f"--device {device}: one of {', '.join(DEVICES_GIB)}")
    if gpus < 1:
        raise HarnessError(f"--gpus {gpus}: at least one")
    points = validate_search(spec) or []
    if not points:
        raise HarnessError("harness plan needs a grid (search.sampler: grid); a sampler's points are drawn as it runs")
    label = labeller([p.params for p in points])
    data = prepare_data(spec.data, harness_home() / "data")
    stats = summarize(data.train, load_tokenizer(resolve_model(spec.model.base)))
    typical = int(stats.get("tokens", {}).get("total", {}).get("p50", spec.train.max_length))
    config = _config(spec)
    shape = ModelShape.of(config)
    bench = bench_throughput(results_root, device, spec.model.base.split(":", 1)[-1], spec.data.builtin)
    measured = study_seconds(study)
    time_source = (f"time: training at the {bench[0]:.0f} tokens/s measured on {device}\n  ({bench[1]})" if bench
                   else f"time: the study's finished trials ({measured:.0f}s each on average)" if measured
                   else f"time: cannot estimate, no results/bench/{device} figure for {spec.model.base}\n"
                        "  and no finished trial in the study yet")
    plans = []
    for point in points:
        resolved = trial_spec(spec, point.params)
        peak, verdict = _memory(resolved, shape, config, DEVICES_GIB[device])
        tokens = _tokens(resolved, typical, len(data.train))
        seconds = tokens / bench[0] if bench else measured
        plans.append(PointPlan(point.index, label(point.params, 32), peak, verdict, tokens, seconds))
    return GridPlan(device, gpus, plans, time_source, spec.pricing.device_price_per_hour)


def _clock(seconds: float) -> str:
    seconds = math.ceil(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def format_plan(plan: GridPlan, name: str) -> str:
    """The plan as lines that fit 80 columns."""
    device_gib = DEVICES_GIB[plan.device]
    lines = [f"{name}: {len(plan.points)} trial(s) on {plan.gpus} x {plan.device}"
             + (f" ({device_gib:g} GiB each)" if device_gib else ""),
             f"{'#':>3} {'params':<32} {'GiB':>5} {'tokens':>9} {'time':>8}  memory"]
    for p in plan.points:
        lines.append(f"{p.index:>3} {p.label:<32} {p.peak_gib:>5.1f} {p.tokens:>9,} "
                     f"{_clock(p.seconds) if p.seconds is not None else '?':>8}  {p.verdict}")
    lines.append(plan.time_source)
    total = plan.grid_seconds
    if total is not None:
        lines.append(f"grid: {_clock(total)} on {plan.gpus} GPU(s)"
                     + (f", about ${plan.cost:,.2f} at ${plan.price_per_hour:g}/GPU-hour" if plan.cost is not None
                        else " (set pricing.device_price_per_hour for a cost)"))
    return "\n".join(lines)
