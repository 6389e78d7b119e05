"""The report's comparison tables and its Holm families: which pairs it compares on which metrics, and which
rows are adjusted together.

Tables: every arm against its baseline on the headline metric; the same on the secondary metrics that have a
direction (which way is better is each metric's declared direction, `harness.evaluation.metrics.score_spec`)
and on the descriptive metrics (a length: differences, never improvements); any named groups of extra pairs
(the stage pairs the trials recorded, `stage_groups`: dpo vs sft); and — when the study has them — the
forgetting check (`forgetting/`), the quantisation deltas (folders with `quant.json`) and the tuned arms
against the endpoint contestants.

Holm families (`declare_families`), declared once for the whole report rather than one per table: the
experiment's question is one family across tables — the stage pairs, the quantisation deltas, the endpoint
contestants and the main contrasts of each factor the grid varies (the question an ablation exists for);
when a study has none of these, the headline comparisons vs baseline are its question. Every other table
(secondary and descriptive metrics, forgetting tasks, trends, simple effects, interactions, and the headline
when it is not the question) is a family of its own. A row whose arms answered identically is shown but not
counted in m: it cannot reach significance at any m (Tarone 1990).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from analysis.capabilities import forgetting_comparisons, quantization_comparisons
from analysis.compare import Comparison, adjust, pair_statistics, paired_scores
from analysis.contrasts import MAIN, ContrastFamily, Contrasts
from analysis.errors import AnalysisError, UnknownArmError
from analysis.load import Study
from analysis.settings import ComparisonSettings
from harness.evaluation.divergence import DIVERGENCE_SCORES
from harness.evaluation.metrics import score_spec
from harness.results import read_json, stage_pairs

SUMMARY_METRICS = ("field_accuracy", "exact_match", "json_valid")
THREE_WAY = "three_way"
FORGETTING = "forgetting"  # the family of the lm-eval capability checks


@dataclass(frozen=True)
class Family:
    """Comparisons adjusted together (one table) and the pairs that could not be compared, with why."""

    name: str
    title: str
    comparisons: list[Comparison]
    refused: list[tuple[str, str, str]]  # (a, b, reason)
    delta_title: str | None = None  # its Δ figure's title, when not the family's own
    question: bool = False  # part of the experiment's question: stage pairs, quantisation, the endpoint contestants

    @property
    def figure_title(self) -> str:
        return self.delta_title or self.title


def choose_metric(study: Study, metric: str | None) -> str:
    """`metric` if the study has it; else the spec's headline metric; else the first summary metric present."""
    available = study.score_metrics
    if metric is not None:
        if metric not in available:
            raise UnknownArmError(f"no per-item metric '{metric}' in study '{study.name}' "
                                  f"(known: {', '.join(available) or 'none'}); set eval.metric in the spec "
                                  "or pass another metric", where=study.path)
        return metric
    for candidate in (study.headline_metric, *SUMMARY_METRICS, *available):
        if candidate in available:
            return candidate
    raise AnalysisError(f"study '{study.name}' has no per-item scores to report", where=study.path)


def baseline_pairs(study: Study, baseline: str) -> tuple[list[tuple[str, str]], list[str]]:
    """(arm, its baseline) for every non-baseline arm, and notes on the arms left without one.

    `baseline` is an arm label (`tuned[lora.r=8]`: everything is compared with it) or an arm name
    (`base`: each arm is compared with the baseline arm of the same grid point).
    """
    labels = study.arm_labels
    if baseline in labels:
        return [(a, baseline) for a in labels if a != baseline], []
    arms = set(study.items["arm"])
    if baseline not in arms:
        return [], [f"no baseline '{baseline}' in this study (arms: {', '.join(labels)}): no Δ column"]
    baseline_labels = set(study.items.loc[study.items["arm"] == baseline, "arm_label"])
    pairs, notes = [], []
    for a in labels:
        if a in baseline_labels:
            continue
        b = study.label_for(baseline, study.params_of(a))
        if b in baseline_labels:
            pairs.append((a, b))
        else:
            notes.append(f"'{a}' has no '{baseline}' arm at its grid point ({b}): not compared")
    return pairs, notes


