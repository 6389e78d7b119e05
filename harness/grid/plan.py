"""`harness plan`: what a grid will cost before it runs — per grid point (its seeds together), the estimated
peak memory on a device (`harness.backends.memory_plan`), tokens trained, and time; for the grid, time on
N GPUs and its price; and each comparison's power (`harness.grid.power`).

Time is measured where a figure exists: `results/bench/<device>/train-*.json` for the model's architecture,
else the finished trials of the study. Without one it is a FLOPs estimate (`flops_seconds`), labelled as
such; on a CPU, which has no tensor-core peak to take a share of, it says it cannot estimate. Nothing is
loaded but the model's config (a meta-device model counts its parameters).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.backends.memory_plan import GIB, ModelShape, plan_checkpointing
from harness.errors import HarnessError
from harness.grid.power import Power, power
from harness.grid.study import trial_spec, validate_search
from harness.labels import varying_keys
from harness.spec import ExperimentSpec

DEVICES_GIB: dict[str, float | None] = {"h100": 80, "h200": 141, "a100": 80, "gb10": 128, "cpu": None}
# Dense bf16 tensor-core peak in TFLOPS (NVIDIA datasheets, SXM parts). GB10 is published only as 1 PFLOP
# of FP4 with sparsity: an eighth of that (dense halves it, FP8 and then bf16 halve it again) is assumed.
PEAK_BF16_TFLOPS: dict[str, float] = {"h100": 989, "h200": 989, "a100": 312, "gb10": 125}
ASSUMED_PEAK = {"gb10"}
# The share of that peak a LoRA run is taken to reach when nothing was measured: a stated guess, not a
# measurement (small models and short sequences reach less, large ones with packed batches more).
FLOPS_UTILISATION = 0.35
SEED = "train.seed"


@dataclass
class PointPlan:
    """One grid point over all its seeds: they train the same tokens in the same memory."""

    index: int  # the grid point, seeds aside (0 .. points-1)
    params: dict[str, Any]  # its values of the grid's varying parameters (full dotted names), seed aside
    trials: list[int]  # its trial numbers, one per seed
    peak_gib: float
    verdict: str
    tokens: int  # per trial
    seconds: float | None  # per trial

    @property
    def seeds(self) -> int:
        return len(self.trials)

    @property
    def all_seconds(self) -> float | None:
        return None if self.seconds is None else self.seconds * self.seeds


@dataclass(frozen=True)
class TimeBasis:
    """Where a trial's time comes from: `bench` and `study` are measured, `flops` is an estimate, `none`
    has no time. `note` says which, and what the figure leaves out."""

    kind: str
    note: str
    tok_s: float | None = None  # training tokens/s (bench, flops)
    trial_s: float | None = None  # a whole trial (study)
    short: str = ""  # the basis in a few words, beside the grid's total

    def seconds(self, tokens: int) -> float | None:
        return tokens / self.tok_s if self.tok_s else self.trial_s

    @property
    def estimated(self) -> bool:
        return self.kind == "flops"


@dataclass
class GridPlan:
    device: str
    gpus: int
    points: list[PointPlan]
    keys: list[str]  # the grid's varying parameters, seed aside, in the points' order
    time: TimeBasis
    price_per_hour: float | None
    base_params: int  # N of the FLOPs estimate: the base model's parameters
    powers: list[Power] = field(default_factory=list)  # each comparison's MDE (`harness.grid.power`)

    @property
    def trials(self) -> int:
        return sum(p.seeds for p in self.points)

    @property
    def grid_seconds(self) -> float | None:
        if any(p.seconds is None for p in self.points):
            return None
        waves = sorted((p.seconds for p in self.points for _ in p.trials), reverse=True)  # longest first
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
    from harness.backends.base import ATTENTION_MODULES

    # "attention" names the four projections, as the trainer's LoRA config resolves it (not its letters)
    targets = ATTENTION_MODULES if spec.lora.target_modules == "attention" else spec.lora.target_modules
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
    from harness.stages.registry import extra_weight_bytes

    weight_bytes, trainable = _sizes(config, spec)
    weight_bytes += extra_weight_bytes(spec)  # a second model in memory (a KD teacher)
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


def _train_examples(spec: ExperimentSpec, n_train: int) -> int:
    """Examples the first training sees: the training split, or what a DATA stage declares it replaces it with."""
    from harness.stages.registry import pipeline

    for stage, cfg in pipeline(spec):
        if stage.train_size is not None:
            n_train = stage.train_size(spec, cfg, n_train)
    return n_train


def _tokens(spec: ExperimentSpec, typical_len: int, n_train: int) -> int:
    per_example = min(typical_len, spec.train.max_length)
    if spec.train.max_steps > 0:
        return spec.train.max_steps * spec.train.batch_size * spec.train.grad_accum * per_example
    return int(spec.train.epochs * _train_examples(spec, n_train) * per_example)


def base_params(config) -> int:
    """The base model's parameter count (tied weights once), from a meta-device model."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def flops_seconds(n_params: int, tokens: int, device: str) -> float | None:
    """Training time of `tokens` through a LoRA model of `n_params` frozen parameters: 4·N·T FLOPs (the
    forward 2·N·T and the activations' backward 2·N·T; a frozen base has no weight gradients) at
    FLOPS_UTILISATION of the device's dense bf16 peak. None for a device without one (cpu)."""
    peak = PEAK_BF16_TFLOPS.get(device)
    if peak is None:
        return None
    return 4 * n_params * tokens / (FLOPS_UTILISATION * peak * 1e12)


