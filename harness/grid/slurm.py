"""A Slurm batch script that puts a study on N nodes × G GPUs: one job, one `srun` step, one task per GPU slot.

One job (not an array): Slurm allocates every node at once, `srun` starts `nodes × gpus_per_node ×
per_gpu` tasks, and each task is a `harness worker --create` on the same PostgreSQL study (the first to
arrive creates it and enqueues the grid; the others join). Each task picks its GPU from the ones
Slurm gave its node, by `SLURM_LOCALID`, and exports `CUDA_DEVICE_ORDER`/`CUDA_VISIBLE_DEVICES`
before Python starts. A task that dies leaves its trial to the heartbeat reaper (`--kill-on-bad-exit=0`
keeps the other tasks running). `harness status` shows the node and GPU of every trial.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import HarnessError


@dataclass
class SlurmJob:
    experiment: str
    storage: str
    results: Path
    nodes: int = 1
    gpus_per_node: int = 8
    per_gpu: int = 1
    cpus_per_task: int | None = None
    partition: str | None = None
    time: str | None = None
    preset: str | None = None
    sets: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)  # further sbatch options, e.g. --account=lab
    name: str = "harness"
    python: str = sys.executable
    workdir: Path = field(default_factory=Path.cwd)

    @property
    def tasks_per_node(self) -> int:
        return max(1, self.gpus_per_node) * self.per_gpu

    def check(self) -> None:
        """Bad numbers and formats, before sbatch sees them."""
        if self.nodes < 1:
            raise HarnessError(f"--nodes {self.nodes}: at least one node")
        if self.gpus_per_node < 0:
            raise HarnessError(f"--gpus-per-node {self.gpus_per_node}: 0 (CPU tasks) or more")
        if self.per_gpu < 1:
            raise HarnessError(f"--per-gpu {self.per_gpu}: at least one worker per GPU")
        if self.time is not None and not re.fullmatch(r"(\d+-)?\d+(:\d{1,2}){0,2}", self.time):
            raise HarnessError(f"--time {self.time}: Slurm expects minutes, MM:SS, HH:MM:SS or D-HH:MM:SS")
        for opt in self.extra:
            if not opt.startswith("--"):
                raise HarnessError(f"--sbatch {opt}: give sbatch's long form, e.g. --sbatch=--account=lab")


def log_dir(job: SlurmJob) -> Path:
    return Path(job.results).absolute() / job.name / "logs"


def write_script(job: SlurmJob, path: Path) -> Path:
    """Write the batch script and create its log folder (Slurm opens `--output` before the script runs)."""
    text = batch_script(job)
    log_dir(job).mkdir(parents=True, exist_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def batch_script(job: SlurmJob) -> str:
    """The text of the sbatch script for `job`."""
    job.check()
    logs = log_dir(job)
    header = [f"--job-name=harness-{job.name}", f"--nodes={job.nodes}", f"--ntasks-per-node={job.tasks_per_node}",
              f"--chdir={Path(job.workdir).absolute()}", f"--output={logs}/slurm-%j.out"]
    if job.gpus_per_node:
        header.append(f"--gpus-per-node={job.gpus_per_node}")
    if job.cpus_per_task:
        header.append(f"--cpus-per-task={job.cpus_per_task}")
    if job.partition:
        header.append(f"--partition={job.partition}")
    if job.time:
        header.append(f"--time={job.time}")
    header += job.extra
    worker = [job.python, "-m", "harness", "worker", job.experiment, "--create", "--storage", job.storage,
              "--results", str(Path(job.results).absolute())]
    if job.preset:
        worker += ["--preset", job.preset]
    for item in job.sets:
        worker += ["--set", item]
    pick_gpu = (f'GPUS=(${{CUDA_VISIBLE_DEVICES//,/ }}); '
                f'export CUDA_VISIBLE_DEVICES=${{GPUS[$((SLURM_LOCALID / {job.per_gpu}))]}}'
                if job.gpus_per_node else 'export CUDA_VISIBLE_DEVICES=""')
    task = f"export CUDA_DEVICE_ORDER=PCI_BUS_ID; {pick_gpu}; export HARNESS_SLOT=$SLURM_LOCALID; exec {shlex.join(worker)}"
    lines = ["#!/bin/bash", *[f"#SBATCH {h}" for h in header],
             f"# {job.nodes} node(s) x {job.tasks_per_node} task(s): one `harness worker` per GPU slot, "
             "all on one study (written by `harness slurm`)",
             "set -euo pipefail",
             f"srun --kill-on-bad-exit=0 --ntasks-per-node={job.tasks_per_node} "
             f"--output={logs}/worker-%j-%N-%t.log bash -c {shlex.quote(task)}", ""]
    return "\n".join(lines)


def sbatch(script: Path, *, test_only: bool) -> str:
    """Run sbatch on `script` (`--test-only`: Slurm checks it and schedules nothing); its output, or a
    HarnessError with sbatch's own words."""
    exe = shutil.which("sbatch")
    if exe is None:
        raise HarnessError("sbatch not found: run this on a Slurm login node (the script is written: "
                           f"{script})")
    cmd = [exe, *(["--test-only"] if test_only else ["--parsable"]), str(script)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise HarnessError(f"sbatch refused {script}: {(proc.stderr or proc.stdout).strip()}")
    return (proc.stdout + proc.stderr).strip()
