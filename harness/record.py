"""What a trial leaves on disk, written atomically.

Layout of one trial, `results/<experiment>/trial-<NNNN>/`:

    manifest.json      spec as resolved, params, seeds, git commit, package versions, hardware,
                       data and split hashes, backend: everything needed to reproduce the trial
    train_log.jsonl    one row per logged step: step, epoch, loss, learning_rate, grad_norm
    eval/<arm>.jsonl   one row per held-out item and arm ("base", "tuned", ...):
                       item_id, arm, prediction, reference, scores{metric: value}, latency_s,
                       input_tokens, output_tokens, cluster
    metrics.json       {arm: {metric: mean, "n": items, "latency_p50_s", "latency_p95_s",
                       "tokens_per_s"}, "cost": {wall_s, cpu_s, device_s, tokens_trained, peak_mem_gb}}
    result.json        written last: status ("complete" | "failed"), reason, number, params,
                       objective. A trial directory without it never finished.

Every file is written to a temporary name and renamed into place, so a killed run never leaves a
half-written file that looks complete.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

RESULT_FILE = "result.json"


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


@dataclass
class TrialResult:
    """The outcome of one trial, as recorded in result.json."""

    number: int
    status: str  # "complete" | "failed"
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
