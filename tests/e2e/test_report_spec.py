"""The spec's `report:` section: a reference level per factor, checked against the grid, outside the fingerprint;
and `harness report` taking the same `--set` overrides as `harness run`.

The runs of it that take more than a few seconds; the rest is tests/unit/test_report_spec.py."""

from __future__ import annotations

import json

from analysis.synthetic import write_synthetic_grid
from tests.support.cli_runner import harness
from tests.support.report_spec import spec_file


def test_report_takes_the_same_set_overrides_as_run(tmp_path):
    """A study run with `--set` (here: a grid cut to two ranks) is reported with the same `--set`."""
    spec = spec_file(tmp_path)
    cut = {"lora.r": [2, 32], "lora.alpha_policy": ["r", "2r"]}
    write_synthetic_grid(tmp_path / "results", cut, lambda p: 0.0, name="grid", n_items=40)
    proc = harness("report", str(spec), "--results", str(tmp_path / "results"),
                   "--set", "search.grid={lora.r: [2, 32], lora.alpha_policy: [r, 2r]}",
                   "--set", "report.reference.lora.r=32")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads((tmp_path / "results" / "grid" / "report.json").read_text())
    factors = {f["name"]: f for f in data["contrasts"]["factors"]}
    assert factors["lora.r"]["levels"] == [2, 32] and factors["lora.r"]["reference"] == 32
    rank = next(f for f in data["contrasts"]["families"] if f["name"] == "contrasts_lora_r")
    assert [(r["factor_level"], r["reference_level"]) for r in rank["rows"]] == [(2, 32)]
