"""How a report tests every comparison: the unit of the test, α, the CI level, the bootstrap's resamples and seed,
and the one tolerance every outcome is read against."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from analysis.compare import DEFAULT_TOLERANCE, Level
from harness.stats.paired import DEFAULT_RESAMPLES


@dataclass(frozen=True)
class ComparisonSettings:
    """The settings every family, contrast and arm interval of one report shares."""

    level: Level = "item"
    alpha: float = 0.05
    confidence: float = 0.95
    n_resamples: int = DEFAULT_RESAMPLES
    seed: int = 0
    # The equivalence margin as a share of each metric's declared range (±0.02 for a [0, 1] score): the
    # spec's report.tolerance when it states one, else DEFAULT_TOLERANCE. Unbounded metrics get no claim.
    tolerance: float = DEFAULT_TOLERANCE

    @property
    def options(self) -> dict[str, Any]:
        """As keyword arguments for the comparison functions (`pair_statistics`, `study_contrasts`, ...)."""
        return {k: v for k, v in asdict(self).items() if k != "tolerance"}

    @property
    def judging(self) -> dict[str, Any]:
        """As keyword arguments for `analysis.compare.adjust`."""
        return {"alpha": self.alpha, "tolerance": self.tolerance, "confidence": self.confidence}
