"""Contrasts between the levels of each factor a study varies: the question an ablation is run to answer.

A *factor* is a grid key with two or more levels (`lora.r: [2, 8, 32]`); a *cell* is one level of every
factor, and a trained arm (e.g. `tuned`) has one arm label per cell. Every contrast is a weighted sum of
cells taken item by item and seed by seed on the same frozen items, and is then judged by the statistics
every other comparison gets (`analysis.compare.pair_statistics`: bootstrap CI, the item or seed test, the
permutation p, d_z, the MDE), Holm-adjusted within its family:

- main contrast: each level against the reference level (`report.reference` in the spec, default the
  grid's first level). When other factors vary, it is averaged over the combinations of their levels
  that have a complete trial at both levels: the marginal effect.
- simple effect: the same contrast at each level of a second factor (averaged over any others).
- interaction: the simple effect at a level of the second factor minus the one at its reference level,
  a difference of differences; zero when the two factors act independently.
- trend, for a numeric factor with three or more levels: each item's least-squares slope of the score
  against log2(level) (all levels positive) or the level itself, averaged over the other factors.

Seeds pair across cells: the same `train.seed` at two levels shares its data order and initialisation.
A cell without a complete trial (a failed or not-run QLoRA arm) leaves the contrasts that need it
refused, with the trials' own reasons, never silently dropped.
"""

from __future__ import annotations

import itertools
import math
import numbers
import re
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from analysis.compare import (Comparison, Level, PairedScores, Quality, adjust, matrix_quality, pair_statistics,
                              paired_scores, quality)
from analysis.errors import AnalysisError, UnpairedItemsError
from analysis.load import Study
from harness.evaluation.metrics import score_spec
from harness.stats import paired
from harness.stats.factors import check_reference, distinct_levels, format_value, same_level

MAIN, SIMPLE, INTERACTION, TREND = "main", "simple", "interaction", "trend"


@dataclass(frozen=True)
class Factor:
    """A grid key with two or more levels, in the grid's order, and the level the others are contrasted with."""

    name: str
    levels: tuple[Any, ...]
    reference: Any

    @property
    def numeric(self) -> bool:
        """Ordered and numeric (rank, learning rate, β, number of examples): it gets a trend test."""
        return all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in self.levels)

    @property
    def log_scale(self) -> bool:
        return self.numeric and all(v > 0 for v in self.levels)

    @property
    def reference_index(self) -> int:
        return self.index(self.reference)

    def index(self, value: Any) -> int | None:
        return next((i for i, v in enumerate(self.levels) if same_level(v, value)), None)

    def tag(self, value: Any) -> str:
        return f"{self.name}={format_value(value)}"


def study_factors(study: Study, reference: Mapping[str, Any] | None = None) -> list[Factor]:
    """The study's factors, from the grid its trials recorded (or, for trials that do not record one, the
    params that vary across trials, levels in trial order); `reference` is checked against them."""
    if study.grid is not None:
        grid = {k: distinct_levels(v) for k, v in study.grid.items()}
    else:  # trial numbers follow grid order, so each param's first appearance is its grid order
        trials = study.trials.sort_values("number")
        grid = {k: distinct_levels(v for v in trials[k] if v is not None and not (isinstance(v, float) and math.isnan(v)))
                for k in study.varying_params if k in trials}
    reference = dict(reference or {})
    check_reference(reference, grid, where=study.path)
    return [Factor(k, tuple(levels), reference.get(k, levels[0])) for k, levels in grid.items() if len(levels) >= 2]


# ---------------------------------------------------------------- results