def run_family(study: Study, name: str, title: str, pairs: Sequence[tuple[str, str]], metrics: Sequence[str],
               settings: ComparisonSettings, *, delta_title: str | None = None, question: bool = False) -> Family:
    """Compare every pair on every metric, Holm-adjusting across all of them together.

    A pair whose arms have different seeds (a failed trial) is compared on the seeds both have; a pair
    that cannot be paired at all is listed with the reason instead of stopping the report.
    """
    results, refused = [], []
    for metric in metrics:
        for a, b in pairs:
            try:
                seeds_a, seeds_b = set(study.seeds(a)), set(study.seeds(b))
                common = sorted(seeds_a & seeds_b) if seeds_a != seeds_b else None
                scores = paired_scores(study, a, b, metric, seeds=common)
                c = pair_statistics(scores, level=settings.level, confidence=settings.confidence,
                                    n_resamples=settings.n_resamples, seed=settings.seed, alpha=settings.alpha)
                results.append((c, f"compared on the seeds both arms have, {common}" if common else ""))
            except AnalysisError as e:
                refused.append((a, b, f"{metric}: {e}"))
    adjusted = adjust([replace(c, context=extra) for c, extra in results], **settings.judging)
    return Family(name, title, adjusted, refused, delta_title, question)


def secondary_metrics(study: Study, headline: str) -> tuple[list[str], list[str]]:
    """(metrics with a direction, descriptive metrics) to compare besides `headline`: the summary metrics, then
    every other metric the spec declared (chrf, rouge_l, format.*, words, ...); not the per-field scores,
    which the field table shows. A descriptive metric never joins the family of improvements."""
    # Divergence scores are each arm's distance from its own reference: compared there (capability_families).
    metrics = [m for m in dict.fromkeys((*SUMMARY_METRICS, *study.score_metrics))
               if m in study.score_metrics and m != headline and not m.startswith("field.")
               and m not in DIVERGENCE_SCORES]
    return ([m for m in metrics if not score_spec(m).descriptive], [m for m in metrics if score_spec(m).descriptive])


def is_endpoint(study: Study, label: str) -> bool:
    """Whether the arm is an endpoint contestant: its calls were priced in dollars."""
    rows = study.rows(label)
    return "cost_usd" in rows and bool(rows["cost_usd"].notna().any())


def capability_families(study: Study, study_dir: Path, metric: str, settings: ComparisonSettings) -> list[Family]:
    """The forgetting check and the quantisation deltas, each a family when the study has any of them."""
    families = []
    for name, title, (found, refused) in (
            (FORGETTING, "Forgetting: general capabilities, adapter vs base (lm-eval accuracy)",
             forgetting_comparisons(study_dir, study.varying_params, **settings.options)),
            ("quantization", f"Quantization: {metric}, quantised vs reference",
             quantization_comparisons(study, metric, **settings.options))):
        if any(c.metric in DIVERGENCE_SCORES for c in found):
            title = title.removesuffix(" (lm-eval accuracy)") + (
                " (lm-eval accuracy; divergence from the base on general text)" if name == FORGETTING
                else "; divergence from the reference on the held-out answers")
        if found or refused:
            families.append(Family(name, title, adjust(found, **settings.judging), refused,
                                   question=name == "quantization"))
    return families


def study_families(study: Study, study_dir: Path, metric: str, baseline: str,
                   groups: Mapping[str, Sequence[tuple[str, str]]] | None,
                   settings: ComparisonSettings) -> tuple[list[Family], list[str]]:
    """Every family the report shows, headline first, and notes on the arms that have no baseline to compare with."""
    pairs, notes = baseline_pairs(study, baseline)
    families = [run_family(study, "headline", f"Comparisons vs baseline: {metric}", pairs, [metric], settings,
                           delta_title=f"Δ {metric} vs baseline")]
    directed, descriptive = secondary_metrics(study, metric)
    families.append(run_family(study, "secondary", "Secondary metrics vs baseline", pairs, directed, settings,
                               delta_title="Δ secondary metrics vs baseline"))
    if descriptive:
        families.append(run_family(study, "descriptive",
                                   "Descriptive metrics vs baseline (differences, not improvements)",
                                   pairs, descriptive, settings))
    families += [run_family(study, name, f"{name}: comparisons", group_pairs, [metric], settings, question=True)
                 for name, group_pairs in (groups or {}).items()]
    families += capability_families(study, study_dir, metric, settings)
    endpoint_arms = [a for a in study.arm_labels if is_endpoint(study, a)]
    tuned_arms = [a for a in study.arm_labels if a not in study.untuned_arms]
    contestant_pairs = [(t, e) for e in endpoint_arms for t in tuned_arms]
    if contestant_pairs:
        families.append(run_family(study, THREE_WAY, f"Tuned vs endpoint contestants: {metric}", contestant_pairs,
                                   [metric], settings, question=True))
    return families, notes


