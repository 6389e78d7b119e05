"""What a trial leaves on disk, written atomically.

Layout of one trial, `results/<experiment>/trial-<NNNN>/`:

    manifest.json      spec as resolved, params, seeds, git commit, package versions, hardware,
                       data and split hashes, backend: everything needed to reproduce the trial;
                       `arms` {arm: role}, `final_arm`, `stage_pairs`, `trainings` (what each ran),
                       `arm_trainings` {arm: the trainings it had}, `arm_model_bytes` {arm: its model's
                       weights, or its GGUF file}
    train_log.jsonl    one row per logged step: step, epoch, loss, learning_rate, grad_norm
                       (`dpo_log.jsonl`, `grpo_log.jsonl`: the same for a continuing stage)
    eval/<arm>.jsonl   one row per held-out item and arm ("base", "tuned", ...):
                       item_id, arm, prediction, reference, scores{metric: value}, latency_s,
                       input_tokens, output_tokens, cluster
    metrics.json       {arm: {metric: mean, "n": items, "latency_p50_s", "latency_p95_s",
                       "tokens_per_s"}, "cost": {wall_s, cpu_s, device_s, tokens_trained, peak_mem_gb (the
                       trial's), stage_peak_mem_gb {stage: its own peak}},
                       blocks of stages ("teacher", "forgetting"), and "training": {stage: summary}
                       for continuing stages (DPO pairs, steps, loss). Arms and blocks never share a name.
    result.json        written last: status (an `Outcome`: "complete" | "failed" | "not_run"), reason,
                       number, params, objective. A trial directory without it never finished.

Every file is written to a temporary name and renamed into place, so a killed run never leaves a
half-written file that looks complete.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Iterable

RESULT_FILE = "result.json"
DEV_CURVE_FILE = "dev_curve.jsonl"  # a trial's dev learning curve: {stage, step, metric, value} per checkpoint


class Outcome(str, Enum):
    """How a trial ended (or where it stands): the one vocabulary of result.json, the progress lines,
    the end-of-run summary, `harness status` and the exit status (`harness.grid.outcome`)."""

    COMPLETE = "complete"  # trained and evaluated
    FAILED = "failed"  # raised: a defect or bad input to look at
    NOT_RUN = "not_run"  # this machine cannot run it (e.g. 4-bit QLoRA without CUDA): expected, said why
    PRUNED = "pruned"  # stopped early by the study's pruner
    INTERRUPTED = "interrupted"  # stopped by a signal or a dead worker; a re-queued copy runs the point
    RUNNING = "running"
    WAITING = "waiting"

    @property
    def words(self) -> str:
        return self.value.replace("_", " ")


def _default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "item"):  # numpy / torch scalars
        return o.item()
    if hasattr(o, "model_dump"):
        return o.model_dump(mode="json")
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _clean(o: Any) -> Any:
    """NaN/inf are not JSON: store them as null so every reader can parse the file."""
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    return o


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write `data` to `path` via a temp file in the same directory and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def replace_dir(built: Path, target: Path) -> None:
    """Move a fully built directory into place, replacing what was there (a stale cache, a link to one,
    or the copy another worker finished first)."""
    if target.is_symlink():
        target.unlink()
    elif target.exists():
        shutil.rmtree(target)
    os.replace(built, target)


def write_json(path: Path, obj: Any) -> None:
    write_atomic(path, json.dumps(_clean(obj), indent=2, sort_keys=True, default=_default) + "\n")


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    lines = [json.dumps(_clean(r), sort_keys=True, default=_default) for r in rows]
    write_atomic(path, "".join(line + "\n" for line in lines))


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def cached_rows(path: Path, compute: Callable[[], list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The rows stored at `path`, or `compute()`'s, written there first (an untuned arm's evaluation, shared by
    every trial of a study that would produce the same rows)."""
    if Path(path).exists():
        return read_jsonl(path)
    rows = compute()
    write_jsonl(path, rows)
    return rows


@dataclass
class TrialResult:
    """The outcome of one trial, as recorded in result.json."""

    number: int
    status: str  # an Outcome's value: complete, failed or not_run
    params: dict[str, Any] = field(default_factory=dict)
    objective: float | None = None
    reason: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    def write(self, trial_dir: Path) -> None:
        write_json(Path(trial_dir) / RESULT_FILE, asdict(self))

    @classmethod
    def read(cls, trial_dir: Path) -> "TrialResult | None":
        path = Path(trial_dir) / RESULT_FILE
        return cls(**read_json(path)) if path.exists() else None


def trial_dir_name(number: int) -> str:
    return f"trial-{number:04d}"


# ---- cache keys: one function each, used by the stage that writes the cache and by every reader


def base_eval_key(spec: Any, split_hash: str) -> str:
    """`base-eval/<key>.jsonl`: the untuned base's held-out rows, shared by every trial that would
    produce the same ones (model, frozen split, system prompt, generation length, item limit and the
    declared metrics)."""
    relevant = {"model": spec.model.model_dump(mode="json"), "split": split_hash, "system": spec.data.system_prompt,
                "eval": spec.eval.model_dump(mode="json", include={"max_new_tokens", "limit"})}
    if spec.eval.metrics or spec.eval.format:  # the rows carry their scores; without extra metrics the key is as before
        relevant["scores"] = spec.eval.model_dump(mode="json", include={"metrics", "format"})
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def forgetting_base_key(model: dict[str, Any], tasks: list[str], limit: int | None) -> str:
    """`forgetting-base/<key>/`: the base model's lm-eval rows for a task list. `model` is the spec's
    `model` section as JSON: a base loaded in another dtype or in 4 bits is another base."""
    key: list[Any] = [model.get("base"), tasks, limit]
    dtype, nf4 = model.get("dtype", "auto"), bool(model.get("load_in_4bit"))
    if dtype != "auto" or nf4:  # the default load keeps the key it always had, so existing caches still match
        key += [dtype, nf4]
    return hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16]


# ---- arm roles: recorded in manifest.json by the trial; inferred for results written before that


def final_arm(manifest: dict[str, Any], arms: Iterable[str]) -> str:
    """The arm of the trial's finished model (manifest's `final_arm`; before it was recorded: `dpo` if
    the trial has that arm, else `tuned`)."""
    if manifest.get("final_arm"):
        return manifest["final_arm"]
    return "dpo" if "dpo" in set(arms) else "tuned"


def stage_pairs(manifest: dict[str, Any], arms: Iterable[str]) -> list[tuple[str, str]]:
    """(arm, the arm it continued from), e.g. ("dpo", "sft"): recorded, or inferred for older results."""
    if "stage_pairs" in manifest:
        return [tuple(pair) for pair in manifest["stage_pairs"]]  # type: ignore[misc]
    arms = set(arms)
    return [("dpo", "sft")] if {"dpo", "sft"} <= arms else []


def arm_roles(manifest: dict[str, Any]) -> dict[str, str]:
    """Arm → role ("untuned", "stage", "final", "derived", "endpoint") as recorded; {} for older results."""
    return dict(manifest.get("arms") or {})

