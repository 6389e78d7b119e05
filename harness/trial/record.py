"""A finished trial on disk and in W&B: per-item rows per arm, metrics.json (arms, cost, blocks, trainings),
manifest.json, then result.json last (a trial without it did not finish)."""

from __future__ import annotations

import resource
import time
from typing import Any

from harness.errors import HarnessError
from harness.evaluation.evaluate import aggregate, local_cost_per_1k_calls
from harness.results import Outcome, TrialResult, write_json, write_jsonl
from harness.stages.registry import stage_pairs
from harness.stages.context import TrialContext
from harness.trial.manifest import build_manifest


def record_trial(ctx: TrialContext) -> TrialResult:
    """Write the trial's files (eval/<arm>.jsonl, metrics.json, manifest.json, then result.json last), log to W&B."""
    spec, trial_dir = ctx.spec, ctx.trial_dir
    if not ctx.trainings:
        raise HarnessError(f"trial {ctx.number} trained nothing: train.method '{spec.train.method}' ran no training")
    first, *more = ctx.trainings
    t_wall, r0 = ctx.started
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    o = first.outcome
    cost = {"wall_s": time.perf_counter() - t_wall,
            "cpu_s": (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime),
            "device_s": o.runtime_s, "tokens_trained": o.tokens_trained, "train_steps": o.steps,
            # the trial's worst: each stage's own peak is measured apart (CUDA's peak is reset per stage)
            "final_loss": o.final_loss, "peak_mem_gb": max([peak_memory_gb(), *ctx.stage_peaks.values()]),
            "stage_peak_mem_gb": dict(ctx.stage_peaks), "trainable_params": o.trainable_params,
            "adapter_bytes": ctx.adapter_bytes}
    metrics: dict[str, Any] = {arm: aggregate(rows) for arm, rows in ctx.arms.items()}
    price = spec.pricing.device_price_per_hour
    for values in metrics.values():
        if price is not None and "cost_per_1k_calls_usd" not in values and values.get("n"):
            values["cost_per_1k_calls_usd"] = local_cost_per_1k_calls(values, price)
    metrics["cost"] = cost
    metrics.update(ctx.blocks)
    if more:  # continued training (DPO, ...): its summary apart from the arms, its time and tokens in the cost
        metrics["training"] = {}
        for t in more:
            metrics["training"][t.stage] = {**t.summary, "steps": t.outcome.steps,
                                            "final_loss": t.outcome.final_loss,
                                            "tokens_trained": t.outcome.tokens_trained,
                                            "device_s": t.outcome.runtime_s}
            cost["device_s"] += t.outcome.runtime_s
            cost["tokens_trained"] += t.outcome.tokens_trained
    for arm, rows in ctx.arms.items():
        write_jsonl(trial_dir / "eval" / f"{arm}.jsonl", rows)
    write_json(trial_dir / "metrics.json", metrics)
    manifest = build_manifest(spec=spec, params=ctx.params, number=ctx.number, data=ctx.data, resolved=ctx.resolved,
                              backend=ctx.backend.name, training=o.settings, eval_items=len(ctx.heldout))
    manifest["arms"] = {arm: ctx._roles[arm] for arm in ctx.arms}
    manifest["arm_trainings"] = {arm: ctx._trained[arm] for arm in ctx.arms}
    manifest["arm_model_bytes"] = {arm: ctx.model_bytes[arm] for arm in ctx.arms if arm in ctx.model_bytes}
    manifest["final_arm"] = ctx.final_arm
    manifest["stage_pairs"] = [list(pair) for pair in stage_pairs(spec)]
    manifest["trainings"] = {t.stage: t.outcome.settings for t in ctx.trainings}
    manifest["data"]["scorer"] = ctx.data.scorer
    write_json(trial_dir / "manifest.json", manifest)

    tracker = ctx.tracker
    for name, values in metrics.items():
        if name == "training":
            for stage, summary in values.items():
                tracker.log({f"training/{stage}/{k}": v for k, v in summary.items() if isinstance(v, (int, float))})
        elif isinstance(values, dict):
            tracker.log(_numeric(name, values))
    for arm, rows in ctx.arms.items():
        tracker.log_table(f"eval/{arm}", [{**{k: v for k, v in r.items() if k != "scores"}, **r["scores"]}
                                           for r in rows])
    tracker.summary({"final_loss": o.final_loss, "wandb_mode": tracker.mode})
    tracker.finish()

    # The objective comes from the dev split only: the held-out split never drives selection.
    result = TrialResult(number=ctx.number, status=Outcome.COMPLETE.value, params=ctx.params, metrics=metrics,
                         objective=ctx.objective)
    result.write(trial_dir)
    return result


def _numeric(prefix: str, values: dict[str, Any]) -> dict[str, float]:
    """The numbers of a metrics block, nested blocks (the judge's pairs) flattened to `prefix/key/...`."""
    out: dict[str, float] = {}
    for k, v in values.items():
        if isinstance(v, dict):
            out.update(_numeric(f"{prefix}/{k}", v))
        elif isinstance(v, (int, float)):
            out[f"{prefix}/{k}"] = v
    return out


def peak_memory_gb() -> float:
    from harness.backends.memory_plan import peak_memory_bytes

    return peak_memory_bytes() / 2**30