QUESTION = "question"


@dataclass(frozen=True)
class HolmFamily:
    """Rows adjusted together: the tables they come from, how many count towards m, and how many are shown only."""

    name: str
    title: str
    tables: tuple[str, ...]
    m: int
    excluded: int  # rows whose arms answered identically: shown, not counted (Tarone 1990)


def stage_groups(study_dir: Path, labels: Iterable[str]) -> dict[str, list[tuple[str, str]]]:
    """`{"dpo_vs_sft": [(dpo label, sft label), ...]}`: each stage pair the trials recorded
    (`harness.results.stage_pairs`), matched label by label (the same grid point)."""
    labels = list(labels)
    pairs: list[tuple[str, str]] = []
    for trial_dir in sorted(Path(study_dir).glob("trial-*")):
        manifest = read_json(trial_dir / "manifest.json") if (trial_dir / "manifest.json").exists() else {}
        for pair in stage_pairs(manifest, [p.stem for p in (trial_dir / "eval").glob("*.jsonl")]):
            if pair not in pairs:
                pairs.append(pair)
    groups: dict[str, list[tuple[str, str]]] = {}
    for arm, before in pairs:
        matched = [(label, before + label[len(arm):]) for label in labels
                   if label.startswith(arm) and before + label[len(arm):] in labels]
        if matched:
            groups[f"{arm}_vs_{before}"] = matched
    return groups


def declare_families(families: Sequence[Family], contrasts: Contrasts, settings: ComparisonSettings
                     ) -> tuple[list[Family], Contrasts, list[HolmFamily]]:
    """The tables with every row Holm-adjusted within its declared family (module docstring), and the families."""
    tables: list[Family | ContrastFamily] = [*families, *contrasts.families]
    question = [t.name for t in tables if t.comparisons and (
        (isinstance(t, Family) and t.question) or (isinstance(t, ContrastFamily) and t.kind == MAIN))]
    if not question:
        question = [t.name for t in families if t.name == "headline" and t.comparisons]
    groups: dict[str, list[str]] = {QUESTION: question} if question else {}
    for t in tables:
        if t.comparisons and t.name not in question:
            groups[t.name] = [t.name]
    by_name = {t.name: t for t in tables}
    adjusted: dict[str, list[Comparison]] = {}
    declared = []
    for name, members in groups.items():
        rows = [c for member in members for c in by_name[member].comparisons]
        done = iter(adjust(rows, **settings.judging))
        for member in members:
            adjusted[member] = [next(done) for _ in by_name[member].comparisons]
        counted = sum(c.counted for member in members for c in adjusted[member])
        title = ("the experiment's question: " + ", ".join(members) if name == QUESTION else by_name[name].title)
        declared.append(HolmFamily(name, title, tuple(members), counted, len(rows) - counted))
    new_families = [replace(f, comparisons=adjusted.get(f.name, f.comparisons)) for f in families]
    new_contrasts = replace(contrasts, families=[
        replace(f, contrasts=[replace(c, comparison=a) for c, a in zip(f.contrasts, adjusted.get(f.name, []))])
        if f.name in adjusted else f for f in contrasts.families])
    return new_families, new_contrasts, declared


def family_of(declared: Sequence[HolmFamily], table: str) -> HolmFamily | None:
    """The Holm family that adjusts `table`'s rows."""
    return next((f for f in declared if table in f.tables), None)
