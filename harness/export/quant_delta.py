"""Quantisation delta: the same task eval on the merged model and on its quantised forms.

Arms: "merged" (the adapter merged into the base, in transformers at the base's dtype: bf16 on
CUDA, float32 on CPU), "nf4" (bitsandbytes 4-bit; needs CUDA, otherwise recorded as not run with
the reason), and one arm per GGUF type (e.g. "q8_0", "q4_k_m") run by llama.cpp.

Every held-out prompt is rendered ONCE with `render_prompt` (the tokenizer's chat template) and that
text goes to every runner, so a delta measures quantisation, not a template difference. What is
written to `out_dir`:

    prompts.jsonl       item_id and the exact rendered text every arm received
    merged/             the merged HF model (safetensors, tokenizer, chat template)
    gguf/model-<t>.gguf each GGUF type (plus the f16 the 4-bit types were quantised from)
    eval/<arm>.jsonl    per-item rows, the same format as a trial's eval rows (`score_items`), with each
                        arm's divergence from the merged arm on the item's reference answer in its scores
                        (`harness.evaluation.divergence`: kl, top1_agree, loglik_delta; the merged arm's
                        own rows 0 / 1 / 0) and the tokens it is over (`divergence_tokens`)
    quant.json          per arm: status ("complete" | "not run"), reason, runner, size_bytes,
                        tokens_per_s, metrics (`aggregate`), point delta of each metric vs "merged";
                        paired CIs are the analysis package's job (pair the eval rows by item_id)
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path
from typing import Any, Callable

from harness.data.example import Example
from harness.errors import HarnessError
from harness.evaluation.divergence import (
    REFERENCE_SCORES,
    HFLogits,
    LlamaCppLogits,
    ReferenceLogits,
    ScoredText,
    add_divergence,
    context_for,
    prompt_and_answer,
)
from harness.evaluation.evaluate import aggregate, score_items
from harness.export.converter import PROVENANCE, converter_dir, llama_cpp_version
from harness.export.gguf import export_gguf
from harness.export.merge import merge_adapter, weights_size
from harness.evaluation.prompting import render_prompt
from harness.results import write_json, write_jsonl
from harness.evaluation.runners import HFRunner, LlamaCppRunner

REFERENCE_ARM = "merged"
QUANT_FILE = "quant.json"  # under the out_dir: every arm's status, runner, size and metrics
NF4_NEEDS_CUDA = "bitsandbytes NF4 needs CUDA; this machine has none"


def quant_delta(base_model: Any, tokenizer: Any, adapter_dir: str | Path | None, heldout: list[Example],
                scorer: Callable[[str, str], dict[str, float]], out_dir: str | Path, *,
                types: tuple[str, ...] | list[str] = ("q8_0", "q4_k_m"), max_new_tokens: int = 128,
                batch_size: int = 8, n_ctx: int | None = None,
                n_threads: int | None = None) -> dict[str, list[dict[str, Any]]]:
    """Evaluate merged / nf4 / each GGUF type on `heldout`; return {arm: eval rows} for the arms that ran.

    `base_model` is a loaded transformers model (left unchanged: the merge works on a copy) or a model
    name; `adapter_dir=None` compares the base model's own quantised forms.
    """
    if not heldout:
        raise HarnessError("quant_delta needs at least one held-out item")
    out_dir = Path(out_dir)
    types = list(dict.fromkeys(t.lower() for t in types))
    texts = [render_prompt(tokenizer, ex.prompt) for ex in heldout]  # the one rendering every arm gets
    write_jsonl(out_dir / "prompts.jsonl", [{"item_id": ex.id, "text": t} for ex, t in zip(heldout, texts)])

    merged_dir = merge_adapter(base_model, adapter_dir, out_dir / "merged", tokenizer=tokenizer)
    # Export before any evaluation: an architecture llama.cpp cannot convert fails in seconds.
    ggufs = export_gguf(merged_dir, out_dir / "gguf", types, threads=n_threads) if types else {}

    device, dtype = _device_and_dtype(base_model)
    arms: dict[str, list[dict[str, Any]]] = {}
    info: dict[str, dict[str, Any]] = {}
    # Each item's reference answer after its rendered prompt: the text every arm's divergence is measured on.
    answers = [prompt_and_answer(ex.id, tokenizer, t, ex.reference) for ex, t in zip(heldout, texts)]

    def record(arm: str, runner, extra: dict[str, Any], divergence: Callable[[], list[dict[str, float]]]) -> None:
        gens = runner.generate(texts, max_new_tokens=max_new_tokens)
        if isinstance(runner, LlamaCppRunner):
            runner.close()  # its memory back before the scoring pass loads the same file
        rows = score_items(arm, heldout, gens, scorer)
        add_divergence(rows, answers, divergence())  # one forward pass per item, after generation: no re-run
        write_jsonl(out_dir / "eval" / f"{arm}.jsonl", rows)
        metrics = aggregate(rows)
        arms[arm] = rows
        info[arm] = {"status": "complete", "reason": None, "size_bytes": runner.size_bytes,
                     "tokens_per_s": metrics.get("tokens_per_s"), "metrics": metrics, **extra}

    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=dtype).to(device)
    # The merged model's logits on every answer, kept (in files under out_dir) until the last arm has run.
    reference = ReferenceLogits(HFLogits(merged), answers, under=out_dir)
    try:
        record(REFERENCE_ARM, HFRunner(merged, tokenizer, batch_size, name=REFERENCE_ARM,
                                       size_bytes=weights_size(merged_dir)),
               {"runner": "transformers", "dtype": str(dtype).removeprefix("torch."), "path": str(merged_dir)},
               lambda: [dict(REFERENCE_SCORES) for _ in answers])
        del merged

        nf4_reason = _nf4_unavailable()
        if nf4_reason:
            info["nf4"] = {"status": "not run", "reason": nf4_reason, "runner": "transformers+bitsandbytes",
                           "size_bytes": None, "tokens_per_s": None}
        else:
            model, size = _load_nf4(merged_dir, out_dir / "nf4")
            record("nf4", HFRunner(model, tokenizer, batch_size, name="nf4", size_bytes=size),
                   {"runner": "transformers+bitsandbytes", "dtype": "nf4", "path": str(out_dir / "nf4")},
                   lambda: reference.compare(HFLogits(model)))
            del model

        if types:
            _gguf_arms(record, ggufs, types, texts, heldout, tokenizer, max_new_tokens, n_ctx, n_threads,
                       reference, answers)
    finally:
        reference.close()

    _add_deltas(info)
    write_json(out_dir / QUANT_FILE, {
        "reference_arm": REFERENCE_ARM,
        "arms": info,
        "types": types,
        "gguf_files": {t: {"path": str(p), "size_bytes": p.stat().st_size} for t, p in ggufs.items()},
        "n_items": len(heldout),
        "max_new_tokens": max_new_tokens,
        "prompts_sha256": hashlib.sha256("\0".join(texts).encode()).hexdigest(),
        "adapter": str(adapter_dir) if adapter_dir else None,
        "llama_cpp_python": llama_cpp_version(),
        "converter": _converter_provenance(),
    })
    return arms


def _device_and_dtype(base_model: Any):
    """Where and at what dtype the merged arm runs: the loaded base's own, else bf16 on CUDA, fp32 on CPU."""
    import torch

    if isinstance(base_model, torch.nn.Module):
        param = next(base_model.parameters())
        return param.device, param.dtype
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return device, torch.bfloat16 if device.type == "cuda" else torch.float32


