"""`harness bench`: the harness's own training and eval paths, measured beside the raw reference loop.

Training: the code a trial runs (`TrainingBackend.load_base` / `add_adapter` / `fit_sft`, i.e. TRL's
SFTTrainer with the backend's kernels, packing and checkpointing plan) on a random-init real
architecture, and the raw loop of `harness/lora_reference.py` (Unsloth or HF + PEFT, no Trainer) on
the same architecture, batch and device, each in its own process so neither sees the other's memory.
Printed: tokens/s, model TFLOP/s (4·N per token for LoRA, N the frozen parameters), peak memory, the
ratio. `bench_dpo` does the same for a DPO step (`harness.stages.dpo.train_dpo` against the script's
plain DPO loss loop) over the same pairs; `repeat` alternates the two paths to show the spread on a noisy machine.

`--data realestate` measures non-padding tokens/s on the embedded task's real length distribution
(packing at work); `bench_eval` times the task eval's generation batched against one item at a time.
Results go to results/bench/ with the device name and package versions.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from harness.errors import HarnessError
from harness.models import ARCHITECTURES

MODES = ("lora", "qlora")
DEFAULT_REFERENCE = Path(__file__).resolve().parent / "lora_reference.py"  # run as a script, never imported


def check_arch(arch: str) -> str:
    """`random:<arch>` or `<arch>` → the architecture name, or a clear error listing the known ones."""
    name = arch.split(":", 1)[1] if arch.startswith("random:") else arch
    if name not in ARCHITECTURES:
        raise HarnessError(f"unknown architecture '{arch}' (known: "
                           f"{', '.join('random:' + a for a in sorted(ARCHITECTURES))})")
    return name


def reference_mode(mode: str, backend: str, checkpointing: bool | str) -> str:
    """The reference loop's mode that does what the harness path does with `backend` (a `train.backend`
    choice, "auto" as it resolves here: the same machine as the measured process)."""
    from harness.backends import resolve_backend

    return resolve_backend(backend).reference_mode(mode, checkpointing)


def measure_harness(arch: str, mode: str, *, batch_size: int, seq: int, steps: int, warmup: int,
                    backend: str = "auto", checkpointing: bool | str = True, data: str = "random") -> dict[str, Any]:
    """Time `steps` optimiser steps of the trial's SFT path after `warmup`, in this process."""
    import torch
    from datasets import Dataset

    from harness.backends.memory_plan import model_weight_bytes, peak_memory_bytes
    from harness.spec import TrainSpec

    cuda = torch.cuda.is_available()
    if mode == "qlora" and not cuda:
        raise HarnessError("QLoRA (bitsandbytes NF4) needs CUDA; this machine has none")
    chosen, base, model, tok, load_s = _with_adapter(arch, backend, load_in_4bit=mode == "qlora")
    total = warmup + steps + 1  # step times are differences between consecutive step ends
    if data == "random":
        g = torch.Generator().manual_seed(0)
        rows = torch.randint(3, base.config.vocab_size, (batch_size * total, seq), generator=g).tolist()
        dataset = Dataset.from_dict({"input_ids": rows})
    elif data == "realestate":
        dataset = _realestate_dataset(batch_size * total)
    else:
        raise HarnessError(f"unknown bench data '{data}' (known: random, realestate)")
    spec = TrainSpec(batch_size=batch_size, max_length=seq, max_steps=total, learning_rate=1e-4,
                     logging_steps=10**6, gradient_checkpointing=checkpointing, completion_only_loss=data != "random")
    clock = StepClock(warmup)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    outcome = chosen.fit_sft(model, tok, dataset, spec, Path(os.environ.get("TMPDIR", "/tmp")) / "harness-bench",
                             on_tokens=lambda step, seen: clock.mark(seen), count_tokens=data != "random")
    median, median_cpu = clock.medians()
    if data == "random":
        tok_s = batch_size * seq / median
    else:  # real lengths vary per step: tokens over time across the timed steps
        tok_s = clock.tokens_per_s()
    frozen = sum((p.numel() * 2 if p.dtype == torch.uint8 else p.numel())
                 for p in model.parameters() if not p.requires_grad)
    return {"path": "harness", "backend": chosen.name, "arch": arch, "mode": mode, "data": data,
            "bs": batch_size, "seq": seq, "steps": steps, "median_step_s": round(median, 4),
            "median_step_cpu_s": round(median_cpu, 4), "tok_s": round(tok_s),
            "model_tflops_4N": round(4 * frozen * tok_s / 1e12, 2), "frozen": frozen,
            "trainable": outcome.trainable_params, "weight_gib": round(model_weight_bytes(base) / 2**30, 2),
            "peak_gib": round(peak_memory_bytes() / 2**30, 2), "load_s": round(load_s, 1),
            "loss_last": round(outcome.final_loss, 3), "training": outcome.settings}


