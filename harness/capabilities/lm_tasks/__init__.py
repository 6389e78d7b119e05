"""The harness's own lm-eval tasks: real benchmark subsets read from local files, for offline use.

One YAML per subset lives in this folder (`arc_easy_local.yaml`, ...). Their `data_files` are
relative to the benchmark root, which is resolved at run time, never written into a config:

    $HARNESS_BENCHMARKS, else $HARNESS_HOME/benchmarks (~/.cache/harness/benchmarks)

Without the files, `harness.capabilities.tasks.resolve_tasks` runs lm-eval's own task of the same
benchmark when the Hub is reachable, and otherwise says both ways to get the data.

`task_config(name)` loads a YAML with lm-eval's own loader (so `include:` and `!function` behave
exactly as in lm-eval), makes its data files absolute and returns the final config dict, which
`lm_eval.simple_evaluate(tasks=[...])` and `TaskManager.load([...])` accept as an inline task.
The data is used by path: it is never copied into the project.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

TASKS_DIR = Path(__file__).resolve().parent
BENCHMARKS_ENV = "HARNESS_BENCHMARKS"
SUFFIX = "_local"


def default_benchmarks_root() -> Path:
    """`$HARNESS_HOME/benchmarks`: where the install step puts the benchmark subsets (see the README)."""
    from harness.models import harness_home

    return harness_home() / "benchmarks"


def benchmarks_root() -> Path:
    """Where the benchmark files are: `$HARNESS_BENCHMARKS`, else the default next to the checkout."""
    env = os.environ.get(BENCHMARKS_ENV)
    return Path(env).expanduser().resolve() if env else default_benchmarks_root().resolve()


def local_task_names() -> list[str]:
    """The names of the harness's own tasks (one YAML each in this folder), sorted."""
    return sorted(p.stem for p in TASKS_DIR.glob(f"*{SUFFIX}.yaml"))


def _load_yaml(name: str, *, resolve_func: bool) -> dict[str, Any]:
    from lm_eval.tasks._yaml_loader import load_yaml

    path = TASKS_DIR / f"{name}.yaml"
    if not path.exists():
        raise HarnessError(f"no local lm-eval task '{name}' (local tasks: {', '.join(local_task_names())})",
                           where=TASKS_DIR)
    return load_yaml(path, resolve_func=resolve_func, recursive=True)


def task_data_files(name: str, root: Path | None = None) -> dict[str, Path]:
    """{split: absolute file} of a local task, under `root` (default `benchmarks_root()`)."""
    root = Path(root) if root is not None else benchmarks_root()
    cfg = _load_yaml(name, resolve_func=False)
    files = (cfg.get("dataset_kwargs") or {}).get("data_files") or {}
    if not isinstance(files, dict) or not files:
        raise HarnessError("a local task needs dataset_kwargs.data_files {split: file}",
                           where=TASKS_DIR / f"{name}.yaml")
    return {split: root / rel for split, rel in files.items()}


def task_config(name: str, root: Path | None = None, *, cache_dir: Path | None = None) -> dict[str, Any]:
    """The final lm-eval config of a local task, its data files made absolute under the benchmark root.

    Raises HarnessError when a data file is missing (naming the root and how to point elsewhere).
    `cache_dir` is where `datasets` caches the parsed JSON (default: its own cache).
    """
    root = Path(root) if root is not None else benchmarks_root()
    files = task_data_files(name, root)
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise HarnessError(
            f"local task '{name}' needs {', '.join(missing)}, which does not exist; set ${BENCHMARKS_ENV} "
            f"to the folder that holds the benchmark subsets, or put them in {default_benchmarks_root()} "
            "(README: 'Benchmark data')",
            where=root)
    cfg = _load_yaml(name, resolve_func=True)
    kwargs = dict(cfg.get("dataset_kwargs") or {})
    kwargs["data_files"] = {split: str(path) for split, path in files.items()}
    if cache_dir is not None:
        kwargs["cache_dir"] = str(cache_dir)
    cfg["dataset_kwargs"] = kwargs
    metadata = dict(cfg.get("metadata") or {})
    metadata["harness_yaml"] = str(TASKS_DIR / f"{name}.yaml")
    cfg["metadata"] = metadata
    return cfg


def available_local_tasks(root: Path | None = None) -> dict[str, bool]:
    """{local task name: whether its data files exist under the benchmark root}."""
    root = Path(root) if root is not None else benchmarks_root()
    return {name: all(p.is_file() for p in task_data_files(name, root).values()) for name in local_task_names()}


def describe_local_tasks(root: Path | None = None) -> str:
    """One line per local task: its name and the data file it reads (marked when missing)."""
    root = Path(root) if root is not None else benchmarks_root()
    lines = []
    for name in local_task_names():
        files = task_data_files(name, root)
        rel = ", ".join(str(p.relative_to(root)) for p in files.values())
        ok = all(p.is_file() for p in files.values())
        lines.append(f"  {name}  ({rel}{'' if ok else ', MISSING'})")
    return "\n".join(lines)
