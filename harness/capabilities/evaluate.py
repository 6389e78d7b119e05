"""General capabilities of a model in memory, measured with lm-evaluation-harness, item by item.

A model in memory — a base, a base with a LoRA adapter attached (PEFT, not merged), or a merged
model — is wrapped in lm-eval's `HFLM` and run with `lm_eval.simple_evaluate(log_samples=True)`:
nothing is re-saved. Per-item results are kept, so a base and a tuned model answered the same items
and their rows pair item by item (`harness.capabilities.stats`). Which tasks a name means is
`harness.capabilities.tasks`; which model a reference means, `harness.capabilities.refs`.

On disk, `CapabilityResult.write(out)` leaves

    <out>/lm_eval/<task>.jsonl   one row per item: task, doc_id, correct (0/1, lm-eval's acc),
                                 correct_norm (0/1, acc_norm; null where the task has none), pred,
                                 target, loglikelihoods, doc_hash, prompt_hash
    <out>/lm_eval/summary.json   per task: acc, acc_norm, their standard errors, n, the task config
                                 lm-eval ran; and the model, limit, lm-eval version
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.capabilities.lm_tasks import benchmarks_root
from harness.capabilities.tasks import TaskSpec, needs_registry, resolve_tasks, task_manager, task_name
from harness.errors import HarnessError
from harness.results import read_json, read_jsonl, write_json, write_jsonl

LM_EVAL_DIR = "lm_eval"
SUMMARY_FILE = "summary.json"


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


def _data_file_hashes(spec: TaskSpec) -> dict[str, dict[str, str]] | None:
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
    from harness.models import harness_home

    specs = resolve_tasks(tasks, cache_dir=harness_home() / "lm_eval_datasets")
    if limit is not None and limit < 1:
        raise HarnessError(f"limit must be a positive number of items, got {limit}")
    if device is not None and str(getattr(model, "device", device)) != str(device):
        model = model.to(device)
    out = _simple_evaluate(model, tokenizer, specs, limit=limit, batch_size=batch_size)
    spec_by_name = {task_name(s): s for s in specs}
    per_task, rows = _task_results(out, spec_by_name)
    meta = {"model": label or getattr(getattr(model, "config", None), "_name_or_path", type(model).__name__),
            "limit": limit, "batch_size": batch_size, "requested": list(spec_by_name), "tasks": list(per_task),
            "lm_eval_version": out.get("lm_eval_version"), "transformers_version": out.get("transformers_version"),
            "benchmarks_root": str(benchmarks_root()), "model_info": out.get("config")}
    result = CapabilityResult(tasks=_jsonable(per_task), rows=rows, meta=_jsonable(meta))
    if out_dir is not None:
        result.write(out_dir)
    return result


def _simple_evaluate(model, tokenizer, specs: list[TaskSpec], *, limit: int | None,
                     batch_size: int) -> dict[str, Any]:
    """lm-eval's own output for `specs`, samples logged; the model is left in the mode it came in."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    was_training = bool(getattr(model, "training", False))
    try:
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
        # bootstrap_iters only matters for non-mean metrics; acc's standard error is closed-form.
        out = lm_eval.simple_evaluate(model=lm, tasks=specs, limit=limit, log_samples=True,
                                      task_manager=task_manager(needs_registry(specs)), bootstrap_iters=1000)
    finally:
        if was_training:
            model.train()
    if out is None:  # not rank 0 of a distributed run
        raise HarnessError("lm-eval returned no results (not the main process)")
    return out


def _task_results(out: dict[str, Any], spec_by_name: dict[str, TaskSpec]
                  ) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """Per-task summaries and per-item rows from lm-eval's output."""
    per_task: dict[str, dict[str, Any]] = {}
    rows: list[dict[str, Any]] = []
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
    return per_task, rows
