"""Which lm-eval tasks a list of names means, checked before any model loads.

Tasks are named as lm-eval names them:

* the harness's own tasks (`arc_easy_local`, ..., see `harness.capabilities.lm_tasks`) read real
  benchmark subsets from local files under `$HARNESS_BENCHMARKS` (default `$HARNESS_HOME/benchmarks`);
  they work offline; without those files, lm-eval's own task of the same benchmark (`arc_easy` for
  `arc_easy_local`) runs instead when the Hub is reachable;
* a registered lm-eval task (`arc_easy`, `mmlu`, ...) is used as is, but only when the Hugging Face
  Hub can be reached (lm-eval downloads its data from there): with `HF_HUB_OFFLINE` set, or no
  answer from the Hub, such a name is a `HarnessError` that lists the local tasks;
* a path to a task YAML file is handed to lm-eval as is.
"""

from __future__ import annotations

import functools
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from harness.capabilities.lm_tasks import (
    BENCHMARKS_ENV,
    TASKS_DIR,
    benchmarks_root,
    default_benchmarks_root,
    describe_local_tasks,
    local_task_names,
    task_config,
    task_data_files,
)
from harness.errors import HarnessError

# lm-eval names with a local counterpart here, for the offline error message.
LOCAL_EQUIVALENTS = {
    "arc_easy": "arc_easy_local", "arc_challenge": "arc_challenge_local", "piqa": "piqa_local",
    "winogrande": "winogrande_local", "hellaswag": "hellaswag_local", "commonsense_qa": "commonsenseqa_local",
    "truthfulqa_mc1": "truthfulqa_mc1_local", "mmlu_astronomy": "mmlu_astronomy_local",
    "mmlu_college_biology": "mmlu_college_biology_local",
    "mmlu_high_school_mathematics": "mmlu_high_school_mathematics_local",
    "mmlu_high_school_us_history": "mmlu_high_school_us_history_local",
}
HUB_EQUIVALENTS = {local: hub for hub, local in LOCAL_EQUIVALENTS.items()}
TaskSpec = str | dict[str, Any]  # what lm_eval.simple_evaluate(tasks=[...]) takes: a name, a YAML path, a config


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def _offline_flag(*names: str) -> bool:
    return any(_truthy(os.environ.get(v)) for v in names)


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether lm-eval could fetch task data: no offline flag set, and the Hub answers within `timeout`."""
    if _offline_flag("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        return False
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    try:
        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/api/datasets?limit=1", method="HEAD"),
                               timeout=timeout).close()
    except urllib.error.HTTPError:
        return True  # the Hub answered, if not with 200
    except (OSError, ValueError):
        return False
    return True


def _offline_error(names: list[str]) -> HarnessError:
    hints = [f"{n} -> {LOCAL_EQUIVALENTS[n]}" for n in names if n in LOCAL_EQUIVALENTS]
    why = ("HF_HUB_OFFLINE is set" if _offline_flag("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
           else "the Hugging Face Hub cannot be reached")
    return HarnessError(
        f"lm-eval task(s) {', '.join(names)} cannot be resolved offline ({why}; lm-eval downloads their data "
        f"from the Hub). " + (f"Local equivalents: {'; '.join(hints)}. " if hints else "")
        + f"Local tasks (data under {benchmarks_root()}, task configs in {TASKS_DIR}):\n{describe_local_tasks()}")


def resolve_tasks(tasks: list[str], *, cache_dir: Path | None = None) -> list[TaskSpec]:
    """lm-eval task specs for `tasks`: a config dict for each local task, the name or path otherwise.

    Raises HarnessError for an empty list, a local task whose data is missing, or an lm-eval name
    that needs the Hub while it cannot be reached (the message lists the local tasks).
    """
    names = [t.strip() for t in tasks if t and t.strip()]
    if not names:
        raise HarnessError(f"no tasks given (local tasks: {', '.join(local_task_names())})")
    if len(set(names)) != len(names):
        raise HarnessError(f"a task is named twice: {', '.join(names)}")
    local = set(local_task_names())
    _check_local_data([n for n in names if n in local])
    names = [_hub_instead(n) if n in local else n for n in names]
    _check_registered([n for n in names if n not in local and not is_yaml_path(n)], local)
    return [task_config(n, cache_dir=cache_dir) if n in local else str(Path(n).resolve()) if is_yaml_path(n) else n
            for n in names]


def _check_registered(remote: list[str], local: set[str]) -> None:
    """Every name lm-eval is to resolve is one of its registered tasks, and the Hub holding their data answers."""
    if not remote:
        return
    if not hub_reachable():
        raise _offline_error(remote)
    known = set(task_manager(True).all_tasks)
    unknown = [n for n in remote if n not in known]
    if unknown:
        import difflib

        close = {n: difflib.get_close_matches(n, sorted(known), n=3) for n in unknown}
        raise HarnessError("unknown lm-eval task(s): " + "; ".join(
            f"{n} (did you mean {', '.join(c)}?)" if c else n for n, c in close.items())
            + f". Local tasks: {', '.join(sorted(local))}")


def _has_data(name: str) -> bool:
    return all(p.is_file() for p in task_data_files(name).values())


def _hub_instead(name: str) -> str:
    """A local task whose files are absent: lm-eval's own task of the same benchmark (checked reachable)."""
    if _has_data(name):
        return name
    from harness.progress import console

    console.print(f"[yellow]{name}: no local data under {benchmarks_root()}; running lm-eval's "
                  f"{HUB_EQUIVALENTS[name]} from the Hub instead[/yellow]")
    return HUB_EQUIVALENTS[name]


