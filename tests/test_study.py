"""Grids as Optuna studies: exactly-once trials across workers, resume after SIGKILL, failures recorded."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from conftest import require
from harness.errors import HarnessError, SpecError
from harness.results import TrialResult
from harness.spec import load_spec
from harness.grid.study import default_storage, open_study, run_worker
from harness.trial.runner import Worker

TINY = """\
description: A tiny grid for tests.
model: {{base: 'random:tiny'}}
data: {{builtin: realestate, train_limit: 8}}
train: {{max_steps: 2, batch_size: 4, logging_steps: 1}}
eval: {{max_new_tokens: 4, limit: 4, batch_size: 4, compare_base: false}}
tracking: {{wandb: disabled}}
search:
  grid: {grid}
  seeds: {seeds}
"""


def tiny_spec(tmp_path: Path, grid: str = "{lora.r: [2, 4]}", seeds: str = "[0, 1]", name: str = "tiny") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(TINY.format(grid=grid, seeds=seeds))
    return path


def completed_points(study: optuna.Study) -> Counter:
    return Counter(t.params["point"] for t in study.get_trials(states=(TrialState.COMPLETE,)))


# ---------------------------------------------------------------- bad input, before any trial


def test_unknown_search_parameter_is_refused(tmp_path):
    spec = load_spec(tiny_spec(tmp_path, grid="{lora.rank: [2, 4]}"))
    with pytest.raises(SpecError, match="lora.rank"):
        open_study(spec, default_storage(tmp_path))


def test_empty_grid_list_is_refused(tmp_path):
    with pytest.raises(SpecError, match="empty list"):
        load_spec(tiny_spec(tmp_path, grid="{lora.r: []}"))


def test_invalid_grid_value_is_refused(tmp_path):
    spec = load_spec(tiny_spec(tmp_path, grid="{lora.r: [2, -1]}"))
    with pytest.raises(SpecError, match="lora.r"):
        open_study(spec, default_storage(tmp_path))


def test_unreachable_storage_is_a_clear_error(tmp_path):
    spec = load_spec(tiny_spec(tmp_path))
    with pytest.raises(HarnessError, match="cannot open the study storage"):
        open_study(spec, "postgresql+psycopg2://nobody@127.0.0.1:9/none")


def test_two_specs_under_one_study_name_are_refused(tmp_path):
    storage = default_storage(tmp_path)
    open_study(load_spec(tiny_spec(tmp_path)), storage)
    other = load_spec(tiny_spec(tmp_path, grid="{lora.r: [8]}"))
    with pytest.raises(SpecError, match="different spec"):
        open_study(other, storage)


# ---------------------------------------------------------------- running grids


@pytest.mark.slow
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


@pytest.mark.slow
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


def _harness_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "harness", *args]


@pytest.mark.slow
def test_sigkill_mid_trial_then_rerun_finishes_without_duplicates(tmp_path, harness_home):
    spec_path = tiny_spec(tmp_path, grid="{lora.r: [2, 4, 8]}", seeds="[0]")
    results = tmp_path / "results"
    env = {**os.environ, "HARNESS_HOME": str(harness_home)}
    proc = subprocess.Popen(_harness_cmd("run", str(spec_path), "--results", str(results)), env=env,
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

    rerun = subprocess.run(_harness_cmd("run", str(spec_path), "--results", str(results)), env=env,
                           capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    study = optuna.load_study(study_name="tiny", storage=storage)
    assert completed_points(study) == Counter({0: 1, 1: 1, 2: 1})  # none lost, none twice
    states = Counter(t.state for t in study.get_trials())
    assert states == Counter({TrialState.COMPLETE: 3, TrialState.FAIL: 1})  # the killed one, re-queued
    first = study.get_trials()[0]
    assert first.state == TrialState.COMPLETE and first.datetime_complete < study.get_trials()[-1].datetime_start


@pytest.mark.slow
def test_two_workers_on_postgresql_run_every_point_exactly_once(tmp_path, harness_home):
    url = os.environ.get("HARNESS_TEST_PG_URL", "")
    require(bool(url), "HARNESS_TEST_PG_URL (a PostgreSQL server; .ci/run starts one with scripts/start-postgres.sh)")
    name = f"pg{os.getpid()}{int(time.time())}"
    spec_path = tiny_spec(tmp_path, grid="{lora.r: [2, 4, 8]}", seeds="[0, 1]", name=name)
    env = {**os.environ, "HARNESS_HOME": str(harness_home)}
    results = tmp_path / "results"
    first = subprocess.Popen(_harness_cmd("run", str(spec_path), "--storage", url, "--results", str(results)),
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    second = subprocess.Popen(_harness_cmd("worker", str(spec_path), "--storage", url, "--results", str(results)),
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    outs = [p.communicate(timeout=1200) for p in (first, second)]
    assert first.returncode == 0, outs[0][1][-3000:]
    assert second.returncode == 0, outs[1][1][-3000:]
    study = optuna.load_study(study_name=name, storage=url)
    assert completed_points(study) == Counter({i: 1 for i in range(6)})
    assert len(study.get_trials()) == 6
    pids = {t.user_attrs["worker"]["pid"] for t in study.get_trials()}
    assert len(pids) == 2, "both workers took trials"


_OPEN_AT = """\
import sys, time
from harness.grid.study import open_storage
while time.time() < float(sys.argv[2]):
    time.sleep(0.001)
