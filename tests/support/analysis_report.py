"""Helpers shared by tests/unit/test_analysis_report.py and tests/e2e/test_analysis_report.py."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from analysis.synthetic import write_synthetic_study
from harness.results import read_jsonl, write_jsonl


def assert_png_has_data(path: Path) -> None:
    """Not blank: a real plot has many colours and a good share of non-white pixels."""
    rgb = (matplotlib.image.imread(path)[..., :3] * 255).astype(np.uint32)
    non_white = np.mean(np.any(rgb < 230, axis=-1))
    colours = len(np.unique((rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]))
    assert non_white > 0.02, f"{path.name}: {non_white:.1%} non-white pixels"
    assert colours > 20, f"{path.name}: only {colours} colours"


@pytest.fixture
def edits_lower_is_better(monkeypatch):
    """`edits` (edits from the answer to the reference) declared lower-is-better for this test only."""
    import harness.evaluation.metrics as registry

    registry.all_metrics()
    monkeypatch.setattr(registry, "_SCORES", dict(registry._SCORES))
    registry.declare_scores([registry.ScoreSpec("edits", "edits to the reference", registry.LOWER, 0.0, np.inf)],
                            by="this test")


def with_length_and_edits(tmp_path: Path) -> Path:
    """One seed, base and tuned: tuned answers 5-11 words longer (a real difference, but not a better one) and
    needs 2 fewer edits on every item (lower is better: an improvement)."""
    study_dir = write_synthetic_study(tmp_path, ranks=(16,), seeds=(0,), n_items=60, n_clusters=None,
                                      failed_trial=False)
    for path in study_dir.glob("trial-*/eval/*.jsonl"):
        tuned = path.stem == "tuned"
        write_jsonl(path, [{**r, "scores": {**r["scores"], "words": 40.0 + i % 9 + (5 + i % 7 if tuned else 0),
                                            "edits": 5.0 + i % 3 - (2 if tuned else 0)}}
                           for i, r in enumerate(read_jsonl(path))])
    return study_dir
