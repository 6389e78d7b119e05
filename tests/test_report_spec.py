"""The spec's `report:` section: a reference level per factor, checked against the grid, outside the fingerprint;
and `harness report` taking the same `--set` overrides as `harness run`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from analysis.synthetic import write_synthetic_grid
from cli_runner import harness
from harness.errors import SpecError
from harness.spec import load_spec, spec_fingerprint
from harness.grid.study import validate_search

ROOT = Path(__file__).resolve().parent.parent

SPEC = """\
description: A grid whose report contrasts levels.
model: {{base: 'random:tiny'}}
tracking: {{wandb: disabled}}
search:
  grid: {{lora.r: [2, 8, 32], lora.alpha_policy: [r, 2r]}}
  seeds: [0, 1]
{extra}"""
GRID = {"lora.r": [2, 8, 32], "lora.alpha_policy": ["r", "2r"]}


def spec_file(tmp_path: Path, extra: str = "", name: str = "grid") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(SPEC.format(extra=extra))
    return path


def test_the_report_section_changes_no_fingerprint(tmp_path):
    plain = load_spec(spec_file(tmp_path))
    with_reference = load_spec(spec_file(tmp_path, "report: {reference: {lora.r: 8}}", name="grid2"))
    with_reference.name = plain.name
    assert with_reference.report.reference == {"lora.r": 8}
    assert spec_fingerprint(with_reference) == spec_fingerprint(plain)


def test_a_dotted_set_override_names_the_factor(tmp_path):
    spec = load_spec(spec_file(tmp_path), overrides={"report.reference.lora.r": 8})
    assert spec.report.reference == {"lora.r": 8}
    spec = load_spec(spec_file(tmp_path), overrides={"report.reference": {"lora.alpha_policy": "2r"}})
    assert spec.report.reference == {"lora.alpha_policy": "2r"}


@pytest.mark.parametrize("reference, message", [
    ("{lora.alpha: 16}", r"report\.reference\.lora\.alpha'.*not a factor.*factors: lora\.r, lora\.alpha_policy"),
    ("{lora.r: 16}", r"report\.reference\.lora\.r'.*16 is not one of its levels \['2', '8', '32'\]"),
    ("{lora.dropout: 0.0}", r"report\.reference\.lora\.dropout'.*not a factor"),
])
def test_check_refuses_a_reference_outside_the_grid(tmp_path, reference, message):
    spec = load_spec(spec_file(tmp_path, f"report: {{reference: {reference}}}"))
    with pytest.raises(SpecError, match=message):
        validate_search(spec)


def test_a_reference_on_the_grid_passes_check(tmp_path):
    assert len(validate_search(load_spec(spec_file(tmp_path, "report: {reference: {lora.r: 8.0}}")))) == 12


def test_report_refuses_a_reference_outside_the_study(tmp_path):
    spec = spec_file(tmp_path)
    write_synthetic_grid(tmp_path / "results", GRID, lambda p: 0.0, name="grid", n_items=20)
    proc = harness("report", str(spec), "--results", str(tmp_path / "results"), "--set", "report.reference.lora.r=4")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    said = " ".join(proc.stderr.split())  # rich wraps long lines
    assert "field 'report.reference.lora.r': 4 is not one of its levels ['2', '8', '32']" in said


@pytest.mark.slow
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
