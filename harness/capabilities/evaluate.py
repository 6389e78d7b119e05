"""General capabilities of any model the harness holds, measured with lm-evaluation-harness.

A model in memory — a base, a base with a LoRA adapter attached (PEFT, not merged), or a merged
model — is wrapped in lm-eval's `HFLM` and run with `lm_eval.simple_evaluate(log_samples=True)`:
nothing is re-saved. Per-item results are kept, so a base and a tuned model answered the same items
and the analysis pairs them item by item (`harness.capabilities.regress`, and `forgetting_check` for a study).

Tasks are named as lm-eval names them:

* the harness's own tasks (`arc_easy_local`, ..., see `harness/lm_tasks/`) read real benchmark
  subsets from local files under `$HARNESS_BENCHMARKS` (default `$HARNESS_HOME/benchmarks`);
  they work offline; without those files, lm-eval's own task of the same benchmark (`arc_easy` for
  `arc_easy_local`) runs instead when the Hub is reachable;
* a registered lm-eval task (`arc_easy`, `mmlu`, ...) is used as is, but only when the Hugging Face
  Hub can be reached (lm-eval downloads its data from there): with `HF_HUB_OFFLINE` set, or no
  answer from the Hub, such a name is a `HarnessError` that lists the local tasks;
* a path to a task YAML file is handed to lm-eval as is.

On disk, `CapabilityResult.write(out)` leaves

    <out>/lm_eval/<task>.jsonl   one row per item: task, doc_id, correct (0/1, lm-eval's acc),
                                 correct_norm (0/1, acc_norm; null where the task has none), pred,
                                 target, loglikelihoods, doc_hash, prompt_hash
    <out>/lm_eval/summary.json   per task: acc, acc_norm, their standard errors, n, the task config
                                 lm-eval ran; and the model, limit, lm-eval version
"""

from __future__ import annotations

import functools
import gc
import hashlib
import json
import math
import os
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from harness.errors import HarnessError
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
from harness.results import RESULT_FILE, read_json, read_jsonl, write_json, write_jsonl

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
LM_EVAL_DIR = "lm_eval"
SUMMARY_FILE = "summary.json"


# --------------------------------------------------------------------------- task names


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether lm-eval could fetch task data: no offline flag set, and the Hub answers within `timeout`."""
    if any(_truthy(os.environ.get(v)) for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")):
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
    offline = any(_truthy(os.environ.get(v)) for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    why = "HF_HUB_OFFLINE is set" if offline else "the Hugging Face Hub cannot be reached"
    return HarnessError(
        f"lm-eval task(s) {', '.join(names)} cannot be resolved offline ({why}; lm-eval downloads their data "
        f"from the Hub). " + (f"Local equivalents: {'; '.join(hints)}. " if hints else "")
        + f"Local tasks (data under {benchmarks_root()}, task configs in {TASKS_DIR}):\n{describe_local_tasks()}")


def resolve_tasks(tasks: list[str], *, cache_dir: Path | None = None) -> list[str | dict[str, Any]]:
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
    remote = [n for n in names if n not in local and not _is_yaml_path(n)]
    if remote:
        if not hub_reachable():
            raise _offline_error(remote)
        known = set(_task_manager(True).all_tasks)
        unknown = [n for n in remote if n not in known]
        if unknown:
            import difflib

            close = {n: difflib.get_close_matches(n, sorted(known), n=3) for n in unknown}
            raise HarnessError("unknown lm-eval task(s): " + "; ".join(
                f"{n} (did you mean {', '.join(c)}?)" if c else n for n, c in close.items())
                + f". Local tasks: {', '.join(sorted(local))}")
    return [task_config(n, cache_dir=cache_dir) if n in local else str(Path(n).resolve()) if _is_yaml_path(n) else n
            for n in names]


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
    offline = any(_truthy(os.environ.get(v)) for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    raise HarnessError(
        f"the benchmark subsets of {', '.join(missing)} are not under {benchmarks_root()}. Two ways to run them: "
        f"(1) set ${BENCHMARKS_ENV} to a folder that holds the subsets, or copy them to {default_benchmarks_root()} "
        "(README: 'Benchmark data'); (2) let lm-eval download the same benchmark from the Hub"
        + (f" ({'; '.join(hub)})" if hub else " (no lm-eval equivalent for these)")
        + (", which needs HF_HUB_OFFLINE unset" if offline else ", which needs the Hugging Face Hub reachable")
        + ", or name the lm-eval task directly.")


@functools.lru_cache(maxsize=2)
def _task_manager(include_defaults: bool):
    """lm-eval's TaskManager over our task folder, with its own registry only when needed (indexing it
    takes several seconds)."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(TASKS_DIR), include_defaults=include_defaults)


