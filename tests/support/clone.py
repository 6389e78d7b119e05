"""A user's clone: the checkout's files copied to a folder with nothing beside it, and `harness` run there."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.ci import ROOT


def tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    return [f for f in out.splitlines() if (ROOT / f).is_file()]


def copy_checkout(root: Path) -> Path:
    """Copy the checkout's files (tracked, or new and not ignored) to `root`."""
    for name in tracked_files():
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    return root


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """The checkout's files copied to a folder with nothing beside it."""
    root = copy_checkout(tmp_path_factory.mktemp("user") / "harness")
    assert not (root.parent / "shared").exists()
    return root


def run_in_clone(clone: Path, harness_home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("HARNESS_BENCHMARKS", "HARNESS_RESULTS")}
    env.update(PYTHONPATH=str(clone), HARNESS_HOME=str(harness_home), HF_HUB_OFFLINE="1", COLUMNS="120")
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=clone, env=env, capture_output=True,
                          text=True, timeout=1200)