open_storage(sys.argv[1], attempts=int(sys.argv[3]))
"""


def _race_to_open(url: str, processes: int, attempts: int) -> list[subprocess.Popen]:
    start = time.time() + 3  # every process imports first, then all open the storage at once
    return [subprocess.Popen([sys.executable, "-c", _OPEN_AT, url, str(start), str(attempts)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(processes)]


def test_workers_started_together_on_an_empty_postgresql_database_all_open_it(tmp_path):
    import sqlalchemy

    url = os.environ.get("HARNESS_TEST_PG_URL", "")
    require(bool(url), "HARNESS_TEST_PG_URL (a PostgreSQL server; .ci/run starts one with scripts/start-postgres.sh)")
    admin = sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT")
    db = f"race{os.getpid()}{int(time.time())}"
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f"CREATE DATABASE {db}"))
    try:
        fresh = url.rsplit("/", 1)[0] + "/" + db
        procs = _race_to_open(fresh, processes=6, attempts=5)
        outs = [p.communicate(timeout=120) for p in procs]
        assert [p.returncode for p in procs] == [0] * 6, [o[1][-1500:] for o in outs]
    finally:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        admin.dispose()


SAMPLED = """\
description: A sampled search for tests.
model: {base: 'random:tiny'}
data: {builtin: realestate, train_limit: 8, dev_size: 4}
train: {max_steps: 2, batch_size: 4, logging_steps: 1}
eval: {max_new_tokens: 4, limit: 4, batch_size: 4, compare_base: false, dev_every_steps: 1}
tracking: {wandb: disabled}
search:
  sampler: random
  distributions: {train.learning_rate: {low: 1.0e-4, high: 1.0e-2, log: true}}
  n_trials: 2
  seeds: [0, 1]
  pruner: median
"""


def test_sampler_without_dev_split_is_refused(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(SAMPLED.replace(", dev_size: 4", ""))
    with pytest.raises(SpecError, match="dev split"):
        load_spec(path)


@pytest.mark.slow
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


def test_dashboard_serves_the_study(tmp_path):
    import socket

    import httpx

    spec_path = tiny_spec(tmp_path)
    results = tmp_path / "results"
    open_study(load_spec(spec_path), default_storage(results / "tiny"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(_harness_cmd("dashboard", str(spec_path), "--results", str(results), "--port", str(port)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                reply = httpx.get(f"http://127.0.0.1:{port}/api/studies", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and proc.poll() is None, "dashboard did not come up"
                time.sleep(0.5)
        assert reply.status_code == 200 and "tiny" in reply.text
    finally:
        proc.terminate()
        proc.wait(timeout=30)