@dataclass(frozen=True)
class Contrast:
    """One contrast of one trained arm, with the statistics of its `comparison` (`diff` = the contrast)."""

    kind: str  # main | simple | interaction | trend
    arm: str
    factor: str
    level: Any  # the level contrasted with `reference` (a trend: the levels it is fitted over)
    reference: Any
    comparison: Comparison
    by: str | None = None  # simple effect and interaction: the second factor
    by_level: Any = None  # ... the level of it the contrast is taken at
    by_reference: Any = None  # interaction: ... minus the contrast at this level
    averaged_over: tuple[str, ...] = ()  # factors the contrast is averaged over
    combinations: tuple[int, int] = (1, 1)  # (used, possible) combinations of their levels
    scale: str = ""  # trend: "log2" or "linear"
    trials_a: tuple[int, ...] = ()  # the trials behind the two sides (for memory and time)
    trials_b: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        # `level` and `reference` are named apart from the comparison's own `level` (item or seed test).
        return {"kind": self.kind, "arm": self.arm, "factor": self.factor, "factor_level": self.level,
                "reference_level": self.reference, "by": self.by, "by_level": self.by_level,
                "by_reference": self.by_reference, "averaged_over": list(self.averaged_over),
                "combinations_used": self.combinations[0], "combinations": self.combinations[1],
                "scale": self.scale or None, **self.comparison.to_dict()}


@dataclass(frozen=True)
class ContrastFamily:
    """Contrasts Holm-adjusted together (one table), and the ones that could not be computed, with why."""

    name: str  # file stem, e.g. contrasts_lora_r
    title: str
    kind: str
    factor: str
    by: str | None
    contrasts: list[Contrast]
    refused: list[tuple[str, str, str]]  # (a, b, reason)
    note: str = ""

    @property
    def comparisons(self) -> list[Comparison]:
        return [c.comparison for c in self.contrasts]


@dataclass(frozen=True)
class LevelMean:
    """An arm's mean at one level of a factor (and of a second one), averaged over the other factors."""

    arm: str
    factor: str
    level: Any
    quality: Quality
    by: str | None = None
    by_level: Any = None
    combinations: tuple[int, int] = (1, 1)


@dataclass
class Contrasts:
    """Every contrast of a study, by family, and the level means its figures draw."""

    factors: list[Factor]
    families: list[ContrastFamily] = field(default_factory=list)
    level_means: list[LevelMean] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def family(self, name: str) -> ContrastFamily:
        return next(f for f in self.families if f.name == name)


def slug(*names: str) -> str:
    """A file-name-safe stem: `lora.r` → `lora_r`."""
    return "_".join(re.sub(r"[^A-Za-z0-9]+", "_", n).strip("_") for n in names)


# ---------------------------------------------------------------- design and linear combinations


@dataclass(frozen=True)
class _Design:
    """One trained arm's complete cells: level indices (one per factor) → arm label."""

    arm: str
    factors: tuple[Factor, ...]
    cells: dict[tuple[int, ...], str]
    trials: dict[str, tuple[int, ...]]


def _design(study: Study, arm: str, factors: Sequence[Factor]) -> _Design:
    cells: dict[tuple[int, ...], str] = {}
    trials: dict[str, tuple[int, ...]] = {}
    for label in study.arm_labels:
        rows = study.rows(label)
        if rows["arm"].iloc[0] != arm:
            continue
        params = study.params_of(label)
        key = tuple(f.index(params.get(f.name)) for f in factors)
        if None in key:
            continue  # a label outside the grid (e.g. a param the grid does not name)
        if key in cells:
            raise AnalysisError(f"arm labels '{cells[key]}' and '{label}' are the same grid cell: the trials vary "
                                "a param that is not a grid factor, so levels cannot be contrasted")
        cells[key] = label
        trials[label] = tuple(sorted(int(t) for t in rows["trial"].unique()))
    return _Design(arm, tuple(factors), cells, trials)


Term = tuple[str, float, dict[int, int]]  # (side "a" or "b", weight, factor position → level index)


