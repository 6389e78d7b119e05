"""The package's shape: its import layers (import-linter, every import counted), cheap spec loading, and spec
fingerprints that no refactor or new stage changes."""

from __future__ import annotations

import configparser
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support.ci import ROOT

CONTRACTS = ROOT / ".importlinter"


def _lint_imports(config: Path, cwd: Path) -> subprocess.CompletedProcess:
    """import-linter's own CLI on `config`, importing the packages from `cwd` (this checkout, not an install)."""
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports_command; "
                           "lint_imports_command()", str(config), "--no-cache"],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_the_packages_keep_their_import_contracts():
    """config → data → evaluation → backends/capabilities/export → stages → spec → trial → grid → CLI, no
    cycles inside any package, and `analysis` above the library (see .importlinter)."""
    out = _lint_imports(CONTRACTS, ROOT)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_contracts_count_type_checking_and_function_level_imports(tmp_path):
    """The session options of .importlinter, on a two-layer package whose lower layer reaches up only under
    TYPE_CHECKING and inside a function: both imports break the contract."""
    session = configparser.ConfigParser()
    session.read(CONTRACTS)
    options = "\n".join(f"{k} = {v}" for k, v in session["importlinter"].items() if k != "root_packages")
    pkg = tmp_path / "layered"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "high.py").write_text("X = 1\n")
    (pkg / "low.py").write_text(textwrap.dedent("""\
        from typing import TYPE_CHECKING
        if TYPE_CHECKING:
            from layered.high import X

        def later():
            from layered import high
        """))
    config = tmp_path / ".importlinter"
    config.write_text(f"[importlinter]\nroot_packages =\n    layered\n{options}\n\n"
                      "[importlinter:contract:l]\nname = high over low\ntype = layers\n"
                      "containers = layered\nlayers =\n    high\n    low\n")
    out = _lint_imports(config, tmp_path)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "layered.low -> layered.high (l.3, l.6)" in out.stdout, out.stdout


