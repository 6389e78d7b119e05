"""The run manifest: everything needed to say what produced a result and to reproduce it."""

from __future__ import annotations

import functools
import os
import platform
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.spec import spec_dump
from harness.stages.registry import training_only_prefixes

if TYPE_CHECKING:
    from harness.data.prepare import PreparedData
    from harness.models import ResolvedModel
    from harness.spec import ExperimentSpec

PACKAGES = ("harness", "torch", "transformers", "peft", "trl", "datasets", "accelerate", "optuna", "wandb",
            "lm-eval", "unsloth", "bitsandbytes", "liger-kernel", "llama-cpp-python")


@functools.cache
def git_commit(cwd: Path | None = None) -> str | None:
    """The commit of the code that ran, `-dirty` when tracked files outside `results/` differ from it (a study's
    own records changing under a run do not make its code dirty), or None outside a checkout. Read once per
    process (a trial calls it as it starts), since the code in memory is what the process imported, whatever
    HEAD is by the time the trial ends."""
    cwd = cwd or Path(__file__).resolve().parent

    def git(*args: str) -> subprocess.CompletedProcess[str] | None:
        try:
            return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None

    head = git("rev-parse", "HEAD")
    if head is None or head.returncode != 0 or not head.stdout.strip():
        return None
    top = git("rev-parse", "--show-toplevel")
    changed = git("-C", top.stdout.strip(), "status", "--porcelain", "--untracked-files=no", "--", ".",
                  ":(exclude)results") if top is not None and top.returncode == 0 else None
    dirty = changed is not None and bool(changed.stdout.strip())
    return head.stdout.strip() + ("-dirty" if dirty else "")


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def hardware() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version(),
                            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                            "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_memory_gb"] = torch.cuda.get_device_properties(0).total_memory / 2**30
    return info


def build_manifest(*, spec: "ExperimentSpec", params: dict[str, Any], number: int, data: "PreparedData",
                   resolved: "ResolvedModel", backend: str, eval_items: int,
                   training: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "experiment": spec.name,
        "trial": number,
        "params": params,
        "seed": spec.train.seed,
        "spec": spec_dump(spec, exclude={"presets"}),
        "spec_file": str(spec.source) if spec.source else None,
        # Every registered stage's, not only this pipeline's: a param of an absent stage cannot vary anyway.
        # Analysis reads these to keep an untuned arm one arm across training params (`analysis.load`).
        "training_only_prefixes": list(training_only_prefixes()),
        "model": {"name": resolved.name, "kind": resolved.kind, "path": resolved.path, "arch": resolved.arch},
        "backend": backend,
        "training": training or {},  # packing, checkpointing plan, attention implementation
        "data": {"source": data.source, "file_sha256": data.file_hashes, "train_items": len(data.train),
                 "dev_items": len(data.dev), "heldout_items": len(data.heldout), "eval_items": eval_items,
                 **({"review": data.review} if data.review else {})},
        "split_hash": data.split.split_hash,
        "git_commit": git_commit(),
        "packages": package_versions(),
        "hardware": hardware(),
        "finished_at": datetime.now(timezone.utc).isoformat(),
    }