def _with_adapter(arch: str, backend: str, load_in_4bit: bool = False):
    """(backend, base, model with a fresh LoRA adapter, tokenizer, seconds) for `random:<arch>`: r=16 and
    alpha=16 on every linear projection, as the reference loop."""
    from harness.backends import select_backend
    from harness.models import resolve_model
    from harness.spec import LoraSpec

    chosen = select_backend(backend)
    t0 = time.perf_counter()
    base, tok = chosen.load_base(resolve_model(f"random:{arch}"), "auto", load_in_4bit=load_in_4bit)
    model = chosen.add_adapter(base, LoraSpec(r=16, alpha_policy="r", target_modules="all-linear"))
    return chosen, base, model, tok, time.perf_counter() - t0


class StepClock:
    """Wall and CPU time at each optimiser step's end; the medians over the steps after `warmup`.

    A step is the time between two step ends (data, forward, backward, optimiser, callbacks). CPU time
    (all threads of the process) is the figure to compare on a machine other jobs share."""

    def __init__(self, warmup: int) -> None:
        import torch

        self.warmup, self.cuda, self.marks = warmup, torch.cuda.is_available(), []

    def mark(self, tokens_seen: int = 0) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
        self.marks.append((time.perf_counter(), time.process_time(), tokens_seen))

    def medians(self) -> tuple[float, float]:
        timed = self.marks[self.warmup:]
        if len(timed) < 2:
            raise HarnessError(f"{len(self.marks)} steps ran: too few to time after {self.warmup} warm-up steps")
        wall = sorted(b[0] - a[0] for a, b in zip(timed, timed[1:]))
        cpu = sorted(b[1] - a[1] for a, b in zip(timed, timed[1:]))
        return wall[len(wall) // 2], cpu[len(cpu) // 2]

    def tokens_per_s(self) -> float:
        timed = self.marks[self.warmup:]
        return (timed[-1][2] - timed[0][2]) / (timed[-1][0] - timed[0][0])


def _realestate_dataset(n: int):
    """`n` rows of the embedded task's training pairs (repeated as needed), as a trial renders them."""
    from harness.data.prepare import prepare_data
    from harness.models import harness_home
    from harness.spec import DataSpec
    from harness.backends import sft_dataset

    train = prepare_data(DataSpec(builtin="realestate"), harness_home() / "data").train
    return sft_dataset((train * (n // len(train) + 1))[:n])


def run_isolated(fn: str, **kwargs: Any) -> dict[str, Any]:
    """Run `measure_harness`/`measure_eval` in a fresh process: a clean device and a clean peak."""
    code = ("import json,sys; from harness.backends.unsloth import import_first_if_present; "
            f"import_first_if_present(); from harness.bench import {fn}; print('BENCH ' + json.dumps({fn}(**json.loads(sys.argv[1]))))")
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(kwargs)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": _pythonpath()})
    for line in proc.stdout.splitlines():
        if line.startswith("BENCH "):
            return json.loads(line[6:])
    return {"path": "harness", "error": _last_error(proc)}


def run_reference(arch: str, mode: str, *, batch_size: int, seq: int, steps: int, warmup: int, script: Path,
                  pairs: Path | None = None) -> dict[str, Any]:
    """The raw loop of `harness/lora_reference.py` (`run`, or `dpo` over `pairs`) on `random:<arch>`,
    written once to the model cache (`harness.models.materialize`)."""
    from harness.models import materialize, resolve_model

    if not script.exists():
        return {"path": "reference", "mode": mode, "error": f"not run: {script} not found (pass --reference)"}
    env = {**os.environ, "BS": str(batch_size), "SEQ": str(seq), "STEPS": str(steps), "WARM": str(warmup),
           "HF_HUB_OFFLINE": "1"}
    model_dir = materialize(resolve_model(f"random:{arch}"))
    command = ["run", mode, str(model_dir)] if pairs is None else ["dpo", mode, str(model_dir), str(pairs)]
    proc = subprocess.run([sys.executable, str(script), *command], capture_output=True, text=True, env=env)
    for line in proc.stdout.splitlines()[::-1]:
        if line.startswith("{"):
            return {"path": "reference", **json.loads(line)}
    return {"path": "reference", "mode": mode, "error": _last_error(proc)}


def side_by_side(harness: Callable[[], dict[str, Any]], reference: Callable[[], dict[str, Any]] | None,
                 repeat: int = 1) -> dict[str, Any]:
    """Harness path, then reference loop, `repeat` times alternating; the ratios of each round.

    `harness`/`reference` in the result are the round with the median tokens/s ratio."""
    rounds = []
    for _ in range(max(1, repeat)):
        h = harness()
        r = reference() if reference is not None and "error" not in h else None
        rounds.append((h, r))
        if "error" in h or (r is not None and "error" in r):
            break
    done = [(h, r) for h, r in rounds if r is not None and "error" not in h and "error" not in r]
    if not done:
        h, r = rounds[-1]
        return {"harness": h, **({"reference": r} if r is not None else {})}
    ratios = sorted((h["tok_s"] / r["tok_s"], i) for i, (h, r) in enumerate(done))
    h, r = done[ratios[(len(ratios) - 1) // 2][1]]  # the lower median
    return {"harness": h, "reference": r, "ratio_tok_s": round(h["tok_s"] / r["tok_s"], 3),
            "ratio_peak": round(h["peak_gib"] / r["peak_gib"], 3),
            **_cpu_ratio(h, r),
            "rounds": [{"harness_tok_s": one["tok_s"], "reference_tok_s": raw["tok_s"],
                        "ratio_tok_s": round(one["tok_s"] / raw["tok_s"], 3),
                        "ratio_peak": round(one["peak_gib"] / raw["peak_gib"], 3), **_cpu_ratio(one, raw)}
                       for one, raw in done]}


def _cpu_ratio(harness: dict[str, Any], reference: dict[str, Any]) -> dict[str, float]:
    """Throughput per CPU second, harness over reference (both steps carry the same tokens)."""
    if not harness.get("median_step_cpu_s") or not reference.get("median_step_cpu_s"):
        return {}
    return {"ratio_tok_per_cpu_s": round(reference["median_step_cpu_s"] / harness["median_step_cpu_s"], 3)}


def bench_training(arch: str, mode: str = "lora", *, batch_size: int = 4, seq: int = 2048, steps: int = 10,
                   warmup: int = 3, backend: str = "auto", checkpointing: bool | str = True, data: str = "random",
                   reference: Path | None = DEFAULT_REFERENCE, repeat: int = 1) -> dict[str, Any]:
    """Harness path and reference loop, one after the other on this device; their ratios."""
    arch = check_arch(arch)
    if mode not in MODES:
        raise HarnessError(f"unknown mode '{mode}' (known: {', '.join(MODES)})")
    if data == "realestate" and reference is not None:
        reference = None  # the comparison there is against full-length random tokens, not the raw loop
    shape = dict(batch_size=batch_size, seq=seq, steps=steps, warmup=warmup)

    def harness() -> dict[str, Any]:
        return run_isolated("measure_harness", arch=arch, mode=mode, backend=backend,
                            checkpointing=checkpointing, data=data, **shape)

    def ref() -> dict[str, Any]:
        ref_mode = reference_mode(mode, backend, checkpointing)
        return run_reference(arch, ref_mode, script=Path(reference), **shape)

    return {"kind": "training", "arch": arch, "mode": mode, "data": data,
            **side_by_side(harness, ref if reference is not None else None, repeat), "environment": environment()}


def dpo_pairs(tokenizer, n: int, seq: int, seed: int = 0) -> list[dict[str, Any]]:
    """`n` conversational preference pairs of random words, each of which is one token, sized so that
    every prompt + answer renders (chat template) to exactly `seq` tokens: no batch pads, and both loops
    do the same work whatever order they take the pairs in."""
    import random

    words = []
    for token_id in range(len(tokenizer)):
        token = tokenizer.convert_ids_to_tokens(token_id)
        if token.startswith("Ġ") and token[1:].isascii() and token[1:].isalpha() and \
                tokenizer(" " + token[1:], add_special_tokens=False)["input_ids"] == [token_id]:
            words.append(token[1:])
        if len(words) == 2000:
            break
    rng = random.Random(seed)

    def pair(prompt_words: int, answer_words: int) -> dict[str, Any]:
        def text(k: int) -> str:
            return "".join(" " + rng.choice(words) for _ in range(k))

        return {"prompt": [{"role": "user", "content": text(prompt_words)}],
                "chosen": [{"role": "assistant", "content": text(answer_words)}],
                "rejected": [{"role": "assistant", "content": text(answer_words)}]}

    def length(row: dict[str, Any], answer: str) -> int:
        rendered = tokenizer.apply_chat_template(row["prompt"] + row[answer], tokenize=False)
        return len(tokenizer(rendered, add_special_tokens=False)["input_ids"])

    template = length(pair(1, 1), "chosen") - 2  # the chat template's own tokens
    prompt_words = (seq - template) // 2
    rows = [pair(prompt_words, seq - template - prompt_words) for _ in range(n)]
    if prompt_words < 1 or any(length(row, answer) != seq for row in rows[:2] for answer in ("chosen", "rejected")):
        raise HarnessError(f"bench pairs: cannot render pairs of exactly {seq} tokens with this tokenizer")
    return rows


def measure_harness_dpo(arch: str, *, batch_size: int, seq: int, steps: int, warmup: int, pairs: str,
                        backend: str = "auto") -> dict[str, Any]:
    """Time `steps` DPO steps of the trial's path (`train_dpo`: TRL's DPOTrainer, reference log-probs
    computed once) after `warmup`, on a fresh LoRA adapter, in this process."""
    import torch

    from harness.backends.memory_plan import peak_memory_bytes
    from harness.data.example import Example
    from harness.stages.dpo import DPOSpec, train_dpo

    cuda = torch.cuda.is_available()
    chosen, _, model, tok, load_s = _with_adapter(arch, backend)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    total = warmup + steps + 1
    rows = [json.loads(line) for line in Path(pairs).read_text().splitlines() if line.strip()][:batch_size * total]
    examples = [Example(id=str(i), prompt=row["prompt"], reference=row["chosen"][0]["content"],
                        rejected=row["rejected"][0]["content"]) for i, row in enumerate(rows)]
    clock = StepClock(warmup)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    outcome = train_dpo(model, tok, examples, DPOSpec(batch_size=batch_size, max_length=seq, max_steps=total), 0,
                        Path(os.environ.get("TMPDIR", "/tmp")) / "harness-bench-dpo",
                        on_step=lambda step: clock.mark(), backend=chosen)
    median, median_cpu = clock.medians()
    tok_s = 2 * batch_size * seq / median  # chosen and rejected, no padding (see `dpo_pairs`)
    return {"path": "harness", "backend": chosen.name, "arch": arch, "bs": batch_size, "seq": seq, "steps": steps,
            "median_step_s": round(median, 4), "median_step_cpu_s": round(median_cpu, 4), "tok_s": round(tok_s),
            "model_tflops_4N": round(4 * frozen * tok_s / 1e12, 2), "frozen": frozen,
            "trainable": outcome.trainable_params, "peak_gib": round(peak_memory_bytes() / 2**30, 2),
            "load_s": round(load_s, 1), "loss_last": round(outcome.log[-1]["loss"], 3) if outcome.log else None}


def bench_dpo(arch: str, *, batch_size: int = 4, seq: int = 1024, steps: int = 10, warmup: int = 3,
              backend: str = "auto", reference: Path | None = DEFAULT_REFERENCE, repeat: int = 1) -> dict[str, Any]:
    """The harness's DPO step against the plain DPO loss loop, over the same pairs; their ratios."""
    from harness.models import load_tokenizer, resolve_model

    arch = check_arch(arch)
    pairs = Path(os.environ.get("TMPDIR", "/tmp")) / "harness-bench-dpo" / f"pairs-{seq}.jsonl"
    pairs.parent.mkdir(parents=True, exist_ok=True)
    rows = dpo_pairs(load_tokenizer(resolve_model(f"random:{arch}")), batch_size * (warmup + steps + 1), seq)
    pairs.write_text("".join(json.dumps(row) + "\n" for row in rows))
    shape = dict(batch_size=batch_size, seq=seq, steps=steps, warmup=warmup)

    def harness() -> dict[str, Any]:
        return run_isolated("measure_harness_dpo", pairs=str(pairs), backend=backend, arch=arch, **shape)

    def ref() -> dict[str, Any]:
        ref_mode = reference_mode("lora", backend, False)  # DPO recomputes no layer
        return run_reference(arch, ref_mode, script=Path(reference), pairs=pairs, **shape)

    return {"kind": "dpo", "arch": arch, "mode": "lora", "data": "random-pairs",
            **side_by_side(harness, ref if reference is not None else None, repeat), "environment": environment()}


def measure_eval(model: str, *, items: int, max_new_tokens: int, batch_size: int,
                 sequential_items: int | None = None) -> dict[str, Any]:
    """The task eval's generation (`harness.evaluation.evaluate.generate`) on `items` held-out prompts, batched and
    one at a time (on the first `sequential_items`, scaled per item)."""
    import torch

    from harness.data.prepare import prepare_data
    from harness.evaluation.evaluate import generate
    from harness.models import harness_home, load_model, resolve_model
    from harness.spec import DataSpec

    heldout = prepare_data(DataSpec(builtin="realestate"), harness_home() / "data").heldout[:items]
    prompts = [ex.prompt for ex in heldout]
    m, tok = load_model(resolve_model(model))
    generate(m, tok, prompts[:2], max_new_tokens=8, batch_size=2)  # warm-up: kernels, caches

    def timed(ps: list, bs: int) -> tuple[float, int]:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        gens = generate(m, tok, ps, max_new_tokens=max_new_tokens, batch_size=bs)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter() - t0, sum(g.output_tokens for g in gens)

    batched_s, batched_tokens = timed(prompts, batch_size)
    n_seq = min(sequential_items or items, items)
    seq_s, seq_tokens = timed(prompts[:n_seq], 1)
    per_item_seq = seq_s / n_seq
    return {"kind": "eval", "model": model, "items": len(prompts), "batch_size": batch_size,
            "max_new_tokens": max_new_tokens, "batched_s": round(batched_s, 2),
            "batched_tokens_per_s": round(batched_tokens / batched_s, 1),
            "sequential_items": n_seq, "sequential_s_per_item": round(per_item_seq, 3),
            "sequential_tokens_per_s": round(seq_tokens / seq_s, 1),
            "speedup": round(per_item_seq * len(prompts) / batched_s, 2)}


def bench_eval(model: str = "smollm2-135m-instruct", *, items: int = 100, max_new_tokens: int = 160,
               batch_size: int = 100, sequential_items: int | None = None) -> dict[str, Any]:
    result = run_isolated("measure_eval", model=model, items=items, max_new_tokens=max_new_tokens,
                          batch_size=batch_size, sequential_items=sequential_items)
    return {**result, "environment": environment()}


def environment() -> dict[str, Any]:
    """The device and the versions a figure was measured with."""
    from harness.trial.manifest import hardware, package_versions

    return {"hardware": hardware(), "packages": package_versions(), "python": sys.version.split()[0],
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def save(result: dict[str, Any], results_dir: Path) -> Path:
    """Write one bench result to results/bench/<device>/<name>.json (atomically)."""
    from harness.results import write_json

    device = _slug(result["environment"]["hardware"].get("gpu") or "cpu").lower()
    if result["kind"] == "training":
        h = result["harness"]
        name = f"train-{result['arch']}-{result['mode']}-{result['data']}-{h.get('backend', 'failed')}" \
               f"-gc{h.get('training', {}).get('checkpointing', {}).get('checkpointed_layers', 'x')}"
    elif result["kind"] == "dpo":
        name = f"dpo-{result['arch']}-{result['harness'].get('backend', 'failed')}"
    else:
        name = f"eval-{result.get('model', 'model')}"
    path = results_dir / "bench" / device / f"{_slug(name)}.json"
    write_json(path, result)
    return path


def format_result(result: dict[str, Any]) -> str:
    """A few lines a person reads: tokens/s, TFLOP/s, peak memory, ratios."""
    if result["kind"] == "eval":
        if "error" in result:
            return f"eval bench failed: {result['error']}"
        return (f"eval generation, {result['items']} items: batched {result['batched_s']} s "
                f"({result['batched_tokens_per_s']} tok/s); one at a time {result['sequential_s_per_item']} s/item "
                f"({result['sequential_tokens_per_s']} tok/s); speedup {result['speedup']}x")
    lines = []
    for key in ("harness", "reference"):
        r = result.get(key)
        if r is None:
            continue
        if "error" in r:
            lines.append(f"{key:9s} {r.get('mode', '')}: {r['error']}")
            continue
        label = r.get("backend") or r.get("mode")
        plan = r.get("training", {}).get("checkpointing")
        gc = f", checkpointed {plan['checkpointed_layers']}/{plan['total_layers']} layers" if plan else ""
        lines.append(f"{key:9s} {label}: {r['tok_s']:,} tok/s, {r['model_tflops_4N']} TFLOP/s (4N), "
                     f"peak {r['peak_gib']} GiB{gc}")
    if "ratio_tok_s" in result:
        cpu = f", {result['ratio_tok_per_cpu_s']}x tokens per CPU second" if "ratio_tok_per_cpu_s" in result else ""
        lines.append(f"ratio     harness/reference: {result['ratio_tok_s']}x tokens/s, {result['ratio_peak']}x peak{cpu}")
        if len(result.get("rounds", [])) > 1:
            each = ", ".join(f"{r['ratio_tok_s']}x" for r in result["rounds"])
            lines.append(f"rounds    tokens/s ratios (alternating runs): {each}; the median round is shown")
    return "\n".join(lines)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text).strip("-")


def _pythonpath() -> str:
    root = str(Path(__file__).resolve().parents[1])
    return os.pathsep.join([root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])


def _last_error(proc: subprocess.CompletedProcess) -> str:
    lines = [line for line in (proc.stderr or "").splitlines() if line.strip()]
    tail = next((line for line in reversed(lines) if "Error" in line or "error" in line), lines[-1] if lines else "")
    return f"exit {proc.returncode}: {tail.strip()[:500]}"
