"""The forgetting check of a finished study: its base model and every complete trial's adapter on lm-eval tasks.

Each base is loaded once; each trial's adapter is attached with PEFT, evaluated and unloaded. Writes,
under `<study_dir>/forgetting/`:

    base/lm_eval/<task>.jsonl, summary.json          the base model (one folder per base when
                                                     trials differ in model: base-1, base-2, ...)
    trial-NNNN/lm_eval/<task>.jsonl, summary.json    each complete trial
    forgetting.json                                  tasks, limit, which base each trial pairs
                                                     with, and per trial and task the paired
                                                     comparison (accuracies, difference, 95% CI,
                                                     exact McNemar p) of `harness.capabilities.stats`

Rows pair by (task, doc_id); `doc_hash` confirms both arms saw the same item.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.capabilities.evaluate import CapabilityResult
from harness.capabilities.lm_tasks import benchmarks_root
from harness.capabilities.refs import ModelRef, evaluate_refs, trial_ref
from harness.capabilities.stats import compare_results
from harness.capabilities.tasks import resolve_tasks
from harness.errors import HarnessError
from harness.results import RESULT_FILE, read_json, write_json

FORGETTING_DIR = "forgetting"
INDEX_FILE = "forgetting.json"
BaseKey = tuple[str, str, bool]  # ModelRef.base_key


def complete_trials(study_dir: Path) -> list[Path]:
    """Trial directories of a study whose result.json says complete and that hold an adapter."""
    out = []
    for trial_dir in sorted(Path(study_dir).glob("trial-*")):
        result_path = trial_dir / RESULT_FILE
        if not result_path.exists() or read_json(result_path).get("status") != "complete":
            continue
        if (trial_dir / "adapter" / "adapter_config.json").exists() and (trial_dir / "manifest.json").exists():
            out.append(trial_dir)
    return out


def forgetting_check(study_dir: Path, tasks: list[str], limit: int | None, *, batch_size: int = 8,
                     device: str | None = None) -> Path:
    """Evaluate a study's base model and every complete trial's adapter on lm-eval tasks; return the folder
    (see the module docstring for what it holds)."""
    study_dir = Path(study_dir)
    trials = complete_trials(study_dir)
    if not trials:
        raise HarnessError("no complete trial with an adapter in this study (nothing to compare with the base)",
                           where=study_dir)
    resolve_tasks(tasks)
    trial_refs = [trial_ref(str(t), t) for t in trials]
    base_keys = list(dict.fromkeys(r.base_key for r in trial_refs))
    base_names = {key: "base" if len(base_keys) == 1 else f"base-{i + 1}" for i, key in enumerate(base_keys)}
    out = study_dir / FORGETTING_DIR
    refs, dirs = _evaluation_plan(trial_refs, base_names, out)
    results = evaluate_refs(refs, tasks, limit=limit, batch_size=batch_size, device=device, out_dirs=dirs)
    write_json(out / INDEX_FILE, _index(trial_refs, base_names, {d.name: r for d, r in zip(dirs, results)},
                                        tasks=tasks, limit=limit))
    return out


def _evaluation_plan(trial_refs: list[ModelRef], base_names: dict[BaseKey, str],
                     out: Path) -> tuple[list[ModelRef], list[Path | None]]:
    """Each base followed by the trials on it, with the folder each one's rows go to."""
    refs: list[ModelRef] = []
    dirs: list[Path | None] = []
    for key, name in base_names.items():
        refs.append(ModelRef(ref=key[0], base=key[0], dtype=key[1], load_in_4bit=key[2]))
        dirs.append(out / name)
        for ref in (r for r in trial_refs if r.base_key == key):
            refs.append(ref)
            dirs.append(out / ref.trial_dir.name)
    return refs, dirs


def _index(trial_refs: list[ModelRef], base_names: dict[BaseKey, str], by_dir: dict[str, CapabilityResult], *,
           tasks: list[str], limit: int | None) -> dict[str, Any]:
    """forgetting.json: the bases, and per trial the base it pairs with and the paired comparison per task."""
    index: dict[str, Any] = {"tasks": list(tasks), "limit": limit, "benchmarks_root": str(benchmarks_root()),
                             "bases": {name: {"model": k[0], "dtype": k[1], "load_in_4bit": k[2]}
                                       for k, name in base_names.items()},
                             "trials": {}}
    for ref in trial_refs:
        base_dir = base_names[ref.base_key]
        comparison = compare_results(by_dir[base_dir], by_dir[ref.trial_dir.name])
        index["trials"][ref.trial_dir.name] = {
            "base": base_dir, "adapter": str(ref.adapter), "dir": ref.trial_dir.name,
            "params": read_json(ref.trial_dir / RESULT_FILE).get("params", {}),
            "comparison": [c.to_dict() for c in comparison]}
    return index
