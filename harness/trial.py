"""One trial, top to bottom: spec → data (frozen split verified) → train → evaluate → record.

This is the recipe every experiment runs; a grid (see `harness.study`) runs it once per grid point
and seed. The `Worker` keeps the base model loaded between trials: adapters go on and come off.
"""

from __future__ import annotations

import hashlib
import json
import resource
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from harness.data.prepare import PreparedData, prepare_data
from harness.errors import HarnessError
from harness.evaluate import aggregate, generate, local_cost_per_1k_calls, score_items
from harness.manifest import build_manifest
from harness.models import harness_home, resolve_model
from harness.progress import console, item_progress
from harness.record import TrialResult, read_jsonl, trial_dir_name, write_json, write_jsonl
from harness.scoring import get_scorer
from harness.spec import ExperimentSpec, ModelSpec
from harness.tracking import Tracker
from harness.train import TrainingBackend, select_backend


@dataclass
class Worker:
    """Per-process state reused across trials: the training backend and the loaded base model."""

    base_loads: int = 0
    _backends: dict[str, TrainingBackend] = field(default_factory=dict)
    _bases: dict[tuple, tuple] = field(default_factory=dict)

    def backend(self, prefer: str = "auto") -> TrainingBackend:
        """The backend for `train.backend` (one instance per worker and choice)."""
        if prefer not in self._backends:
            self._backends[prefer] = select_backend(prefer)
        return self._backends[prefer]

    def base(self, spec: ModelSpec, backend: TrainingBackend):
        """(model, tokenizer, resolved) for a model spec, loaded from disk once per worker and backend."""
        key = (spec.base, spec.dtype, spec.load_in_4bit, backend.name)
        if key not in self._bases:
            self._bases.clear()  # one base in memory at a time
            resolved = resolve_model(spec.base)
            model, tok = backend.load_base(resolved, spec.dtype, load_in_4bit=spec.load_in_4bit)
            self.base_loads += 1
            self._bases[key] = (model, tok, resolved)
        return self._bases[key]


def preflight(specs: list[ExperimentSpec]) -> None:
    """Fail fast, before any trial: every base model resolves, data loads, frozen splits verify, no leakage,
    and a backend the spec insists on can run here."""
    from harness.errors import SpecError
    from harness.train import backend_unavailable

    seen: set[str] = set()
    for spec in specs:
        reason = backend_unavailable(spec.train.backend)
        if reason:
            raise SpecError(reason, where=f"experiment {spec.name}, field 'train.backend'")
        for key, check in ((f"model:{spec.model.base}", lambda: resolve_model(spec.model.base)),
                           (f"data:{spec.data.model_dump_json()}",
                            lambda: prepare_data(spec.data, harness_home() / "data"))):
            if key not in seen:
                seen.add(key)
                check()


def _base_eval_key(spec: ExperimentSpec, data: PreparedData) -> str:
    relevant = {"model": spec.model.model_dump(mode="json"), "split": data.split.split_hash,
                "system": spec.data.system_prompt,
                "eval": spec.eval.model_dump(mode="json", include={"max_new_tokens", "limit"})}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def _evaluate(model, tok, arm: str, examples, spec: ExperimentSpec, scorer,
              backend: TrainingBackend) -> list[dict[str, Any]]:
    with item_progress(f"eval {arm}", len(examples)) as advance, backend.inference(model):
        gens = generate(model, tok, [ex.prompt for ex in examples], max_new_tokens=spec.eval.max_new_tokens,
                        batch_size=spec.eval.batch_size, progress=advance)
    return score_items(arm, examples, gens, scorer)


