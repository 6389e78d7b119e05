"""Helpers shared by tests/unit/test_forgetting.py and tests/e2e/test_forgetting.py."""

from __future__ import annotations

from pathlib import Path

from tests.support.ci import SHARED

BENCHMARKS = SHARED / "data" / "benchmarks"


HAVE_BENCHMARKS = (BENCHMARKS / "arc-easy" / "test.jsonl").exists()


WHY = f"the shared benchmark subsets ({BENCHMARKS}) are not next to this checkout"


def trial_files(study: Path, number: int, *, status: str = "complete") -> Path:
    """The files of a trial directory as harness.trial writes them (the adapter is added by the caller)."""
    from harness.results import trial_dir_name, write_json

    trial = study / trial_dir_name(number)
    write_json(trial / "manifest.json", {"spec": {"model": {"base": "random:tiny", "dtype": "float32",
                                                             "load_in_4bit": False}}})
    write_json(trial / "result.json", {"number": number, "status": status, "params": {"trial": number}})
    return trial