def _is_yaml_path(name: str) -> bool:
    return name.endswith((".yaml", ".yml")) and Path(name).is_file()


def _task_name(spec: str | dict[str, Any]) -> str:
    if isinstance(spec, dict):
        return spec["task"]
    if _is_yaml_path(spec):
        from lm_eval.tasks._yaml_loader import load_yaml

        return load_yaml(spec, resolve_func=False)["task"]
    return spec


# --------------------------------------------------------------------------- evaluation


@dataclass
class CapabilityResult:
    """Per-task accuracies and per-item rows of one model on lm-eval tasks."""

    tasks: dict[str, dict[str, Any]]  # task -> {acc, acc_stderr, acc_norm, acc_norm_stderr, n, config}
    rows: list[dict[str, Any]]  # one per (task, doc_id)
    meta: dict[str, Any] = field(default_factory=dict)  # model, limit, lm_eval_version, ...

    def accuracy(self, task: str, metric: str = "acc") -> float | None:
        return self.tasks[task].get(metric)

    def rows_for(self, task: str) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["task"] == task]

    def write(self, out_dir: Path) -> Path:
        """Write `<out_dir>/lm_eval/<task>.jsonl` and `summary.json` atomically; return that folder."""
        folder = Path(out_dir) / LM_EVAL_DIR
        for task in self.tasks:
            write_jsonl(folder / f"{task}.jsonl", self.rows_for(task))
        write_json(folder / SUMMARY_FILE, {"tasks": self.tasks, "meta": self.meta})
        return folder

    @classmethod
    def read(cls, out_dir: Path) -> "CapabilityResult":
        """Read back what `write(out_dir)` wrote."""
        folder = Path(out_dir) / LM_EVAL_DIR
        if not (folder / SUMMARY_FILE).exists():
            raise HarnessError("no lm-eval results here (missing summary.json)", where=folder)
        summary = read_json(folder / SUMMARY_FILE)
        rows = [row for task in summary["tasks"] for row in read_jsonl(folder / f"{task}.jsonl")]
        return cls(tasks=summary["tasks"], rows=rows, meta=summary.get("meta", {}))


def _item_rows(task: str, samples: list[dict[str, Any]], filter_key: str) -> list[dict[str, Any]]:
    rows = []
    for s in samples:
        if s.get("filter", "none") != filter_key:
            continue
        if "acc" in s:
            correct = s["acc"]
        elif "exact_match" in s:
            correct = s["exact_match"]
        else:
            raise HarnessError(f"lm-eval task '{task}' reports no per-item accuracy (metrics: {s.get('metrics')}); "
                               "capability checks need multiple-choice tasks (acc) or exact_match")
        resps = s.get("filtered_resps") or []
        lls = [float(r[0]) for r in resps if isinstance(r, (list, tuple)) and r and isinstance(r[0], (int, float))]
        target = s.get("target")
        rows.append({
            "task": task,
            "doc_id": int(s["doc_id"]),
            "correct": int(round(float(correct))),
            "correct_norm": int(round(float(s["acc_norm"]))) if "acc_norm" in s else None,
            "pred": max(range(len(lls)), key=lls.__getitem__) if lls else None,
            "target": target if isinstance(target, (int, str)) else str(target),
            "loglikelihoods": lls or None,
            "doc_hash": s.get("doc_hash"),
            "prompt_hash": s.get("prompt_hash"),
        })
    return sorted(rows, key=lambda r: r["doc_id"])


