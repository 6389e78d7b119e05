"""`harness slurm`: the batch script (parsed, and checked by a real Slurm's `sbatch --test-only`), bad input,
and a small CPU grid submitted as several Slurm tasks on PostgreSQL, every point exactly once."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections import Counter

import optuna
import pytest

from cli_runner import harness
from conftest import require
from harness.errors import HarnessError
from harness.grid.slurm import SlurmJob, batch_script
from test_study import completed_points, tiny_spec

PG = os.environ.get("HARNESS_TEST_PG_URL", "")


def _slurm_up() -> bool:
    if not shutil.which("sbatch"):
        return False
    ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True)
    return "UP" in ping.stdout


def require_slurm() -> None:
    require(_slurm_up(), "a running Slurm (scripts/start-slurm.sh starts a single-node one; .ci/run does)")


def test_script_runs_one_worker_per_gpu_slot_on_every_node(tmp_path):
    job = SlurmJob("rank_ablation", "postgresql+psycopg2://u@db:5432/h", tmp_path, nodes=4, gpus_per_node=8,
                   per_gpu=2, partition="gpu", time="04:00:00", extra=["--account=lab"], name="rank_ablation")
    text = batch_script(job)
    header = dict(re.findall(r"^#SBATCH --([\w-]+)=(\S+)$", text, re.M))
    assert header["nodes"] == "4" and header["ntasks-per-node"] == "16" and header["gpus-per-node"] == "8"
    assert header["partition"] == "gpu" and header["time"] == "04:00:00" and header["account"] == "lab"
    srun = next(line for line in text.splitlines() if line.startswith("srun "))
    assert "--kill-on-bad-exit=0" in srun and "--ntasks-per-node=16" in srun
    assert "CUDA_DEVICE_ORDER=PCI_BUS_ID" in srun and "SLURM_LOCALID / 2" in srun  # two slots share a GPU
    assert "worker rank_ablation --create --storage postgresql+psycopg2://u@db:5432/h" in srun
    assert subprocess.run(["bash", "-n"], input=text, text=True).returncode == 0  # valid shell
    cpu = batch_script(SlurmJob("x", "postgresql://h/db", tmp_path, gpus_per_node=0, per_gpu=3))
    assert "gpus-per-node" not in cpu and "CUDA_VISIBLE_DEVICES=\"\"" in cpu and "--ntasks-per-node=3" in cpu


@pytest.mark.parametrize("field, value, message", [
    ("nodes", 0, "--nodes 0"), ("per_gpu", 0, "--per-gpu 0"), ("time", "4h", "--time 4h"),
    ("extra", ["account=lab"], "long form")])
def test_bad_slurm_options_are_refused_before_sbatch(tmp_path, field, value, message):
    job = SlurmJob("x", "postgresql://h/db", tmp_path)
    setattr(job, field, value)
    with pytest.raises(HarnessError, match=message):
        batch_script(job)


def test_a_postgresql_url_that_does_not_answer_is_an_error_before_any_script(tmp_path):
    proc = harness("slurm", str(tiny_spec(tmp_path)), "--storage", "postgresql+psycopg2://nobody@127.0.0.1:9/none",
                   "--results", str(tmp_path / "r"))
    assert proc.returncode == 2 and "cannot open the study storage" in proc.stdout + proc.stderr
    assert not (tmp_path / "r" / "tiny" / "slurm.sh").exists()


def test_a_local_storage_across_nodes_is_refused(tmp_path):
    proc = harness("slurm", str(tiny_spec(tmp_path)), "--storage", f"journal:{tmp_path}/j", "--nodes", "2",
                   "--results", str(tmp_path / "r"))
    assert proc.returncode == 2 and "PostgreSQL" in proc.stdout + proc.stderr


def test_an_option_sbatch_refuses_is_a_clear_error(tmp_path):
    require_slurm()
    require(bool(PG), "HARNESS_TEST_PG_URL (a PostgreSQL server; .ci/run starts one)")
    proc = harness("slurm", str(tiny_spec(tmp_path)), "--storage", PG, "--gpus-per-node", "0",
                   "--partition", "no_such_partition", "--results", str(tmp_path / "r"))
    assert proc.returncode == 2
    assert "sbatch refused" in proc.stdout + proc.stderr and "partition" in (proc.stdout + proc.stderr).lower()


@pytest.mark.slow
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
