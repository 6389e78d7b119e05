"""`harness slurm`: the batch script (parsed, and checked by a real Slurm's `sbatch --test-only`), bad input,
and a small CPU grid submitted as several Slurm tasks on PostgreSQL, every point exactly once.

The runs of it that take more than a few seconds; the rest is tests/unit/test_slurm.py."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections import Counter

import optuna

from tests.support.ci import require
from tests.support.cli_runner import harness
from tests.support.slurm import PG, require_slurm
from tests.support.studies import completed_points, tiny_spec


def test_a_cpu_grid_submitted_as_slurm_tasks_runs_every_point_exactly_once(tmp_path, harness_home):
    require_slurm()
    require(bool(PG), "HARNESS_TEST_PG_URL (a PostgreSQL server; .ci/run starts one)")
    name = f"slurm{os.getpid()}{int(time.time())}"
    spec_path = tiny_spec(tmp_path, name=name)
    results = tmp_path / "results"
    proc = harness("slurm", str(spec_path), "--storage", PG, "--gpus-per-node", "0", "--per-gpu", "2",
                   "--time", "30", "--results", str(results), "--submit", env={"HARNESS_HOME": str(harness_home)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    job_id = proc.stdout.strip().splitlines()[-1]
    assert job_id.isdigit()
    deadline = time.monotonic() + 1200
    while time.monotonic() < deadline:
        state = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True).stdout
        found = re.search(r"JobState=(\w+)", state)
        if found and found.group(1) not in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING"):
            break
        time.sleep(3)
    assert found and found.group(1) == "COMPLETED", state + "".join(
        p.read_text()[-2000:] for p in (results / name / "logs").glob("*"))
    study = optuna.load_study(study_name=name, storage=PG)
    assert completed_points(study) == Counter({i: 1 for i in range(4)}) and len(study.trials) == 4
    workers = [t.user_attrs["worker"] for t in study.trials]
    assert {w["slurm_job"] for w in workers} == {job_id} and all(w.get("node") for w in workers)
    assert len({w["slurm_task"] for w in workers}) == 2  # both tasks took trials
    status = harness("status", str(spec_path), "--storage", PG, "--results", str(results))
    assert all(f"{workers[0]['node']}/cpu" in line for line in (status.stdout + status.stderr).splitlines() if "complete" in line)