def _weights(design: _Design, terms: Sequence[Term], at: Mapping[int, int]
             ) -> tuple[dict[str, float], dict[str, float], tuple[int, int], tuple[str, ...]]:
    """Weights of the arm labels on each side, averaging the terms over every combination of the free
    factors (those neither fixed by a term nor by `at`) for which every term's cell is complete."""
    fixed = set(at) | {p for _, _, f in terms for p in f}
    free = [i for i in range(len(design.factors)) if i not in fixed]
    combos = list(itertools.product(*(range(len(design.factors[i].levels)) for i in free)))
    used = []
    for combo in combos:
        keys = []
        for _, _, fix in terms:
            key = dict(zip(free, combo)) | dict(at) | fix
            keys.append(design.cells.get(tuple(key[i] for i in range(len(design.factors)))))
        if None not in keys:
            used.append(keys)
    sides: dict[str, dict[str, float]] = {"a": {}, "b": {}}
    for keys in used:
        for (side, weight, _), label in zip(terms, keys):
            sides[side][label] = sides[side].get(label, 0.0) + weight / len(used)
    return sides["a"], sides["b"], (len(used), len(combos)), tuple(design.factors[i].name for i in free)


Align = Callable[..., PairedScores]


def linear_contrast(study: Study, metric: str, a: Mapping[str, float], b: Mapping[str, float], *,
                    a_label: str, b_label: str, align: Align = paired_scores) -> tuple[PairedScores, str]:
    """`Σ w·scores` of the arm labels in `a` and in `b`, aligned seed by seed and item by item, as the
    `PairedScores` every comparison is computed from (so `a - b` is the contrast).

    Every label is paired with one of them (the first in the study's label order) by `align`
    (`paired_scores`, or a memo of it), which refuses different items, splits or NaN scores; seeds are
    the ones every label has (named in the returned note when some were left out)."""
    order = {label: i for i, label in enumerate(study.arm_labels)}
    labels = sorted(dict.fromkeys([*a, *b]), key=lambda label: order.get(label, len(order)))
    if len(labels) < 2:
        raise AnalysisError(f"a contrast needs two or more arm labels, got {labels}")
    seed_sets = [set(study.seeds(label)) for label in labels]
    common = sorted(set.intersection(*seed_sets))
    if not common:
        raise UnpairedItemsError(f"the arm labels {labels} share no seed: nothing to pair")
    anchor, matrices = labels[0], {}
    item_ids: tuple[str, ...] = ()
    clusters = None
    for label in labels[1:]:
        scores = align(study, label, anchor, metric, seeds=common)
        if matrices and scores.item_ids != item_ids:
            raise UnpairedItemsError(f"'{label}' and '{labels[1]}' were evaluated on different held-out items")
        matrices[label], matrices[anchor] = scores.a, scores.b
        item_ids, clusters = scores.item_ids, scores.clusters
    zero = np.zeros_like(matrices[anchor])
    side = lambda weights: sum((w * matrices[label] for label, w in weights.items()), zero)  # noqa: E731
    dropped = set.union(*seed_sets) - set(common)
    note = f"on the seeds every cell has, {common} (without {sorted(dropped)})" if dropped else ""
    # The contrast's own range (a slope's weights are not a difference of two means): from the metric's.
    bounds = score_spec(metric).range_of(a.get(label, 0.0) - b.get(label, 0.0) for label in labels)
    return PairedScores(a_label, b_label, metric, side(a), side(b), tuple(common), item_ids, clusters, bounds), note


def _missing(study: Study, design: _Design, fixed: Mapping[int, int]) -> str:
    """Why no complete cell has these levels: the trials there and their status, or none at all."""
    tags = [design.factors[i].tag(design.factors[i].levels[v]) for i, v in sorted(fixed.items())]
    t = study.trials
    mask = np.ones(len(t), dtype=bool)
    for i, v in fixed.items():
        f = design.factors[i]
        mask &= t[f.name].map(lambda x, f=f, v=v: same_level(x, f.levels[v])).to_numpy(bool) if f.name in t else False
    there = t[mask & (t["status"] != "complete").to_numpy()]
    if there.empty:
        return f"no complete trial of '{design.arm}' at {', '.join(tags)} (none has run)"
    reasons: dict[str, int] = {}
    for row in there.itertuples():
        why = f"{row.status.replace('_', ' ')}" + (f": {row.reason}" if isinstance(row.reason, str) else "")
        reasons[why] = reasons.get(why, 0) + 1
    return (f"no complete trial of '{design.arm}' at {', '.join(tags)} ("
            + "; ".join(f"{n} trial{'s' if n > 1 else ''} {why}" for why, n in reasons.items()) + ")")


