"""One launch, many workers: `harness run --workers N` (the CPU stand-in for `--gpus`), the storage each
launch gets, faults (SIGINT, a killed worker), migration between storages, compact labels.

The runs of it that take more than a few seconds; the rest is tests/unit/test_launch.py."""

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

from harness.errors import HarnessError
from harness.grid import storage as st
from tests.support.cli_runner import harness
from tests.support.studies import completed_points, local_study, tiny_spec, wait_running


def _env(harness_home: Path) -> dict[str, str]:
    return {**os.environ, "HARNESS_HOME": str(harness_home), "COLUMNS": "80", "HARNESS_STOP_GRACE_S": "5"}


def test_two_workers_share_one_grid_each_point_once_then_the_study_migrates(tmp_path, harness_home):
    spec_path, results = tiny_spec(tmp_path), tmp_path / "results"
    proc = harness("run", str(spec_path), "--workers", "2", "--results", str(results), env=_env(harness_home))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert "4/4 ended: 4 complete · none left" in out and "4 trials: 4 complete" in out
    # readable in a Slurm log and an 80-column terminal (a path is as long as it is)
    assert max(len(line) for line in out.splitlines() if str(tmp_path) not in line) <= 80
    assert "r=2 seed=0" in out and "lora.r" not in out  # compact labels, in the progress and the end table
    study_dir = results / "tiny"
    assert (study_dir / "study.journal").exists() and not (study_dir / "study.db").exists()
    study = local_study(results)
    assert completed_points(study) == Counter({i: 1 for i in range(4)}) and len(study.trials) == 4
    workers = [t.user_attrs["worker"] for t in study.trials]
    assert {w["slot"] for w in workers} == {"0", "1"} and {w["gpu"] for w in workers} == {""}
    assert len({w["pid"] for w in workers}) == 2
    logs = sorted(p.name for p in (study_dir / "logs").glob("worker-*.log"))
    assert logs == ["worker-0.log", "worker-1.log"]
    assert "trial-0000" in (study_dir / "logs" / "worker-0.log").read_text() + \
        (study_dir / "logs" / "worker-1.log").read_text()

    status = harness("status", str(spec_path), "--results", str(results), env=_env(harness_home))
    assert status.returncode == 0, status.stderr
    rows = [line for line in (status.stdout + status.stderr).splitlines() if "complete" in line]
    assert len(rows) == 4 and all("/cpu" in row and "seed=" in row for row in rows)

    before = [(t.number, t.state, t.user_attrs["params"]) for t in study.trials]
    moved = harness("study", "migrate", str(spec_path), "--to", "sqlite", "--results", str(results),
                    env=_env(harness_home))
    assert moved.returncode == 0, moved.stderr
    assert (study_dir / "study.db").exists() and (study_dir / "study.journal.migrated").exists()
    copy = optuna.load_study(study_name="tiny", storage=st.sqlite_url(study_dir))
    assert [(t.number, t.state, t.user_attrs["params"]) for t in copy.trials] == before
    again = harness("study", "migrate", str(spec_path), "--to", "sqlite", "--results", str(results),
                    env=_env(harness_home))
    assert again.returncode == 2 and "already lives there" in again.stdout + again.stderr
    other = st.journal_url(tmp_path / "elsewhere")
    assert st.migrate("tiny", st.sqlite_url(study_dir), other) == 4
    with pytest.raises(HarnessError, match="already holds a study 'tiny'"):
        st.migrate("tiny", st.sqlite_url(study_dir), other)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_sigint_stops_every_worker_fails_their_trials_with_the_reason_and_the_next_launch_finishes(
        tmp_path, harness_home):
    # Two points, one seed: both are running when the launch is interrupted, and the rerun trains just those.
    spec_path = tiny_spec(tmp_path, grid="{lora.r: [2, 4], train.max_steps: [40]}", seeds="[0]")
    results = tmp_path / "results"
    cmd = [sys.executable, "-m", "harness", "run", str(spec_path), "--workers", "2", "--results", str(results)]
    proc = subprocess.Popen(cmd, env=_env(harness_home), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    study = wait_running(results, 2, proc)
    pids = [t.user_attrs["worker"]["pid"] for t in study.get_trials(states=(TrialState.RUNNING,))]
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out[-3000:]
    assert not any(_alive(pid) for pid in pids), "a worker outlived the launch"
    study = local_study(results)
    failed = study.get_trials(states=(TrialState.FAIL,))
    assert len(failed) == 2 and all("interrupted" in t.user_attrs["reason"] and "SIGINT" in t.user_attrs["reason"]
                                    for t in failed)
    assert not study.get_trials(states=(TrialState.RUNNING,))
    rerun = subprocess.run(cmd, env=_env(harness_home), capture_output=True, text=True, timeout=1200)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert completed_points(local_study(results)) == Counter({i: 1 for i in range(2)})  # none lost, none twice


def test_a_killed_worker_has_its_trial_requeued_and_the_others_go_on(tmp_path, harness_home):
    spec_path, results = tiny_spec(tmp_path, grid="{lora.r: [2, 4], train.max_steps: [20]}"), tmp_path / "results"
    cmd = [sys.executable, "-m", "harness", "run", str(spec_path), "--workers", "2", "--results", str(results)]
    proc = subprocess.Popen(cmd, env=_env(harness_home), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    study = wait_running(results, 2, proc)
    victim = study.get_trials(states=(TrialState.RUNNING,))[0]
    os.kill(victim.user_attrs["worker"]["pid"], signal.SIGKILL)
    out, _ = proc.communicate(timeout=1200)
    assert proc.returncode == 0, out[-3000:]
    assert "died (signal SIGKILL)" in out
    study = local_study(results)
    assert completed_points(study) == Counter({i: 1 for i in range(4)})
    killed = study.trials[victim.number]
    assert killed.state == TrialState.FAIL and "died (signal SIGKILL)" in killed.user_attrs["reason"]
