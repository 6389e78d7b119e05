"""Every experiment is an Optuna study whose trials are runs of `harness.trial.runner.run_trial`.

The grid (search points × seeds) is enqueued once, by whoever creates the study; every worker —
this process, another one, another machine on the same storage — pops waiting trials atomically
through Optuna's storage, so each point runs once. A worker that dies leaves a RUNNING trial whose
heartbeat stops; the next worker fails it and Optuna's RetryFailedTrialCallback re-queues it.
A trial that raises is recorded as failed with its reason, and the grid goes on.
"""

from __future__ import annotations

import itertools
import os
import socket
import threading
import time
import traceback
import typing
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import is_heartbeat_enabled
from optuna.trial import TrialState

from harness.errors import HarnessError, SpecError, Unavailable
from harness.grid.outcome import NOT_RUN_PREFIX
from harness.grid.storage import HEARTBEAT_S, open_storage, sqlite_url
from harness.results import Outcome, TrialResult, trial_dir_name
from harness.spec import ExperimentSpec, set_dotted, spec_fingerprint, validate_spec
from harness.stats.factors import check_reference

optuna.logging.set_verbosity(optuna.logging.WARNING)



@dataclass(frozen=True)
class GridPoint:
    index: int
    params: dict[str, Any]


def grid_points(spec: ExperimentSpec) -> list[GridPoint]:
    """Cartesian product of the grid (keys sorted), each repeated for every seed (innermost).

    A sampler study has no grid: its points are drawn as it runs (see `_draw`)."""
    if spec.search.sampler != "grid":
        return []
    keys = sorted(spec.search.grid)
    combos = itertools.product(*(spec.search.grid[k] for k in keys)) if keys else [()]
    points = []
    for combo in combos:
        for seed in spec.search.seeds:
            params = dict(zip(keys, combo))
            params["train.seed"] = seed
            points.append(GridPoint(len(points), params))
    return points


def _field_exists(key: str) -> bool:
    model: Any = ExperimentSpec
    for part in key.split("."):
        # `Section | None` fields: look inside the model member of the union
        candidates = [model, *typing.get_args(model)]
        fields = next((c.model_fields for c in candidates if hasattr(c, "model_fields")), None)
        if not fields or part not in fields:
            return False
        model = fields[part].annotation
    return True


def trial_spec(spec: ExperimentSpec, params: dict[str, Any]) -> ExperimentSpec:
    """The spec with one grid point's values applied, validated again."""
    raw = spec.model_dump(mode="json")
    for key, value in params.items():
        raw = set_dotted(raw, key, value)
    resolved = validate_spec(raw, source=f"{spec.source or spec.name} with {params}")
    resolved.source = spec.source
    return resolved


def validate_search(spec: ExperimentSpec) -> list[GridPoint]:
    """Refuse, before any trial starts, a search space the trainer cannot run."""
    where = spec.source or spec.name
    for section, keys in (("grid", spec.search.grid), ("distributions", spec.search.distributions)):
        for key in keys:
            if not _field_exists(key):
                raise SpecError(f"search.{section} names '{key}', which the spec does not have "
                                "(use dotted fields such as lora.r, train.learning_rate)", where=where)
    if spec.report.reference:  # a reference level the report cannot find is wrong before any trial runs
        check_reference(spec.report.reference, spec.search.grid, where=where)
    points = grid_points(spec)
    for point in points:
        trial_spec(spec, point.params)
    for key, d in spec.search.distributions.items():  # both ends of every range must be a valid spec
        for value in d.choices if d.choices is not None else [d.low, d.high]:
            trial_spec(spec, {key: int(value) if d.int else value})
    return points


def default_storage(study_dir: Path) -> str:
    """SQLite in the study's results folder (created if needed)."""
    Path(study_dir).mkdir(parents=True, exist_ok=True)
    return sqlite_url(study_dir)


