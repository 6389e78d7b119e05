"""`harness slurm`: the batch script (parsed, and checked by a real Slurm's `sbatch --test-only`), bad input,
and a small CPU grid submitted as several Slurm tasks on PostgreSQL, every point exactly once."""

from __future__ import annotations

import re
import subprocess

import pytest

from harness.errors import HarnessError
from harness.grid.slurm import SlurmJob, batch_script
from tests.support.ci import require
from tests.support.cli_runner import harness
from tests.support.slurm import PG, require_slurm
from tests.support.studies import tiny_spec


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
