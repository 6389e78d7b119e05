"""Forgetting and quantisation comparisons, from the files those harness steps leave in a study.

Forgetting (lm-eval rows: `<folder>/lm_eval/<task>.jsonl`, one row per benchmark item with `doc_id`,
`correct` 0/1 and `doc_hash`, the proof that both sides saw the same item) comes in two layouts:

- in the trial (spec `forgetting:`): the adapter's rows in `trial-NNNN/lm_eval/`, the base model's in
  `<study>/forgetting-base/<key>/`, key = `harness.results.forgetting_base_key` (the stage's own key);
- after the study (`harness.capabilities.forgetting.forgetting_check`): `<study>/forgetting/forgetting.json` names
  the base folder each `forgetting/trial-NNNN/` pairs with.

Either way the rows pair by doc_id as the harness's own regression gate pairs them
(`harness.capabilities.stats.pair_rows`: the same items, the same doc hashes), and the CI of a
difference stays within the range a difference of accuracies can take (`ACC_DIFF_BOUNDS`).

Trials that differ only in seed are one arm, so seed variance enters the CI as everywhere else.

Quantisation (`harness.export.quant_delta`: a folder with `quant.json` and `eval/<arm>.jsonl`): each
quantised arm against the reference arm (`merged`). When the trials also put those arms in their own
`eval/` (spec `quantize:`), they are compared from there, seeds pooled; otherwise folder by folder.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from analysis.compare import Comparison, Level, PairedScores, pair_statistics, paired_scores
from analysis.divergence import divergence_metrics, forgetting_divergence
from analysis.errors import AnalysisError, UnpairedItemsError
from analysis.load import SEED_PARAMS, Study, arm_label, load_study
from harness.capabilities.forgetting import FORGETTING_DIR, INDEX_FILE
from harness.capabilities.stats import ACC_DIFF_BOUNDS, UnpairedRowsError, accuracy_metric, pair_rows
from harness.results import forgetting_base_key, read_json, read_jsonl

Refused = tuple[str, str, str]  # (a, b, reason)


@dataclass(frozen=True)
class _Capability:
    """One adapter's lm-eval rows and the base rows it pairs with."""

    label: str
    seed: int
    rows: Path  # a folder holding lm_eval/
    base: Path
    tasks: tuple[str, ...]


def _seed(params: dict[str, Any], manifest: dict[str, Any] | None = None) -> int:
    if manifest and manifest.get("seed") is not None:
        return int(manifest["seed"])
    return int(next((params[k] for k in ("train.seed", "seed") if params.get(k) is not None), 0))


def _label(params: dict[str, Any], varying: list[str]) -> str:
    return arm_label("tuned", {k: v for k, v in params.items() if k not in SEED_PARAMS}, varying)


def _after_study(study_dir: Path, varying: list[str]) -> list[_Capability]:
    root = study_dir / FORGETTING_DIR
    if not (root / INDEX_FILE).exists():
        return []
    index = read_json(root / INDEX_FILE)
    tasks = tuple(index.get("tasks", []))
    return [_Capability(_label(t.get("params") or {}, varying), _seed(t.get("params") or {}),
                        root / t.get("dir", name), root / t["base"], tasks)
            for name, t in sorted(index.get("trials", {}).items())]


def _in_trials(study_dir: Path, varying: list[str]) -> list[_Capability]:
    found = []
    for trial in sorted(study_dir.glob("trial-*")):
        result = trial / "result.json"
        if not (trial / "lm_eval" / "summary.json").exists() or not result.exists():
            continue
        if read_json(result).get("status") != "complete":
            continue
        manifest = read_json(trial / "manifest.json") if (trial / "manifest.json").exists() else {}
        spec = manifest.get("spec") or {}
        f = spec.get("forgetting") or {}
        key = forgetting_base_key(spec.get("model") or {}, f.get("tasks"), f.get("limit"))
        params = manifest.get("params") or read_json(result).get("params") or {}
        found.append(_Capability(_label(params, varying), _seed(params, manifest), trial,
                                 study_dir / "forgetting-base" / key, tuple(f.get("tasks") or ())))
    return found


def _task_rows(folder: Path, task: str) -> list[dict[str, Any]]:
    path = folder / "lm_eval" / f"{task}.jsonl"
    if not path.exists():
        raise UnpairedItemsError(f"no per-item rows for task '{task}' in {folder}", where=path)
    return read_jsonl(path)


def _task_scores(members: list[_Capability], task: str) -> PairedScores:
    """Each member's rows paired with the base's (`harness.capabilities.stats.pair_rows`): seeds × items."""
    label, base = members[0].label, members[0].base
    base_rows = _task_rows(base, task)
    pairs = [pair_rows(task, base_rows, _task_rows(m.rows, task), names=("the base", f"'{m.rows.name}'"))
             for m in members]
    # Item ids are text in the analysis, in text order as `paired_scores` keeps them (the bootstrap draws follow it).
    item_ids = [str(d) for d in pairs[0].doc_ids]
    order = sorted(range(len(item_ids)), key=item_ids.__getitem__)
    a = np.stack([p.candidate[order] for p in pairs])
    b = np.repeat(pairs[0].baseline[None, order], len(members), axis=0)
    return PairedScores(label, "base", accuracy_metric(task), a, b, tuple(m.seed for m in members),
                        tuple(item_ids[i] for i in order), None, ACC_DIFF_BOUNDS)


