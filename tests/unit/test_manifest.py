"""The commit a manifest records: dirty only when the code differs, not when a study's own records do."""
import subprocess
from pathlib import Path

from harness.trial.manifest import git_commit


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def test_results_changing_under_a_run_leave_the_commit_clean_and_code_changes_do_not(tmp_path):
    repo = tmp_path / "repo"
    (repo / "harness").mkdir(parents=True)
    (repo / "results").mkdir()
    (repo / "harness" / "a.py").write_text("x = 1\n")
    (repo / "results" / "report.md").write_text("old\n")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    head = _git(repo, "rev-parse", "HEAD")
    commit = git_commit.__wrapped__  # uncached: the same directory is read in three states

    assert commit(repo / "harness") == head
    (repo / "results" / "report.md").write_text("re-rendered\n")
    (repo / "results" / "trial-0000.json").write_text("{}\n")
    assert commit(repo / "harness") == head
    (repo / "harness" / "a.py").write_text("x = 2\n")
    assert commit(repo / "harness") == head + "-dirty"
    assert commit(tmp_path) is None  # outside a checkout
