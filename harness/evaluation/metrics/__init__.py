"""Per-item metrics, one file each, registered by decorator and found by scanning this folder (as lm-eval's
metric registry): adding a metric is adding a file here.

    @register_metric("chrf", "chrF (sacrebleu) of the prediction against the reference, 0-1",
                     scores=[ScoreSpec("chrf", "chrF", HIGHER)])
    def chrf(prediction: str, reference: str, options: EvalSpec | None) -> dict[str, float]: ...

A metric returns one or more per-item scores (`{"chrf": 0.71}`, `{"format.headline": 1.0, ...}`); the
scores of every metric a spec names land in the same `scores` dict of an eval row, so each flows through
aggregates, paired tests, figures, W&B and the model card like field accuracy. `options` is the spec's
`eval:` section (format rules, ...) or None. Metric files keep heavy imports inside functions.

Every score key a metric emits has a declared meaning (`ScoreSpec`, as lm-eval's `higher_is_better` and
`aggregation`): which way is better (or neither: a descriptive score such as a length), the range its
values lie in, how items aggregate, and a short name for tables and figures. A family of keys
(`field.<key>`, `format.<rule>`) is declared once by a pattern. A metric that declares nothing cannot
register, and a score it emits without declaring it is an error. Scores that reach the analysis from
elsewhere (lm-eval accuracies, the LLM judge) are declared in `external`. `score_spec(key)` is what the
analysis reads; a key nobody declared gets `undeclared(key)`: descriptive and unbounded.

A task's own scorer (`PreparedData.scorer`: "json" for JSON answers, "text" otherwise) always runs; the
spec's `eval.metrics` add to it (`scorer_for`).
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Literal, Sequence

from harness.discovery import Registry
from harness.errors import SpecError
from harness.evaluation.scoring import Scorer

if TYPE_CHECKING:
    from harness.config.sections import EvalSpec

MetricFn = Callable[[str, str, Any], dict[str, float]]

Direction = Literal["higher", "lower", "neither"]
HIGHER, LOWER, NEITHER = "higher", "lower", "neither"
DIRECTIONS = (HIGHER, LOWER, NEITHER)
# How per-item scores combine into an arm's figure. Every statistic of the analysis is of a mean (paired
# differences, bootstrap CIs, tests), so a metric that needs another aggregation (a corpus-level BLEU,
# a perplexity) must be written as per-item scores whose mean is what it means.
AGGREGATIONS = ("mean",)

# The task scorer a prepared dataset names (manifest `data.scorer`) → the registered metric it runs.
TASK_SCORERS = {"json": "json", "text": "exact_match"}


@dataclass(frozen=True)
class ScoreSpec:
    """What one per-item score means: which way is better, its range, its aggregation and its display name.

    `key` is the score's key, or a pattern with one `*` for a family of keys ("field.*"); in a pattern's
    `display`, `{}` stands for what the `*` matched ("field {}" → "field price"). `low` and `high` bound
    every value (`math.inf` where a side is unbounded, e.g. a word count's [0, ∞)). `direction` "neither"
    declares a descriptive score: reported with its difference and CI, never called better or worse.
    """

    key: str
    display: str
    direction: Direction
    low: float = 0.0
    high: float = 1.0
    aggregation: str = "mean"

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(f"score '{self.key}': direction must be one of {', '.join(DIRECTIONS)}, "
                             f"got {self.direction!r}")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"score '{self.key}': aggregation must be one of {', '.join(AGGREGATIONS)}, "
                             f"got {self.aggregation!r}")
        if not self.low < self.high or math.isnan(self.low) or math.isnan(self.high):
            raise ValueError(f"score '{self.key}': its range needs low < high, got [{self.low}, {self.high}]")
        if self.key.count("*") > 1 or not self.display:
            raise ValueError(f"score '{self.key}': a key has at most one '*', and a display name")

    @property
    def is_pattern(self) -> bool:
        return "*" in self.key

    @property
    def descriptive(self) -> bool:
        """Neither higher nor lower is better (a length): never a verdict, never in a family of improvements."""
        return self.direction == NEITHER

    @property
    def bounded(self) -> bool:
        return math.isfinite(self.low) and math.isfinite(self.high)

    @property
    def unit_interval(self) -> bool:
        """Scores in [0, 1] (rates, accuracies, F-measures): the ones that can share an axis."""
        return (self.low, self.high) == (0.0, 1.0)

    def matches(self, key: str) -> bool:
        return self._captured(key) is not None

    def _captured(self, key: str) -> str | None:
        if not self.is_pattern:
            return "" if key == self.key else None
        head, tail = self.key.split("*")
        found = re.fullmatch(re.escape(head) + "(.+)" + re.escape(tail), key)
        return found.group(1) if found else None

    def display_for(self, key: str) -> str:
        """The display name of `key`, one of the keys this spec declares."""
        captured = self._captured(key)
        return self.display.replace("{}", captured) if captured else self.display

    def improves(self, diff: float) -> bool | None:
        """Whether a change of `diff` is an improvement; None for a descriptive score."""
        if self.descriptive:
            return None
        return diff > 0 if self.direction == HIGHER else diff < 0

    def range_of(self, weights: Iterable[float]) -> tuple[float, float]:
        """The range of `Σ w·score` over scores in [low, high]: (1,) is a mean's, (1, −1) a paired difference's;
        ±inf where unbounded."""
        low = high = 0.0
        for w in weights:
            if w == 0:
                continue
            ends = (w * self.low, w * self.high)  # inf * w stays an infinity of the right sign
            low, high = low + min(ends), high + max(ends)
        return low, high

    def range_text(self) -> str:
        """The range as a reader writes it: [0, 1], [0, ∞), (−∞, ∞)."""
        def end(x: float) -> str:
            return "∞" if x == math.inf else "−∞" if x == -math.inf else f"{x:g}".replace("-", "−")

        return (("(" if self.low == -math.inf else "[") + f"{end(self.low)}, {end(self.high)}"
                + (")" if self.high == math.inf else "]"))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (infinite bounds as None)."""
        out = asdict(self)
        out.update(low=self.low if math.isfinite(self.low) else None,
                   high=self.high if math.isfinite(self.high) else None)
        return out


def undeclared(key: str) -> ScoreSpec:
    """The meaning of a key no metric or producer declared: descriptive and unbounded, so the analysis reports
    its differences but neither calls them better or worse nor cuts their CIs at a range nobody stated."""
    return ScoreSpec(key, key, NEITHER, -math.inf, math.inf)


@dataclass(frozen=True)
class Metric:
    name: str
    fn: MetricFn
    description: str
    scores: tuple[ScoreSpec, ...]  # the meaning of every key `fn` emits
    check: Callable[[Any], None] | None = None  # raises ValueError when `options` cannot serve it

    def __call__(self, prediction: str, reference: str, options: Any = None) -> dict[str, float]:
        out = self.fn(prediction, reference, options)
        stray = [k for k in out if not any(s.matches(k) for s in self.scores)]
        if stray:
            raise ValueError(f"metric '{self.name}' emitted {', '.join(map(repr, stray))}, which it does not declare "
                             f"(declared: {', '.join(s.key for s in self.scores)}); add a ScoreSpec to its "
                             "register_metric(scores=...)")
        return out


_METRICS: Registry[Metric] = Registry("metric", __name__, __path__)
_SCORES: dict[str, tuple[ScoreSpec, str]] = {}  # key or pattern → (its meaning, who declared it)


def declare_scores(specs: Sequence[ScoreSpec], by: str) -> None:
    """Declare what score keys mean; `by` names the declarer (a metric, or a producer outside this folder).

    A key may be declared again only with the same meaning (`exact_match` is emitted by `json` and
    `exact_match` alike); two meanings for one key is an error.
    """
    for key, spec in _checked(specs, by).items():
        _SCORES.setdefault(key, (spec, by))


def _checked(specs: Sequence[ScoreSpec], by: str) -> dict[str, ScoreSpec]:
    """`specs` by key, every one checked before any is kept: a refused declaration leaves no trace."""
    if not specs:
        raise ValueError(f"{by} declares no scores: give each score key it emits a ScoreSpec "
                         "(direction, range, aggregation, display name)")
    mine: dict[str, ScoreSpec] = {}
    for spec in specs:
        if not isinstance(spec, ScoreSpec):
            raise TypeError(f"{by}: scores must be ScoreSpec, got {type(spec).__name__} ({spec!r})")
        taken = _SCORES[spec.key] if spec.key in _SCORES else (mine[spec.key], by) if spec.key in mine else None
        if taken is not None and taken[0] != spec:
            raise ValueError(f"score '{spec.key}' declared twice with different meanings ({taken[1]}: {taken[0]}; "
                             f"{by}: {spec})")
        mine[spec.key] = spec
    return mine


def register_metric(name: str, description: str, *, scores: Sequence[ScoreSpec],
                    check: Callable[[Any], None] | None = None) -> Callable[[MetricFn], MetricFn]:
    """Register `fn(prediction, reference, options) -> {score: value}` as metric `name`; `scores` declares the
    meaning of every key it emits (a `ScoreSpec` each, a pattern for a family of keys)."""
    by = f"metric '{name}'"
    _checked(scores, by)  # at the decorator's line, before any function is wrapped

    def decorate(fn: MetricFn) -> MetricFn:
        _METRICS.add(name, Metric(name, fn, description, tuple(scores), check), fn.__module__)
        declare_scores(scores, by)
        return fn

    return decorate


def all_metrics() -> dict[str, Metric]:
    """Every registered metric by name (importing each module of this package once)."""
    return dict(sorted(_METRICS.entries().items()))


def score_spec(key: str) -> ScoreSpec:
    """The declared meaning of score `key`: its own declaration, else the one pattern that matches it, else
    `undeclared(key)`. A key that two patterns claim with different meanings is an error."""
    all_metrics()
    if key in _SCORES:
        return _SCORES[key][0]
    found = {spec for spec, _ in _SCORES.values() if spec.is_pattern and spec.matches(key)}
    if len(found) > 1:
        raise ValueError(f"score '{key}' matches several declared patterns: {', '.join(s.key for s in found)}")
    return found.pop() if found else undeclared(key)


def is_declared(key: str) -> bool:
    """Whether some metric or producer declared what `key` means."""
    all_metrics()
    return key in _SCORES or any(spec.is_pattern and spec.matches(key) for spec, _ in _SCORES.values())


def display_name(key: str) -> str:
    """The short name of score `key` for tables and figures ("field accuracy", "length (words)")."""
    return score_spec(key).display_for(key)


def get_metric(name: str) -> Metric:
    """The metric registered as `name`; a `SpecError` listing the registered ones otherwise."""
    metrics = all_metrics()
    if name not in metrics:
        raise SpecError(f"unknown metric '{name}' (registered: {', '.join(metrics)})")
    return metrics[name]


def check_metrics(names: list[str], options: Any) -> None:
    """Refuse unknown names and metrics `options` cannot serve (ValueError, for spec validation)."""
    metrics = all_metrics()
    for name in names:
        if name not in metrics:
            raise ValueError(f"eval.metrics: unknown metric '{name}' (registered: {', '.join(metrics)})")
        if metrics[name].check is not None:
            metrics[name].check(options)


def scorer_for(task: str, options: "EvalSpec | None" = None) -> Scorer:
    """The scorer of a trial: the task's own (`task`: "json" or "text") plus every metric of `options.metrics`."""
    if task not in TASK_SCORERS:
        raise SpecError(f"unknown scorer '{task}' (known: {', '.join(sorted(TASK_SCORERS))})")
    names = [TASK_SCORERS[task], *[m for m in (getattr(options, "metrics", None) or [])
                                   if m != TASK_SCORERS[task]]]
    chosen = [get_metric(n) for n in dict.fromkeys(names)]

    def score(prediction: str, reference: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for metric in chosen:
            out.update(metric(prediction, reference, options))
        return out

    score.metrics = [m.name for m in chosen]  # type: ignore[attr-defined]
    return score