def open_study(spec: ExperimentSpec, storage_url: str, *, create: bool = True, wait_s: float = 60) -> optuna.Study:
    """Create the study and enqueue its grid once, or join it; refuse a different spec under the same name."""
    points = validate_search(spec)
    storage = open_storage(storage_url)
    fingerprint = spec_fingerprint(spec)
    # Samplers and pruners live in each worker's process, not in the storage.
    sampler = {"tpe": optuna.samplers.TPESampler(seed=0), "random": optuna.samplers.RandomSampler(seed=0)}.get(
        spec.search.sampler)
    pruner = optuna.pruners.MedianPruner() if spec.search.pruner == "median" else optuna.pruners.NopPruner()
    created = False
    if create:
        try:
            study = optuna.create_study(study_name=spec.name, storage=storage, direction="maximize",
                                        sampler=sampler, pruner=pruner)
            created = True
        except optuna.exceptions.DuplicatedStudyError:
            pass
    deadline = time.monotonic() + wait_s
    while not created:
        try:
            study = optuna.load_study(study_name=spec.name, storage=storage, sampler=sampler, pruner=pruner)
            break
        except KeyError as e:
            if time.monotonic() > deadline:
                raise HarnessError(f"no study '{spec.name}' in {storage_url}: "
                                   f"start it with `harness run {spec.name} --storage ...`") from e
            time.sleep(0.5)  # the creating worker may be a moment behind
    while "fingerprint" not in study.user_attrs:
        if created or time.monotonic() > deadline:
            _enqueue_missing(study, points)
            study.set_user_attr("fingerprint", fingerprint)
            study.set_user_attr("grid_size", len(points))
            study.set_user_attr("points", [p.params for p in points])
            break
        time.sleep(0.5)  # another worker is enqueueing the grid
    if study.user_attrs["fingerprint"] != fingerprint:
        raise SpecError(f"study '{spec.name}' in {storage_url} was started from a different spec; "
                        "rename the experiment or use another --storage", where=spec.source or spec.name)
    return study


def _enqueue_missing(study: optuna.Study, points: list[GridPoint]) -> None:
    have = {t.system_attrs.get("fixed_params", {}).get("point", t.params.get("point"))
            for t in study.get_trials(deepcopy=False)}
    for point in points:
        if point.index not in have:
            study.enqueue_trial({"point": point.index}, skip_if_exists=True)


def _claim_waiting(study: optuna.Study) -> optuna.Trial | None:
    """Pop one WAITING trial atomically (the storage refuses a second claim), or None when none is left."""
    storage = study._storage
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        if storage.set_trial_state_values(frozen._trial_id, state=TrialState.RUNNING):
            return optuna.Trial(study, frozen._trial_id)
    return None


def _draw(spec: ExperimentSpec, study: optuna.Study) -> optuna.Trial | None:
    """Sampler studies: queue a fresh point at the first seed while fewer than n_trials were drawn."""
    if spec.search.sampler == "grid":
        return None
    first_seed = spec.search.seeds[0]
    live = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING, TrialState.PRUNED)
    drawn = [t for t in study.get_trials(deepcopy=False, states=live)
             if t.system_attrs.get("fixed_params", {}).get("train.seed", t.params.get("train.seed")) == first_seed]
    if len(drawn) >= spec.search.n_trials:
        return None
    study.enqueue_trial({"train.seed": first_seed})
    return _claim_waiting(study)


def _sampled_params(spec: ExperimentSpec, study: optuna.Study, trial: optuna.Trial) -> dict[str, Any]:
    """Suggest every distribution (fixed for seed copies); a first-seed draw queues its other seeds."""
    params: dict[str, Any] = {}
    for key, d in sorted(spec.search.distributions.items()):
        if d.choices is not None:
            params[key] = trial.suggest_categorical(key, d.choices)
        elif d.int:
            params[key] = trial.suggest_int(key, int(d.low), int(d.high), log=d.log, step=int(d.step or 1))
        else:
            params[key] = trial.suggest_float(key, d.low, d.high, log=d.log, step=d.step)
    params["train.seed"] = trial.suggest_categorical("train.seed", spec.search.seeds)
    retried = "failed_trial" in study._storage.get_trial(trial._trial_id).system_attrs  # copies already queued
    if params["train.seed"] == spec.search.seeds[0] and not retried:
        for seed in spec.search.seeds[1:]:
            study.enqueue_trial({**params, "train.seed": seed})
    return params


