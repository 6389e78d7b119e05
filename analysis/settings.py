"""How a report tests every comparison: the unit of the test, α, the CI level, and the bootstrap's resamples and seed."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from analysis.compare import Level
from harness.stats.paired import DEFAULT_RESAMPLES


@dataclass(frozen=True)
class ComparisonSettings:
    """The settings every family, contrast and arm interval of one report shares."""

    level: Level = "item"
    alpha: float = 0.05
    confidence: float = 0.95
    n_resamples: int = DEFAULT_RESAMPLES
    seed: int = 0

    @property
    def options(self) -> dict[str, Any]:
        """As keyword arguments for the comparison functions (`run_family`, `study_contrasts`, ...)."""
        return asdict(self)
