"""A synthetic study on disk, in the exact layout `harness.results` defines, with effects known in advance.

For tests and for trying the analysis without training anything: a LoRA-rank grid × seeds, each trial
with a base and a tuned arm evaluated on the same held-out items (grouped into clusters), training
logs, costs, and optionally a failed trial.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from harness.results import TrialResult, read_json, trial_dir_name, write_json, write_jsonl

FIELDS = ("price", "rooms", "area", "city")
SPLIT_HASH = "synthetic-split-0001"


def _eval_rows(arm: str, field_p: np.ndarray, valid_p: np.ndarray, clusters: np.ndarray | None,
               rng: np.random.Generator, batch_size: int = 8) -> list[dict[str, Any]]:
    rows = []
    n = field_p.size
    batch_latency = {b: float(rng.uniform(0.8, 1.2)) for b in range(0, n, batch_size)}
    for i in range(n):
        valid = bool(rng.random() < valid_p[i])
        fields = {f"field.{f}": float(rng.random() < field_p[i]) for f in FIELDS}
        accuracy = sum(fields.values()) / len(fields)
        batch = (i // batch_size) * batch_size
        rows.append({
            "item_id": f"item-{i:04d}", "arm": arm, "prediction": "{}", "reference": "{}",
            "scores": {"json_valid": float(valid), "exact_match": float(valid and accuracy == 1.0),
                       "field_accuracy": accuracy, **fields},
            "latency_s": batch_latency[batch], "input_tokens": int(rng.integers(80, 120)),
            "output_tokens": int(rng.integers(20, 60)), "batch": batch // batch_size,
            "cluster": f"hood-{clusters[i]:02d}" if clusters is not None else None})
    return rows


def _aggregate(rows: list[dict[str, Any]]) -> dict[str, float]:
    out: dict[str, float] = {"n": len(rows)}
    for key in rows[0]["scores"]:
        out[key] = float(np.mean([r["scores"][key] for r in rows]))
    lat = np.array([r["latency_s"] for r in rows])
    out["latency_p50_s"], out["latency_p95_s"] = float(np.percentile(lat, 50)), float(np.percentile(lat, 95))
    busy = sum({r["batch"]: r["latency_s"] for r in rows}.values())
    out["tokens_per_s"] = sum(r["output_tokens"] for r in rows) / busy
    return out


def _write_trial(tdir: Path, name: str, number: int, params: dict[str, Any], seed: int,
                 arms: dict[str, list[dict[str, Any]]], *, size: float, rng: np.random.Generator,
                 spec: dict[str, Any]) -> None:
    """One complete trial: training log, eval rows per arm, metrics with a cost block, manifest, result."""
    steps = np.arange(1, 41) * 5
    write_jsonl(tdir / "train_log.jsonl", [
        {"step": int(k), "epoch": float(k / 200), "loss": float(2.5 * np.exp(-k / (60 + size)) + 0.4
                                                                 + rng.normal(0, 0.03)),
         "learning_rate": 2e-4 * (1 - k / 200), "grad_norm": float(rng.uniform(0.5, 2))}
        for k in steps])
    for arm, rows in arms.items():
        write_jsonl(tdir / "eval" / f"{arm}.jsonl", rows)
    metrics = {**{arm: _aggregate(rows) for arm, rows in arms.items()},
               "cost": {"wall_s": 30.0 + size, "cpu_s": 25.0 + size, "device_s": 10.0 + size / 2,
                        "tokens_trained": 40_000, "train_steps": 200, "final_loss": 0.5,
                        "peak_mem_gb": 1.0 + size / 64}}
    write_json(tdir / "metrics.json", metrics)
    write_json(tdir / "manifest.json", {"experiment": name, "trial": number, "params": params, "seed": seed,
                                        "split_hash": SPLIT_HASH, "spec": spec})
    TrialResult(number=number, status="complete", params=params, metrics=metrics).write(tdir)


def write_synthetic_study(root: str | Path, *, name: str = "synthetic", ranks: Sequence[int] = (8, 16),
                          seeds: Sequence[int] = (0, 1), n_items: int = 60, n_clusters: int | None = 12,
                          base_p: float = 0.45, gain_per_doubling: float = 0.08, seed_sd: float = 0.02,
                          failed_trial: bool = True, seed: int = 0) -> Path:
    """Write `root/name/trial-NNNN/...` for every rank × seed and return the study directory.

    The tuned arm's per-field success probability is `base_p + gain_per_doubling * log2(rank / 4)`
    plus a per-seed shift of SD `seed_sd`; the base arm is identical in every trial (as the harness
    caches it). Items fall into `n_clusters` sources (None: every item its own). With `failed_trial`,
    one extra trial (rank 32) fails before evaluation.
    """
    rng = np.random.default_rng(seed)
    study = Path(root) / name
    item_p = np.clip(base_p + rng.normal(0, 0.15, n_items), 0.05, 0.9)
    clusters = rng.integers(0, n_clusters, n_items) if n_clusters else None
    base_rows = _eval_rows("base", item_p, np.clip(item_p + 0.2, 0, 1), clusters, np.random.default_rng(seed + 1))
    number = 0
    for rank in ranks:
        for s in seeds:
            trial_rng = np.random.default_rng([seed, rank, s])
            shift = gain_per_doubling * np.log2(rank / 4) + trial_rng.normal(0, seed_sd)
            tuned_rows = _eval_rows("tuned", np.clip(item_p + shift, 0, 1), np.full(n_items, 0.95), clusters,
                                    trial_rng)
            _write_trial(study / trial_dir_name(number), name, number, {"lora.r": rank, "train.seed": s}, s,
                         {"base": base_rows, "tuned": tuned_rows}, size=rank, rng=trial_rng,
                         spec={"eval": {"metric": "field_accuracy"}, "tracking": {"project": "harness-test"}})
            number += 1
    if failed_trial:
        params = {"lora.r": 32, "train.seed": seeds[0]}
        tdir = study / trial_dir_name(number)
        write_json(tdir / "manifest.json", {"experiment": name, "trial": number, "params": params,
                                            "seed": seeds[0], "split_hash": SPLIT_HASH})
        TrialResult(number=number, status="failed", params=params,
                    reason="RuntimeError: CUDA out of memory (synthetic)").write(tdir)
    return study


def write_synthetic_grid(root: str | Path, grid: dict[str, list[Any]], effect: Callable[[dict[str, Any]], float], *,
                         name: str = "synthetic-grid", seeds: Sequence[int] = (0, 1), n_items: int = 200,
                         base_p: float = 0.45, seed_sd: float = 0.03,
                         not_run: Callable[[dict[str, Any]], str | None] | None = None,
                         reference: dict[str, Any] | None = None, seed: int = 0) -> Path:
    """A full-factorial study: every point of `grid` × seed is a trial, numbered as `harness.grid.study` numbers
    them (keys sorted, seeds innermost), with the grid and `reference` recorded in its manifests.

    The tuned arm answers each field of item i correctly with probability `item_p[i] + effect(params)`,
    plus a per-seed shift of SD `seed_sd` shared by every grid point (a training seed's data order and
    initialisation); the base arm is one evaluation, the same in every trial. A point for which
    `not_run(params)` gives a reason is recorded as not run (as a QLoRA trial without CUDA is).
    """
    rng = np.random.default_rng(seed)
    study = Path(root) / name
    item_p = np.clip(base_p + rng.normal(0, 0.15, n_items), 0.05, 0.9)
    seed_shift = {s: rng.normal(0, seed_sd) for s in seeds}
    base_rows = _eval_rows("base", item_p, np.clip(item_p + 0.2, 0, 1), None, np.random.default_rng(seed + 1))
    spec = {"eval": {"metric": "field_accuracy"}, "tracking": {"project": "harness-test"},
            "search": {"grid": grid, "seeds": list(seeds), "sampler": "grid"},
            "report": {"reference": dict(reference or {})}}
    keys = sorted(grid)
    number = 0
    for combo in itertools.product(*(grid[k] for k in keys)):
        for s in seeds:
            params = {**dict(zip(keys, combo)), "train.seed": s}
            tdir = study / trial_dir_name(number)
            reason = not_run(params) if not_run else None
            if reason:
                TrialResult(number=number, status="not_run", params=params, reason=reason).write(tdir)
            else:
                trial_rng = np.random.default_rng([seed, number, s])
                p = np.clip(item_p + effect(params) + seed_shift[s], 0, 1)
                tuned_rows = _eval_rows("tuned", p, np.full(n_items, 0.95), None, trial_rng)
                _write_trial(tdir, name, number, params, s, {"base": base_rows, "tuned": tuned_rows},
                             size=float(params.get("lora.r", 8)), rng=trial_rng, spec=spec)
            number += 1
    return study


def write_synthetic_forgetting(study_dir: str | Path, *, tasks: Sequence[str] = ("arc_easy_local", "piqa_local"),
                               n_items: int = 80, drop: float = 0.05, layout: str = "study", seed: int = 0) -> Path:
    """lm-eval rows for the study's base model and every complete trial's adapter, where each adapter answers
    each benchmark item correctly with the base's probability minus `drop`.

    `layout="study"`: `study_dir/forgetting/` as `harness.capabilities.forgetting.forgetting_check` leaves it.
    `layout="trial"`: `trial-NNNN/lm_eval/` plus `study_dir/forgetting-base/<key>/`, as `harness.trial`
    leaves them when the spec has `forgetting:` (the manifests gain that section).
    """
    study_dir = Path(study_dir)
    rng = np.random.default_rng(seed)
    p = {task: rng.uniform(0.3, 0.8, n_items) for task in tasks}

    def write(folder: Path, shift: float) -> None:
        # The same random draws for every model: an adapter changes the answers to a few items, not all.
        draws = np.random.default_rng(seed + 1)
        for j, task in enumerate(tasks):
            choices = 4 if j % 2 == 0 else 2  # multiple choice: what chance accuracy is read from
            write_jsonl(folder / "lm_eval" / f"{task}.jsonl", [
                {"task": task, "doc_id": i, "correct": int(draws.random() < p[task][i] - shift),
                 "correct_norm": None, "doc_hash": f"{task}-{i}", "loglikelihoods": [-1.0] * choices}
                for i in range(n_items)])
        write_json(folder / "lm_eval" / "summary.json", {"tasks": list(tasks)})

    complete = [t for t in sorted(study_dir.glob("trial-*"))
                if (r := TrialResult.read(t)) is not None and r.status == "complete"]
    if layout == "trial":
        key = hashlib.sha256(json.dumps([None, list(tasks), n_items]).encode()).hexdigest()[:16]
        root = study_dir / "forgetting-base" / key
        write(root, 0.0)
        for tdir in complete:
            write(tdir, drop)
            manifest = read_json(tdir / "manifest.json")
            manifest["spec"] = {**manifest.get("spec", {}), "forgetting": {"tasks": list(tasks), "limit": n_items}}
            write_json(tdir / "manifest.json", manifest)
        return root
    root = study_dir / "forgetting"
    write(root / "base", 0.0)
    trials = {}
    for tdir in complete:
        result = TrialResult.read(tdir)
        write(root / tdir.name, drop)
        trials[tdir.name] = {"base": "base", "adapter": str(tdir / "adapter"), "dir": tdir.name,
                             "params": result.params, "comparison": []}
    write_json(root / "forgetting.json", {"tasks": list(tasks), "limit": n_items, "trials": trials,
                                          "bases": {"base": {"model": "random:tiny"}}})
    return root


def write_synthetic_quant(folder: str | Path, *, n_items: int = 80, loss: dict[str, float] | None = None,
                          seed: int = 0) -> Path:
    """A `harness.export.quant_delta` output folder: eval rows of the merged model and its quantised forms
    (each losing `loss[arm]` of per-field accuracy), plus an NF4 arm recorded as not run."""
    folder = Path(folder)
    loss = loss if loss is not None else {"q8_0": 0.0, "q4_k_m": 0.1}
    rng = np.random.default_rng(seed)
    item_p = rng.uniform(0.3, 0.8, n_items)
    arms = {"merged": 0.0, **loss}
    info: dict[str, Any] = {}
    for arm, shift in arms.items():
        # The same random draws for every arm: quantisation flips a few answers, it does not redraw them all.
        rows = _eval_rows(arm, np.clip(item_p - shift, 0, 1), np.full(n_items, 0.9), None,
                          np.random.default_rng(seed + 1))
        write_jsonl(folder / "eval" / f"{arm}.jsonl", rows)
        info[arm] = {"status": "complete", "reason": None, "metrics": _aggregate(rows)}
    info["nf4"] = {"status": "not run", "reason": "bitsandbytes NF4 needs CUDA; this machine has none"}
    write_json(folder / "quant.json", {"reference_arm": "merged", "arms": info, "types": list(loss),
                                       "n_items": n_items})
    return folder
