"""transformers + PEFT + TRL: the backend that runs everywhere (CPU included), with Liger's kernels under CUDA."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from harness.backends.base import SFT_TRAINER, TrainingBackend, lora_config
from harness.backends.registry import register_backend
from harness.errors import Unavailable

if TYPE_CHECKING:
    from harness.backends.memory_plan import CheckpointPlan
    from harness.config import LoraSpec


def liger_available() -> bool:
    """Whether Liger's kernels can run here: CUDA and the liger-kernel package."""
    import importlib.util

    import torch

    return torch.cuda.is_available() and importlib.util.find_spec("liger_kernel") is not None


class HFBackend(TrainingBackend):
    """transformers + PEFT + TRL: runs everywhere (CPU included); Liger's kernels when CUDA has them."""

    def __init__(self, liger: bool | None = None) -> None:
        available = liger_available()
        if liger and not available:
            raise Unavailable("Liger kernels need CUDA and the liger-kernel package (pip install 'harness[cuda]')")
        self.liger = available if liger is None else liger
        self.name = "hf-peft-trl+liger" if self.liger else "hf-peft-trl"

    def add_adapter(self, model, lora: LoraSpec):
        from peft import get_peft_model

        return get_peft_model(model, lora_config(lora, model))

    def remove_adapter(self, model):
        return model.unload()

    def config_overrides(self, trainer: str) -> dict[str, Any]:
        # Liger patches the model's layers in place, so DPO/GRPO continuing an SFT adapter run on them
        # too; only SFT switches them on (TRL's DPO with use_liger_kernel swaps in another loss).
        if not self.liger or trainer != SFT_TRAINER:
            return {}
        # TRL already fuses the LM head with the loss (chunked log-probs, no full logits); Liger adds
        # the layer kernels. Its own fused linear cross-entropy would replace TRL's forward patch.
        return {"use_liger_kernel": True,
                "liger_kernel_config": {"rope": True, "rms_norm": True, "swiglu": True, "cross_entropy": False,
                                        "fused_linear_cross_entropy": False}}

    def apply_checkpointing(self, model, plan: CheckpointPlan) -> None:
        from harness.backends.memory_plan import apply_to_hf_model

        apply_to_hf_model(model, plan)


def _reference_mode(mode: str, checkpointing: bool | str) -> str:
    """The raw loop's HF mode: NF4 for QLoRA; else LoRA, with Liger where `HFBackend()` switches it on, and
    without checkpointing unless every layer recomputes (the loop has no partial plan)."""
    if mode == "qlora":
        return "hf_qlora"
    liger = "_liger" if liger_available() else ""
    return f"hf{liger}_lora" + ("" if checkpointing is True else "_nogc")


register_backend("hf", "transformers + PEFT + TRL: runs everywhere (CPU included), Liger's kernels on CUDA",
                 HFBackend, reference_mode=_reference_mode, auto_rank=10)