# ---------------------------------------------------------------- the contrasts


class _Builder:
    """Computes contrasts of one study and metric with one set of statistics options."""

    def __init__(self, study: Study, metric: str, *, level: Level, alpha: float, confidence: float,
                 n_resamples: int, seed: int) -> None:
        self.study, self.metric = study, metric
        self.stats = dict(level=level, confidence=confidence, n_resamples=n_resamples, seed=seed, alpha=alpha)
        self.boot = dict(confidence=confidence, n_resamples=n_resamples, seed=seed)
        self._aligned: dict[tuple, PairedScores] = {}

    def align(self, study: Study, a: str, b: str, metric: str, *, seeds: Sequence[int]) -> PairedScores:
        """`paired_scores`, once per pair and seeds: the same cells recur in many contrasts."""
        key = (a, b, tuple(seeds))
        if key not in self._aligned:
            self._aligned[key] = paired_scores(study, a, b, metric, seeds=seeds)
        return self._aligned[key]

    def contrast(self, design: _Design, terms: Sequence[Term], at: Mapping[int, int], *, a_label: str,
                 b_label: str, **fields: Any) -> Contrast | tuple[str, str, str]:
        """The contrast, or (a, b, why) when it cannot be computed."""
        a, b, combos, free = _weights(design, terms, at)
        if combos[0] == 0:
            for _, _, fix in terms:  # name the first cell that is missing everywhere
                if not any(all(k[i] == v for i, v in (dict(at) | fix).items()) for k in design.cells):
                    return a_label, b_label, _missing(self.study, design, dict(at) | fix)
            return a_label, b_label, ("no combination of " + " × ".join(free)
                                      + " has a complete trial in every cell this contrast needs")
        try:
            scores, note = linear_contrast(self.study, self.metric, a, b, a_label=a_label, b_label=b_label,
                                           align=self.align)
            c = pair_statistics(scores, **self.stats)
        except AnalysisError as e:
            return a_label, b_label, str(e)
        trials = lambda side: tuple(sorted({t for label, w in side.items() if w > 0  # noqa: E731
                                            for t in design.trials[label]}))
        return Contrast(comparison=replace(c, context=note), arm=design.arm, averaged_over=free, combinations=combos,
                        trials_a=trials(a), trials_b=trials(b), **fields)

    def level_mean(self, design: _Design, fix: dict[int, int], **fields: Any) -> LevelMean | None:
        a, _, combos, _ = _weights(design, [("a", 1.0, fix)], {})
        if not a:
            return None
        label = " ".join(design.factors[i].tag(design.factors[i].levels[v]) for i, v in fix.items())
        try:
            if len(a) == 1:
                q = quality(self.study, next(iter(a)), self.metric, **self.boot)
            else:
                scores, _ = linear_contrast(self.study, self.metric, a, {}, a_label=label, b_label="0",
                                            align=self.align)
                q = matrix_quality(f"{design.arm}[{label}]", self.metric, scores.a, scores.clusters, **self.boot)
        except AnalysisError:
            return None  # the same problem refuses the contrasts, which say why
        return LevelMean(arm=design.arm, quality=q, combinations=combos, **fields)


def _label(arm: str, *tags: str) -> str:
    return f"{arm}[{','.join(tags)}]"


def _family(name: str, title: str, kind: str, factor: str, by: str | None,
            results: Sequence[Contrast | tuple[str, str, str]], *, alpha: float, note: str = "") -> ContrastFamily:
    """Holm within the table, for a caller of `study_contrasts` alone; a report adjusts again by its declared
    families (`analysis.families.declare_families`)."""
    done = [r for r in results if isinstance(r, Contrast)]
    refused = [r for r in results if not isinstance(r, Contrast)]
    adjusted = adjust([c.comparison for c in done], alpha=alpha)
    return ContrastFamily(name, title, kind, factor, by, [replace(c, comparison=adj) for c, adj in zip(done, adjusted)],
                          refused, note)


