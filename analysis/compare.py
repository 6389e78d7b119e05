"""Paired comparisons of two arms on the same held-out items: difference, CI, test, Holm, verdict.

One comparison pairs every item's score under arm A with the same item's score under arm B, seed by
seed, and reports `A - B`. Pairing is refused, not approximated, when the arms did not answer the
same items: an unpaired comparison dressed up as a paired one would overstate the evidence.

Which statistics (all from `harness.stats.paired`):

- CI of the mean difference: a paired bootstrap over items (whole clusters when items share a
  source); with two or more seeds, the hierarchical bootstrap over seeds × items, so seed-to-seed
  variation is part of the uncertainty.
- Test of record, `level="item"` (the default): with one seed, McNemar's exact test for binary scores,
  else the Wilcoxon signed-rank test; when items share sources, the sign-flip permutation test flipping
  whole clusters (the other two would count correlated items as independent evidence). With two or
  more seeds, the seeds × items variance-components t-test (`paired.seed_item_test`), whose SE counts
  the seeds' variance beside the items' and whose df is Satterthwaite's; the item-only tests are kept
  beside it for reference. `level="seed"`: a t-test on per-seed mean differences (S − 1 df).
- Holm–Bonferroni across one family (`adjust`; the report declares its families in `analysis.families`),
  leaving out of m the rows whose arms answered identically (Tarone 1990); Cohen's d_z; the MDE of the
  test of record (its SE and df) at 80% power, not given with fewer than `MIN_SEEDS_FOR_POWER` seeds
  or without variance (identical answers, one discordant item: `degeneracy`).
- Verdict (the test's): "better"/"worse" only when the adjusted p is below alpha and the CI excludes 0,
  else "not significant". Which sign is better is the metric's declared direction
  (`harness.evaluation.metrics.score_spec`); a descriptive score (a length) is only "higher" or "lower".
- Outcome (the decision): regressed / equivalent within ±tolerance / improved / inconclusive with the
  items that would decide (`harness.stats.equivalence.decide`), against one tolerance for every
  comparison, a share of the metric's declared range (`tolerance_for`). CIs stay within that range
  (a paired difference of [0, 1] scores within [−1, 1]).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal, Mapping, Sequence

import numpy as np
import pandas as pd

from analysis.errors import (AnalysisError, MissingSeedsError, NaNScoreError, UnknownArmError,
                             UnpairedItemsError)
from analysis.load import SCORE_PREFIX, Study
from harness.evaluation.metrics import score_spec
from harness.stats import equivalence, paired

Level = Literal["item", "seed"]
BETTER, WORSE, NOT_SIGNIFICANT = "better", "worse", "not significant"
HIGHER, LOWER = "higher", "lower"  # the verdicts of a descriptive score: a difference, not an improvement
# The equivalence margin, as a share of a metric's declared range: ±0.02 for a score in [0, 1].
DEFAULT_TOLERANCE = 0.02
# Seeds a seed-aware MDE and items-needed figure need: with 2 the seed variance has 1 df.
MIN_SEEDS_FOR_POWER = 3
IDENTICAL, ONE_DISCORDANT, CONSTANT = ("no variance: identical answers", "one discordant item",
                                       "no variance: every item differs by the same amount")
DEGENERATE_NOTES = {
    IDENTICAL: "no variance: identical answers (both arms score the same on every item and seed): nothing to "
               "test, no MDE",
    ONE_DISCORDANT: "one discordant item: every other item scores the same under both arms, so the Δ {diff} "
                    "is one item's; no MDE",
    CONSTANT: "no variance: every item differs by the same amount ({diff}): the spread a test and an MDE need "
              "is absent",
}
_SHOW = 5  # item ids quoted in an error message


@dataclass(frozen=True)
class Comparison:
    """One A-vs-B comparison on one metric; `diff` is mean(A) - mean(B)."""

    a: str
    b: str
    metric: str
    n: int  # paired held-out items
    n_seeds: int
    mean_a: float
    mean_b: float
    diff: float
    ci_low: float
    ci_high: float
    ci_method: str
    test: str  # the test whose p is `p`, adjusted into `p_adjusted` and behind the verdict
    p: float
    p_permutation: float  # sign-flip permutation test (whole clusters flip together when items share sources)
    item_test: str  # McNemar exact or Wilcoxon signed-rank, items taken as independent
    p_item_test: float
    p_adjusted: float  # Holm across the comparisons computed together
    effect_size: float
    effect_size_kind: str
    mde: float  # minimum detectable |diff| at 80% power, two-sided alpha
    cluster_se: float  # cluster-robust SE of the mean difference; NaN unless items share sources
    n_clusters: int
    level: str
    verdict: str = ""  # the test's: better/worse (higher/lower) or not significant
    note: str = ""
    seed_diffs: tuple[float, ...] = ()  # each seed's own Δ, beside the pooled `diff`
    se: float = math.nan  # SE of the mean difference under the test of record (seeds counted when several)
    se_seeds: float = 0.0  # its seed-to-seed part, which more items do not shrink
    df: float = math.nan  # the test's degrees of freedom
    degenerate: str = ""  # IDENTICAL, ONE_DISCORDANT or CONSTANT when there is no variance to test
    context: str = ""  # what the caller says about the pair (seeds used), kept in `note`
    counted: bool = True  # counts towards m in its Holm family (identical answers do not: Tarone 1990)
    tolerance: float = math.nan  # the equivalence margin, in the metric's units (NaN: no equivalence claim)
    outcome: str = ""  # regressed / equivalent / improved / inconclusive (higher / lower for a descriptive score)
    items_needed: int | None = None  # paired units for a CI inside ±tolerance at this variance

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Comparison:
        """A comparison as `to_dict` wrote it (a report.json row): other keys ignored, the fields an older report
        predates left at their defaults, JSON's null read back as NaN. A missing required field is a `TypeError`."""
        known = {f.name: f.type for f in fields(cls)}
        values = {k: (math.nan if v is None and known[k] == "float" else v) for k, v in data.items() if k in known}
        if "seed_diffs" in values:
            values["seed_diffs"] = tuple(values["seed_diffs"])
        return cls(**values)


