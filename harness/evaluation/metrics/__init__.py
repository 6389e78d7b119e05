"""Per-item metrics, one file each, registered by decorator and found by scanning this folder (as lm-eval's
metric registry): adding a metric is adding a file here.

    @register_metric("chrf", "chrF (sacrebleu) of the prediction against the reference, 0-1")
    def chrf(prediction: str, reference: str, options: EvalSpec | None) -> dict[str, float]: ...

A metric returns one or more per-item scores (`{"chrf": 0.71}`, `{"format.headline": 1.0, ...}`); the
scores of every metric a spec names land in the same `scores` dict of an eval row, so each flows through
aggregates, paired tests, figures, W&B and the model card like field accuracy. `options` is the spec's
`eval:` section (format rules, ...) or None. Metric files keep heavy imports inside functions.

A task's own scorer (`PreparedData.scorer`: "json" for JSON answers, "text" otherwise) always runs; the
spec's `eval.metrics` add to it (`scorer_for`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from harness.discovery import import_modules
from harness.errors import SpecError
from harness.evaluation.scoring import Scorer

if TYPE_CHECKING:
    from harness.config.sections import EvalSpec

MetricFn = Callable[[str, str, Any], dict[str, float]]

# The task scorer a prepared dataset names (manifest `data.scorer`) → the registered metric it runs.
TASK_SCORERS = {"json": "json", "text": "exact_match"}


@dataclass(frozen=True)
class Metric:
    name: str
    fn: MetricFn
    description: str
    check: Callable[[Any], None] | None = None  # raises ValueError when `options` cannot serve it

    def __call__(self, prediction: str, reference: str, options: Any = None) -> dict[str, float]:
        return self.fn(prediction, reference, options)


_REGISTRY: dict[str, Metric] = {}
_discovered = False


def register_metric(name: str, description: str, *, check: Callable[[Any], None] | None = None
                    ) -> Callable[[MetricFn], MetricFn]:
    """Register `fn(prediction, reference, options) -> {score: value}` as metric `name`."""

    def decorate(fn: MetricFn) -> MetricFn:
        taken = _REGISTRY.get(name)
        if taken is not None and taken.fn.__module__ != fn.__module__:
            raise ValueError(f"metric '{name}' is registered twice ({taken.fn.__module__}, {fn.__module__})")
        _REGISTRY[name] = Metric(name, fn, description, check)
        return fn

    return decorate


def all_metrics() -> dict[str, Metric]:
    """Every registered metric by name (importing each module of this package once)."""
    global _discovered
    if not _discovered:
        import_modules(__name__, __path__)
        _discovered = True
    return dict(sorted(_REGISTRY.items()))


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