def run_trial(spec: ExperimentSpec, study_dir: Path, number: int, params: dict[str, Any], worker: Worker,
              *, on_dev_metric: Callable[[float, int], None] | None = None) -> TrialResult:
    """Run one trial of `spec` (already resolved with `params`) and record it under `study_dir`."""
    study_dir = Path(study_dir).absolute()  # handed to subprocesses (GGUF converter) and libraries
    trial_dir = study_dir / trial_dir_name(number)
    t_wall, r0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)

    data = prepare_data(spec.data, harness_home() / "data")
    backend = worker.backend(spec.train.backend)
    model, tok, resolved = worker.base(spec.model, backend)
    _reset_peak_memory()  # the trial's own peak, not the worker's
    heldout = data.heldout[: spec.eval.limit] if spec.eval.limit else data.heldout
    scorer = get_scorer(data.scorer)
    from harness.data.formats import format_summary, summarize

    summary = summarize(data.train, tok)
    console.print(format_summary(summary))

    tracker = Tracker(setting=spec.tracking.wandb, project=spec.tracking.project, group=spec.name,
                      name=f"{spec.name}/{trial_dir_name(number)}",
                      config={**spec.model_dump(mode="json", exclude={"presets", "search"}), "params": params,
                              "trial": number}, directory=Path(study_dir))
    tracker.summary({"data": summary})
    arms: dict[str, list[dict[str, Any]]] = {}
    peft_model = dpo_outcome = forgetting = None
    try:
        if spec.eval.compare_base:
            cache = Path(study_dir) / "base-eval" / f"{_base_eval_key(spec, data)}.jsonl"
            arms["base"] = read_jsonl(cache) if cache.exists() else _evaluate(model, tok, "base", heldout, spec, scorer, backend)
            write_jsonl(cache, arms["base"])

        train_examples, teacher = _training_examples(spec, data, Path(study_dir))
        peft_model = backend.add_adapter(model, spec.lora)

        def dev_score() -> float:
            return aggregate(_evaluate(peft_model, tok, "dev", data.dev, spec, scorer, backend))[spec.eval.metric]

        def on_step(step: int) -> None:
            every = spec.eval.dev_every_steps
            if every and data.dev and on_dev_metric and step % every == 0:
                value = dev_score()
                tracker.log({f"dev/{spec.eval.metric}": value}, step=step)
                on_dev_metric(value, step)

        outcome = backend.train_sft(
            peft_model, tok, train_examples, spec.train, trial_dir / "checkpoints",
            on_log=lambda row: tracker.log({f"train/{k}": v for k, v in row.items() if isinstance(v, (int, float))},
                                           step=row["step"]),
            on_step=on_step)
        write_jsonl(trial_dir / "train_log.jsonl", outcome.log)
        shutil.rmtree(trial_dir / "checkpoints", ignore_errors=True)  # the trainer's scratch; the adapter is kept
        if spec.dpo is not None:
            peft_model.save_pretrained(trial_dir / "adapter-sft")
            arms["sft"] = _evaluate(peft_model, tok, "sft", heldout, spec, scorer, backend)
            dpo_outcome, dpo_pairs = _train_dpo(spec, data, peft_model, tok, scorer, trial_dir, tracker)
        adapter_dir = trial_dir / "adapter"
        peft_model.save_pretrained(adapter_dir)
        adapter_bytes = sum(p.stat().st_size for p in adapter_dir.rglob("*") if p.is_file())

        objective = None
        if data.dev:  # the objective of selection: a dev split from the training side
            objective = dev_score()
            every = spec.eval.dev_every_steps
            if on_dev_metric and not (every and outcome.steps % every == 0):  # else already reported at this step
                on_dev_metric(objective, outcome.steps)
        final_arm = "dpo" if spec.dpo is not None else "tuned"
        arms[final_arm] = _evaluate(peft_model, tok, final_arm, heldout, spec, scorer, backend)
        if spec.quantize is not None:  # merged / nf4 / GGUF arms, every one fed the same rendered prompts
            from harness.quant_delta import quant_delta

            arms.update(quant_delta(spec.model.base, tok, adapter_dir, heldout, scorer, trial_dir / "quant",
                                    types=tuple(spec.quantize.types), max_new_tokens=spec.eval.max_new_tokens,
                                    batch_size=spec.eval.batch_size, n_ctx=spec.quantize.n_ctx))
        if spec.forgetting is not None:
            forgetting = _forgetting(spec, model, peft_model, tok, trial_dir, Path(study_dir))
        for contestant in spec.contestants:
            arms[contestant.name] = _ask_contestant(contestant, heldout, scorer, Path(study_dir))
    except BaseException as e:
        tracker.finish(exit_code=1)
        if _is_out_of_memory(e):
            raise OutOfMemory(_memory_report(spec)) from e
        raise
    finally:
        if peft_model is not None:
            backend.remove_adapter(peft_model)
        _release_device_memory()

    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cost = {"wall_s": time.perf_counter() - t_wall,
            "cpu_s": (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime),
            "device_s": outcome.runtime_s, "tokens_trained": outcome.tokens_trained,
            "train_steps": outcome.steps, "final_loss": outcome.final_loss, "peak_mem_gb": _peak_memory_gb(),
            "trainable_params": outcome.trainable_params, "adapter_bytes": adapter_bytes}
    metrics: dict[str, Any] = {arm: aggregate(rows) for arm, rows in arms.items()}
    price = spec.pricing.device_price_per_hour
    for values in metrics.values():
        if price is not None and "cost_per_1k_calls_usd" not in values and values.get("n"):
            values["cost_per_1k_calls_usd"] = local_cost_per_1k_calls(values, price)
    metrics["cost"] = cost
    if teacher is not None:
        metrics["teacher"] = teacher
    if forgetting is not None:
        metrics["forgetting"] = forgetting
    if dpo_outcome is not None:
        metrics["dpo"] = {"pairs": dpo_pairs, "steps": dpo_outcome.steps, "final_loss": dpo_outcome.final_loss,
                          "tokens_trained": dpo_outcome.tokens_trained, "device_s": dpo_outcome.runtime_s}
        cost["device_s"] += dpo_outcome.runtime_s
        cost["tokens_trained"] += dpo_outcome.tokens_trained
    for arm, rows in arms.items():
        write_jsonl(trial_dir / "eval" / f"{arm}.jsonl", rows)
    write_json(trial_dir / "metrics.json", metrics)
    write_json(trial_dir / "manifest.json", build_manifest(
        spec=spec, params=params, number=number, data=data, resolved=resolved, backend=backend.name,
        training=outcome.settings,
        eval_items=len(heldout)))

    for arm, values in metrics.items():
        tracker.log({f"{arm}/{k}": v for k, v in values.items() if isinstance(v, (int, float))})
    for arm, rows in arms.items():
        tracker.log_table(f"eval/{arm}", [{**{k: v for k, v in r.items() if k != "scores"}, **r["scores"]}
                                           for r in rows])
    tracker.summary({"final_loss": outcome.final_loss, "wandb_mode": tracker.mode})
    tracker.finish()

    # The objective comes from the dev split only: the held-out split never drives selection.
    result = TrialResult(number=number, status="complete", params=params, metrics=metrics, objective=objective)
    result.write(trial_dir)
    return result


