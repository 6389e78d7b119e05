"""Errors the analysis raises for input it must refuse; each message says what is wrong and what to do.

They are `HarnessError`s (so the CLI prints them as one clear line) and `ValueError`s (so a notebook
user can catch them the ordinary way).
"""

from __future__ import annotations

from harness.errors import HarnessError


class AnalysisError(HarnessError, ValueError):
    """Input the analysis cannot use honestly."""


class StudyNotFoundError(AnalysisError):
    """A study directory without any trial in it."""


class UnknownArmError(AnalysisError):
    """An arm or metric name that the study does not have."""


class UnpairedItemsError(AnalysisError):
    """Two arms evaluated on different held-out items (or splits, or seeds): pairing them would be a lie."""


class MissingSeedsError(AnalysisError):
    """A seed-level statistic asked of arms that were run with fewer than two seeds."""


class NaNScoreError(AnalysisError):
    """Per-item scores that are NaN (or missing), which no test may silently drop."""