def _data_file_hashes(spec: str | dict[str, Any]) -> dict[str, dict[str, str]] | None:
    """{split: {path, sha256}} of a local task's data files: which exact items were asked."""
    if not isinstance(spec, dict):
        return None
    files = ((spec.get("dataset_kwargs") or {}).get("data_files") or {}).items()
    return {split: {"path": str(path), "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest()}
            for split, path in files}


def _metric(values: dict[str, Any], name: str) -> tuple[float | None, float | None]:
    for key, v in values.items():
        if key.split(",")[0] == name and isinstance(v, (int, float)):
            se = values.get(key.replace(name, f"{name}_stderr", 1))
            return float(v), float(se) if isinstance(se, (int, float)) and math.isfinite(se) else None
    return None, None


def _jsonable(obj: Any) -> Any:
    """lm-eval's configs and model info hold dtypes, callables and the like: store their str()."""
    return json.loads(json.dumps(obj, default=str))


def evaluate_capabilities(model, tokenizer, tasks: list[str], *, limit: int | None, batch_size: int = 8,
                          device: str | None = None, out_dir: Path | None = None,
                          label: str | None = None) -> CapabilityResult:
    """Run lm-eval tasks on an in-memory model (HFLM around it: no re-save) and keep every item.

    `model` is a transformers causal LM or a PEFT model around one; `device`, when given, moves it
    there first (HFLM itself evaluates an in-memory model where it is). `limit` takes the first N
    items of each task. With `out_dir`, rows and summary are written under `<out_dir>/lm_eval/`.
    `label` names the model in the summary (e.g. the reference it was loaded from).
    """
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    from harness.models import harness_home

    specs = resolve_tasks(tasks, cache_dir=harness_home() / "lm_eval_datasets")
    if limit is not None and limit < 1:
        raise HarnessError(f"limit must be a positive number of items, got {limit}")
    if device is not None and str(getattr(model, "device", device)) != str(device):
        model = model.to(device)
    needs_registry = any(isinstance(s, str) and not _is_yaml_path(s) for s in specs)
    was_training = bool(getattr(model, "training", False))
    try:
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
        # bootstrap_iters only matters for non-mean metrics; acc's standard error is closed-form.
        out = lm_eval.simple_evaluate(model=lm, tasks=specs, limit=limit, log_samples=True,
                                      task_manager=_task_manager(needs_registry), bootstrap_iters=1000)
    finally:
        if was_training:
            model.train()
    if out is None:  # not rank 0 of a distributed run
        raise HarnessError("lm-eval returned no results (not the main process)")

    per_task: dict[str, dict[str, Any]] = {}
    rows: list[dict[str, Any]] = []
    spec_by_name = {_task_name(s): s for s in specs}
    # Leaf tasks, as lm-eval logged their samples: a group or tag name (say `mmlu`) expands to its tasks.
    for name in out.get("samples") or {}:
        values = out["results"].get(name, {})
        acc_key = next((k for k in values if k.split(",")[0] in ("acc", "exact_match")), None)
        if acc_key is None:
            raise HarnessError(f"lm-eval reported no accuracy for '{name}' (got {sorted(values)})")
        filter_key = acc_key.split(",", 1)[1] if "," in acc_key else "none"
        task_rows = _item_rows(name, out["samples"].get(name, []), filter_key)
        acc, acc_se = _metric(values, acc_key.split(",")[0])
        acc_norm, acc_norm_se = _metric(values, "acc_norm")
        per_task[name] = {"acc": acc, "acc_stderr": acc_se, "acc_norm": acc_norm, "acc_norm_stderr": acc_norm_se,
                          "n": len(task_rows), "metric": acc_key.split(",")[0], "filter": filter_key,
                          "n_shot": (out.get("n-shot") or {}).get(name), "config": out["configs"].get(name),
                          "data_files": _data_file_hashes(spec_by_name.get(name, ""))}
        rows.extend(task_rows)
    meta = {"model": label or getattr(getattr(model, "config", None), "_name_or_path", type(model).__name__),
            "limit": limit, "batch_size": batch_size, "requested": list(spec_by_name), "tasks": list(per_task),
            "lm_eval_version": out.get("lm_eval_version"), "transformers_version": out.get("transformers_version"),
            "benchmarks_root": str(benchmarks_root()), "model_info": out.get("config")}
    result = CapabilityResult(tasks=_jsonable(per_task), rows=rows, meta=_jsonable(meta))
    if out_dir is not None:
        result.write(out_dir)
    return result


# --------------------------------------------------------------------------- model references


@dataclass(frozen=True)
class ModelRef:
    """What a model reference names: a base model, optionally with a LoRA adapter from a trial."""

    ref: str
    base: str  # anything harness.models.resolve_model understands
    adapter: Path | None = None  # a PEFT adapter directory
    dtype: str = "auto"
    load_in_4bit: bool = False
    trial_dir: Path | None = None

    @property
    def base_key(self) -> tuple[str, str, bool]:
        """Refs with the same key share one loaded base model."""
        return (self.base, self.dtype, self.load_in_4bit)

    def describe(self) -> str:
        return f"{self.base} + adapter {self.adapter}" if self.adapter else self.base


@dataclass
class LoadedModel:
    model: Any  # a transformers model, or a PeftModel around one when the ref has an adapter
    tokenizer: Any
    ref: ModelRef


def _trial_ref(ref: str, trial_dir: Path) -> ModelRef:
    manifest_path = trial_dir / "manifest.json"
    if not manifest_path.exists():
        raise HarnessError("not a trial directory (no manifest.json)", where=trial_dir)
    result = read_json(trial_dir / RESULT_FILE) if (trial_dir / RESULT_FILE).exists() else None
    if result is None:
        raise HarnessError(f"the trial never finished (no {RESULT_FILE}): its adapter may be incomplete",
                           where=trial_dir)
    if result.get("status") != "complete":
        raise HarnessError(f"the trial {result.get('status')}: {result.get('reason') or 'no reason recorded'}",
                           where=trial_dir)
    adapter = trial_dir / "adapter"
    if not (adapter / "adapter_config.json").exists():
        raise HarnessError("the trial has no adapter (adapter/adapter_config.json missing)", where=trial_dir)
    model_spec = (read_json(manifest_path).get("spec") or {}).get("model") or {}
    if not model_spec.get("base"):
        raise HarnessError("manifest.json has no spec.model.base", where=manifest_path)
    return ModelRef(ref=ref, base=model_spec["base"], adapter=adapter.resolve(),
                    dtype=model_spec.get("dtype", "auto"), load_in_4bit=bool(model_spec.get("load_in_4bit", False)),
                    trial_dir=trial_dir.resolve())


def parse_model_ref(ref: str) -> ModelRef:
    """Resolve a reference without loading anything (so bad input fails before any model loads).

    A reference is a trial directory (`results/<exp>/trial-NNNN`: base from its manifest, adapter
    from `adapter/`), the `adapter/` folder of a trial, or anything `harness.models.resolve_model`
    takes: an embedded name (`smollm2-135m-instruct`), `random:<arch>`, a local model directory
    (a merged model, say), or a hub id.
    """
    from harness.models import resolve_model

    if not ref or not ref.strip():
        raise HarnessError("empty model reference")
    path = Path(ref).expanduser()
    if path.is_dir():
        if (path / "manifest.json").exists() or path.name.startswith("trial-"):
            return _trial_ref(ref, path)
        if (path / "adapter_config.json").exists():
            if path.name == "adapter" and (path.parent / "manifest.json").exists():
                return _trial_ref(ref, path.parent)
            raise HarnessError("an adapter folder outside a trial: give the trial directory (its manifest names "
                               "the base model)", where=path)
    resolve_model(ref)  # raises ModelError (a HarnessError) for what is not a model
    return ModelRef(ref=ref, base=ref)


def _load_base(ref: ModelRef, device: str | None = None):
    from harness.models import load_model, resolve_model

    return load_model(resolve_model(ref.base), ref.dtype, device=device, load_in_4bit=ref.load_in_4bit)


@contextmanager
def attached(model, adapter: Path | None) -> Iterator[Any]:
    """The model with a saved LoRA adapter attached (PEFT, in memory); detached again afterwards."""
    if adapter is None:
        yield model
        return
    from peft import PeftModel

    peft_model = PeftModel.from_pretrained(model, str(adapter), is_trainable=False)
    try:
        yield peft_model
    finally:
        peft_model.unload()  # removes the LoRA layers in place: `model` is the untouched base again


def load_model_ref(ref: str, *, device: str | None = None) -> LoadedModel:
    """Load a model reference (see `parse_model_ref`): a base model, or a base with a trial's adapter.

    The adapter is attached with PEFT and kept in memory: no merge, no re-save.
    """
    parsed = parse_model_ref(ref)
    model, tok = _load_base(parsed, device)
    if parsed.adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(parsed.adapter), is_trainable=False)
    return LoadedModel(model=model, tokenizer=tok, ref=parsed)