def _gguf_arms(record: Callable, ggufs: dict[str, Path], types: list[str], texts: list[str],
               heldout: list[Example], tokenizer: Any, max_new_tokens: int, n_ctx: int | None,
               n_threads: int | None, reference: ReferenceLogits, answers: list[ScoredText]) -> None:
    """One llama.cpp arm per GGUF type, fed the HF tokenizer's ids of the same rendered prompts; its divergence
    from the merged arm from a second llama.cpp context of the same file, with every position's logits."""
    longest = max(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
    ctx = n_ctx or -(-(longest + max_new_tokens + 16) // 256) * 256
    for t in types:
        # The HF tokenizer's ids go to llama.cpp: the same prompt tokens as the merged arm, always.
        runner = LlamaCppRunner(ggufs[t], n_ctx=ctx, n_threads=n_threads, name=t, tokenizer=tokenizer)
        try:
            # How many prompts llama.cpp's own tokenizer would have tokenised differently (a deployment
            # through llama.cpp or Ollama sees those tokens).
            differ = [ex.id for ex, text in zip(heldout, texts) if runner.llama_encode(text) != runner.encode(text)]
            record(t, runner, {"runner": "llama.cpp", "gguf_type": t, "path": str(ggufs[t]), "n_ctx": ctx,
                               "prompt_tokens": "hf tokenizer",
                               "llama_cpp_tokenizer_differs": {"n": len(differ), "item_ids": differ[:20]}},
                   lambda: _gguf_divergence(reference, ggufs[t], answers, n_threads))
        finally:
            runner.close()


def _gguf_divergence(reference: ReferenceLogits, gguf: Path, answers: list[ScoredText],
                     n_threads: int | None) -> list[dict[str, float]]:
    with LlamaCppLogits(gguf, context_for(answers), n_threads=n_threads) as logits:
        return reference.compare(logits)


def _add_deltas(info: dict[str, dict[str, Any]]) -> None:
    """Each complete arm's point delta of every score vs the merged arm (timings are not scores)."""
    reference = info[REFERENCE_ARM]["metrics"]
    for arm, entry in info.items():
        if arm != REFERENCE_ARM and entry["status"] == "complete":
            entry["delta_vs_merged"] = {k: entry["metrics"][k] - v for k, v in reference.items()
                                        if k in entry["metrics"] and k not in ("n",) and not k.startswith("latency")
                                        and k != "tokens_per_s"}


def _nf4_unavailable() -> str | None:
    import torch

    if not torch.cuda.is_available():
        return NF4_NEEDS_CUDA
    if importlib.util.find_spec("bitsandbytes") is None:
        return "bitsandbytes is not installed (pip install -e '.[cuda]')"
    return None


def _load_nf4(merged_dir: Path, save_dir: Path):
    """The merged model quantised to NF4 on load (as QLoRA does), and its size on disk once saved."""
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(merged_dir, quantization_config=config, dtype=torch.bfloat16,
                                                 device_map={"": 0})
    try:
        model.save_pretrained(save_dir, safe_serialization=True)
        size = weights_size(save_dir)
    except Exception:  # serialisation of 4-bit weights depends on the bitsandbytes version
        size = model.get_memory_footprint()
    return model, size


def _converter_provenance() -> dict[str, Any] | None:
    path = converter_dir() / PROVENANCE
    return json.loads(path.read_text()) if path.exists() else None