@dataclass(frozen=True)
class PairedScores:
    """Two arms' scores on the same items, aligned: `a` and `b` are seeds × items."""

    a_label: str
    b_label: str
    metric: str
    a: np.ndarray
    b: np.ndarray
    seeds: tuple[int, ...]
    item_ids: tuple[str, ...]
    clusters: np.ndarray | None  # one label per item when some items share a source, else None
    # The range each cell of `a - b` can take (from the metric's declared range); ±inf where unbounded.
    bounds: tuple[float, float] = (-math.inf, math.inf)

    @property
    def item_diffs(self) -> np.ndarray:
        """Each item's difference, averaged over seeds."""
        return (self.a - self.b).mean(axis=0)

    @property
    def seed_diffs(self) -> np.ndarray:
        """Each seed's mean difference over items."""
        return (self.a - self.b).mean(axis=1)


def _examples(ids: Sequence[Any]) -> str:
    ids = sorted(map(str, ids))
    more = f" and {len(ids) - _SHOW} more" if len(ids) > _SHOW else ""
    return ", ".join(ids[:_SHOW]) + more


def _metric_column(study: Study, metric: str) -> str:
    column = SCORE_PREFIX + metric
    if column not in study.items.columns:
        raise UnknownArmError(f"no per-item metric '{metric}' in study '{study.name}' "
                              f"(known: {', '.join(study.score_metrics) or 'none'})", where=study.path)
    return column


def _refuse_nan(rows: pd.DataFrame, column: str, label: str, metric: str) -> None:
    bad = rows[rows[column].isna()]
    if not bad.empty:
        seeds = sorted({int(s) for s in bad["seed"]})
        raise NaNScoreError(
            f"arm '{label}' has {len(bad)} NaN/missing '{metric}' scores (seeds {seeds}; items "
            f"{_examples(bad['item_id'].unique())}): no test may silently drop or impute items; fix the "
            "scorer or re-evaluate those items")


def _items_by_seed(rows: pd.DataFrame) -> dict[int, set[str]]:
    return {int(s): set(g["item_id"]) for s, g in rows.groupby("seed")}


