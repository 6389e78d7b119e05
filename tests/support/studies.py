"""Tiny studies on `random:tiny`: a grid spec (two ranks × two seeds by default), a sampled search, the
`harness` command line for a subprocess, and what an Optuna study completed."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
from optuna.trial import TrialState
from sqlalchemy.exc import OperationalError

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


def harness_cmd(*args: str) -> list[str]:
    """The `harness` command line, for a subprocess a test starts and signals itself."""
    return [sys.executable, "-m", "harness", *args]


def tiny_spec(tmp_path: Path, grid: str = "{lora.r: [2, 4]}", seeds: str = "[0, 1]", name: str = "tiny") -> Path:
    """Write the tiny grid spec as `tmp_path/NAME.yaml` and return its path."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(TINY.format(grid=grid, seeds=seeds))
    return path


def completed_points(study: optuna.Study) -> Counter:
    """How many times each grid point completed (exactly once each, in a healthy study)."""
    return Counter(t.params["point"] for t in study.get_trials(states=(TrialState.COMPLETE,)))


def local_study(results: Path, name: str = "tiny") -> optuna.Study:
    """The study a `harness run --results RESULTS` keeps beside its results (SQLite or journal)."""
    from harness.grid.storage import local_storage, open_storage

    return optuna.load_study(study_name=name, storage=open_storage(local_storage(results / name)))


def wait_running(results: Path, n: int, proc: subprocess.Popen, name: str = "tiny",
                 timeout: float = 600) -> optuna.Study:
    """Poll until N trials of the study are RUNNING at once while PROC is still alive.

    The storage file appears before the study is written into it, so "no such study yet" means poll again."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(1)
        assert proc.poll() is None, "the run ended before the test could act: " + (proc.stdout.read()[-3000:]
                                                                                   if proc.stdout else "")
        if not any((results / name / f).exists() for f in ("study.db", "study.journal")):
            continue  # opening first would create a SQLite file the launch's journal then has to live beside
        try:
            study = local_study(results, name)
        except (KeyError, OperationalError):  # "Record does not exist." / "database is locked": the run is
            continue                          # still writing the study it just created

        if len(study.get_trials(states=(TrialState.RUNNING,))) >= n:
            return study
    raise AssertionError(f"{n} trial(s) never ran at once")
