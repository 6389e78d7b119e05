"""The command line as a new user meets it: help, list, and one clear message per bad input."""

from __future__ import annotations

from cli_runner import harness

SUBCOMMANDS = ["list", "check", "run", "worker", "status", "dashboard", "report", "data"]


def test_every_subcommand_has_help():
    top = harness("--help", check=True).stdout
    for cmd in SUBCOMMANDS:
        assert cmd in top
        out = harness(cmd, "--help", check=True).stdout
        assert "Usage" in out and len(out.splitlines()) > 3


def test_list_shows_quickstart_with_its_question():
    proc = harness("list", check=True)
    out = proc.stdout + proc.stderr
    assert "quickstart" in out and "SmolLM2" in out


def test_typo_in_spec_exits_nonzero_naming_file_line_field(tmp_path):
    spec = tmp_path / "typo.yaml"
    spec.write_text("description: x\ntrain:\n  learnig_rate: 0.1\n")
    proc = harness("check", str(spec))
    assert proc.returncode == 2
    assert f"{spec}:3" in proc.stderr and "train.learnig_rate" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_base_model_exits_nonzero(tmp_path, harness_home):
    spec = tmp_path / "nomodel.yaml"
    spec.write_text(f"description: x\nmodel:\n  base: {tmp_path}/missing-model\n")
    proc = harness("run", str(spec), "--results", str(tmp_path / "results"), env={"HARNESS_HOME": str(harness_home)})
    assert proc.returncode != 0
    assert "missing-model" in proc.stderr and "not found" in proc.stderr


def test_check_prints_the_grid(tmp_path):
    spec = tmp_path / "grid.yaml"
    spec.write_text("description: x\nsearch:\n  grid: {lora.r: [4, 8]}\n  seeds: [0, 1]\n")
    proc = harness("check", str(spec), check=True)
    assert "4 trial(s)" in proc.stderr
