"""The package as a wheel: built with `pip wheel`, installed without `-e` into a fresh venv, and used from
an empty folder (no checkout on sys.path, no experiments/ beside it), it still has everything it ships:
the registered experiments, the lm-eval task files and the raw reference loop of `harness bench`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.ci import ROOT

# What a wheel is built from: the tracked tree, without anything a run or a build left in it.
LEFT_BEHIND = (".git", ".venv", "results", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
               "wandb", ".gpusite", ".whl")
# One item per benchmark file, in the shape every local task reads (README: 'Benchmark data').
BENCHMARK_ROWS = {
    "arc-easy/test.jsonl": {"centerpiece": "Which is a fruit?", "options": ["apple", "rock", "car", "shoe"],
                            "correct_options_idx": [0]},
    "winogrande/test.jsonl": {"centerpiece": "The cup held the coin because the _ was small.",
                              "options": ["coin", "cup"], "correct_options_idx": [0]},
}
RESOLVE = """
import json, sys
from pathlib import Path
import harness
from harness.bench import DEFAULT_REFERENCE
from harness.capabilities.tasks import resolve_tasks
from harness.capabilities.lm_tasks import TASKS_DIR
from harness.experiments import registered
from lm_eval.tasks import TaskManager

configs = resolve_tasks(["arc_easy_local", "winogrande_local"])
tasks = TaskManager(include_path=str(TASKS_DIR), include_defaults=False).load(configs)["tasks"]
requests = {}
for name, task in tasks.items():
    task.build_all_requests(limit=1)
    requests[name] = [list(inst.arguments) for inst in task.instances]
print(json.dumps({"harness": harness.__file__, "tasks_dir": str(TASKS_DIR), "reference": str(DEFAULT_REFERENCE),
                  "reference_is_file": DEFAULT_REFERENCE.is_file(),
                  "yamls": [c["metadata"]["harness_yaml"] for c in configs],
                  "experiments": {n: str(e.path) for n, e in registered().items()}, "requests": requests}))
"""


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kwargs)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A venv with the wheel installed (not editable) that sees this venv's packages: its python."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    shutil.copytree(ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(*LEFT_BEHIND))
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp / "dist"),
          str(source)])
    [wheel] = (tmp / "dist").glob("harness-*.whl")
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index",
          str(wheel)])
    # Only now the dependencies: this venv's site-packages (a .pth line adds a folder, not the .pth files in
    # it, so the editable install of the checkout stays out of sight).
    [site] = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.split()
    ours = [p for p in sys.path if Path(p).name in ("site-packages", "dist-packages")]
    (Path(site) / "test-venv.pth").write_text("".join(f"{p}\n" for p in ours))
    return python


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HARNESS_EXPERIMENTS")}
    return {**env, "HARNESS_HOME": str(tmp_path / "home"), "HARNESS_BENCHMARKS": str(tmp_path / "benchmarks"),
            "COLUMNS": "200"}


def test_the_installed_wheel_lists_and_checks_every_registered_experiment(installed, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    harness = installed.parent / "harness"
    shipped = sorted(p.stem for p in (ROOT / "experiments").glob("*.yaml"))
    listed = _run([str(harness), "list"], cwd=empty, env=_env(tmp_path)).stderr  # the console is stderr
    assert all(name in listed for name in shipped), listed
    checked = _run([str(harness), "check", "quickstart"], cwd=empty, env=_env(tmp_path)).stderr
    assert "ok quickstart: 1 trial(s)" in checked, checked


def test_the_installed_wheel_resolves_its_lm_eval_tasks_and_ships_the_reference_loop(installed, tmp_path):
    for rel, row in BENCHMARK_ROWS.items():
        (tmp_path / "benchmarks" / rel).parent.mkdir(parents=True)
        (tmp_path / "benchmarks" / rel).write_text(json.dumps(row) + "\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    got = json.loads(_run([str(installed), "-c", RESOLVE], cwd=empty, env=_env(tmp_path)).stdout.splitlines()[-1])

    venv = installed.parent.parent
    assert Path(got["harness"]).is_relative_to(venv), got["harness"]  # the wheel's copy, not the checkout
    assert Path(got["tasks_dir"]).is_relative_to(venv)
    assert all(Path(y).is_relative_to(venv) for y in got["yamls"])
    assert got["reference_is_file"] and Path(got["reference"]).is_relative_to(venv)
    shipped = sorted(p.stem for p in (ROOT / "experiments").glob("*.yaml"))
    assert sorted(got["experiments"]) == shipped
    assert all(Path(p).is_relative_to(venv) for p in got["experiments"].values())
    # The task definitions work: the template included, winogrande's `!function`s imported from the wheel.
    assert [args[1] for args in got["requests"]["arc_easy_local"]] == [" apple", " rock", " car", " shoe"]
    assert [args[0] for args in got["requests"]["winogrande_local"]] == ["The cup held the coin because the coin",
                                                                         "The cup held the coin because the cup"]
