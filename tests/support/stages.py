"""Helpers shared by tests/unit/test_stages.py and tests/e2e/test_stages.py."""

from __future__ import annotations

from pathlib import Path

import yaml

from harness.stages import registry as stages


def write_spec(tmp_path: Path, extra: dict, name: str = "contract") -> Path:
    raw = {"description": "stage contract", "model": {"base": "random:tiny"},
           "data": {"builtin": "realestate", "train_limit": 8, "dev_size": 4},
           "train": {"max_steps": 1, "batch_size": 2, "logging_steps": 1},
           "eval": {"limit": 3, "max_new_tokens": 4, "batch_size": 3}, **extra}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def stage_named(name: str) -> stages.Stage:
    return next(s for s in stages.all_stages() if s.name == name)