def _shared_clusters(rows: pd.DataFrame, item_ids: Sequence[str]) -> np.ndarray | None:
    """Cluster label per item, when at least two items share one; an item without a cluster is its own."""
    if "cluster" not in rows.columns:
        return None
    per_item = rows.drop_duplicates("item_id").set_index("item_id")["cluster"]
    labels = np.array([f"cluster:{per_item[i]}" if pd.notna(per_item[i]) else f"item:{i}" for i in item_ids],
                      dtype=object)
    return labels if len(set(labels)) < len(labels) else None


def paired_scores(study: Study, a: str, b: str, metric: str, *, seeds: Sequence[int] | None = None) -> PairedScores:
    """Align the per-item scores of arms `a` and `b` by (seed, item_id), refusing anything unpaired."""
    column = _metric_column(study, metric)
    rows_a, rows_b = study.rows(a), study.rows(b)
    if a == b:
        raise AnalysisError(f"comparing '{a}' with itself")

    hashes_a, hashes_b = set(rows_a["split_hash"].dropna()), set(rows_b["split_hash"].dropna())
    if hashes_a and hashes_b and hashes_a != hashes_b:
        raise UnpairedItemsError(
            f"'{a}' and '{b}' were evaluated on different held-out splits (split hash {sorted(hashes_a)} vs "
            f"{sorted(hashes_b)}): pairing their items would be a lie; compare arms of the same frozen split")

    seeds_a, seeds_b = set(study.seeds(a)), set(study.seeds(b))
    if seeds is not None:
        wanted = {int(s) for s in seeds}
        missing = {label: sorted(wanted - have) for label, have in ((a, seeds_a), (b, seeds_b)) if wanted - have}
        if missing:
            raise UnpairedItemsError(f"seeds {sorted(wanted)} asked for, but missing: "
                                     + "; ".join(f"'{k}' lacks {v}" for k, v in missing.items()))
        seeds_a = seeds_b = wanted
        rows_a, rows_b = rows_a[rows_a["seed"].isin(wanted)], rows_b[rows_b["seed"].isin(wanted)]
    elif seeds_a != seeds_b:
        common = sorted(seeds_a & seeds_b)
        raise UnpairedItemsError(
            f"'{a}' has seeds {sorted(seeds_a)} but '{b}' has {sorted(seeds_b)}: pair them on common seeds "
            f"(seeds={common}) or run the missing trials")

    items_a, items_b = _items_by_seed(rows_a), _items_by_seed(rows_b)
    for s in sorted(seeds_a):
        only_a, only_b = items_a[s] - items_b[s], items_b[s] - items_a[s]
        if only_a or only_b:
            raise UnpairedItemsError(
                f"'{a}' and '{b}' were evaluated on different held-out items (seed {s}: {len(only_a)} only in "
                f"'{a}' [{_examples(only_a)}], {len(only_b)} only in '{b}' [{_examples(only_b)}]): pairing them "
                "would be a lie; evaluate both arms on the same frozen split (and the same eval.limit)")
    item_sets = {frozenset(v) for v in items_a.values()}
    if len(item_sets) > 1:
        raise UnpairedItemsError(f"the seeds of '{a}' were evaluated on different item sets; a seeds × items "
                                 "analysis needs every seed to answer the same items")
    for label, rows in ((a, rows_a), (b, rows_b)):
        dup = rows[rows.duplicated(["seed", "item_id"], keep=False)]
        if not dup.empty:
            raise AnalysisError(f"arm '{label}' has several rows for the same seed and item "
                                f"({_examples(dup['item_id'].unique())}); its trials are not told apart by params")
        _refuse_nan(rows, column, label, metric)

    seed_list = sorted(seeds_a)
    item_ids = sorted(next(iter(item_sets)))
    matrix_a = rows_a.pivot(index="seed", columns="item_id", values=column).loc[seed_list, item_ids]
    matrix_b = rows_b.pivot(index="seed", columns="item_id", values=column).loc[seed_list, item_ids]
    return PairedScores(a, b, metric, matrix_a.to_numpy(float), matrix_b.to_numpy(float), tuple(seed_list),
                        tuple(item_ids), _shared_clusters(rows_a, item_ids), score_spec(metric).range_of((1.0, -1.0)))


