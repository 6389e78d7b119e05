"""Helpers shared by tests/unit/test_analysis_contrasts.py and tests/e2e/test_analysis_contrasts.py."""

from __future__ import annotations

import numpy as np
import pytest

from analysis import load_study
from analysis.contrasts import study_contrasts
from analysis.synthetic import write_synthetic_grid

ALPHA = 0.05


GRID = {"lora.r": [2, 8, 32], "lora.alpha_policy": ["r", "2r"], "lora.target_modules": ["attention", "all-linear"]}


PER_DOUBLING = 0.03  # rank: + 0.03 field accuracy per doubling


ALL_LINEAR_AT_32 = 0.10  # all-linear beats attention by 0.10, at rank 32 only: an interaction


NOT_RUN = "4-bit QLoRA (bitsandbytes NF4) needs CUDA; this machine has none"


def planted(params: dict) -> float:
    """The alpha policy does nothing; rank helps; all-linear helps at rank 32 only."""
    gain = PER_DOUBLING * np.log2(params["lora.r"] / 2)
    return gain + (ALL_LINEAR_AT_32 if params["lora.target_modules"] == "all-linear" and params["lora.r"] == 32
                   else 0.0)


@pytest.fixture(scope="module")
def grid_study(tmp_path_factory):
    return write_synthetic_grid(tmp_path_factory.mktemp("results"), GRID, planted, seeds=(0, 1, 2), n_items=300,
                                base_p=0.3)


@pytest.fixture(scope="module")
def contrasts(grid_study):
    return study_contrasts(load_study(grid_study), "field_accuracy", alpha=ALPHA, n_resamples=1000)
