"""Training backends: attach a LoRA adapter to a loaded base model and fine-tune it.

Each backend is one file here that registers itself (`registry.register_backend`): `hf` (hf.py,
`HFBackend`) is TRL over PEFT LoRA, with Liger's kernels under CUDA; `unsloth` (unsloth.py,
`UnslothBackend`) is Unsloth's patched models and kernels, CUDA only. Experiments never name a backend
unless they insist (`train.backend`, checked against `backend_choices()`); `auto` builds the
highest-ranked backend that can run here (Unsloth when CUDA and unsloth are present, else HF), and the
manifest records which ran. Every method trains through `TrainingBackend.fit`.
"""

from __future__ import annotations

from harness.backends.base import (REF_ADAPTER, LogCallback, NonFiniteLoss, TrainingBackend, TrainOutcome,
                                   checkpoint_plan, drop_adapter, forward_restored, guarded_trainer_class, lora_config,
                                   sft_dataset)
from harness.backends.hf import HFBackend
from harness.backends.registry import (Backend, all_backends, backend_choices, backend_unavailable, get_backend,
                                       register_backend, resolve_backend, select_backend, unknown_backend)

__all__ = ["REF_ADAPTER", "Backend", "HFBackend", "LogCallback", "NonFiniteLoss", "TrainOutcome", "TrainingBackend",
           "all_backends", "backend_choices", "backend_unavailable", "checkpoint_plan", "drop_adapter",
           "forward_restored", "get_backend", "guarded_trainer_class", "lora_config", "register_backend",
           "resolve_backend", "select_backend", "sft_dataset", "unknown_backend"]