def degeneracy(cells: np.ndarray) -> str:
    """Why a seeds × items matrix of differences has no variance to test, or "" when it has some.

    Zero up to float noise relative to the cells' own size (`paired.no_spread`), never an exact `== 0`.
    """
    d = np.asarray(cells, dtype=float)
    scale = float(np.abs(d).max()) if d.size else 0.0
    discordant = ~np.isclose(d, 0.0, rtol=0.0, atol=paired.SPREAD_RTOL * max(scale, 1e-300))
    items = int(discordant.any(axis=0).sum())
    if items == 0:
        return IDENTICAL
    if items == 1 and d.shape[1] > 1:
        return ONE_DISCORDANT
    if paired.no_spread(float(np.ptp(d)), scale):
        return CONSTANT
    return ""


def pair_statistics(scores: PairedScores, *, level: Level = "item", confidence: float = 0.95,
                    n_resamples: int = paired.DEFAULT_RESAMPLES, seed: int = 0, alpha: float = 0.05) -> Comparison:
    """All statistics of one aligned pair, before multiplicity adjustment (`p_adjusted` = `p`) and the verdict.

    The test behind `p`:

    - `level="seed"`: the t-test on per-seed mean differences (S − 1 df);
    - one seed: the item test (McNemar exact for binary scores, else Wilcoxon signed-rank) — unless items
      share sources, where it would count correlated items as independent evidence, so the permutation
      test that flips whole clusters is used and the item test is kept for reference;
    - two or more seeds: the seeds × items variance-components t-test (`paired.seed_item_test`): its SE
      counts seed-to-seed variance beside the items' (clusters' when items share sources), with
      Satterthwaite df. The item-only tests ignore the seeds' variance, so they are kept for reference only.

    The MDE is that test's own (its SE and df). It needs the seed variance estimated: with fewer than
    `MIN_SEEDS_FOR_POWER` seeds it is not given (2 seeds: the seed variance has 1 df), nor when the
    differences have no variance at all (`degeneracy`).
    """
    n_seeds, n_items = scores.a.shape
    if level not in ("item", "seed"):
        raise AnalysisError(f"level must be 'item' or 'seed', got '{level}'")
    if level == "seed" and n_seeds < 2:
        raise MissingSeedsError(
            f"a seed-level test needs at least 2 seeds per arm; '{scores.a_label}' and '{scores.b_label}' "
            f"have only seed {list(scores.seeds)}. Add seeds to the study (e.g. search.seeds: [0, 1, 2]) and "
            "run it again, or use the item-level test")

    cells = scores.a - scores.b
    clusters = scores.clusters
    units_name = "clusters" if clusters is not None else "items"
    if n_seeds >= 2:
        ci = paired.hierarchical_bootstrap_ci(cells, clusters=clusters, confidence=confidence,
                                              n_resamples=n_resamples, seed=seed, bounds=scores.bounds)
        ci_method = f"hierarchical bootstrap ({n_seeds} seeds × {units_name})"
    else:
        ci = paired.paired_bootstrap_ci(scores.item_diffs, clusters=clusters, confidence=confidence,
                                        n_resamples=n_resamples, seed=seed, bounds=scores.bounds)
        ci_method = f"paired bootstrap over {units_name}"

    item_diffs = scores.item_diffs
    scale = float(np.abs(cells).max())
    if n_seeds == 1 and paired.is_binary(scores.a) and paired.is_binary(scores.b):
        item_test, p_item = "McNemar exact", paired.mcnemar_exact(scores.a[0], scores.b[0])
    else:
        item_test = "Wilcoxon signed-rank" + (f" on per-item means over {n_seeds} seeds" if n_seeds > 1 else "")
        p_item = paired.wilcoxon_signed_rank(item_diffs)
    n_clusters = len(set(clusters)) if clusters is not None else n_items
    cluster_se = paired.cluster_robust_se(item_diffs, clusters) if clusters is not None else float("nan")
    degenerate = degeneracy(cells)
    se_seeds = 0.0

    if level == "seed":
        units = scores.seed_diffs
        p_perm = paired.paired_permutation_test(units, n_resamples=n_resamples, seed=seed)
        test, p = f"t-test on per-seed means (df={n_seeds - 1})", paired.seed_level_t_test(units)
        se, df = float(units.std(ddof=1)) / np.sqrt(n_seeds), float(n_seeds - 1)
    else:
        units = item_diffs
        p_perm = paired.paired_permutation_test(units, clusters=clusters, n_resamples=n_resamples, seed=seed)
        if n_seeds >= 2 and n_items >= 2:
            vc = paired.seed_item_test(cells, clusters=clusters)
            test = f"seeds × items t ({n_seeds} seeds × {n_clusters} {units_name}, Satterthwaite df={vc.df:.1f})"
            p, se, se_seeds, df = vc.p, vc.se, vc.se_seeds, vc.df
        elif clusters is None:
            test, p = item_test, p_item
            se = float(units.std(ddof=1)) / np.sqrt(n_items) if n_items > 1 else float("nan")
            df = float(n_items - 1)
        else:
            test, p = f"sign-flip permutation by cluster ({n_clusters} clusters)", p_perm
            # Clusters are the independent units: power follows their number and the cluster-robust SE.
            se, df = cluster_se, float(n_clusters - 1)
    enough_seeds = level == "seed" or n_seeds == 1 or n_seeds >= MIN_SEEDS_FOR_POWER
    mde = (paired.minimum_detectable_se_difference(se, df, alpha=alpha)
           if enough_seeds and not degenerate and not paired.no_spread(se, scale) else float("nan"))
    return Comparison(
        a=scores.a_label, b=scores.b_label, metric=scores.metric, n=n_items, n_seeds=n_seeds,
        mean_a=float(scores.a.mean()), mean_b=float(scores.b.mean()), diff=float(cells.mean()),
        ci_low=ci[0], ci_high=ci[1], ci_method=ci_method, test=test, p=p, p_permutation=p_perm,
        item_test=item_test, p_item_test=p_item, p_adjusted=p,
        effect_size=paired.cohens_dz(units), effect_size_kind=f"Cohen's d_z (per-{level} differences)",
        mde=mde, cluster_se=cluster_se, n_clusters=n_clusters, level=level,
        seed_diffs=tuple(float(x) for x in scores.seed_diffs), se=float(se), se_seeds=float(se_seeds), df=float(df),
        degenerate=degenerate)