# A claimed trial without its own owner after this long lost its worker between the claim and the owner's write.
CLAIM_GRACE_S = 60.0


def reap_dead_trials(study: optuna.Study, reason: str = "worker process died") -> int:
    """Fail RUNNING trials whose worker is gone (same host and dead pid, or a stale heartbeat) with `reason`,
    and re-queue them."""
    host = socket.gethostname()
    reaped = 0
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = frozen.user_attrs.get("worker", {})
        if owner.get("trial") != frozen.number:
            # A re-queued copy inherits its failed original's owner, whose pid is dead: the worker that has just
            # claimed it has not written its own yet. Only a claim that never got an owner is reaped.
            started = frozen.datetime_start
            if started is None or (datetime.now() - started).total_seconds() < CLAIM_GRACE_S:
                continue
            reaped += _fail_and_requeue(study, frozen._trial_id, f"{reason} (before it wrote its owner)")
        elif owner.get("host") == host and not _pid_alive(owner.get("pid", -1)):
            reaped += _fail_and_requeue(study, frozen._trial_id, reason)
    optuna.storages.fail_stale_trials(study)  # other hosts' workers: a heartbeat older than the grace period
    return reaped


def _fail_and_requeue(study: optuna.Study, trial_id: int, reason: str) -> bool:
    """End a trial that stopped without a verdict of its own (`reason`), and queue a copy of its point."""
    storage = study._storage
    storage.set_trial_user_attr(trial_id, "reason", reason)  # before it finishes
    if not storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
        return False
    RetryHeartbeatStaleTrialCallback(max_retry=3)(study, storage.get_trial(trial_id))
    return True


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (killed, not yet reaped by its parent) is dead for our purposes.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (OSError, IndexError):
        return True


class _Heartbeat:
    def __init__(self, study: optuna.Study, trial_id: int) -> None:
        self._stop = threading.Event()
        self._storage, self._trial_id = study._storage, trial_id
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while not self._stop.is_set():
            self._storage.record_heartbeat(self._trial_id)
            self._stop.wait(HEARTBEAT_S)

    def __enter__(self) -> "_Heartbeat":
        if is_heartbeat_enabled(self._storage):  # RDB storages; a journal's workers share a host (pid check)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


def run_worker(spec: ExperimentSpec, study: optuna.Study, study_dir: Path, worker=None,
               max_trials: int | None = None) -> list[TrialResult]:
    """Pop and run waiting trials until the queue is empty (or `max_trials` have run)."""
    from harness.progress import console
    from harness.trial.runner import Worker, run_trial

    worker = worker or Worker()
    points = [GridPoint(i, p) for i, p in enumerate(study.user_attrs["points"])]
    results: list[TrialResult] = []
    reap_dead_trials(study)
    while max_trials is None or len(results) < max_trials:
        trial = _claim_waiting(study) or _draw(spec, study)
        if trial is None:
            break
        trial.set_user_attr("worker", worker_identity(trial.number))  # first: until then it has no live owner
        if spec.search.sampler == "grid":
            params = points[trial.suggest_int("point", 0, len(points) - 1)].params
        else:
            params = _sampled_params(spec, study, trial)
        trial.set_user_attr("params", params)
        earlier = study._storage.get_trial(trial._trial_id).user_attrs.get("reason")
        if earlier:  # a re-queued copy carries its failed original's attributes: that reason is not this run's
            trial.set_user_attr("earlier_reason", earlier)
            trial.set_user_attr("reason", "")
        console.rule(f"[bold]{spec.name} · {trial_dir_name(trial.number)} · {params}")
        study_dir.mkdir(parents=True, exist_ok=True)
        try:
            with _Heartbeat(study, trial._trial_id):
                result = _run_one(spec, study, trial, params, study_dir, worker, run_trial)
        except KeyboardInterrupt:  # Ctrl-C: the point runs again on the next run, like a dead worker's
            _fail_and_requeue(study, trial._trial_id, "interrupted: the run was stopped by SIGINT")
            raise
        results.append(result)
    return results