def _forgetting(spec: ExperimentSpec, base_model, peft_model, tok, trial_dir: Path, study_dir: Path) -> dict:
    """lm-eval on the base (once per study) and on the tuned model in memory; paired per item."""
    from harness.forgetting import CapabilityResult, evaluate_capabilities
    from harness.regress import compare_results, judge

    f = spec.forgetting
    key = hashlib.sha256(json.dumps([spec.model.base, f.tasks, f.limit]).encode()).hexdigest()[:16]
    base_dir = study_dir / "forgetting-base" / key
    try:
        base = CapabilityResult.read(base_dir)
    except HarnessError:
        with peft_model.disable_adapter():  # the untouched base, without reloading it
            base = evaluate_capabilities(peft_model, tok, f.tasks, limit=f.limit, batch_size=f.batch_size,
                                         out_dir=base_dir, label="base")
    tuned = evaluate_capabilities(peft_model, tok, f.tasks, limit=f.limit, batch_size=f.batch_size,
                                  out_dir=trial_dir, label="tuned")
    comparisons = judge(compare_results(base, tuned), tolerance=f.tolerance, alpha=f.alpha)
    return {c.task: {"base_acc": c.baseline_acc, "tuned_acc": c.candidate_acc, "diff": c.diff,
                     "ci": [c.ci_low, c.ci_high], "p": c.p_value, "p_adjusted": c.p_adjusted, "n": c.n,
                     "regression": c.regression} for c in comparisons}


