"""The cost–quality front, drawn only where the measurements tell arms apart.

An arm's cost is measured, and timings vary from call to call (a batch of long answers, a busy machine), so a
cost difference means something only beyond that noise. `cost_interval` bootstraps an arm's calls as
`analysis.tables.eval_speed` and `cost_per_1k_calls` count them: a batched call's time with the items it
answered, an endpoint call with its price. It does not see drift between runs (another job starting on a
shared machine), so its interval is a lower bound on the noise.

`front_status` then calls an arm *dominated* only when another arm is at least as good and as cheap by the
estimates and tells apart from it on one of the two (the intervals do not overlap), *Pareto-optimal* when no
arm dominates it and none is indistinguishable from it on both, and *not distinguishable* otherwise: an
undominated arm whose cost and quality intervals both overlap another undominated arm's, where the data do
not say which is the better trade-off.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

OPTIMAL, DOMINATED, TIED = "Pareto-optimal", "dominated", "not distinguishable"
# Fewer calls than this give no measure of the cost's noise: the interval is left unknown (NaN), and such an
# arm's cost tells apart from no other's.
MIN_CALLS = 5


@dataclass(frozen=True)
class CostInterval:
    """An arm's measured cost with its bootstrap CI (NaN bounds: too few calls to measure the noise)."""

    estimate: float
    low: float
    high: float
    calls: int

    @property
    def known(self) -> bool:
        return math.isfinite(self.low) and math.isfinite(self.high)


def _calls(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Each call's time and the items it answered: one generate call per batch, else one per item."""
    if "latency_s" not in rows:
        return np.array([]), np.array([])
    if "batch" in rows and rows["batch"].notna().all():
        calls = rows.groupby(["trial", "seed", "batch"], sort=False)
        times, items = calls["latency_s"].first().to_numpy(float), calls.size().to_numpy(float)
    else:
        times, items = rows["latency_s"].to_numpy(float), np.ones(len(rows))
    keep = np.isfinite(times)  # a failed endpoint call has no time
    return times[keep], items[keep]


def _percentiles(samples: np.ndarray, estimate: float, n: int, confidence: float) -> tuple[float, float]:
    if n < MIN_CALLS:
        return math.nan, math.nan
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(samples, [tail, 100 - tail])
    return float(min(low, estimate)), float(max(high, estimate))


def device_s_interval(rows: pd.DataFrame, *, confidence: float = 0.95, n_resamples: int = 2000,
                      seed: int = 0) -> CostInterval:
    """Device-seconds per item (each call's time shared by its items), its CI from resampling whole calls."""
    times, items = _calls(rows)
    if times.size == 0:
        return CostInterval(math.nan, math.nan, math.nan, 0)
    estimate = float(times.sum() / items.sum())
    picks = np.random.default_rng(seed).integers(0, times.size, (n_resamples, times.size))
    samples = times[picks].sum(axis=1) / items[picks].sum(axis=1)
    return CostInterval(estimate, *_percentiles(samples, estimate, times.size, confidence), times.size)


def cost_interval(rows: pd.DataFrame, price_per_device_hour: float | None, *, confidence: float = 0.95,
                  n_resamples: int = 2000, seed: int = 0) -> CostInterval:
    """USD per 1,000 calls with its CI: an endpoint arm's priced calls resampled, else the device time's interval
    at `price_per_device_hour` (NaN without a price)."""
    if "cost_usd" in rows and rows["cost_usd"].notna().any():
        costs = 1000 * rows["cost_usd"].fillna(0.0).to_numpy(float)
        estimate = float(costs.mean())
        picks = np.random.default_rng(seed).integers(0, costs.size, (n_resamples, costs.size))
        return CostInterval(estimate, *_percentiles(costs[picks].mean(axis=1), estimate, costs.size, confidence),
                            costs.size)
    if price_per_device_hour is None:
        return CostInterval(math.nan, math.nan, math.nan, 0)
    scale = 1000 / 3600 * price_per_device_hour
    d = device_s_interval(rows, confidence=confidence, n_resamples=n_resamples, seed=seed)
    return CostInterval(d.estimate * scale, d.low * scale, d.high * scale, d.calls)


def _apart(low: np.ndarray, high: np.ndarray, i: int, j: int) -> bool:
    """Whether two intervals do not overlap (an unknown one overlaps everything)."""
    if not all(np.isfinite([low[i], high[i], low[j], high[j]])):
        return False
    return bool(high[i] < low[j] or high[j] < low[i])


def front_status(cost: Sequence[CostInterval], quality: Sequence[tuple[float, float, float]], *,
                 higher_is_better: bool = True) -> list[str]:
    """`OPTIMAL`, `DOMINATED` or `TIED` for each arm (module docstring), from its cost interval and its quality
    (mean, CI low, CI high)."""
    x = np.array([c.estimate for c in cost], float)
    x_low, x_high = np.array([c.low for c in cost], float), np.array([c.high for c in cost], float)
    q = np.array([m for m, _, _ in quality], float)
    q_low, q_high = np.array([lo for _, lo, _ in quality], float), np.array([hi for _, _, hi in quality], float)
    good = q if higher_is_better else -q
    n = len(x)

    def dominates(j: int, i: int) -> bool:
        as_good = x[j] <= x[i] and good[j] >= good[i] and (x[j] < x[i] or good[j] > good[i])
        return as_good and (_apart(x_low, x_high, i, j) or _apart(q_low, q_high, i, j))

    dominated = [any(dominates(j, i) for j in range(n) if j != i) for i in range(n)]
    status = []
    for i in range(n):
        if dominated[i]:
            status.append(DOMINATED)
        elif any(not dominated[j] and not _apart(x_low, x_high, i, j) and not _apart(q_low, q_high, i, j)
                 for j in range(n) if j != i):
            status.append(TIED)
        else:
            status.append(OPTIMAL)
    return status
