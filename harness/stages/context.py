"""What the stages of one trial share (`TrialContext`), and how a finished trial is recorded (`record_trial`)."""

from __future__ import annotations

import resource
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from harness.errors import HarnessError, SpecError
from harness.evaluation.evaluate import aggregate, generate, local_cost_per_1k_calls, score_items
from harness.grid.manifest import build_manifest
from harness.progress import item_progress
from harness.results import Outcome, TrialResult, trial_dir_name, write_json, write_jsonl
from harness.stages import CORE_BLOCKS, ArmRole, final_arm, planned_arms, stage_pairs

if TYPE_CHECKING:
    from harness.data.example import Example
    from harness.data.prepare import PreparedData
    from harness.spec import ExperimentSpec
    from harness.grid.tracking import Tracker
    from harness.backends import TrainingBackend, TrainOutcome


@dataclass
class Training:
    """One training run of the trial (SFT, DPO, ...): its outcome and the summary metrics.json keeps."""

    stage: str
    outcome: "TrainOutcome"
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrialContext:
    """The state one trial's stages share: inputs (spec, data, base model, backend) and what they produce
    (arms of per-item rows, metric blocks, trainings, the dev objective)."""

    spec: "ExperimentSpec"
    params: dict[str, Any]
    number: int
    study_dir: Path
    data: "PreparedData"
    backend: "TrainingBackend"
    model: Any  # the base model, shared across the worker's trials
    tok: Any
    resolved: Any
    scorer: Callable[[str, str], dict[str, float]]
    tracker: "Tracker"
    on_dev_metric: Callable[[float, int], None] | None = None
    peft_model: Any = None  # the model being trained (set by the TRAIN stage)
    train_examples: list["Example"] | None = None  # what the TRAIN stage trains on (DATA stages may replace it)
    arms: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    blocks: dict[str, Any] = field(default_factory=dict)
    trainings: list[Training] = field(default_factory=list)
    objective: float | None = None
    adapter_bytes: int = 0
    started: tuple[float, Any] = field(default_factory=lambda: (time.perf_counter(),
                                                                resource.getrusage(resource.RUSAGE_SELF)))
    _roles: dict[str, ArmRole] = field(default_factory=dict)
    _trained: dict[str, list[str]] = field(default_factory=dict)

    @property
    def trial_dir(self) -> Path:
        return self.study_dir / trial_dir_name(self.number)

    @property
    def heldout(self) -> list["Example"]:
        limit = self.spec.eval.limit
        return self.data.heldout[:limit] if limit else self.data.heldout

    @property
    def final_arm(self) -> str:
        return final_arm(self.spec)

    # ---- what stages call

    def evaluate(self, arm: str, examples: list["Example"] | None = None, model: Any = None) -> list[dict[str, Any]]:
        """Generate for `examples` (default: the held-out items) with `model` (default: the trained one) and score."""
        model = model if model is not None else self.peft_model
        examples = self.heldout if examples is None else examples
        ev = self.spec.eval
        with item_progress(f"eval {arm}", len(examples)) as advance, self.backend.inference(model):
            gens = generate(model, self.tok, [ex.prompt for ex in examples], max_new_tokens=ev.max_new_tokens,
                            batch_size=ev.batch_size, progress=advance)
        return score_items(arm, examples, gens, self.scorer)

    def dev_score(self) -> float:
        """The headline metric of the model being trained on the dev split (training-side, for selection)."""
        return aggregate(self.evaluate("dev", self.data.dev))[self.spec.eval.metric]

    def add_arm(self, name: str, rows: list[dict[str, Any]], role: ArmRole) -> None:
        """Record an arm's per-item rows; a name already taken (by an arm or a block) is a defect, not an overwrite."""
        if name in self.arms or name in self.blocks or name in CORE_BLOCKS:
            raise HarnessError(f"arm '{name}' is recorded twice in trial {self.number}")
        self.arms[name] = rows
        self._roles[name] = role
        self._trained[name] = [t.stage for t in self.trainings]  # what had trained the model when it answered

    def add_block(self, name: str, values: Any) -> None:
        """Record a metrics.json block that is not an arm ("teacher", "forgetting")."""
        if name in self.arms or name in self.blocks or name in CORE_BLOCKS:
            raise HarnessError(f"metrics block '{name}' collides with an arm or block of trial {self.number}")
        self.blocks[name] = values

    def add_training(self, stage: str, outcome: "TrainOutcome", log_file: str, **summary: Any) -> None:
        """Keep a training run: its log under the trial, its time and tokens in the cost block."""
        write_jsonl(self.trial_dir / log_file, outcome.log)
        self.trainings.append(Training(stage, outcome, summary))

    def snapshot_arm(self, arm: str, adapter_dir: str) -> None:
        """Save the adapter as it is now and evaluate it as `arm` (before a later stage changes it)."""
        self.peft_model.save_pretrained(self.trial_dir / adapter_dir)
        self.add_arm(arm, self.evaluate(arm), "stage")

    def scratch(self, name: str) -> Path:
        """A folder a trainer may write checkpoints to; removed when the trial is recorded."""
        return self.trial_dir / name

    def log_rows(self, prefix: str, *, at_step: bool = False) -> Callable[[dict[str, Any]], None]:
        """An `on_log` that sends a trainer's numeric values to W&B as `<prefix>/<key>`. `at_step`: at the
        row's own step (the first training only: W&B drops rows whose step goes back)."""
        def log(row: dict[str, Any]) -> None:
            values = {f"{prefix}/{k}": v for k, v in row.items() if isinstance(v, (int, float))}
            self.tracker.log(values, **({"step": row["step"]} if at_step else {}))
        return log


