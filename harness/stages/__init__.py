"""Stage runners: what each stage declared in `harness.spec.stages` does in a trial, one file each (the
same name as its declaration), registered by decorator and found by scanning this folder.

    @register_runner("grpo")
    def run(ctx: TrialContext, cfg: GRPOSpec) -> None: ...

A runner reads the trial's shared state and writes its arms, blocks and trainings through its
`TrialContext` (`harness.stages.context`); a trial (`harness.trial.runner.run_trial`) runs the runners
of the stages its spec enables, in the declared order. Runner files keep heavy imports (torch, TRL,
lm-eval) inside functions: `harness run` imports every runner before the first trial.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from harness.discovery import import_modules
from harness.errors import HarnessError
from harness.spec.stages import Stage, all_stages

if TYPE_CHECKING:
    from harness.spec import ExperimentSpec
    from harness.stages.context import TrialContext


@dataclass(frozen=True)
class Runner:
    """What one declared stage does: its step in a trial, and a check before any trial trains."""

    stage: str
    run: Callable[["TrialContext", Any], None]
    preflight: Callable[["ExperimentSpec", Any], None] | None = None  # before any trial: reachable services


_RUNNERS: dict[str, Runner] = {}
_discovered = False


def register_runner(stage: str, *, preflight: Callable[["ExperimentSpec", Any], None] | None = None
                    ) -> Callable[[Callable], Callable]:
    """Register the decorated `run(ctx, cfg)` as the runner of the declared stage `stage`."""

    def decorate(run: Callable) -> Callable:
        taken = _RUNNERS.get(stage)
        if taken is not None and taken.run.__module__ != run.__module__:
            raise ValueError(f"stage '{stage}' has two runners ({taken.run.__module__}, {run.__module__})")
        _RUNNERS[stage] = Runner(stage, run, preflight)
        return run

    return decorate


def all_runners() -> dict[str, Runner]:
    """Every runner by stage name (importing each module of this package once); each names a declared stage."""
    global _discovered
    if not _discovered:
        import_modules(__name__, __path__, skip={"context"})
        _discovered = True
        declared = {s.name for s in all_stages()}
        for name, runner in _RUNNERS.items():
            if name not in declared:
                raise HarnessError(f"{runner.run.__module__} runs stage '{name}', which harness.spec.stages "
                                   "does not declare")
    return dict(_RUNNERS)


def runner_for(stage: Stage) -> Runner:
    """The runner of a declared stage; a stage declared without one is a defect of the package."""
    runners = all_runners()
    if stage.name not in runners:
        raise HarnessError(f"stage '{stage.name}' ({stage.module}) has no runner in harness.stages")
    return runners[stage.name]
