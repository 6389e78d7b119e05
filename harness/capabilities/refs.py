"""Model references: what a name, a model folder or a trial directory means, and evaluating several of them.

A reference is a trial directory (`results/<exp>/trial-NNNN`: base from its manifest, adapter from
`adapter/`), the `adapter/` folder of a trial, or anything `harness.models.resolve_model` takes: an
embedded name (`smollm2-135m-instruct`), `random:<arch>`, a local model directory (a merged model, say),
or a hub id. A trial's adapter is attached with PEFT and kept in memory: no merge, no re-save.
"""

from __future__ import annotations

import gc
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from harness.capabilities.evaluate import CapabilityResult, evaluate_capabilities
from harness.capabilities.tasks import resolve_tasks
from harness.errors import HarnessError
from harness.results import RESULT_FILE, read_json


@dataclass(frozen=True)
class ModelRef:
    """What a model reference names: a base model, optionally with a LoRA adapter from a trial."""

    ref: str
    base: str  # anything harness.models.resolve_model understands
    adapter: Path | None = None  # a PEFT adapter directory
    dtype: str = "auto"
    load_in_4bit: bool = False
    trial_dir: Path | None = None

    @property
    def base_key(self) -> tuple[str, str, bool]:
        """Refs with the same key share one loaded base model."""
        return (self.base, self.dtype, self.load_in_4bit)

    def describe(self) -> str:
        return f"{self.base} + adapter {self.adapter}" if self.adapter else self.base


@dataclass
class LoadedModel:
    model: Any  # a transformers model, or a PeftModel around one when the ref has an adapter
    tokenizer: Any
    ref: ModelRef


def trial_ref(ref: str, trial_dir: Path) -> ModelRef:
    """The reference of a complete trial: its manifest's base model with its `adapter/`; a HarnessError otherwise."""
    manifest_path = trial_dir / "manifest.json"
    if not manifest_path.exists():
        raise HarnessError("not a trial directory (no manifest.json)", where=trial_dir)
    result = read_json(trial_dir / RESULT_FILE) if (trial_dir / RESULT_FILE).exists() else None
    if result is None:
        raise HarnessError(f"the trial never finished (no {RESULT_FILE}): its adapter may be incomplete",
                           where=trial_dir)
    if result.get("status") != "complete":
        raise HarnessError(f"the trial {result.get('status')}: {result.get('reason') or 'no reason recorded'}",
                           where=trial_dir)
    adapter = trial_dir / "adapter"
    if not (adapter / "adapter_config.json").exists():
        raise HarnessError("the trial has no adapter (adapter/adapter_config.json missing)", where=trial_dir)
    model_spec = (read_json(manifest_path).get("spec") or {}).get("model") or {}
    if not model_spec.get("base"):
        raise HarnessError("manifest.json has no spec.model.base", where=manifest_path)
    return ModelRef(ref=ref, base=model_spec["base"], adapter=adapter.resolve(),
                    dtype=model_spec.get("dtype", "auto"), load_in_4bit=bool(model_spec.get("load_in_4bit", False)),
                    trial_dir=trial_dir.resolve())


def parse_model_ref(ref: str) -> ModelRef:
    """Resolve a reference without loading anything (so bad input fails before any model loads).

    A reference is a trial directory (`results/<exp>/trial-NNNN`: base from its manifest, adapter
    from `adapter/`), the `adapter/` folder of a trial, or anything `harness.models.resolve_model`
    takes: an embedded name (`smollm2-135m-instruct`), `random:<arch>`, a local model directory
    (a merged model, say), or a hub id.
    """
    from harness.models import resolve_model

    if not ref or not ref.strip():
        raise HarnessError("empty model reference")
    path = Path(ref).expanduser()
    if path.is_dir():
        if (path / "manifest.json").exists() or path.name.startswith("trial-"):
            return trial_ref(ref, path)
        if (path / "adapter_config.json").exists():
            if path.name == "adapter" and (path.parent / "manifest.json").exists():
                return trial_ref(ref, path.parent)
            raise HarnessError("an adapter folder outside a trial: give the trial directory (its manifest names "
                               "the base model)", where=path)
    resolve_model(ref)  # raises ModelError (a HarnessError) for what is not a model
    return ModelRef(ref=ref, base=ref)


def _load_base(ref: ModelRef, device: str | None = None):
    from harness.models import load_model, resolve_model

    return load_model(resolve_model(ref.base), ref.dtype, device=device, load_in_4bit=ref.load_in_4bit)


@contextmanager
def attached(model, adapter: Path | None) -> Iterator[Any]:
    """The model with a saved LoRA adapter attached (PEFT, in memory); detached again afterwards."""
    if adapter is None:
        yield model
        return
    from peft import PeftModel

    peft_model = PeftModel.from_pretrained(model, str(adapter), is_trainable=False)
    try:
        yield peft_model
    finally:
        peft_model.unload()  # removes the LoRA layers in place: `model` is the untouched base again


def load_model_ref(ref: str, *, device: str | None = None) -> LoadedModel:
    """Load a model reference (see `parse_model_ref`): a base model, or a base with a trial's adapter.

    The adapter is attached with PEFT and kept in memory: no merge, no re-save.
    """
    parsed = parse_model_ref(ref)
    model, tok = _load_base(parsed, device)
    if parsed.adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(parsed.adapter), is_trainable=False)
    return LoadedModel(model=model, tokenizer=tok, ref=parsed)


def _free_memory() -> None:
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def evaluate_refs(refs: list[ModelRef], tasks: list[str], *, limit: int | None, batch_size: int = 8,
                  device: str | None = None, out_dirs: list[Path | None] | None = None) -> list[CapabilityResult]:
    """Evaluate several references, loading each distinct base once and attaching adapters in turn.

    Refs are evaluated in the order given; a base is dropped before a different one is loaded.
    """
    out_dirs = out_dirs or [None] * len(refs)
    resolve_tasks(tasks)  # fail on a bad task name before any model loads
    first_seen: dict[tuple, int] = {}
    for i, ref in enumerate(refs):
        first_seen.setdefault(ref.base_key, i)
    order = sorted(range(len(refs)), key=lambda i: (first_seen[refs[i].base_key], i))
    results: dict[int, CapabilityResult] = {}
    loaded_key, model, tok = None, None, None
    for i in order:
        ref = refs[i]
        if ref.base_key != loaded_key:
            model = tok = None
            _free_memory()
            model, tok = _load_base(ref, device)
            loaded_key = ref.base_key
        with attached(model, ref.adapter) as m:
            results[i] = evaluate_capabilities(m, tok, tasks, limit=limit, batch_size=batch_size,
                                               out_dir=out_dirs[i], label=ref.describe())
    return [results[i] for i in range(len(refs))]
