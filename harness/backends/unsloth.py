"""The CUDA backend: Unsloth's patched Llama-family models, fused LoRA kernels and checkpointing.

Chosen by `auto` (`harness.backends.select_backend`) when CUDA and unsloth are present. It differs from the HF
backend only where Unsloth does: loading (`FastLanguageModel.from_pretrained`, QLoRA included),
attaching adapters (`FastLanguageModel.get_peft_model`, its offloaded gradient checkpointing),
and generation mode. Training is the same TRL SFTTrainer run (`TrainingBackend.fit_sft`), which
Unsloth patches on import with its fused losses and automatic padding-free batching.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator

from harness.backends.base import ATTENTION_MODULES, TrainingBackend, _check_rank
from harness.backends.registry import register_backend

if TYPE_CHECKING:
    from harness.backends.memory_plan import CheckpointPlan
    from harness.config import LoraSpec, TrainSpec

ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def import_first_if_present() -> None:
    """Import unsloth before anything imports transformers, when it can be chosen (CUDA + installed)."""
    import importlib.util

    if importlib.util.find_spec("unsloth") is None:
        return
    import torch

    if torch.cuda.is_available():
        import_unsloth()


def import_unsloth():
    """Unsloth patches transformers, PEFT and TRL when imported: it must come first."""
    import unsloth  # noqa: F401

    from unsloth import FastLanguageModel

    return FastLanguageModel


class UnslothBackend(TrainingBackend):
    """Unsloth's FastLanguageModel for loading and adapters; TRL's SFTTrainer (as Unsloth patches it)."""

    name = "unsloth"

    def __init__(self, max_seq_length: int = 4096) -> None:
        self.fast = import_unsloth()
        self.max_seq_length = max_seq_length

    def load_base(self, resolved, dtype: str = "auto", load_in_4bit: bool = False):
        import torch

        from harness.models import load_tokenizer, materialize

        path = materialize(resolved)  # Unsloth loads from a directory: random:<arch> is written once
        torch_dtype = None if dtype == "auto" else getattr(torch, dtype)
        model, _ = self.fast.from_pretrained(str(path), max_seq_length=self.max_seq_length, dtype=torch_dtype,
                                             load_in_4bit=load_in_4bit, fix_tokenizer=False)
        # The harness's own tokenizer (pad/EOS fixes, chat template): every backend renders the same prompts.
        return model, load_tokenizer(resolved)

    def add_adapter(self, model, lora: LoraSpec):
        targets = ATTENTION_MODULES if lora.target_modules == "attention" else (
            ALL_LINEAR if lora.target_modules == "all-linear" else lora.target_modules)
        _check_rank(model, lora.r, targets)
        model = self.fast.get_peft_model(
            model, r=lora.r, lora_alpha=lora.lora_alpha, lora_dropout=lora.dropout, bias="none",
            target_modules=list(targets), use_rslora=lora.alpha_policy == "rslora",
            use_gradient_checkpointing="unsloth")
        self.fast.for_training(model)
        return model

    def remove_adapter(self, model):
        return model.unload()

    def apply_checkpointing(self, model, plan: CheckpointPlan) -> None:
        """Unsloth's offloaded checkpointing on every layer, less the layers the plan keeps in memory."""
        from unsloth.models._utils import find_decoder_layers, skip_checkpointing

        for layer in find_decoder_layers(model):  # the model is reused across trials: clear the last plan
            layer.__dict__.pop("_unsloth_skip_checkpoint", None)
        if plan.kept_layers:
            skip_checkpointing(model, "max" if plan.kept_layers >= plan.total_layers else plan.kept_layers)

    def resolve_packing(self, model, spec: TrainSpec) -> str:
        return "padding_free" if spec.packing == "auto" else spec.packing  # Unsloth's attention takes it

    def batching(self, tokenizer, packing: str) -> tuple[dict[str, Any], Any]:
        # Unsloth's patched SFTTrainer does padding-free batching itself (and truncates to max_length
        # where TRL would refuse the combination): ask for it rather than passing a collator.
        return {"padding_free": packing == "padding_free"}, None

    @contextmanager
    def inference(self, model) -> Iterator[None]:
        self.fast.for_inference(model)
        try:
            yield
        finally:
            self.fast.for_training(model)


def _unavailable() -> str | None:
    import importlib.util

    import torch

    if not torch.cuda.is_available():
        return "train.backend: unsloth needs CUDA and this machine has none; use backend: auto (HF path) or hf"
    if importlib.util.find_spec("unsloth") is None:
        return "train.backend: unsloth is not installed; pip install 'harness[cuda]' or use backend: auto"
    return None


register_backend("unsloth", "Unsloth's patched models, fused LoRA kernels and offloaded checkpointing (CUDA)",
                 # the raw loop's Unsloth modes checkpoint as the backend does, whatever was asked
                 UnslothBackend, reference_mode=lambda mode, checkpointing: f"unsloth_{mode}",
                 unavailable=_unavailable, auto_rank=20)
