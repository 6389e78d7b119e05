"""Helpers shared by tests/unit/test_report_spec.py and tests/e2e/test_report_spec.py."""

from __future__ import annotations

from pathlib import Path

SPEC = """\
description: A grid whose report contrasts levels.
model: {{base: 'random:tiny'}}
tracking: {{wandb: disabled}}
search:
  grid: {{lora.r: [2, 8, 32], lora.alpha_policy: [r, 2r]}}
  seeds: [0, 1]
{extra}"""


def spec_file(tmp_path: Path, extra: str = "", name: str = "grid") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(SPEC.format(extra=extra))
    return path