def test_loading_a_spec_imports_no_heavy_library():
    """`harness check` (the spec, its declared stages, the grid validated, run's preflight) imports no training
    or model library. lm-eval's task registry it may read: the forgetting stage's preflight asks it whether each
    task has its data, as `run` does before any trial."""
    code = ("import sys; from harness.cli import app; "
            "app(['check', 'sft_vs_dpo'], standalone_mode=False); app(['check', 'forgetting'], standalone_mode=False); "
            "print(sorted(m for m in ('torch', 'trl', 'transformers', 'peft') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout


def test_every_registered_experiment_keeps_its_recorded_fingerprints():
    """A study's fingerprint decides whether it can be resumed: every experiment, bare and under each preset,
    computes the fingerprint recorded for the current scheme (tests/snapshots/fingerprints.json)."""
    from tests.support import fingerprints

    assert fingerprints.problems() == []


def test_the_fingerprint_snapshot_holds_the_values_before_the_stage_redesign():
    """Scheme 1 is the code before the stage registry (commit 039c24b): the redesign moved none of them (quickstart
    has since gained its few-shot base and sft_vs_dpo its dev learning curve on purpose, so their own values
    changed)."""
    from tests.support import fingerprints

    table = fingerprints.recorded()["1"]
    assert table["rank_ablation:"] == "e6a1817a5c92d41b" and table["sft_vs_grpo:smoke"] == "efe9fde33cb1a3d3"


def test_a_new_experiment_is_reported_as_not_recorded(tmp_path, monkeypatch):
    """A new YAML needs no edit of a test: `check` names it and `add` records it, leaving the rest alone."""
    from tests.support import fingerprints

    experiments = tmp_path / "experiments"
    experiments.mkdir()
    (experiments / "quickstart.yaml").write_text((ROOT / "experiments" / "quickstart.yaml").read_text())
    (experiments / "another.yaml").write_text((ROOT / "experiments" / "quickstart.yaml").read_text()
                                              .replace("train:", "train:\n  seed: 7", 1))
    snapshot = tmp_path / "fingerprints.json"
    snapshot.write_text(fingerprints.SNAPSHOT.read_text())
    monkeypatch.setattr(fingerprints, "ROOT", tmp_path)
    monkeypatch.setattr(fingerprints, "SNAPSHOT", snapshot)
    found = fingerprints.problems()
    assert any(p.startswith("another:: not recorded") for p in found), found
    assert any("recorded but no longer registered" in p and p.startswith("voice:") for p in found), found
    recorded_before = fingerprints.recorded()["1"]["quickstart:"]
    assert fingerprints.main(["add"]) == 0
    table = fingerprints.recorded()["1"]
    assert table["quickstart:"] == recorded_before and "another:" in table and table["another:"] != table["quickstart:"]
    # A deliberate change of one experiment rewrites its own rows only.
    (experiments / "another.yaml").write_text((experiments / "another.yaml").read_text().replace("seed: 7", "seed: 8"))
    assert fingerprints.main(["update", "another"]) == 0
    updated = fingerprints.recorded()["1"]
    assert updated["another:"] != table["another:"] and updated["quickstart:"] == table["quickstart:"]


def test_a_new_stage_section_leaves_studies_that_do_not_use_it_alone(tmp_path):
    """The GRPO section came after the studies above: absent, it is not in their fingerprint or manifest spec."""
    from harness.spec import load_spec, spec_dump, spec_fingerprint

    plain = load_spec(ROOT / "experiments" / "quickstart.yaml")
    assert "grpo" not in spec_dump(plain) and "dpo" in spec_dump(plain)  # legacy sections stay, as null
    with_grpo = load_spec(ROOT / "experiments" / "quickstart.yaml", overrides={"grpo": {"max_steps": 1}})
    assert spec_fingerprint(with_grpo) != spec_fingerprint(plain)
    assert json.loads(json.dumps(spec_dump(with_grpo)))["grpo"]["max_steps"] == 1


def test_an_endpoint_note_describes_and_does_not_split_a_study():
    """Editing what an endpoint is called in reports must not make a running study refuse to resume."""
    from harness.spec import load_spec, spec_fingerprint

    path = ROOT / "experiments" / "three_way.yaml"
    plain = load_spec(path, preset="cpu", overrides={"contestants.0.endpoint.note": None})
    noted = load_spec(path, preset="cpu")
    assert noted.contestants[0].endpoint.note and spec_fingerprint(noted) == spec_fingerprint(plain)
    other = load_spec(path, preset="cpu", overrides={"contestants.0.endpoint.model": "another"})
    assert spec_fingerprint(other) != spec_fingerprint(noted)


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "experiments").glob("*.yaml")))
def test_every_experiment_has_a_cpu_preset_within_the_committed_results_rules(name):
    """The committed CPU results: ≥ 50 held-out items, ≥ 2 seeds where training arms are compared (a grid,
    or a stage continuing SFT), and the report of that run under results/<name>-cpu/."""
    from harness.spec import load_spec
    from harness.stages import registry as stages

    spec = load_spec(ROOT / "experiments" / f"{name}.yaml", preset="cpu")
    assert spec.eval.limit is None or spec.eval.limit >= 50
    # A stage that continues another's adapter (`after`) compares the two: DPO, GRPO, whatever comes next.
    compares_training = bool(spec.search.grid) or any(stage.after for stage, _ in stages.pipeline(spec))
    if compares_training:
        assert len(spec.search.seeds) >= 2, f"{name}: compare training arms over at least 2 seeds"
    report = ROOT / "results" / f"{name}-cpu" / "report.md"
    assert report.exists(), f"run `bash scripts/reproduce-results.sh {name}` and commit {report.parent}"
    assert (report.parent / "report.json").exists() and list((report.parent / "report" / "figures").glob("*.png"))