def _averaging_note(factor: Factor, others: Sequence[Factor]) -> str:
    if not others:
        return ""
    names = " × ".join(f.name for f in others)
    combos = math.prod(len(f.levels) for f in others)
    return (f"Marginal effects: each contrast of {factor.name} is averaged over the {combos} combinations of "
            f"{names} (fewer where a combination lacks a complete trial at either level; the row says how many).")


def trend_weights(values: Sequence[float], log_scale: bool) -> np.ndarray:
    """Least-squares slope weights: `Σ w_j y_j` is the slope of y against x (log2 of the levels if asked)."""
    x = np.log2(np.asarray(values, float)) if log_scale else np.asarray(values, float)
    centred = x - x.mean()
    return centred / float(np.sum(centred ** 2))


def study_contrasts(study: Study, metric: str, *, reference: Mapping[str, Any] | None = None,
                    level: Level = "item", alpha: float = 0.05, confidence: float = 0.95,
                    n_resamples: int = paired.DEFAULT_RESAMPLES, seed: int = 0) -> Contrasts:
    """Every main contrast, trend, simple effect and interaction of the study's trained arms on `metric`.

    `reference` maps a factor to its reference level (default: each factor's first level); a key that is
    not a factor or a value that is not one of its levels is a `SpecError` naming `report.reference.<key>`.
    """
    factors = study_factors(study, reference if reference is not None else study.report_reference)
    out = Contrasts(factors)
    if not factors:
        return out
    b = _Builder(study, metric, level=level, alpha=alpha, confidence=confidence, n_resamples=n_resamples, seed=seed)
    designs = []
    for arm in dict.fromkeys(study.rows(label)["arm"].iloc[0] for label in study.arm_labels):
        if arm in study.untuned_arms:
            continue
        try:
            designs.append(_design(study, arm, factors))
        except AnalysisError as e:
            out.notes.append(f"no contrasts for '{arm}': {e}")
    ctx = _Effects(b, designs, factors, metric, alpha, out.level_means)
    for f in factors:
        out.families.append(ctx.main(f))
        if f.numeric and len(f.levels) >= 3:
            out.families.append(ctx.trend(f))
    for f, g in itertools.permutations(factors, 2):
        out.families.append(ctx.simple(f, g))
    for f, g in itertools.combinations(factors, 2):
        out.families.append(ctx.interaction(f, g))
    return out


