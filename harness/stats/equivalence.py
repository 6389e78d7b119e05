"""Is a candidate worse than its reference, as good within a tolerance, or can the data not say?

The one decision behind every "no difference" a user might read as safe (`harness regress`, the forgetting
gate, quant_delta, the analysis reports and the model card). Three outcomes, plus one for a real gain:

* `REGRESSED`: a significant drop (p below alpha, the CI below 0) whose CI reaches past −tolerance;
* `EQUIVALENT`: the whole CI lies inside ±tolerance: effects of the tolerance's size are ruled out
  (CI inclusion, the interval form of two one-sided tests: Schuirmann 1987; with a 95% CI it is TOST at 2.5%);
* `IMPROVED`: a significant gain whose CI reaches past +tolerance (not a regression, not "equivalent");
* `INCONCLUSIVE`: neither: the CI is wider than the tolerance allows, so the items cannot decide.

A significant drop whose CI lies inside the tolerance is `EQUIVALENT`: smaller than what the user said
matters. Direction is the caller's: `diff` is oriented so that positive is better (negate a lower-is-better
score's difference before calling).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.stats

from harness.errors import HarnessError
from harness.stats.paired import is_binary, mcnemar_exact, paired_bootstrap_ci, paired_permutation_test

REGRESSED, EQUIVALENT, IMPROVED, INCONCLUSIVE = "regressed", "equivalent", "improved", "inconclusive"
OUTCOMES = (REGRESSED, EQUIVALENT, IMPROVED, INCONCLUSIVE)
GATE_PASSES = (EQUIVALENT, IMPROVED)
# `harness regress` and friends: 0 passes, 1 a regression, 3 inconclusive (2 is bad input, as argparse does).
EXIT_CODES = {EQUIVALENT: 0, IMPROVED: 0, REGRESSED: 1, INCONCLUSIVE: 3}
EXIT_INCONCLUSIVE = EXIT_CODES[INCONCLUSIVE]


class ToleranceError(HarnessError, ValueError):
    """A tolerance that is no number in its range; a ValueError too, so a pydantic validator reports it
    under the spec field's own name."""


def check_tolerance(tolerance: float, *, upper: float = math.inf, where: str = "tolerance") -> float:
    """`tolerance` as a float in (0, upper), else a ToleranceError naming `where` (a spec field or an option).

    Zero is refused: no finite sample shows a CI inside ±0, so every comparison would be inconclusive.
    A bool or a string is refused too, though Python would turn it into a number.
    """
    if isinstance(tolerance, (bool, str)):
        raise ToleranceError(f"{where}: a tolerance is a number (the largest difference that does not matter), "
                             f"got {tolerance!r}")
    try:
        value = float(tolerance)
    except (TypeError, ValueError):
        raise ToleranceError(f"{where}: a tolerance is a number (the largest difference that does not matter), "
                             f"got {tolerance!r}") from None
    if not math.isfinite(value) or not 0 < value < upper:
        bound = f"below {upper:g}" if math.isfinite(upper) else "finite"
        raise ToleranceError(f"{where}: the tolerance must be greater than 0 and {bound} (the largest difference "
                             f"that does not matter, in the metric's own units), got {tolerance!r}")
    return value


@dataclass(frozen=True)
class Equivalence:
    """The decision on one comparison, with the words a report prints and what would decide it."""

    outcome: str  # one of OUTCOMES
    tolerance: float
    items_needed: int | None  # items at this variance for a CI inside ±tolerance (80% power at no difference)
    reason: str

    @property
    def passes(self) -> bool:
        return self.outcome in GATE_PASSES

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.outcome]


def items_needed(se: float, n: int, tolerance: float, *, confidence: float = 0.95, power: float = 0.8,
                 fixed_se: float = 0.0) -> int | None:
    """Paired items for the CI to fall inside ±tolerance with `power`, when the true difference is 0.

    From the data's own variance: the per-item SD is `se·√n` (`se`, the SE of the mean difference over `n`
    items or clusters, so a clustered SE carries through). Both bounds must clear the tolerance, so
    n = ((z_{1-α/2} + z_{(1+power)/2}) · sd / tolerance)². `fixed_se` is a part of the SE more items do not
    shrink (seed-to-seed variation): the items must fit in what it leaves, tolerance² − (z·fixed_se)². None
    when `se` is not a finite positive number, or when `fixed_se` alone leaves no room (more seeds decide).
    """
    if n < 1 or not math.isfinite(se) or se <= 0:
        return None
    sd = se * math.sqrt(n)
    z = scipy.stats.norm.ppf(1 - (1 - confidence) / 2) + scipy.stats.norm.ppf((1 + power) / 2)
    room = tolerance ** 2 - (z * fixed_se) ** 2 if math.isfinite(fixed_se) else -1.0
    if room <= 0:
        return None
    return max(2, math.ceil((z * sd) ** 2 / room))


