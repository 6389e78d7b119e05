"""The spec's `report:` section: a reference level per factor, checked against the grid, outside the fingerprint;
and `harness report` taking the same `--set` overrides as `harness run`."""

from __future__ import annotations

import pytest

from analysis.synthetic import write_synthetic_grid
from harness.errors import SpecError
from harness.grid.study import validate_search
from harness.spec import load_spec, spec_fingerprint
from tests.support.cli_runner import harness
from tests.support.report_spec import spec_file

GRID = {"lora.r": [2, 8, 32], "lora.alpha_policy": ["r", "2r"]}


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
