"""Merge a LoRA adapter into its base and save a plain HF model directory (the input of GGUF export and
of the quantisation arms)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from copy import deepcopy
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.evaluation.prompting import ensure_chat_template


def merge_adapter(base_model: Any, adapter_dir: str | Path | None, out_dir: str | Path, *,
                  tokenizer: Any = None) -> Path:
    """Merge a PEFT LoRA adapter into its base; save a plain HF directory; return `out_dir`.

    `base_model` is a model name as a spec writes it (resolved and loaded here) or an already loaded
    transformers model, then with its `tokenizer`. A loaded model is deep-copied before the merge, so
    a base shared with other trials is never changed. `adapter_dir=None` saves the base unchanged (the
    base arm of a comparison). The directory holds safetensors weights, config, generation config,
    tokenizer and chat template (the fallback template when the tokenizer has none), and
    `harness-merge.json` saying what was merged.
    """
    out_dir = Path(out_dir)
    base_model, tokenizer, base_name = _base_to_merge_into(base_model, tokenizer, copy=adapter_dir is not None)
    if adapter_dir is not None:
        adapter_dir = Path(adapter_dir)
        if not (adapter_dir / "adapter_config.json").exists():
            raise HarnessError("not a PEFT adapter directory (no adapter_config.json)", where=adapter_dir)
        from peft import PeftModel

        try:
            peft_model = PeftModel.from_pretrained(base_model, str(adapter_dir))
        except (ValueError, RuntimeError, KeyError) as e:  # a shape or module mismatch: wrong base
            raise HarnessError(f"the adapter does not fit base model '{base_name}': {e}", where=adapter_dir) from e
        merged = peft_model.merge_and_unload(safe_merge=True)  # safe: refuses NaNs
    else:
        merged = base_model
    _save(merged, tokenizer, out_dir, {"base": base_name, "adapter": str(adapter_dir) if adapter_dir else None,
                                       "dtype": str(next(merged.parameters()).dtype).removeprefix("torch.")})
    return out_dir


def _base_to_merge_into(base_model: Any, tokenizer: Any, *, copy: bool) -> tuple[Any, Any, str]:
    """(model, tokenizer, name) of the base: loaded in full precision from a name, or a loaded model checked
    fit for a merge (no adapters, not quantised) and, with `copy`, deep-copied."""
    if isinstance(base_model, (str, os.PathLike)):
        from harness.models import load_model, resolve_model

        base_name = str(base_model)
        base_model, loaded_tok = load_model(resolve_model(base_name), device="cpu")
        return base_model, tokenizer or loaded_tok, base_name
    if tokenizer is None:
        raise HarnessError("merge_adapter needs the tokenizer when given a loaded model")
    if hasattr(base_model, "peft_config"):
        raise HarnessError("merge_adapter needs the base model without adapters (got a PEFT model)")
    base_name = getattr(base_model, "name_or_path", "") or getattr(base_model.config, "_name_or_path", "")
    if getattr(base_model.config, "quantization_config", None) is not None:
        raise HarnessError(
            f"base model '{base_name}' is loaded quantised (e.g. 4-bit for QLoRA); merging into quantised "
            "weights loses the adapter's precision: pass the model name instead, and it is loaded in full "
            "precision for the merge")
    # The merge writes into the weights: a base shared with other trials must stay untouched.
    return (deepcopy(base_model) if copy else base_model), tokenizer, base_name


def _save(model: Any, tokenizer: Any, out_dir: Path, record: dict[str, Any]) -> None:
    """Write model, tokenizer (with a chat template) and `harness-merge.json` to `out_dir`, all or nothing."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        ensure_chat_template(tokenizer)
        tokenizer.save_pretrained(tmp)
        (tmp / "harness-merge.json").write_text(json.dumps(record, indent=2) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def weights_size(hf_dir: str | Path) -> int:
    """Bytes of the weight files (safetensors / bin) in an HF model directory."""
    return sum(p.stat().st_size for p in Path(hf_dir).iterdir()
               if p.is_file() and p.suffix in (".safetensors", ".bin"))
