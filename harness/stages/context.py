"""What the stages of one trial share (`TrialContext`): its inputs, and the arms, blocks and trainings they leave."""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from harness.errors import HarnessError
from harness.evaluation.evaluate import aggregate, generate, score_items
from harness.progress import item_progress
from harness.results import DEV_CURVE_FILE, trial_dir_name, write_jsonl
from harness.stages.registry import CORE_BLOCKS, ArmRole, Spec, final_arm

if TYPE_CHECKING:
    from harness.backends import TrainingBackend, TrainOutcome
    from harness.data.example import Example
    from harness.data.prepare import PreparedData
    from harness.tracking import Tracker


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

    spec: Spec  # the assembled ExperimentSpec
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
    # keep(stage, key, load): a second model held by the worker across its trials (`Worker.keep`); without a
    # worker (a stage run alone), loaded for this trial only.
    keep: Callable[[str, str, Callable[[], Any]], Any] = lambda stage, key, load: load()
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
    # each arm's own model in memory (its weights; a GGUF arm: its file), where known
    model_bytes: dict[str, int] = field(default_factory=dict)
    # each stage's own peak memory in GiB (`harness.backends.memory.PeakMemory`), set by the trial runner
    stage_peaks: dict[str, float] = field(default_factory=dict)
    # the dev learning curve: the headline metric on the dev split at checkpoints (`eval.dev_every_steps`)
    dev_curve: list[dict[str, Any]] = field(default_factory=list)

    @property
    def trial_dir(self) -> Path:
        return self.study_dir / trial_dir_name(self.number)

    @property
    def heldout(self) -> list["Example"]:
        limit = self.spec.eval.limit
        return self.data.heldout[:limit] if limit else self.data.heldout

    @property
    def training_examples(self) -> list["Example"]:
        """What training trains on: the training split, unless a DATA stage replaced it (teacher-written data)."""
        return self.data.train if self.train_examples is None else self.train_examples

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

    def dev_checkpoints(self, stage: str) -> Callable[[int], None] | None:
        """An `on_step` for a training stage: with `eval.dev_every_steps` and a dev split, score the dev split every
        N of the stage's optimiser steps into the trial's dev learning curve (`record_dev`). Steps count across
        the trial's trainings (SFT's, then DPO's), so the curve and the pruner's steps never go back."""
        every = self.spec.eval.dev_every_steps
        if not every or not self.data.dev:
            return None
        before = sum(t.outcome.steps for t in self.trainings)

        def on_step(step: int) -> None:
            if step % every == 0:
                self.record_dev(stage, before + step, self.dev_score())
        return on_step

    def record_dev(self, stage: str, step: int, value: float) -> None:
        """One point of the dev learning curve, written to the trial's dev_curve.jsonl at once (a pruned trial
        keeps its curve), logged to W&B and reported to the pruner, which may stop the trial here."""
        metric = self.spec.eval.metric
        self.dev_curve.append({"stage": stage, "step": step, "metric": metric, "value": value})
        write_jsonl(self.trial_dir / DEV_CURVE_FILE, self.dev_curve)
        # W&B drops a row whose step goes back: the first training's rows carry their own steps (`log_rows`)
        first = not self.trainings  # still inside the trial's first training
        self.tracker.log({f"dev/{metric}": value, "dev/step": step}, **({"step": step} if first else {}))
        if self.on_dev_metric:
            self.on_dev_metric(value, step)

    def add_arm(self, name: str, rows: list[dict[str, Any]], role: ArmRole, *, model: Any = None,
                model_bytes: int | None = None) -> None:
        """Record an arm's per-item rows and what its model holds in memory (`model`'s weights, or `model_bytes`
        for one that is not a torch model: a GGUF file); a name already taken (by an arm or a block) is a defect,
        not an overwrite."""
        if name in self.arms or name in self.blocks or name in CORE_BLOCKS:
            raise HarnessError(f"arm '{name}' is recorded twice in trial {self.number}")
        self.arms[name] = rows
        self._roles[name] = role
        self._trained[name] = [t.stage for t in self.trainings]  # what had trained the model when it answered
        if model is not None:
            from harness.backends.memory import model_bytes as weights

            model_bytes = weights(model)
        if model_bytes is not None:
            self.model_bytes[name] = int(model_bytes)

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
        self.add_arm(arm, self.evaluate(arm), "stage", model=self.peft_model)

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
