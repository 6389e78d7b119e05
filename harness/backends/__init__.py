"""Training backends: attach a LoRA adapter to a loaded base model and fine-tune it.

`HFBackend` (hf.py) is TRL over PEFT LoRA, with Liger's kernels under CUDA; `UnslothBackend` (unsloth.py)
is chosen when CUDA and unsloth are present. Experiments never name a backend unless they insist
(`train.backend`); the manifest records which ran. Every method trains through `TrainingBackend.fit`.
"""

from __future__ import annotations

from harness.backends.base import (LogCallback, NonFiniteLoss, TrainingBackend, TrainOutcome, checkpoint_plan,
                                   drop_adapter, forward_restored, guarded_trainer_class, lora_config, sft_dataset)
from harness.backends.hf import HFBackend
from harness.errors import Unavailable

__all__ = ["BACKENDS", "HFBackend", "LogCallback", "NonFiniteLoss", "TrainOutcome", "TrainingBackend",
           "backend_unavailable", "checkpoint_plan", "drop_adapter", "forward_restored", "guarded_trainer_class",
           "lora_config", "select_backend", "sft_dataset"]


BACKENDS = ("auto", "hf", "unsloth")


def backend_unavailable(prefer: str) -> str | None:
    """Why the backend a spec insists on cannot run here, or None if it can ("auto" always can)."""
    import importlib.util

    import torch

    if prefer not in BACKENDS:
        return f"unknown backend '{prefer}' (known: {', '.join(BACKENDS)})"
    if prefer != "unsloth":
        return None
    if not torch.cuda.is_available():
        return "train.backend: unsloth needs CUDA and this machine has none; use backend: auto (HF path) or hf"
    if importlib.util.find_spec("unsloth") is None:
        return "train.backend: unsloth is not installed; pip install 'harness[cuda]' or use backend: auto"
    return None


def select_backend(prefer: str = "auto") -> TrainingBackend:
    """Unsloth when CUDA and unsloth are present (or when insisted on), HF + PEFT + TRL otherwise."""
    import importlib.util

    import torch

    reason = backend_unavailable(prefer)
    if reason:
        raise Unavailable(reason)
    if prefer == "unsloth" or (prefer == "auto" and torch.cuda.is_available()
                               and importlib.util.find_spec("unsloth") is not None):
        from harness.backends.unsloth import UnslothBackend

        return UnslothBackend()
    return HFBackend()
