"""Greedy, batched generation on the frozen held-out split, scored item by item."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from harness.data.example import Example
from harness.evaluation.prompting import render_prompt, stop_token_ids


@dataclass
class Generation:
    text: str
    latency_s: float  # wall time of the call that produced it (its batch)
    input_tokens: int
    output_tokens: int
    batch: int  # which call produced it: items of one batch share its latency


def generate(model, tokenizer, prompts: list[list[dict[str, str]]], *, max_new_tokens: int, batch_size: int,
             progress: Callable[[int], None] | None = None) -> list[Generation]:
    """Greedy completions for chat prompts, batched with left padding, in the input order."""
    texts = [render_prompt(tokenizer, p) for p in prompts]
    return generate_texts(model, tokenizer, texts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                          progress=progress)


def generate_texts(model, tokenizer, texts: list[str], *, max_new_tokens: int, batch_size: int,
                   progress: Callable[[int], None] | None = None) -> list[Generation]:
    """Greedy completions for already-rendered prompt texts (see `harness.evaluation.prompting.render_prompt`)."""
    import torch

    encoded = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    # Similar lengths in a batch waste less compute on padding.
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    stops = stop_token_ids(tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    device = next(model.parameters()).device
    out: list[Generation | None] = [None] * len(texts)
    was_training = model.training
    model.eval()
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        width = max(len(encoded[i]) for i in idx)
        ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            ids[row, width - len(encoded[i]):] = torch.tensor(encoded[i])
            mask[row, width - len(encoded[i]):] = 1
        t0 = time.perf_counter()
        with torch.inference_mode():
            gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                 max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=stops,
                                 pad_token_id=pad_id)
        elapsed = time.perf_counter() - t0
        for row, i in enumerate(idx):
            new = gen[row, width:].tolist()
            n = next((k + 1 for k, t in enumerate(new) if t in stops), len(new))
            text = tokenizer.decode(new[:n], skip_special_tokens=True).strip()
            out[i] = Generation(text, elapsed, len(encoded[i]), n, start // batch_size)
        if progress:
            progress(len(idx))
    model.train(was_training)
    return out  # type: ignore[return-value]


def score_items(arm: str, examples: list[Example], generations: list[Generation],
                scorer: Callable[[str, str], dict[str, float]]) -> list[dict[str, Any]]:
    """Per-item rows as recorded in eval/<arm>.jsonl."""
    return [
        {"item_id": ex.id, "arm": arm, "prediction": g.text, "reference": ex.reference,
         "scores": scorer(g.text, ex.reference), "latency_s": g.latency_s, "input_tokens": g.input_tokens,
         "output_tokens": g.output_tokens, "batch": g.batch, "cluster": ex.cluster}
        for ex, g in zip(examples, generations)
    ]


def aggregate(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Mean of every score over items, latency percentiles and generation throughput."""
    if not rows:
        return {"n": 0}
    metrics: dict[str, float] = {"n": len(rows)}
    for key in rows[0]["scores"]:
        metrics[key] = float(np.mean([r["scores"].get(key, 0.0) for r in rows]))
    lat = np.array([r["latency_s"] for r in rows], dtype=float)  # NaN: a call that failed
    metrics["latency_p50_s"] = float(np.nanpercentile(lat, 50)) if np.isfinite(lat).any() else float("nan")
    metrics["latency_p95_s"] = float(np.nanpercentile(lat, 95)) if np.isfinite(lat).any() else float("nan")
    # Each batch's time is shared by its items: count it once per call.
    busy = float(np.nansum(list({r["batch"]: r["latency_s"] for r in rows}.values())))
    metrics["busy_s"] = busy
    metrics["tokens_per_s"] = float(sum(r["output_tokens"] for r in rows) / busy) if busy else float("nan")
    if any("cost_usd" in r for r in rows):  # priced calls (endpoints)
        metrics["cost_per_1k_calls_usd"] = 1000 * float(np.mean([r.get("cost_usd", 0.0) for r in rows]))
    failed = sum(1 for r in rows if r.get("error"))
    if failed:
        metrics["failed_calls"] = failed
    return metrics


def local_cost_per_1k_calls(metrics: dict[str, float], device_price_per_hour: float) -> float:
    """What 1,000 calls cost on a local device at its hourly price, from the measured busy time."""
    return device_price_per_hour / 3600 * metrics["busy_s"] / metrics["n"] * 1000