@contextmanager
def running(ctx: TrialContext) -> Iterator[TrialContext]:
    """Around a trial's stages: on any error the W&B run is closed as failed and an out-of-memory error
    becomes `OutOfMemory` with the memory figures; always the adapter comes off and memory is released."""
    try:
        yield ctx
    except BaseException as e:
        ctx.tracker.finish(exit_code=1)
        if _is_out_of_memory(e):
            raise OutOfMemory(_memory_report(ctx.spec)) from e
        raise
    finally:
        for scratch in ctx.trial_dir.glob("*checkpoints"):  # trainers' scratch; the adapters are kept
            shutil.rmtree(scratch, ignore_errors=True)
        if ctx.peft_model is not None:
            ctx.backend.remove_adapter(ctx.peft_model)
        _release_device_memory()


def record_trial(ctx: TrialContext) -> TrialResult:
    """Write the trial's files (eval/<arm>.jsonl, metrics.json, manifest.json, then result.json last), log to W&B."""
    spec, trial_dir = ctx.spec, ctx.trial_dir
    if not ctx.trainings:
        raise HarnessError(f"trial {ctx.number} trained nothing: train.method '{spec.train.method}' ran no training")
    first, *more = ctx.trainings
    t_wall, r0 = ctx.started
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    o = first.outcome
    cost = {"wall_s": time.perf_counter() - t_wall,
            "cpu_s": (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime),
            "device_s": o.runtime_s, "tokens_trained": o.tokens_trained, "train_steps": o.steps,
            "final_loss": o.final_loss, "peak_mem_gb": peak_memory_gb(), "trainable_params": o.trainable_params,
            "adapter_bytes": ctx.adapter_bytes}
    metrics: dict[str, Any] = {arm: aggregate(rows) for arm, rows in ctx.arms.items()}
    price = spec.pricing.device_price_per_hour
    for values in metrics.values():
        if price is not None and "cost_per_1k_calls_usd" not in values and values.get("n"):
            values["cost_per_1k_calls_usd"] = local_cost_per_1k_calls(values, price)
    metrics["cost"] = cost
    metrics.update(ctx.blocks)
    if more:  # continued training (DPO, ...): its summary apart from the arms, its time and tokens in the cost
        metrics["training"] = {}
        for t in more:
            metrics["training"][t.stage] = {**t.summary, "steps": t.outcome.steps,
                                            "final_loss": t.outcome.final_loss,
                                            "tokens_trained": t.outcome.tokens_trained,
                                            "device_s": t.outcome.runtime_s}
            cost["device_s"] += t.outcome.runtime_s
            cost["tokens_trained"] += t.outcome.tokens_trained
    for arm, rows in ctx.arms.items():
        write_jsonl(trial_dir / "eval" / f"{arm}.jsonl", rows)
    write_json(trial_dir / "metrics.json", metrics)
    manifest = build_manifest(spec=spec, params=ctx.params, number=ctx.number, data=ctx.data, resolved=ctx.resolved,
                              backend=ctx.backend.name, training=o.settings, eval_items=len(ctx.heldout))
    manifest["arms"] = {arm: ctx._roles[arm] for arm in ctx.arms}
    manifest["arm_trainings"] = {arm: ctx._trained[arm] for arm in ctx.arms}
    manifest["final_arm"] = ctx.final_arm
    manifest["stage_pairs"] = [list(pair) for pair in stage_pairs(spec)]
    manifest["trainings"] = {t.stage: t.outcome.settings for t in ctx.trainings}
    manifest["data"]["scorer"] = ctx.data.scorer
    write_json(trial_dir / "manifest.json", manifest)

    tracker = ctx.tracker
    for name, values in metrics.items():
        if name == "training":
            for stage, summary in values.items():
                tracker.log({f"training/{stage}/{k}": v for k, v in summary.items() if isinstance(v, (int, float))})
        elif isinstance(values, dict):
            tracker.log(_numeric(name, values))
    for arm, rows in ctx.arms.items():
        tracker.log_table(f"eval/{arm}", [{**{k: v for k, v in r.items() if k != "scores"}, **r["scores"]}
                                           for r in rows])
    tracker.summary({"final_loss": o.final_loss, "wandb_mode": tracker.mode})
    tracker.finish()

    # The objective comes from the dev split only: the held-out split never drives selection.
    result = TrialResult(number=ctx.number, status=Outcome.COMPLETE.value, params=ctx.params, metrics=metrics,
                         objective=ctx.objective)
    result.write(trial_dir)
    return result


