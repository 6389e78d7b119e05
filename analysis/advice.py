"""The report's "when to use which": a tuned arm against an endpoint contestant, weighed on quality, cost and
latency, written from the comparison's numbers (no canned verdict)."""

from __future__ import annotations

import math
from typing import Sequence

import pandas as pd

from analysis.compare import HIGHER, LOWER, Comparison


def _ratio(a: float, b: float) -> str:
    if not (math.isfinite(a) and math.isfinite(b)) or b == 0:
        return "an unknown multiple of"
    return f"{a / b:.2g}x"


def _advice(c: Comparison, metric: str, cost_ratio: float) -> str:
    """What to choose, from the verdict and how the two arms' costs per call compare."""
    if c.verdict == "better" and cost_ratio <= 1:
        return f"Use {c.a}: it is better on {metric} and no dearer per call."
    if c.verdict == "better" and cost_ratio > 1:
        return (f"{c.a} is better on {metric} but dearer per call at these prices: use it where the gain is "
                f"worth {cost_ratio:.2g}x the cost (a cheaper device-hour, or a faster device, lowers it).")
    if c.verdict == "better":
        return f"{c.a} is better on {metric}; with no price for one side, the cost comparison is open."
    if c.verdict == "worse":
        return (f"Use {c.b} where {metric} matters more than the difference in cost and latency; "
                f"{c.a} is measurably worse.")
    if c.verdict in (HIGHER, LOWER):
        return (f"{metric} is descriptive (neither direction is better): it does not choose between them; "
                "the cost and latency do.")
    if c.outcome == "equivalent":
        return (f"The two are equivalent on {metric} within ±{c.tolerance:.3g} (the CI rules out larger "
                "differences): the cheaper and faster arm is the choice.")
    needed = (f"; about {c.items_needed:,} items would decide at this variance"
              if c.items_needed and c.items_needed > c.n else "")
    return (f"The comparison on {metric} is inconclusive: the CI reaches past ±{c.tolerance:.3g}, so neither a "
            f"difference nor equivalence is shown{needed}. Do not choose on {metric} yet.")


def when_to_use(comparisons: Sequence[Comparison], arms: pd.DataFrame, metric: str, confidence: float) -> list[str]:
    """One paragraph per tuned-vs-contestant comparison whose two arms are in the arm table `arms`."""
    by_arm = {row.arm: row for row in arms.itertuples()}
    out = []
    for c in comparisons:
        tuned, other = by_arm.get(c.a), by_arm.get(c.b)
        if tuned is None or other is None:
            continue
        gap = (f"{c.a} scores {c.diff:+.3f} {metric} against {c.b} ({confidence:.0%} CI [{c.ci_low:+.3f}, "
               f"{c.ci_high:+.3f}], adjusted p = {c.p_adjusted:.3g}, n = {c.n})")
        cost = (f"costs {_ratio(tuned.cost_per_1k_calls, other.cost_per_1k_calls)} as much per 1K calls "
                f"(${tuned.cost_per_1k_calls:.4g} vs ${other.cost_per_1k_calls:.4g})")
        latency = (f"answers with {_ratio(tuned.latency_p50_s, other.latency_p50_s)} the median latency per call "
                   f"({tuned.latency_p50_s:.3g} s vs {other.latency_p50_s:.3g} s, at {tuned.items_per_call:.3g} vs "
                   f"{other.items_per_call:.3g} items per call: a batched call's latency is its batch's) and "
                   f"{_ratio(tuned.device_s_per_item, other.device_s_per_item)} the time per item "
                   f"({tuned.device_s_per_item:.3g} s vs {other.device_s_per_item:.3g} s)")
        cost_ratio = (tuned.cost_per_1k_calls / other.cost_per_1k_calls
                      if math.isfinite(tuned.cost_per_1k_calls) and math.isfinite(other.cost_per_1k_calls)
                      and other.cost_per_1k_calls > 0 else math.nan)
        out.append(f"{gap}; it {cost} and {latency}. {_advice(c, metric, cost_ratio)}")
    return out
