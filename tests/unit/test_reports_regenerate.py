"""A committed report is regenerable: its trials' records and per-item rows are committed beside it, and
`harness report NAME --preset cpu` renders the same report from them, byte for byte (report.md, report.json,
every table and figure), wherever the repository lies. The report names the commit its trials ran at, its
resolved config and the commands that reproduce it."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import yaml

from tests.support.cli_runner import harness

ROOT = Path(__file__).resolve().parents[2]
STUDY = "quickstart-cpu"  # the smallest committed report; scripts/reproduce-results.sh quickstart re-renders it


def _committed(study: str) -> list[Path]:
    out = subprocess.run(["git", "ls-files", f"results/{study}"], cwd=ROOT, capture_output=True, text=True, check=True)
    return [Path(p) for p in out.stdout.split()]


def test_the_committed_quickstart_report_re_renders_byte_for_byte_from_the_repository(tmp_path):
    files = _committed(STUDY)
    rendered = [f for f in files if f.name.startswith("report") or "report" in f.parts[2:3]]
    records = [f for f in files if f.parts[2].startswith("trial-")]
    assert rendered and any(f.parts[-2] == "eval" for f in records), "the trials' per-item rows are committed"
    for f in records:  # only what a clone has: no adapters, no Optuna study, no caches
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / f, tmp_path / f)
    harness("report", "quickstart", "--preset", "cpu", "--results", str(tmp_path / "results"), cwd=ROOT, check=True)
    differ = [str(f) for f in rendered if (tmp_path / f).read_bytes() != (ROOT / f).read_bytes()]
    assert not differ, (f"{differ} no longer render as committed: analysis changed what this report says; "
                        "re-render it (harness report quickstart --preset cpu) and commit")
    made = {p.relative_to(tmp_path) for p in (tmp_path / "results" / STUDY).rglob("*")
            if p.is_file() and not p.relative_to(tmp_path).parts[2].startswith(("trial-", "wandb"))}
    assert made == set(rendered), {"not committed": sorted(map(str, made - set(rendered)))}


def test_a_report_names_its_commit_config_and_the_commands_that_reproduce_it():
    report = json.loads((ROOT / "results" / STUDY / "report.json").read_text())
    provenance = report["provenance"]
    manifest = json.loads((ROOT / "results" / STUDY / "trial-0000" / "manifest.json").read_text())
    assert provenance["commits"] == [manifest["git_commit"]]
    assert provenance["commands"] == ["harness run quickstart --preset cpu", "harness report quickstart --preset cpu"]
    config = yaml.safe_load((ROOT / "results" / STUDY / provenance["config"]).read_text())
    assert config == manifest["spec"]
    md = (ROOT / "results" / STUDY / "report.md").read_text()
    assert f"Trials run at commit {manifest['git_commit'][:7]}" in md and "`harness run quickstart --preset cpu`" in md
    assert str(ROOT) not in (ROOT / "results" / STUDY / "report.json").read_text()  # no machine's own paths