def decide(diff: float, ci_low: float, ci_high: float, p: float, *, tolerance: float, alpha: float = 0.05,
           se: float = math.nan, n: int = 0, confidence: float = 0.95, fixed_se: float = 0.0) -> Equivalence:
    """Regressed, equivalent, improved or inconclusive (module docstring), for a difference oriented
    better-is-positive; `se` and `n` (the SE of the mean difference and its units) give `items_needed`, with
    `fixed_se` the part of the SE that more items do not shrink (seed-to-seed variation)."""
    tolerance = check_tolerance(tolerance)
    needed = items_needed(se, n, tolerance, confidence=confidence, fixed_se=fixed_se)
    significant = math.isfinite(p) and p < alpha
    inside = -tolerance <= ci_low and ci_high <= tolerance
    ci = f"[{ci_low:+.3f}, {ci_high:+.3f}]"
    if inside:
        drop = " (a significant drop, smaller than the tolerance)" if significant and ci_high < 0 else ""
        return Equivalence(EQUIVALENT, tolerance, needed,
                           f"the CI {ci} lies inside ±{tolerance:g}{drop}: differences of that size are ruled out")
    if significant and ci_high < 0:
        return Equivalence(REGRESSED, tolerance, needed,
                           f"a significant drop (p={p:.3g}); the CI {ci} reaches past −{tolerance:g}")
    if significant and ci_low > 0:
        return Equivalence(IMPROVED, tolerance, needed, f"a significant gain (p={p:.3g}); the CI {ci} is above 0")
    more = (f"; about {needed} paired units (this comparison has {n}) would decide at this variance"
            if needed and needed > n else
            f"; the difference itself ({diff:+.3f}) sits near the tolerance, so more items narrow the CI without "
            "promising a decision" if needed else
            f"; more items alone cannot decide: the seed-to-seed variation (SE {fixed_se:.3f}) keeps the CI wider "
            f"than ±{tolerance:g}, more seeds can" if fixed_se > 0 and math.isfinite(se) and se > 0 else "")
    return Equivalence(INCONCLUSIVE, tolerance, needed,
                       f"the CI {ci} reaches past ±{tolerance:g} and the difference is not significant"
                       f": neither a regression nor equivalence is shown{more}")


@dataclass(frozen=True)
class PairedDecision:
    """`decide` on two arms' per-item scores: the difference candidate − reference, its CI and p, and the outcome."""

    diff: float
    ci_low: float
    ci_high: float
    p: float
    n: int
    decision: Equivalence


def decide_scores(reference, candidate, *, tolerance: float, higher_is_better: bool = True,
                  bounds: tuple[float, float] | None = None, alpha: float = 0.05) -> PairedDecision:
    """Pair two arms' per-item scores (same items, same order) and decide: paired bootstrap CI (kept within
    `bounds`, the range of a difference), exact McNemar p for 0/1 scores, else the sign-flip permutation p.

    A lower-is-better score is decided on its negated difference; the difference reported stays
    candidate − reference."""
    a, b = np.asarray(reference, dtype=float), np.asarray(candidate, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"reference and candidate must pair item by item, got {a.shape} and {b.shape}")
    diffs = b - a
    low, high = paired_bootstrap_ci(diffs, bounds=bounds)
    p = mcnemar_exact(a, b) if is_binary(a) and is_binary(b) else paired_permutation_test(diffs)
    se = float(diffs.std(ddof=1) / math.sqrt(diffs.size)) if diffs.size > 1 else math.nan
    sign = 1.0 if higher_is_better else -1.0
    lo, hi = sorted((sign * low, sign * high))
    decision = decide(sign * float(diffs.mean()), lo, hi, p, tolerance=tolerance, alpha=alpha, se=se, n=diffs.size)
    return PairedDecision(float(diffs.mean()), low, high, p, int(diffs.size), decision)
