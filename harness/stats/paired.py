"""Statistics of paired per-item scores, as plain functions over numpy arrays.

"Paired" means both arms answered the same held-out items, so the unit of analysis is the per-item
difference `a - b`. Library implementations are used wherever one exists (McNemar and power from
statsmodels, Wilcoxon and the permutation test from scipy, cluster-robust standard errors
from statsmodels); only the bootstraps (vectorised, seeded), Holm (see `holm`) and the seeds × items
variance-components test (`seed_item_test`: a few mean squares, see there why not MixedLM) are written here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import scipy.stats
from statsmodels.regression.linear_model import OLS
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.power import TTestPower

DEFAULT_RESAMPLES = 10_000
# Bootstrap index blocks are capped at this many cells, so a 50k-item eval does not allocate gigabytes.
_BLOCK_CELLS = 2_000_000


def _finite_1d(values: Sequence[float] | np.ndarray, name: str = "values") -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} has {int(np.sum(~np.isfinite(arr)))} NaN/inf values")
    return arr


def _cluster_codes(clusters: Sequence | np.ndarray | None, n: int) -> np.ndarray | None:
    """Integer codes 0..G-1 for cluster labels; None when there are none."""
    if clusters is None:
        return None
    labels = np.asarray(clusters, dtype=object)
    if labels.shape != (n,):
        raise ValueError(f"clusters has shape {labels.shape}, expected ({n},) like the differences")
    _, codes = np.unique(labels.astype(str), return_inverse=True)
    return codes


def _percentile_interval(distribution: np.ndarray, confidence: float) -> tuple[float, float]:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    tail = (1 - confidence) / 2
    low, high = np.quantile(distribution, [tail, 1 - tail])
    return float(low), float(high)


Bounds = tuple[float, float]  # (low, high) of what is averaged; ±inf where a side is unbounded


def _within_bounds(distribution: np.ndarray, bounds: Bounds | None) -> np.ndarray:
    """Bootstrap means clipped to `bounds`, the range the averaged values can take (the caller's to declare:
    a score's declared range for a mean, [lo - hi, hi - lo] for a paired difference); None: not clipped.

    The variance corrections below (the sqrt(k/(k-1)) spread, the hierarchical sum of a seed and an
    item deviation) move draws away from the observed mean regardless of any range. With scores piled
    at a bound (29 of 31 items going 0 → 1) a quantile then lands past it: a mean difference of +0.935
    got the CI [+0.847, +1.001], though no difference of 0/1 scores exceeds 1.

    Clipping is monotone, so clipping the draws is intersecting the percentile interval with the
    parameter space; the true mean lies in that space, so the interval covers it exactly as often as
    before and never claims an impossible value. The observed range of the values is no such bound: the
    mean of an unbounded score (a word count) can lie beyond every item seen, and the draws that pass
    that range do so because of the variance correction, whose point is the spread a plain bootstrap
    understates; cutting them there would undo it where it matters. (A plain bootstrap's draws, means
    of resampled values, stay within the observed range by themselves.)
    """
    if bounds is None:
        return distribution
    low, high = bounds
    if not low < high:
        raise ValueError(f"bounds must have low < high, got {bounds}")
    return np.clip(distribution, low, high)


def _resampled_item_means(values: np.ndarray, codes: np.ndarray | None, n_resamples: int,
                          rng: np.random.Generator) -> np.ndarray:
    """Means of `values` over `n_resamples` bootstrap samples of items, or of whole clusters of items.

    Resampling whole clusters keeps items that share a source together, so their correlation is
    counted instead of being mistaken for independent evidence. Deviations from the observed mean
    are scaled by sqrt(k/(k-1)) for k resampled units: a plain bootstrap's variance is (k-1)/k of the
    unbiased s²/k, which visibly undercovers with the few dozen clusters a held-out split may have.
    """
    if codes is None:
        sums, counts = values, np.ones_like(values)
    else:
        sums = np.bincount(codes, weights=values)
        counts = np.bincount(codes).astype(float)
    units = sums.size
    out = np.empty(n_resamples)
    block = max(1, _BLOCK_CELLS // units)
    for start in range(0, n_resamples, block):
        stop = min(start + block, n_resamples)
        idx = rng.integers(0, units, size=(stop - start, units))
        out[start:stop] = sums[idx].sum(axis=1) / counts[idx].sum(axis=1)
    observed = sums.sum() / counts.sum()
    return observed + math.sqrt(units / (units - 1)) * (out - observed) if units > 1 else out


def paired_bootstrap_ci(diffs: Sequence[float] | np.ndarray, *, clusters: Sequence | np.ndarray | None = None,
                        confidence: float = 0.95, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                        bounds: Bounds | None = None) -> tuple[float, float]:
    """Percentile CI of the mean paired difference, resampling items (or whole clusters) with replacement.

    The resampled means are spread by sqrt(k/(k-1)) about the observed mean (k items or clusters),
    so the bootstrap variance is the unbiased one (see `_resampled_item_means`), and kept within `bounds`,
    the range the values can take (see `_within_bounds`). Of one arm's scores, it is the CI of their mean.
    """
    d = _finite_1d(diffs, "diffs")
    dist = _resampled_item_means(d, _cluster_codes(clusters, d.size), n_resamples, np.random.default_rng(seed))
    return _percentile_interval(_within_bounds(dist, bounds), confidence)


def hierarchical_bootstrap_distribution(diffs_by_seed: np.ndarray, *, clusters: Sequence | np.ndarray | None = None,
                                        n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                                        bounds: Bounds | None = None) -> np.ndarray:
    """Bootstrap distribution of the grand mean of a seeds × items matrix of paired differences.

    Seeds and items are crossed (every seed answers the same items), so each level is resampled on
    its own and the two deviations from the grand mean are added:

        mean* = m + sqrt(S/(S-1)) * (mean of S resampled seed means - m) + (mean of resampled item means - m)

    Resampling the whole seeds × items cell grid instead (the "pigeonhole" bootstrap) counts the
    seed × item interaction three times (McCullagh 2000) and is markedly conservative for binary
    scores. sqrt(S/(S-1)) undoes the bootstrap's (S-1)/S shrinkage of the seed variance, which
    matters with the 2-5 seeds fine-tuning studies can afford. With so few seeds the seed variance is
    itself poorly estimated: when it dominates, no interval is exact (see the test suite for the
    simulated coverage). The sum of two deviations can pass the range the cells can take, which no mean
    of them can, so the draws are kept within `bounds`, that range (`_within_bounds`).
    """
    d = np.asarray(diffs_by_seed, dtype=float)
    if d.ndim != 2:
        raise ValueError(f"diffs_by_seed must be seeds × items, got shape {d.shape}")
    n_seeds, n_items = d.shape
    if n_seeds < 2:
        raise ValueError(f"a hierarchical bootstrap needs at least 2 seeds, got {n_seeds}")
    if n_items == 0:
        raise ValueError("diffs_by_seed has no items")
    if not np.all(np.isfinite(d)):
        raise ValueError(f"diffs_by_seed has {int(np.sum(~np.isfinite(d)))} NaN/inf values")
    rng = np.random.default_rng(seed)
    grand = d.mean()
    item_part = _resampled_item_means(d.mean(axis=0), _cluster_codes(clusters, n_items), n_resamples, rng) - grand
    seed_idx = rng.integers(0, n_seeds, size=(n_resamples, n_seeds))
    seed_part = d.mean(axis=1)[seed_idx].mean(axis=1) - grand
    return _within_bounds(grand + math.sqrt(n_seeds / (n_seeds - 1)) * seed_part + item_part, bounds)


def hierarchical_bootstrap_ci(diffs_by_seed: np.ndarray, *, clusters: Sequence | np.ndarray | None = None,
                              confidence: float = 0.95, n_resamples: int = DEFAULT_RESAMPLES,
                              seed: int = 0, bounds: Bounds | None = None) -> tuple[float, float]:
    """Percentile CI of the mean difference that counts seed variance as well as item variance.

    `diffs_by_seed` is seeds × items; see `hierarchical_bootstrap_distribution` for the scheme and `bounds`.
    """
    dist = hierarchical_bootstrap_distribution(diffs_by_seed, clusters=clusters, n_resamples=n_resamples, seed=seed,
                                               bounds=bounds)
    return _percentile_interval(dist, confidence)


def is_binary(values: np.ndarray) -> bool:
    """Whether every value is exactly 0 or 1 (per-item correctness)."""
    values = np.asarray(values, dtype=float)
    return bool(np.all((values == 0) | (values == 1)))


def mcnemar_exact(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Two-sided exact McNemar p-value for paired binary outcomes (statsmodels `mcnemar(exact=True)`)."""
    a, b = _finite_1d(a, "a"), _finite_1d(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"a and b must pair up item by item, got {a.size} and {b.size} values")
    if not (is_binary(a) and is_binary(b)):
        raise ValueError("McNemar's test needs binary (0/1) outcomes; use the Wilcoxon test for continuous scores")
    a, b = a.astype(bool), b.astype(bool)
    table = [[int(np.sum(a & b)), int(np.sum(a & ~b))], [int(np.sum(~a & b)), int(np.sum(~a & ~b))]]
    return float(mcnemar(table, exact=True).pvalue)


def wilcoxon_signed_rank(diffs: Sequence[float] | np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired differences (scipy; zero differences dropped)."""
    d = _finite_1d(diffs, "diffs")
    if np.all(d == 0):
        return 1.0  # scipy refuses an all-zero sample; no item differs, so there is no evidence at all
    return float(scipy.stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)


def paired_permutation_test(diffs: Sequence[float] | np.ndarray, *, clusters: Sequence | np.ndarray | None = None,
                            n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> float:
    """Two-sided sign-flip permutation p-value of the mean paired difference (scipy `permutation_test`).

    Exact (all 2^k sign patterns) when 2^k <= n_resamples, otherwise Monte Carlo with a seeded RNG.
    With `clusters`, whole clusters flip together (k = clusters): items that share a source are not
    independent evidence, and flipping them one by one would overstate it.
    """
    d = _finite_1d(diffs, "diffs")
    codes = _cluster_codes(clusters, d.size)
    # The item-mean over a sign pattern is (sum of flipped unit sums) / n: flipping unit sums is the same test.
    units = d if codes is None else np.bincount(codes, weights=d)
    if np.all(units == 0):
        return 1.0
    result = scipy.stats.permutation_test(
        (units,), lambda x, axis: np.sum(x, axis=axis), permutation_type="samples", vectorized=True,
        n_resamples=n_resamples, alternative="two-sided", rng=np.random.default_rng(seed))
    return float(result.pvalue)


def seed_level_t_test(seed_mean_diffs: Sequence[float] | np.ndarray) -> float:
    """Two-sided one-sample t-test p-value of per-seed mean differences (scipy), df = seeds - 1."""
    d = _finite_1d(seed_mean_diffs, "seed_mean_diffs")
    if d.size < 2:
        raise ValueError(f"a seed-level test needs at least 2 seeds, got {d.size}")
    if np.all(d == d[0]):
        return 1.0 if d[0] == 0 else 0.0
    return float(scipy.stats.ttest_1samp(d, 0.0).pvalue)


def holm(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values, equal to statsmodels `multipletests(method="holm")`; NaNs stay NaN.

    Written out because statsmodels runs a full `gc.collect()` on every Holm call, which costs a tenth of
    a second or more in a process holding a model, and reports adjust many families.
    """
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    if ok.size:
        order = np.argsort(p[ok], kind="stable")
        stepped = np.maximum.accumulate(p[ok][order] * np.arange(ok.size, 0, -1))
        out[ok[order]] = np.minimum(stepped, 1.0)
    return out


# A spread below this share of the values' own size is float noise (the SD of fifty 1.0s minus 0.0s is 2e-16, not 0).
SPREAD_RTOL = 1e-9


def no_spread(sd: float, scale: float) -> bool:
    """Whether an SD (or SE) is zero up to float noise, relative to `scale`, the largest magnitude among the
    values it is the spread of (at least 1e-300, so all-zero values have none)."""
    return not np.isfinite(sd) or sd <= SPREAD_RTOL * max(abs(scale), 1e-300)


def cohens_dz(diffs: Sequence[float] | np.ndarray) -> float:
    """Cohen's d_z: mean paired difference over the SD of the differences (NaN when the SD is 0 up to float noise)."""
    d = _finite_1d(diffs, "diffs")
    if d.size < 2:
        return float("nan")
    sd = d.std(ddof=1)
    return float("nan") if no_spread(sd, np.abs(d).max()) else float(d.mean() / sd)


def minimum_detectable_se_difference(se: float, df: float, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest true difference a two-sided t-test of `diff / se` on `df` degrees of freedom detects with `power`.

    The noncentral-t power equation (statsmodels `TTestPower` with nobs = df + 1, so its noncentrality
    d·√nobs is the difference in SE units) times `se`; `df` may be fractional (Satterthwaite). NaN when
    `se` is not a positive number or `df` < 1.
    """
    if not (np.isfinite(df) and df >= 1 and np.isfinite(se) and se > 0):
        return float("nan")
    nobs = df + 1
    dz = TTestPower().solve_power(effect_size=None, nobs=nobs, alpha=alpha, power=power, alternative="two-sided")
    return float(np.asarray(dz).item() * math.sqrt(nobs) * se)


def minimum_detectable_difference(sd_diff: float, n: int, *, alpha: float = 0.05, power: float = 0.8,
                                  scale: float = 1.0) -> float:
    """Smallest true mean difference a two-sided paired t-test on `n` pairs detects with `power`.

    `minimum_detectable_se_difference` at SE `sd_diff/√n` and n − 1 df. NaN when it is undefined: fewer than
    2 pairs, or no spread (every difference equal, up to float noise relative to `scale`, the largest
    |difference|: see `no_spread`), where the t-test itself is degenerate.
    """
    if n < 2 or no_spread(sd_diff, scale):
        return float("nan")
    return minimum_detectable_se_difference(sd_diff / math.sqrt(n), n - 1, alpha=alpha, power=power)


@dataclass(frozen=True)
class SeedItemTest:
    """The variance-components t-test of a seeds × items matrix of paired differences (`seed_item_test`)."""

    diff: float
    se: float  # total SE of the grand mean: items (or clusters) and seeds
    se_items: float  # the part more items shrink
    se_seeds: float  # the seed-to-seed part, which only more seeds shrink (0 when not estimated above the noise)
    df: float  # Satterthwaite
    p: float


def seed_item_test(diffs_by_seed: np.ndarray, *, clusters: Sequence | np.ndarray | None = None) -> SeedItemTest:
    """t-test of the mean of a seeds × items matrix of paired differences, counting seed-to-seed variance.

    Model: d_si = μ + seed_s + item_i + e_si, seeds and items crossed and random. The variance of the grand
    mean is σ_seed²/S + σ_item²/n + σ_e²/(Sn), estimated from the two-way ANOVA mean squares as
    (MS_item + MS_seed − MS_e)/(Sn): the item part MS_item/(Sn) is the variance of the item means over n
    (with `clusters`, the cluster-robust one, on G − 1 df, so items sharing a source count once), the seed
    part (MS_seed − MS_e)/(Sn) is σ_seed²/S, kept at 0 when the seeds differ no more than the item noise
    explains. The df is Satterthwaite's (1946) for the mean squares involved, so a seed variance estimated
    from few seeds weighs as little as it should: the t quantile grows. With 3 or more seeds the type-I
    rate stays near alpha with seed variance present (tests/e2e/test_seed_item_test.py); with 2 seeds the
    seed variance has 1 df and no test is exact: it runs somewhat above alpha when seeds differ a lot.

    Why this and not the alternatives: the item test on seed-averaged differences ignores σ_seed² (its
    type-I rate grows with it); a t-test on the S seed means is valid but has S − 1 df and throws away
    the items' information when the seed variance is small; MixedLM fits the same crossed model by REML
    but needs an iterative fit per comparison and its Wald test has no small-sample df. The hierarchical
    bootstrap's spread adds a seed and an item deviation, each carrying σ_e²/(Sn), so it counts that
    term twice: its CI stays as is (conservative), the test uses the unbiased sum.
    """
    d = np.asarray(diffs_by_seed, dtype=float)
    if d.ndim != 2 or d.shape[0] < 2 or d.shape[1] < 2:
        raise ValueError(f"a seeds × items test needs at least 2 seeds and 2 items, got shape {d.shape}")
    if not np.all(np.isfinite(d)):
        raise ValueError(f"diffs_by_seed has {int(np.sum(~np.isfinite(d)))} NaN/inf values")
    n_seeds, n_items = d.shape
    grand = float(d.mean())
    item_means, seed_means = d.mean(axis=0), d.mean(axis=1)
    cells = n_seeds * n_items
    if clusters is not None and _cluster_codes(clusters, n_items) is not None:
        codes = _cluster_codes(clusters, n_items)
        v_items, df_items = cluster_robust_se(item_means, clusters) ** 2, float(codes.max())
    else:
        v_items, df_items = float(item_means.var(ddof=1)) / n_items, float(n_items - 1)
    ms_seed = n_items * float(seed_means.var(ddof=1))
    resid = d - item_means[None, :] - seed_means[:, None] + grand
    df_e = (n_seeds - 1) * (n_items - 1)
    ms_e = float(np.sum(resid ** 2)) / df_e
    v_seeds = max(0.0, (ms_seed - ms_e) / cells)
    variance = v_items + v_seeds
    # The seed and residual terms stay in the df when the seed part is kept at 0: it is 0 by an estimate
    # from S - 1 df, and dropping them would give the item df back (type-I 0.07-0.12 with 2-3 seeds, simulated).
    denominator = v_items ** 2 / df_items + (ms_seed / cells) ** 2 / (n_seeds - 1) + (ms_e / cells) ** 2 / df_e
    df = variance ** 2 / denominator if denominator > 0 else df_items
    se = math.sqrt(variance)
    if no_spread(se, float(np.abs(d).max())):
        p = 1.0 if no_spread(abs(grand), float(np.abs(d).max()) or 1.0) else 0.0
        return SeedItemTest(grand, 0.0, 0.0, 0.0, df, p)
    p = float(2 * scipy.stats.t.sf(abs(grand) / se, df))
    return SeedItemTest(grand, se, math.sqrt(v_items), math.sqrt(v_seeds), df, p)


def cluster_robust_se(diffs: Sequence[float] | np.ndarray, clusters: Sequence | np.ndarray) -> float:
    """Cluster-robust SE of the mean difference: OLS of the differences on a constant, clustered by source.

    Identical to statsmodels `OLS(...).fit(cov_type="cluster")`, with its small-sample correction.
    NaN with fewer than two clusters, where no such SE exists.
    """
    d = _finite_1d(diffs, "diffs")
    codes = _cluster_codes(clusters, d.size)
    if codes is None or codes.max(initial=0) < 1:
        return float("nan")
    fit = OLS(d, np.ones((d.size, 1))).fit(cov_type="cluster", cov_kwds={"groups": codes})
    return float(fit.bse[0])