def task_chance(study_dir: Path, varying: list[str]) -> dict[str, float]:
    """Chance accuracy of each multiple-choice lm-eval task the study checked, by its accuracy metric: the mean over
    the base's items of 1 / the item's number of choices (a task without per-choice log-likelihoods has none)."""
    study_dir = Path(study_dir)
    chance: dict[str, float] = {}
    for c in _in_trials(study_dir, varying) + _after_study(study_dir, varying):
        for task in c.tasks:
            if accuracy_metric(task) in chance or not (c.base / "lm_eval" / f"{task}.jsonl").exists():
                continue
            choices = [len(r["loglikelihoods"]) for r in _task_rows(c.base, task) if r.get("loglikelihoods")]
            if choices:
                chance[accuracy_metric(task)] = float(np.mean([1 / k for k in choices]))
    return chance


def forgetting_comparisons(study_dir: Path, varying: list[str], *, level: Level = "item", confidence: float = 0.95,
                           n_resamples: int = 10_000, seed: int = 0,
                           alpha: float = 0.05) -> tuple[list[Comparison], list[Refused]]:
    """Adapter vs base accuracy on each lm-eval task, per grid point (seeds pooled); not yet Holm-adjusted.

    Empty when the study has no forgetting check.
    """
    study_dir = Path(study_dir)
    groups: dict[tuple[str, Path], list[_Capability]] = {}
    for c in _in_trials(study_dir, varying) + _after_study(study_dir, varying):
        groups.setdefault((c.label, c.base), []).append(c)
    results, refused = [], []
    for (label, _), members in groups.items():
        members = sorted(members, key=lambda m: m.seed)
        for task in dict.fromkeys(t for m in members for t in m.tasks):
            try:
                results.append(pair_statistics(_task_scores(members, task), level=level, confidence=confidence,
                                               n_resamples=n_resamples, seed=seed, alpha=alpha))
            except UnpairedRowsError as e:  # it names the task
                refused.append((label, "base", str(e)))
            except AnalysisError as e:
                refused.append((label, "base", f"{task}: {e}"))
        try:  # the per-token divergence from the base, where the trials measured it
            results += [pair_statistics(s, level=level, confidence=confidence, n_resamples=n_resamples, seed=seed,
                                        alpha=alpha)
                        for s in forgetting_divergence(label, [m.rows for m in members], [m.seed for m in members])]
        except AnalysisError as e:
            refused.append((label, "base", f"divergence: {e}"))
    return results, refused


def quantization_comparisons(study: Study, metric: str, *, level: Level = "item", confidence: float = 0.95,
                             n_resamples: int = 10_000, seed: int = 0,
                             alpha: float = 0.05) -> tuple[list[Comparison], list[Refused]]:
    """Each quantised arm vs its reference arm, for the `quant.json` folders under the study; not yet adjusted.

    Arms recorded as not run (e.g. NF4 without CUDA) are listed as refused with their reason.
    """
    folders = sorted(p.parent for p in study.path.rglob("quant.json") if "report" not in p.parts)
    if not folders:
        return [], []
    reference, quant_arms, refused = "merged", set(), []
    for folder in folders:
        index = read_json(folder / "quant.json")
        reference = index.get("reference_arm") or reference
        for arm, info in (index.get("arms") or {}).items():
            if info.get("status") == "complete":
                quant_arms.add(arm)
            elif (arm, reference) not in {(a, b) for a, b, _ in refused}:
                refused.append((arm, reference, f"{info.get('status')}: {info.get('reason')}"))
    quant_arms.discard(reference)

    options = dict(level=level, confidence=confidence, n_resamples=n_resamples, seed=seed, alpha=alpha)
    results = []
    if not study.items.empty and reference in set(study.items["arm"]):
        # The trials evaluated these arms themselves: pair them there, seeds pooled like every other arm.
        for label in study.arm_labels:
            if study.rows(label)["arm"].iloc[0] not in quant_arms:
                continue
            b = study.label_for(reference, study.params_of(label))
            for m in divergence_metrics(metric, study.score_metrics):
                try:
                    results.append(pair_statistics(paired_scores(study, label, b, m), **options))
                except AnalysisError as e:
                    refused.append((label, b, str(e)))
        return results, refused
    for folder in folders:
        prefix = f"{folder.relative_to(study.path)}: " if len(folders) > 1 else ""
        try:
            quant = load_study(folder)
            labels = [label for label in quant.arm_labels if label != reference]
        except AnalysisError as e:
            refused.append((f"{prefix}quantised arms", f"{prefix}{reference}", str(e)))
            continue
        for label in labels:
            for m in divergence_metrics(metric, quant.score_metrics):
                try:
                    c = pair_statistics(paired_scores(quant, label, reference, m), **options)
                    results.append(replace(c, a=prefix + c.a, b=prefix + c.b))
                except AnalysisError as e:
                    refused.append((f"{prefix}{label}", f"{prefix}{reference}", str(e)))
    return results, refused