def _free_memory() -> None:
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def evaluate_refs(refs: list[ModelRef], tasks: list[str], *, limit: int | None, batch_size: int = 8,
                  device: str | None = None, out_dirs: list[Path | None] | None = None) -> list[CapabilityResult]:
    """Evaluate several references, loading each distinct base once and attaching adapters in turn.

    Refs are evaluated in the order given; a base is dropped before a different one is loaded.
    """
    out_dirs = out_dirs or [None] * len(refs)
    resolve_tasks(tasks)  # fail on a bad task name before any model loads
    first_seen: dict[tuple, int] = {}
    for i, ref in enumerate(refs):
        first_seen.setdefault(ref.base_key, i)
    order = sorted(range(len(refs)), key=lambda i: (first_seen[refs[i].base_key], i))
    results: dict[int, CapabilityResult] = {}
    loaded_key, model, tok = None, None, None
    for i in order:
        ref = refs[i]
        if ref.base_key != loaded_key:
            model = tok = None
            _free_memory()
            model, tok = _load_base(ref, device)
            loaded_key = ref.base_key
        with attached(model, ref.adapter) as m:
            results[i] = evaluate_capabilities(m, tok, tasks, limit=limit, batch_size=batch_size,
                                               out_dir=out_dirs[i], label=ref.describe())
    return [results[i] for i in range(len(refs))]