def _ask_contestant(contestant, heldout, scorer, study_dir: Path) -> list[dict[str, Any]]:
    """Every held-out prompt, one call each (per-call latency and cost); cached per study, failures per item."""
    from harness.endpoint import Completion, Endpoint, run_many

    with Endpoint(contestant.endpoint, study_dir / "contestant-cache") as endpoint:
        with item_progress(f"ask {contestant.name}", len(heldout)) as advance:
            def call(ep, ex):
                out = ep.chat(ex.prompt)
                advance(1)
                return out

            answers = run_many(endpoint, heldout, call)
    rows = []
    for i, (ex, a) in enumerate(zip(heldout, answers)):
        ok = isinstance(a, Completion)
        text = a.text.strip() if ok else ""
        rows.append({"item_id": ex.id, "arm": contestant.name, "prediction": text, "reference": ex.reference,
                     "scores": scorer(text, ex.reference), "latency_s": a.latency_s if ok else float("nan"),
                     "input_tokens": a.input_tokens if ok else 0, "output_tokens": a.output_tokens if ok else 0,
                     "cost_usd": a.cost_usd if ok else 0.0, "batch": i, "cluster": ex.cluster,
                     "error": None if ok else str(a)})
    return rows


def _train_dpo(spec: ExperimentSpec, data: PreparedData, peft_model, tok, scorer, trial_dir: Path, tracker):
    """Continue the SFT adapter with DPO on the SFT model's own dev failures (or the user's pairs)."""
    from harness.dpo import load_preference_pairs, mine_pairs, train_dpo

    d = spec.dpo
    if d.pairs == "mined":  # the dev split is training-side: the held-out split is never mined
        pairs = mine_pairs(peft_model, tok, data.dev, scorer, metric=d.metric, fail_below=d.fail_below,
                           max_pairs=d.max_pairs, max_new_tokens=spec.eval.max_new_tokens,
                           batch_size=spec.eval.batch_size)
    else:
        pairs = load_preference_pairs(d.preference_file, max_pairs=d.max_pairs, system_prompt=spec.data.system_prompt,
                                      heldout=data.heldout)
    write_jsonl(trial_dir / "dpo_pairs.jsonl", [{**p.to_json(), "rejected": p.rejected} for p in pairs])  # "" is a real answer
    outcome = train_dpo(peft_model, tok, pairs, d, seed=spec.train.seed, out_dir=trial_dir / "dpo-checkpoints",
                        on_log=lambda row: tracker.log({f"dpo/{k}": v for k, v in row.items()
                                                        if isinstance(v, (int, float))}))
    write_jsonl(trial_dir / "dpo_log.jsonl", outcome.log)
    shutil.rmtree(trial_dir / "dpo-checkpoints", ignore_errors=True)
    return outcome, len(pairs)


def _training_examples(spec: ExperimentSpec, data: PreparedData, study_dir: Path):
    """The pairs SFT trains on: the training split, or one arm of distillation vs more data."""
    plan = spec.distill
    if plan is None:
        return data.train, None
    if plan.arm == "original":
        need = plan.k * plan.n
        if len(data.train) < need:
            from harness.errors import DataError

            raise DataError(f"distill.k*n = {need} original pairs asked for, only {len(data.train)} training items")
        return data.train[:need], None
    from harness.distill import distill

    # The teacher's answers are cached per study: every seed and rerun reuses them without paying again.
    result = distill(data.train, plan, cache_dir=study_dir / "teacher-cache")
    return result.examples, result.summary()


class OutOfMemory(HarnessError):
    """The trial's batch did not fit on the device; the message carries the memory figures."""


def _is_out_of_memory(e: BaseException) -> bool:
    import torch

    return isinstance(e, (torch.OutOfMemoryError, MemoryError)) or "out of memory" in str(e).lower()[:200]


def _memory_report(spec: ExperimentSpec) -> str:
    import torch

    t = spec.train
    where = f"out of memory at train.batch_size={t.batch_size}, max_length={t.max_length}, " \
            f"gradient_checkpointing={t.gradient_checkpointing}"
    if torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        return (f"{where}: peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB allocated, "
                f"{torch.cuda.max_memory_reserved() / 2**30:.1f} GiB reserved, of {total / 2**30:.1f} GiB "
                f"({free / 2**30:.1f} GiB free now); lower train.batch_size or max_length, or set "
                f"gradient_checkpointing: true")
    return f"{where}: peak resident memory {_peak_memory_gb():.1f} GiB; lower train.batch_size or max_length"


def _release_device_memory() -> None:
    """Give a failed trial's activations back so the next trial of the grid starts clean."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _reset_peak_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def _peak_memory_gb() -> float:
    from harness.memory_plan import peak_memory_bytes

    return peak_memory_bytes() / 2**30
