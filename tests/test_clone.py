"""A user's clone works without anything outside it: no `../shared` beside the checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_DIRS = ("harness", "analysis", "experiments", "scripts", "benchmarks")


def _tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    return [f for f in out.splitlines() if (ROOT / f).is_file()]


def test_no_file_of_the_package_refers_to_a_shared_folder_beside_the_checkout():
    offenders = []
    for name in _tracked_files():
        if name.startswith(PACKAGE_DIRS):
            text = (ROOT / name).read_text(errors="replace")
            if "../shared" in text or "shared/data" in text:
                offenders.append(name)
    assert offenders == []


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """The checkout's files copied to a folder with nothing beside it."""
    root = tmp_path_factory.mktemp("user") / "harness"
    for name in _tracked_files():
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    assert not (root.parent / "shared").exists()
    return root


def _run(clone: Path, harness_home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("HARNESS_BENCHMARKS", "HARNESS_RESULTS")}
    env.update(PYTHONPATH=str(clone), HARNESS_HOME=str(harness_home), HF_HUB_OFFLINE="1", COLUMNS="120")
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=clone, env=env, capture_output=True,
                          text=True, timeout=1200)


@pytest.mark.slow
def test_quickstart_smoke_runs_in_a_clone(clone, harness_home):
    proc = _run(clone, harness_home, "run", "quickstart", "--preset", "smoke")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (clone / "results" / "quickstart-smoke" / "trial-0000" / "result.json").exists()


def test_forgetting_smoke_in_a_clone_without_benchmark_data_says_both_ways_before_any_trial(clone, harness_home):
    proc = _run(clone, harness_home, "run", "forgetting", "--preset", "smoke")
    out = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode == 2, out[-3000:]
    assert "Two ways" in out and "HARNESS_BENCHMARKS" in out and "arc_easy_local -> arc_easy" in out
    assert not list((clone / "results").glob("forgetting-smoke/trial-*"))


@pytest.mark.slow
def test_bench_prints_the_harness_to_raw_loop_ratio_in_a_clone(clone, harness_home):
    proc = _run(clone, harness_home, "bench", "--arch", "random:tiny", "--seq", "64", "--steps", "2", "--warmup", "1",
                "--batch-size", "2")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert "harness/reference" in out and "not run" not in out  # the project's own raw loop ran beside it
    assert list((clone / "results" / "bench").rglob("train-tiny-lora-random-*.json"))