def _fmt(x: float) -> str:
    return f"{x:+.3f}" if np.isfinite(x) else "n/a"


def tolerance_for(metric: str, tolerance: float) -> float:
    """The report's `tolerance` (a share of a metric's declared range) in `metric`'s own units; NaN for a metric
    whose range is unbounded, where a share of it has no size: such a metric gets no equivalence claim."""
    spec = score_spec(metric)
    return tolerance * (spec.high - spec.low) if spec.bounded else float("nan")


def _outcome(c: Comparison, significant: bool, alpha: float, tolerance: float, confidence: float
             ) -> tuple[str, float, int | None, str]:
    """(outcome, tolerance in the metric's units, items needed, reason), by `harness.stats.equivalence.decide`
    on the difference oriented by the metric's declared direction."""
    spec = score_spec(c.metric)
    tol = tolerance_for(c.metric, tolerance)
    sign = -1.0 if spec.direction == "lower" else 1.0
    diff, lo, hi = sign * c.diff, *sorted((sign * c.ci_low, sign * c.ci_high))
    up, down = (HIGHER, LOWER) if spec.descriptive else (equivalence.IMPROVED, equivalence.REGRESSED)
    if not np.isfinite(tol):
        if significant:
            return (up if diff > 0 else down), tol, None, "a significant difference"
        return (equivalence.INCONCLUSIVE, tol, None,
                f"no equivalence claim: {c.metric} declares no finite range, so a tolerance (a share of the "
                "range) has no size here")
    seed_aware = c.level == "item" and c.n_seeds >= 2
    if c.level == "seed" or (seed_aware and c.n_seeds < MIN_SEEDS_FOR_POWER) or not np.isfinite(c.se):
        se_items, units = float("nan"), 0
    else:
        se_items, units = math.sqrt(max(c.se ** 2 - c.se_seeds ** 2, 0.0)), c.n_clusters
    e = equivalence.decide(diff, lo, hi, c.p_adjusted if significant else max(c.p_adjusted, alpha), tolerance=tol,
                           alpha=alpha, se=se_items, n=units, confidence=confidence, fixed_se=c.se_seeds)
    outcome = {equivalence.IMPROVED: up, equivalence.REGRESSED: down}.get(e.outcome, e.outcome)
    return outcome, tol, e.items_needed, e.reason


