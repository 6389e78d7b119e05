"""A user's clone works without anything outside it: no `../shared` beside the checkout."""

from __future__ import annotations

from tests.support.ci import ROOT
from tests.support.clone import run_in_clone, tracked_files

PACKAGE_DIRS = ("harness", "analysis", "experiments", "scripts", "benchmarks")


def test_no_file_of_the_package_refers_to_a_shared_folder_beside_the_checkout():
    offenders = []
    for name in tracked_files():
        if name.startswith(PACKAGE_DIRS):
            text = (ROOT / name).read_text(errors="replace")
            if "../shared" in text or "shared/data" in text:
                offenders.append(name)
    assert offenders == []


def test_forgetting_smoke_in_a_clone_without_benchmark_data_says_both_ways_before_any_trial(clone, harness_home):
    proc = run_in_clone(clone, harness_home, "run", "forgetting", "--preset", "smoke")
    out = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode == 2, out[-3000:]
    assert "Two ways" in out and "HARNESS_BENCHMARKS" in out and "arc_easy_local -> arc_easy" in out
    assert not list((clone / "results").glob("forgetting-smoke/trial-*"))