def _check_local_data(names: list[str]) -> None:
    """Every local task has its data, or can fall back to the Hub; else a HarnessError saying both ways."""
    missing = [n for n in names if not _has_data(n)]
    if not missing or (all(n in HUB_EQUIVALENTS for n in missing) and hub_reachable()):
        return
    hub = [f"{n} -> {HUB_EQUIVALENTS[n]}" for n in missing if n in HUB_EQUIVALENTS]
    offline = _offline_flag("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    raise HarnessError(
        f"the benchmark subsets of {', '.join(missing)} are not under {benchmarks_root()}. Two ways to run them: "
        f"(1) set ${BENCHMARKS_ENV} to a folder that holds the subsets, or copy them to {default_benchmarks_root()} "
        "(README: 'Benchmark data'); (2) let lm-eval download the same benchmark from the Hub"
        + (f" ({'; '.join(hub)})" if hub else " (no lm-eval equivalent for these)")
        + (", which needs HF_HUB_OFFLINE unset" if offline else ", which needs the Hugging Face Hub reachable")
        + ", or name the lm-eval task directly.")


@functools.lru_cache(maxsize=2)
def task_manager(include_defaults: bool):
    """lm-eval's TaskManager over our task folder, with its own registry only when needed (indexing it
    takes several seconds)."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(TASKS_DIR), include_defaults=include_defaults)


def is_yaml_path(name: str) -> bool:
    """Whether `name` is a task YAML file rather than a task name."""
    return name.endswith((".yaml", ".yml")) and Path(name).is_file()


def needs_registry(specs: list[TaskSpec]) -> bool:
    """Whether lm-eval must index its own task registry to run `specs` (some are registered task names)."""
    return any(isinstance(s, str) and not is_yaml_path(s) for s in specs)


def task_name(spec: TaskSpec) -> str:
    """The task name lm-eval reports results under for one resolved spec."""
    if isinstance(spec, dict):
        return spec["task"]
    if is_yaml_path(spec):
        from lm_eval.tasks._yaml_loader import load_yaml

        return load_yaml(spec, resolve_func=False)["task"]
    return spec
