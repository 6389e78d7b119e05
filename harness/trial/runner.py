"""One trial, top to bottom: spec → data (frozen split verified) → the enabled stages → record.

Every experiment runs this; a grid (see `harness.grid.study`) runs it once per grid point and seed. What a
trial does beyond SFT and its evaluation comes from its stages (`harness.stages`, one file each). The `Worker` keeps the base model loaded between trials: adapters go on
and come off.
"""

from __future__ import annotations

import json
import resource
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from harness.backends import TrainingBackend, backend_unavailable, select_backend
from harness.backends.memory import PeakMemory
from harness.data.formats import format_summary, summarize
from harness.data.prepare import prepare_data
from harness.errors import HarnessError, SpecError
from harness.evaluation.metrics import scorer_for
from harness.models import harness_home, resolve_model
from harness.progress import console
from harness.results import TrialResult, trial_dir_name
from harness.spec import ExperimentSpec, ModelSpec, spec_dump
from harness.stages.registry import pipeline
from harness.stages.context import TrialContext
from harness.tracking import Tracker
from harness.trial.manifest import git_commit
from harness.trial.record import peak_memory_gb, record_trial

__all__ = ["OutOfMemory", "Worker", "preflight", "run_trial"]


@dataclass
class Worker:
    """Per-process state reused across trials: the training backend and the loaded base model."""

    base_loads: int = 0
    _backends: dict[str, TrainingBackend] = field(default_factory=dict)
    _bases: dict[tuple, tuple] = field(default_factory=dict)
    # Second models a stage holds beside the base (a KD teacher), by (stage, key): kept across the worker's
    # trials of that stage, released before a trial that does not run the stage.
    _kept: dict[tuple[str, str], Any] = field(default_factory=dict)
    loads: dict[str, int] = field(default_factory=dict)

    def backend(self, prefer: str = "auto") -> TrainingBackend:
        """The backend for `train.backend` (one instance per worker and choice)."""
        if prefer not in self._backends:
            self._backends[prefer] = select_backend(prefer)
        return self._backends[prefer]

    def base(self, spec: ModelSpec, backend: TrainingBackend):
        """(model, tokenizer, resolved) for a model spec, loaded from disk once per worker and backend."""
        key = (spec.base, spec.dtype, spec.load_in_4bit, backend.name)
        if key not in self._bases:
            self._bases.clear()  # one base in memory at a time
            resolved = resolve_model(spec.base)
            model, tok = backend.load_base(resolved, spec.dtype, load_in_4bit=spec.load_in_4bit)
            self.base_loads += 1
            self._bases[key] = (model, tok, resolved)
        return self._bases[key]

    def keep(self, stage: str, key: str, load: Callable[[], Any]) -> Any:
        """`load()`'s value for (stage, key), loaded once per worker; another key of the stage replaces it."""
        if (stage, key) not in self._kept:
            self.release(lambda s, k: s == stage)
            self._kept[(stage, key)] = load()
            self.loads[stage] = self.loads.get(stage, 0) + 1
        return self._kept[(stage, key)]

    def release(self, which: Callable[[str, str], bool]) -> None:
        """Drop the kept models `which(stage, key)` selects and give their memory back."""
        gone = [k for k in self._kept if which(*k)]
        for k in gone:
            del self._kept[k]
        if gone:
            _release_device_memory()


def preflight(specs: list[ExperimentSpec], *, freeze: bool = True) -> None:
    """Fail fast, before any trial: every base model resolves, data loads, frozen splits verify, no leakage,
    a backend the spec insists on can run here, and every stage's own preflight (a required judge answers,
    lm-eval tasks have their data: local files or the Hub, a teacher resolves). `freeze=False` (`harness
    check`) freezes no split that is not frozen yet."""
    seen: set[str] = set()
    for spec in specs:
        reason = backend_unavailable(spec.train.backend)
        if reason:
            raise SpecError(reason, where=f"experiment {spec.name}, field 'train.backend'")
        for key, check in ((f"model:{spec.model.base}", lambda: resolve_model(spec.model.base)),
                           (f"data:{spec.data.model_dump_json()}",
                            lambda: prepare_data(spec.data, harness_home() / "data", freeze=freeze))):
            if key not in seen:
                seen.add(key)
                check()
        for stage, cfg in pipeline(spec):  # e.g. a judge endpoint the spec requires must answer now
            check = stage.preflight
            if check is not None:
                key = f"{stage.name}:{json.dumps(spec_dump(spec).get(stage.section), sort_keys=True)}"
                if key not in seen:
                    seen.add(key)
                    check(spec, cfg)


def run_trial(spec: ExperimentSpec, study_dir: Path, number: int, params: dict[str, Any], worker: Worker,
              *, on_dev_metric: Callable[[float, int], None] | None = None) -> TrialResult:
    """Run one trial of `spec` (already resolved with `params`): its stages in phase order, then record it."""
    started = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    git_commit()  # the commit of the code this process imported, before HEAD can move on during the trial
    study_dir = Path(study_dir).absolute()  # handed to subprocesses (GGUF converter) and libraries
    data = prepare_data(spec.data, harness_home() / "data")
    backend = worker.backend(spec.train.backend)
    stages = pipeline(spec)
    worker.release(lambda stage, key: stage not in {s.name for s, _ in stages})  # e.g. a teacher no arm here uses
    model, tok, resolved = worker.base(spec.model, backend)
    reset_peak_memory()  # the trial's own peak, not the worker's
    summary = summarize(data.train, tok)
    console.print(format_summary(summary))
    tracker = Tracker(setting=spec.tracking.wandb, project=spec.tracking.project, group=spec.name,
                      name=f"{spec.name}/{trial_dir_name(number)}",
                      config={**spec_dump(spec, exclude={"presets", "search"}), "params": params, "trial": number},
                      directory=study_dir)
    tracker.summary({"data": summary})
    ctx = TrialContext(spec=spec, params=params, number=number, study_dir=study_dir, data=data, backend=backend,
                       model=model, tok=tok, resolved=resolved, scorer=scorer_for(data.scorer, spec.eval), tracker=tracker,
                       on_dev_metric=on_dev_metric, started=started, keep=worker.keep)
    with running(ctx):
        for stage, cfg in stages:
            with PeakMemory() as peak:  # the stage's own: an arm is charged for its stages, not the trial's worst
                stage.run(ctx, cfg)
            ctx.stage_peaks[stage.name] = peak.gib
    return record_trial(ctx)


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