def judge(c: Comparison, *, alpha: float = 0.05, tolerance: float = DEFAULT_TOLERANCE,
          confidence: float = 0.95) -> Comparison:
    """Fill `verdict`, `outcome` (with `tolerance` and `items_needed`) and `note`.

    `verdict` is the test's: better/worse needs the adjusted p below alpha *and* a CI excluding 0 (which
    sign is better is `c.metric`'s declared direction; a descriptive metric's difference is "higher" or
    "lower"), else "not significant". `outcome` is the decision a reader acts on, against one tolerance
    (`tolerance`, a share of the metric's declared range, `tolerance_for`): regressed, equivalent within
    ±tolerance, improved, or inconclusive with how many items would decide
    (`harness.stats.equivalence.decide`). A "not significant" is never read as "no difference".
    """
    notes = [c.context] if c.context else []
    if c.degenerate:
        notes.append(DEGENERATE_NOTES[c.degenerate].format(diff=_fmt(c.diff)))
    if c.level == "item" and 2 <= c.n_seeds < MIN_SEEDS_FOR_POWER:
        notes.append(f"{c.n_seeds} seeds: the seed-to-seed variance has {c.n_seeds - 1} df, too few to estimate "
                     f"it: no MDE and no items-needed figure (give {MIN_SEEDS_FOR_POWER} or more seeds)")
    if "permutation" in c.test:
        units = c.n_clusters if c.level == "item" else c.n_seeds
        if 2 / 2 ** units >= alpha:  # the smallest p an exact sign-flip test over `units` can give
            notes.append(f"with {units} {'clusters' if c.level == 'item' else 'seeds'} the permutation test "
                         f"cannot reach p < {alpha} (smallest possible p = {2 / 2 ** units:.3g})")
    significant = bool(np.isfinite(c.p_adjusted) and c.p_adjusted < alpha)
    if significant and c.ci_low <= 0 <= c.ci_high:
        sources = [s for s, present in (("seed-to-seed variation", c.n_seeds >= 2),
                                        ("items sharing sources", c.n_clusters < c.n)) if present]
        notes.append(f"{c.test} is significant (adjusted p={c.p_adjusted:.3g}) but the CI "
                     f"[{_fmt(c.ci_low)}, {_fmt(c.ci_high)}] includes 0"
                     + (f": {' and '.join(sources)} could explain the difference" if sources else ""))
        significant = False
    if significant:
        improves = score_spec(c.metric).improves(c.diff)
        verdict = (HIGHER if c.diff > 0 else LOWER) if improves is None else BETTER if improves else WORSE
    else:
        verdict = NOT_SIGNIFICANT
    outcome, tol, needed, reason = _outcome(c, significant, alpha, tolerance, confidence)
    notes.append(f"{outcome}" + (f" (±{tol:.3g})" if np.isfinite(tol) else "") + f": {reason}")
    if not c.counted:
        notes.append("not counted in its Holm family: identical answers cannot reach significance (Tarone 1990)")
    if c.n_clusters < c.n and np.isfinite(c.cluster_se):
        notes.append(f"{c.n} items from {c.n_clusters} sources (cluster-robust SE {c.cluster_se:.3f}): tested "
                     "and resampled by cluster")
    return replace(c, verdict=verdict, outcome=outcome, tolerance=tol, items_needed=needed, note="; ".join(notes))


def adjust(comparisons: Sequence[Comparison], *, alpha: float = 0.05, tolerance: float = DEFAULT_TOLERANCE,
           confidence: float = 0.95) -> list[Comparison]:
    """Holm–Bonferroni across `comparisons` (one family), then verdicts and outcomes.

    A comparison whose arms answered identically (`degenerate == IDENTICAL`) cannot reach significance
    whatever m is, so it is left out of m (Tarone 1990) and keeps its raw p; the others are adjusted together.
    """
    counted = [c.degenerate != IDENTICAL for c in comparisons]
    adjusted = iter(paired.holm([c.p for c, k in zip(comparisons, counted) if k]))
    return [judge(replace(c, p_adjusted=float(next(adjusted)) if k else c.p, counted=k), alpha=alpha,
                  tolerance=tolerance, confidence=confidence) for c, k in zip(comparisons, counted)]