def _numeric(prefix: str, values: dict[str, Any]) -> dict[str, float]:
    """The numbers of a metrics block, nested blocks (the judge's pairs) flattened to `prefix/key/...`."""
    out: dict[str, float] = {}
    for k, v in values.items():
        if isinstance(v, dict):
            out.update(_numeric(f"{prefix}/{k}", v))
        elif isinstance(v, (int, float)):
            out[f"{prefix}/{k}"] = v
    return out


def check_arms(spec: "ExperimentSpec") -> None:
    """Refuse, before any trial, arm and block names that two stages (or contestants) would both write."""
    try:
        planned_arms(spec)
    except ValueError as e:
        raise SpecError(str(e), where=f"experiment {spec.name}") from e


class OutOfMemory(HarnessError):
    """The trial's batch did not fit on the device; the message carries the memory figures."""


def _is_out_of_memory(e: BaseException) -> bool:
    import torch

    return isinstance(e, (torch.OutOfMemoryError, MemoryError)) or "out of memory" in str(e).lower()[:200]


def _memory_report(spec: "ExperimentSpec") -> str:
    import torch

    t = spec.train
    where = f"out of memory at train.batch_size={t.batch_size}, max_length={t.max_length}, " \
            f"gradient_checkpointing={t.gradient_checkpointing}"
    if torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        return (f"{where}: peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB allocated, "
                f"{torch.cuda.max_memory_reserved() / 2**30:.1f} GiB reserved, of {total / 2**30:.1f} GiB "
                f"({free / 2**30:.1f} GiB free now); lower train.batch_size or max_length, or set "
                f"gradient_checkpointing: true")
    return f"{where}: peak resident memory {peak_memory_gb():.1f} GiB; lower train.batch_size or max_length"


def _release_device_memory() -> None:
    """Give a failed trial's activations back so the next trial of the grid starts clean."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def reset_peak_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def peak_memory_gb() -> float:
    from harness.backends.memory_plan import peak_memory_bytes

    return peak_memory_bytes() / 2**30
