"""Grids as Optuna studies: exactly-once trials across workers, resume after SIGKILL, failures recorded.

The runs of it that take more than a few seconds; the rest is tests/unit/test_study.py."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter

import optuna
from optuna.trial import TrialState

from harness.grid.study import default_storage, open_study, run_worker
from harness.results import TrialResult
from harness.spec import load_spec
from harness.trial.runner import Worker
from tests.support.ci import require
from tests.support.studies import SAMPLED, completed_points, harness_cmd, tiny_spec


def test_grid_runs_each_point_once_and_loads_the_base_once(tmp_path, harness_home):
    spec = load_spec(tiny_spec(tmp_path, grid="{lora.r: [2, 4, 8]}"))
    study = open_study(spec, default_storage(tmp_path))
    worker = Worker()
    results = run_worker(spec, study, tmp_path / "tiny", worker)
    assert [r.status for r in results] == ["complete"] * 6
    assert worker.base_loads == 1  # a 6-trial grid loads the base model once per worker
    assert completed_points(study) == Counter({i: 1 for i in range(6)})
    params = [r.params for r in results]
    assert {(p["lora.r"], p["train.seed"]) for p in params} == {(r, s) for r in (2, 4, 8) for s in (0, 1)}
    for r in results:  # the adapter of each trial has its own rank: adapters really came off between trials
        cost = r.metrics["cost"]
        assert cost["trainable_params"] > 0 and cost["wall_s"] > 0 and cost["tokens_trained"] > 0
    ranks = {r.params["lora.r"]: r.metrics["cost"]["trainable_params"] for r in results}
    assert ranks[4] == 2 * ranks[2] and ranks[8] == 4 * ranks[2]
    # Memory held after each trial, recorded per trial: once the first trials have warmed the caches it
    # stays flat, i.e. nothing of an earlier trial (adapter, optimiser, activations) is kept alive.
    held = [study.trials[r.number].user_attrs["memory_after"]["rss_gb"] for r in results]
    assert all(h > 0 for h in held)
    assert held[-1] - held[2] < 0.05 * held[2], held


def test_nan_loss_is_recorded_as_failed_and_the_grid_goes_on(tmp_path, harness_home):
    spec = load_spec(tiny_spec(tmp_path, grid="{train.learning_rate: [1.0e-3, 1.0e+30], train.max_steps: [3]}",
                               seeds="[0]"))
    study = open_study(spec, default_storage(tmp_path))
    results = run_worker(spec, study, tmp_path / "tiny", Worker())
    by_lr = {r.params["train.learning_rate"]: r for r in results}
    assert by_lr[1e-3].status == "complete"
    failed = by_lr[1e30]
    assert failed.status == "failed" and "NonFiniteLoss" in failed.reason and "step 2" in failed.reason
    recorded = TrialResult.read(tmp_path / "tiny" / f"trial-{failed.number:04d}")
    assert recorded.status == "failed" and "nan" in recorded.reason.lower()
    states = Counter(t.state for t in study.get_trials())
    assert states == Counter({TrialState.COMPLETE: 1, TrialState.FAIL: 1})
    assert any("NonFiniteLoss" in t.user_attrs.get("reason", "") for t in study.get_trials())


def test_sigkill_mid_trial_then_rerun_finishes_without_duplicates(tmp_path, harness_home):
    spec_path = tiny_spec(tmp_path, grid="{lora.r: [2, 4, 8]}", seeds="[0]")
    results = tmp_path / "results"
    env = {**os.environ, "HARNESS_HOME": str(harness_home)}
    proc = subprocess.Popen(harness_cmd("run", str(spec_path), "--results", str(results)), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    storage = default_storage(results / "tiny")
    deadline = time.monotonic() + 600
    # Kill it once the first trial is done and the second is running.
    while time.monotonic() < deadline:
        time.sleep(0.5)
        if (results / "tiny" / "trial-0000" / "result.json").exists() and (results / "tiny" / "trial-0001").exists():
            break
        assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    study = optuna.load_study(study_name="tiny", storage=storage)
    assert any(t.state == TrialState.RUNNING for t in study.get_trials()), "killed mid-trial"

    rerun = subprocess.run(harness_cmd("run", str(spec_path), "--results", str(results)), env=env,
                           capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    study = optuna.load_study(study_name="tiny", storage=storage)
    assert completed_points(study) == Counter({0: 1, 1: 1, 2: 1})  # none lost, none twice
    states = Counter(t.state for t in study.get_trials())
    assert states == Counter({TrialState.COMPLETE: 3, TrialState.FAIL: 1})  # the killed one, re-queued
    first = study.get_trials()[0]
    assert first.state == TrialState.COMPLETE and first.datetime_complete < study.get_trials()[-1].datetime_start


def test_two_workers_on_postgresql_run_every_point_exactly_once(tmp_path, harness_home):
    url = os.environ.get("HARNESS_TEST_PG_URL", "")
    require(bool(url), "HARNESS_TEST_PG_URL (a PostgreSQL server; .ci/run starts one with scripts/start-postgres.sh)")
    name = f"pg{os.getpid()}{int(time.time())}"
    spec_path = tiny_spec(tmp_path, grid="{lora.r: [2, 4, 8]}", seeds="[0, 1]", name=name)
    env = {**os.environ, "HARNESS_HOME": str(harness_home)}
    results = tmp_path / "results"
    first = subprocess.Popen(harness_cmd("run", str(spec_path), "--storage", url, "--results", str(results)),
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    second = subprocess.Popen(harness_cmd("worker", str(spec_path), "--storage", url, "--results", str(results)),
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    outs = [p.communicate(timeout=1200) for p in (first, second)]
    assert first.returncode == 0, outs[0][1][-3000:]
    assert second.returncode == 0, outs[1][1][-3000:]
    study = optuna.load_study(study_name=name, storage=url)
    assert completed_points(study) == Counter({i: 1 for i in range(6)})
    assert len(study.get_trials()) == 6
    pids = {t.user_attrs["worker"]["pid"] for t in study.get_trials()}
    assert len(pids) == 2, "both workers took trials"


def test_sampled_points_run_for_every_seed_and_report_dev_scores(tmp_path, harness_home):
    path = tmp_path / "sampled.yaml"
    path.write_text(SAMPLED)
    spec = load_spec(path)
    study = open_study(spec, default_storage(tmp_path))
    results = run_worker(spec, study, tmp_path / "sampled", Worker())
    assert len(results) == 4 and all(r.status == "complete" for r in results)
    by_lr = Counter(r.params["train.learning_rate"] for r in results)
    assert len(by_lr) == 2 and set(by_lr.values()) == {2}, "each drawn point ran once per seed"
    assert Counter(r.params["train.seed"] for r in results) == Counter({0: 2, 1: 2})
    for t in study.get_trials():
        assert t.state == TrialState.COMPLETE
        assert set(t.intermediate_values) >= {1, 2}, "dev scores reported at every step for the pruner"
        assert t.user_attrs["objective_source"].startswith("dev")
    for r in results:  # the objective is the dev score, never the held-out one
        assert r.objective is not None and 0.0 <= r.objective <= 1.0