def worker_identity(trial: int) -> dict[str, Any]:
    """Who runs trial number `trial`: host and pid (to reap it when it dies), and the GPU and Slurm task it ran on."""
    env = os.environ
    ident: dict[str, Any] = {"trial": trial, "host": socket.gethostname(), "pid": os.getpid()}
    for key, var in (("node", "SLURMD_NODENAME"), ("gpu", "CUDA_VISIBLE_DEVICES"), ("slot", "HARNESS_SLOT"), ("slurm_job", "SLURM_JOB_ID"),
                     ("slurm_task", "SLURM_PROCID")):
        if env.get(var) is not None:
            ident[key] = env[var]
    return ident


def _tell(study: optuna.Study, trial: optuna.Trial, *args: Any, **kwargs: Any) -> None:
    _record_memory(trial)  # before the trial finishes: a finished trial takes no more attributes
    study.tell(trial, *args, **kwargs)


def _record_memory(trial: optuna.Trial) -> None:
    """Memory the worker still holds after a trial (after collection): if it creeps up trial after trial,
    something of an earlier trial was kept alive. CUDA: bytes allocated; always: the process's resident set."""
    import gc

    import psutil

    gc.collect()
    held: dict[str, float] = {"rss_gb": psutil.Process().memory_info().rss / 2**30}
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
        held["cuda_allocated_gb"] = torch.cuda.memory_allocated() / 2**30
    trial.set_user_attr("memory_after", held)


def _run_one(spec, study, trial, params, study_dir, worker, run_trial) -> TrialResult:
    t0 = time.perf_counter()

    def report(value: float, step: int) -> None:
        trial.report(value, step)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {step} with dev {spec.eval.metric}={value:.4f}")

    try:
        result = run_trial(trial_spec(spec, params), study_dir, trial.number, params, worker, on_dev_metric=report)
    except Unavailable as e:  # e.g. a QLoRA arm without CUDA: reported as not run, never silently dropped
        result = TrialResult(trial.number, Outcome.NOT_RUN.value, params, reason=str(e))
        result.write(study_dir / trial_dir_name(trial.number))
        trial.set_user_attr("outcome", Outcome.NOT_RUN.value)
        trial.set_user_attr("reason", f"{NOT_RUN_PREFIX}{e}")
        _tell(study, trial, state=TrialState.FAIL)
        return result
    except optuna.TrialPruned as e:
        result = TrialResult(trial.number, Outcome.PRUNED.value, params, reason=str(e))
        _tell(study, trial, state=TrialState.PRUNED)
    except Exception as e:  # the grid goes on; the reason is kept with the trial
        reason = f"{type(e).__name__}: {e}"
        result = TrialResult(trial.number, Outcome.FAILED.value, params, reason=reason)
        result.write(study_dir / trial_dir_name(trial.number))
        trial.set_user_attr("reason", reason)
        trial.set_user_attr("traceback", traceback.format_exc()[-4000:])
        _tell(study, trial, state=TrialState.FAIL)
        from harness.progress import console

        console.print(f"[red]trial {trial.number} failed:[/red] {reason}")
        return result
    trial.set_user_attr("duration_s", time.perf_counter() - t0)
    trial.set_user_attr("metrics", {arm: {k: v for k, v in m.items() if isinstance(v, (int, float))}
                                    for arm, m in result.metrics.items()})
    value = result.objective if result.objective is not None else -result.metrics["cost"].get("final_loss", 0.0)
    trial.set_user_attr("objective_source", f"dev {spec.eval.metric}" if result.objective is not None
                        else "negated final training loss (no dev split: a grid does not select)")
    _tell(study, trial, value)
    return result
