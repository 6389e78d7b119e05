"""Helpers shared by tests/unit/test_analysis_calibration.py and tests/e2e/test_analysis_calibration.py."""

from __future__ import annotations

import numpy as np

ALPHA = 0.05


def false_positive_rate(draw, test, repeats: int, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    return sum(test(*draw(rng), r) < ALPHA for r in range(repeats)) / repeats


def null_field_accuracy_diffs(rng, n=100, fields=10):
    p = rng.uniform(0.2, 0.8, n)
    return (rng.binomial(fields, p) / fields - rng.binomial(fields, p) / fields,)