def compare(study: Study, pairs: Sequence[tuple[str, str]], metric: str, *, level: Level = "item",
            seeds: Sequence[int] | None = None, alpha: float = 0.05, confidence: float = 0.95,
            n_resamples: int = paired.DEFAULT_RESAMPLES, seed: int = 0,
            tolerance: float = DEFAULT_TOLERANCE) -> list[Comparison]:
    """Compare each `(a, b)` arm-label pair on `metric` (diff = a - b), Holm-adjusted across `pairs`.

    Raises `UnpairedItemsError` when two arms answered different items (or splits, or seeds),
    `MissingSeedsError` for `level="seed"` with one seed, `NaNScoreError` for NaN scores.
    """
    results = [pair_statistics(paired_scores(study, a, b, metric, seeds=seeds), level=level, confidence=confidence,
                         n_resamples=n_resamples, seed=seed, alpha=alpha) for a, b in pairs]
    return adjust(results, alpha=alpha, tolerance=tolerance, confidence=confidence)


@dataclass(frozen=True)
class Quality:
    """One arm's mean score with its bootstrap CI."""

    label: str
    metric: str
    mean: float
    ci_low: float
    ci_high: float
    n: int
    n_seeds: int
    ci_method: str


def matrix_quality(label: str, metric: str, matrix: np.ndarray, clusters: np.ndarray | None = None, *,
                   confidence: float = 0.95, n_resamples: int = paired.DEFAULT_RESAMPLES, seed: int = 0) -> Quality:
    """Mean of a seeds × items score matrix (one arm's, or an average of several) with its bootstrap CI:
    hierarchical over seeds and items with two or more seeds, else over items (whole clusters if shared);
    within `metric`'s declared range, which holds every average of its scores."""
    n_seeds, n_items = matrix.shape
    bounds = score_spec(metric).range_of((1.0,))
    if n_seeds >= 2:
        lo, hi = paired.hierarchical_bootstrap_ci(matrix, clusters=clusters, confidence=confidence,
                                                  n_resamples=n_resamples, seed=seed, bounds=bounds)
        method = "hierarchical bootstrap"
    else:
        lo, hi = paired.paired_bootstrap_ci(matrix[0], clusters=clusters, confidence=confidence,
                                            n_resamples=n_resamples, seed=seed, bounds=bounds)
        method = "bootstrap over items"
    return Quality(label, metric, float(matrix.mean()), lo, hi, n_items, n_seeds, method)


def quality(study: Study, label: str, metric: str, *, confidence: float = 0.95,
            n_resamples: int = paired.DEFAULT_RESAMPLES, seed: int = 0) -> Quality:
    """Mean of `metric` for one arm, with a CI from the same bootstrap the comparisons use."""
    column = _metric_column(study, metric)
    rows = study.rows(label)
    _refuse_nan(rows, column, label, metric)
    by_seed = _items_by_seed(rows)
    item_ids = sorted(next(iter(by_seed.values())))
    if len({frozenset(v) for v in by_seed.values()}) == 1:
        matrix = rows.pivot(index="seed", columns="item_id", values=column).loc[sorted(by_seed), item_ids]
        return matrix_quality(label, metric, matrix.to_numpy(float), _shared_clusters(rows, item_ids),
                              confidence=confidence, n_resamples=n_resamples, seed=seed)
    # Seeds answered different items: no seeds × items grid, so each item's mean over the seeds that have it.
    per_item = rows.groupby("item_id")[column].mean()
    clusters = _shared_clusters(rows, list(per_item.index))
    lo, hi = paired.paired_bootstrap_ci(per_item.to_numpy(float), clusters=clusters, confidence=confidence,
                                        n_resamples=n_resamples, seed=seed, bounds=score_spec(metric).range_of((1.0,)))
    return Quality(label, metric, float(rows[column].mean()), lo, hi, len(per_item), len(by_seed),
                   "bootstrap over items")


def comparisons_frame(comparisons: Sequence[Comparison]) -> pd.DataFrame:
    """Comparisons as a DataFrame, one row each (the machine-readable table)."""
    return pd.DataFrame([c.to_dict() for c in comparisons])