# --------------------------------------------------------------------------- a study's trials


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
    """Evaluate a study's base model and every complete trial's adapter on lm-eval tasks; return the folder.

    Each base is loaded once; each trial's adapter is attached with PEFT, evaluated and unloaded.
    Writes, under `<study_dir>/forgetting/`:

        base/lm_eval/<task>.jsonl, summary.json          the base model (one folder per base when
                                                         trials differ in model: base-1, base-2, ...)
        trial-NNNN/lm_eval/<task>.jsonl, summary.json    each complete trial
        forgetting.json                                  tasks, limit, which base each trial pairs
                                                         with, and per trial and task the paired
                                                         comparison (accuracies, difference, 95% CI,
                                                         exact McNemar p) as in `harness.capabilities.regress`

    Rows pair by (task, doc_id); `doc_hash` confirms both arms saw the same item.
    """
    from harness.capabilities.stats import compare_results

    study_dir = Path(study_dir)
    trials = complete_trials(study_dir)
    if not trials:
        raise HarnessError("no complete trial with an adapter in this study (nothing to compare with the base)",
                           where=study_dir)
    resolve_tasks(tasks)
    trial_refs = [_trial_ref(str(t), t) for t in trials]
    base_keys = list(dict.fromkeys(r.base_key for r in trial_refs))
    base_names = {key: "base" if len(base_keys) == 1 else f"base-{i + 1}" for i, key in enumerate(base_keys)}
    out = study_dir / "forgetting"

    refs: list[ModelRef] = []
    dirs: list[Path | None] = []
    for key in base_keys:
        refs.append(ModelRef(ref=key[0], base=key[0], dtype=key[1], load_in_4bit=key[2]))
        dirs.append(out / base_names[key])
        for ref in (r for r in trial_refs if r.base_key == key):
            refs.append(ref)
            dirs.append(out / ref.trial_dir.name)
    results = evaluate_refs(refs, tasks, limit=limit, batch_size=batch_size, device=device, out_dirs=dirs)
    by_dir = {d.name: r for d, r in zip(dirs, results)}

    index: dict[str, Any] = {"tasks": list(tasks), "limit": limit, "benchmarks_root": str(benchmarks_root()),
                             "bases": {base_names[k]: {"model": k[0], "dtype": k[1], "load_in_4bit": k[2]}
                                       for k in base_keys},
                             "trials": {}}
    for ref in trial_refs:
        base_dir = base_names[ref.base_key]
        comparison = compare_results(by_dir[base_dir], by_dir[ref.trial_dir.name])
        index["trials"][ref.trial_dir.name] = {
            "base": base_dir, "adapter": str(ref.adapter), "dir": ref.trial_dir.name,
            "params": read_json(ref.trial_dir / RESULT_FILE).get("params", {}),
            "comparison": [c.to_dict() for c in comparison]}
    write_json(out / "forgetting.json", index)
    return out