def bench_throughput(root: Path, device: str, arch: str, data: str | None = None) -> tuple[float, str] | None:
    """(tokens/s, file) of the harness path for `arch` measured on `device`, from `results/bench/`; a figure
    measured on the same data first (real lengths pack differently from random tokens)."""
    paths = sorted((root / "bench" / device).glob("train-*.json"), key=lambda p: f"-{data}-" not in p.name)
    for path in paths:
        try:
            figure = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        measured = figure.get("harness") or {}
        if measured.get("tok_s") and figure.get("arch") and arch.startswith(str(figure["arch"])):
            return float(measured["tok_s"]), str(path)
    return None


def study_seconds(study) -> float | None:
    """Mean wall time of the study's finished trials, or None without one."""
    durations = [t.user_attrs["duration_s"] for t in study.get_trials(deepcopy=False)
                 if t.user_attrs.get("duration_s")] if study is not None else []
    return sum(durations) / len(durations) if durations else None




def _left_out(spec: ExperimentSpec) -> str:
    """What a training-time figure does not count: generation, eval and any training after the first."""
    from harness.stages.registry import Phase, pipeline

    parts = ["generation", "eval"] + [f"the {stage.name} stage" for stage, _ in pipeline(spec)
                                      if stage.phase == Phase.CONTINUE]
    return ", ".join(parts[:-1]) + f" and {parts[-1]} are not in it"


def _shown(path: str) -> str:
    """A path under the working directory relative to it, as the user would type it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return path


def _millions(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"


def time_basis(spec: ExperimentSpec, device: str, results_root: Path, study, n_params: int) -> TimeBasis:
    """Measured throughput (a bench file, else the study's finished trials), else a FLOPs estimate."""
    bench = bench_throughput(results_root, device, spec.model.base.split(":", 1)[-1], spec.data.builtin)
    if bench:
        return TimeBasis("bench", f"time measured: training at {bench[0]:,.0f} tokens/s on {device} "
                         f"({_shown(bench[1])}); {_left_out(spec)}", tok_s=bench[0],
                         short=f"measured: {bench[0]:,.0f} tokens/s")
    measured = study_seconds(study)
    if measured:
        return TimeBasis("study", f"time measured: the study's finished trials took {measured:.0f} s each on "
                         "average (training, generation and eval)", trial_s=measured,
                         short="measured, the study's finished trials")
    missing = f"no results/bench/{device} figure for {spec.model.base} and no finished trial in the study yet"
    one_second = flops_seconds(n_params, 1, device)
    if one_second is None:
        return TimeBasis("none", f"time: cannot estimate: {missing}, and a {device} has no bf16 peak for a "
                         "FLOPs estimate")
    peak = f"{PEAK_BF16_TFLOPS[device]:g} TFLOPS" + (" (assumed)" if device in ASSUMED_PEAK else "")
    share = f"{FLOPS_UTILISATION:.0%} of the {device.upper()}'s bf16 peak"
    return TimeBasis("flops", f"time is a FLOPs estimate, not measured ({missing}): 4·N·T FLOPs with "
                     f"N = {_millions(n_params)} base parameters and T the tokens trained, at {share} ({peak}), "
                     f"about {float(f'{1 / one_second:.3g}'):,.0f} tokens/s; training only: {_left_out(spec)}. Optimistic "
                     "for a small model, whose steps are bound by per-step overhead rather than FLOPs: measure "
                     "one with `harness bench` for a real figure",
                     tok_s=1 / one_second, short=f"FLOPs estimate at {share}")


def _group(points) -> list[tuple[dict[str, Any], list[int]]]:
    """The grid's points with their seeds together: (params without the seed, trial numbers)."""
    groups: dict[str, tuple[dict[str, Any], list[int]]] = {}
    for point in points:
        params = {k: v for k, v in point.params.items() if k != SEED}
        groups.setdefault(repr(sorted(params.items())), (params, []))[1].append(point.index)
    return list(groups.values())


def plan_grid(spec: ExperimentSpec, device: str, gpus: int, results_root: Path, study=None) -> GridPlan:
    """Estimate every grid point (its seeds together) on `device`, and the grid on `gpus` of them."""
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
    data = prepare_data(spec.data, harness_home() / "data")
    stats = summarize(data.train, load_tokenizer(resolve_model(spec.model.base)))
    typical = int(stats.get("tokens", {}).get("total", {}).get("p50", spec.train.max_length))
    config = _config(spec)
    shape = ModelShape.of(config)
    n_params = base_params(config)
    basis = time_basis(spec, device, results_root, study, n_params)
    plans = []
    for index, (params, trials) in enumerate(_group(points)):
        resolved = trial_spec(spec, params)  # the seed changes neither memory nor tokens
        peak, verdict = _memory(resolved, shape, config, DEVICES_GIB[device])
        tokens = _tokens(resolved, typical, len(data.train))
        plans.append(PointPlan(index, params, trials, peak, verdict, tokens, basis.seconds(tokens)))
    keys = [k for k in varying_keys(p.params for p in points) if k != SEED]
    n_items = len(data.heldout[:spec.eval.limit] if spec.eval.limit else data.heldout)
    return GridPlan(device, gpus, plans, keys, basis, spec.pricing.device_price_per_hour, n_params,
                    power(spec, n_items, Path(results_root) / spec.name))