@dataclass
class _Effects:
    """The four kinds of contrast family over the same designs: main effects, trends, simple effects and
    interactions (level means are collected into `level_means` on the way)."""

    b: "_Builder"
    designs: list
    factors: list
    metric: str
    alpha: float
    level_means: list

    def _pos(self, f) -> int:
        return next(i for i, g in enumerate(self.factors) if g is f)

    def _rest(self, *exclude) -> list:
        return [h for h in self.factors if all(h is not e for e in exclude)]

    def _mean(self, d, where: dict, **labels) -> None:
        mean = self.b.level_mean(d, where, **labels)
        if mean is not None:
            self.level_means.append(mean)

    def main(self, f):
        i, ref = self._pos(f), f.reference_index
        results = []
        for d in self.designs:
            for lv in range(len(f.levels)):
                if lv != ref:
                    results.append(self.b.contrast(
                        d, [("a", 1.0, {i: lv}), ("b", 1.0, {i: ref})], {},
                        a_label=_label(d.arm, f.tag(f.levels[lv])), b_label=_label(d.arm, f.tag(f.reference)),
                        kind=MAIN, factor=f.name, level=f.levels[lv], reference=f.reference))
            for lv in range(len(f.levels)):
                self._mean(d, {i: lv}, factor=f.name, level=f.levels[lv])
        return _family(f"contrasts_{slug(f.name)}", f"{f.name}: each level vs {f.tag(f.reference)}",
                       MAIN, f.name, None, results, alpha=self.alpha, note=_averaging_note(f, self._rest(f)))

    def trend(self, f):
        i = self._pos(f)
        scale = "log2" if f.log_scale else "linear"
        per = "per doubling of " + f.name if f.log_scale else "per unit of " + f.name
        results = []
        for d in self.designs:
            # Levels without any complete cell drop out of the slope; it needs three that remain.
            present = [lv for lv in range(len(f.levels)) if any(k[i] == lv for k in d.cells)]
            if len(present) < 3:
                results.append((_label(d.arm, f"{f.name} trend"), "0",
                                f"{len(present)} of {len(f.levels)} levels have a complete trial; a trend "
                                "needs three"))
                continue
            w = trend_weights([f.levels[lv] for lv in present], f.log_scale)
            results.append(self.b.contrast(
                d, [("a", float(wj), {i: lv}) for wj, lv in zip(w, present)], {},
                a_label=_label(d.arm, f"slope {per}"), b_label="0", kind=TREND, factor=f.name,
                level=tuple(f.levels[lv] for lv in present), reference=None, scale=scale))
        return _family(f"trend_{slug(f.name)}",
                       f"{f.name}: trend of {self.metric} {per} (least-squares slope over the levels)",
                       TREND, f.name, None, results, alpha=self.alpha, note=_averaging_note(f, self._rest(f)))

    def simple(self, f, g):
        i, j, rest = self._pos(f), self._pos(g), self._rest(f, g)
        results = []
        for d in self.designs:
            for m in range(len(g.levels)):
                at_tag = g.tag(g.levels[m])
                for lv in range(len(f.levels)):
                    if lv != f.reference_index:
                        results.append(self.b.contrast(
                            d, [("a", 1.0, {i: lv}), ("b", 1.0, {i: f.reference_index})], {j: m},
                            a_label=_label(d.arm, f.tag(f.levels[lv]), at_tag),
                            b_label=_label(d.arm, f.tag(f.reference), at_tag),
                            kind=SIMPLE, factor=f.name, level=f.levels[lv], reference=f.reference, by=g.name,
                            by_level=g.levels[m]))
                for lv in range(len(f.levels)):
                    self._mean(d, {i: lv, j: m}, factor=f.name, level=f.levels[lv], by=g.name,
                               by_level=g.levels[m])
        return _family(f"simple_{slug(f.name)}_by_{slug(g.name)}", f"{f.name} at each level of {g.name}", SIMPLE,
                       f.name, g.name, results, alpha=self.alpha,
                       note=f"Averaged over {' × '.join(h.name for h in rest)}." if rest else "")

    def interaction(self, f, g):
        i, j, rest = self._pos(f), self._pos(g), self._rest(f, g)
        fr, gr = f.reference_index, g.reference_index
        results = []
        for d in self.designs:
            for m in range(len(g.levels)):
                if m == gr:
                    continue
                for lv in range(len(f.levels)):
                    if lv == fr:
                        continue
                    delta = f"Δ {f.tag(f.levels[lv])} − {format_value(f.reference)}"
                    results.append(self.b.contrast(
                        d, [("a", 1.0, {i: lv, j: m}), ("a", -1.0, {i: fr, j: m}),
                            ("b", 1.0, {i: lv, j: gr}), ("b", -1.0, {i: fr, j: gr})], {},
                        a_label=_label(d.arm, f"{delta} at {g.tag(g.levels[m])}"),
                        b_label=_label(d.arm, f"{delta} at {g.tag(g.reference)}"),
                        kind=INTERACTION, factor=f.name, level=f.levels[lv], reference=f.reference, by=g.name,
                        by_level=g.levels[m], by_reference=g.reference))
        return _family(
            f"interaction_{slug(f.name)}_x_{slug(g.name)}",
            f"Interaction {f.name} × {g.name}: does the effect of {f.name} depend on {g.name}?", INTERACTION,
            f.name, g.name, results, alpha=self.alpha,
            note=(f"Each row is the contrast of {f.name} at a level of {g.name} minus the same contrast at "
                  f"{g.tag(g.reference)} (a difference of differences; 0 when the factors act independently)"
                  + (f", averaged over {' × '.join(h.name for h in rest)}." if rest else ".")))
