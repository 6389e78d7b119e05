"""Helpers shared by tests/unit/test_slurm.py and tests/e2e/test_slurm.py."""

from __future__ import annotations

import os
import shutil
import subprocess

from tests.support.ci import require

PG = os.environ.get("HARNESS_TEST_PG_URL", "")


def slurm_up() -> bool:
    if not shutil.which("sbatch"):
        return False
    ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True)
    return "UP" in ping.stdout


def require_slurm() -> None:
    require(slurm_up(), "a running Slurm (scripts/start-slurm.sh starts a single-node one; .ci/run does)")
