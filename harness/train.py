"""Training backends: attach a LoRA adapter to a loaded base model and fine-tune it.

`HFBackend` is TRL's SFTTrainer over PEFT LoRA. A CUDA backend built on Unsloth plugs in behind the
same interface (`TrainingBackend`); experiments never name a backend, the manifest records which ran.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from harness.data.example import Example
from harness.errors import HarnessError, SpecError

if TYPE_CHECKING:  # spec.py imports the DPO section, which imports this module
    from harness.spec import LoraSpec, TrainSpec

ATTENTION_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj"]


class NonFiniteLoss(HarnessError):
    """The training loss became NaN or inf; raised at the step it happened."""

    def __init__(self, step: int, value: float) -> None:
        self.step, self.value = step, value
        super().__init__(f"loss became {value} at step {step}")


@dataclass
class TrainOutcome:
    steps: int
    tokens_trained: int
    runtime_s: float
    final_loss: float
    log: list[dict[str, Any]] = field(default_factory=list)
    trainable_params: int = 0


class TrainingBackend(ABC):
    """What a trial needs from a trainer: adapters on and off a reusable base, and a training run."""

    name: str

    def load_base(self, resolved, dtype: str = "auto", load_in_4bit: bool = False):
        """(model, tokenizer) for a resolved base model; a backend with its own loader overrides this."""
        from harness.models import load_model

        return load_model(resolved, dtype, load_in_4bit=load_in_4bit)

    @abstractmethod
    def add_adapter(self, model, lora: LoraSpec):
        """Wrap the base model with a fresh LoRA adapter; returns the trainable model."""

    @abstractmethod
    def remove_adapter(self, model):
        """Strip the adapter, returning the untouched base for the next trial."""

    @abstractmethod
    def train_sft(self, model, tokenizer, examples: list[Example], spec: TrainSpec, out_dir: Path,
                  on_log: Callable[[dict[str, Any]], None] | None = None,
                  on_step: Callable[[int], None] | None = None) -> TrainOutcome:
        """Supervised fine-tuning on the assistant turn as the chat template renders it.

        `on_log` gets each logged row (loss, learning rate, ...); `on_step` is called after every
        optimiser step and may raise to stop training (a pruned trial).
        """


def lora_config(lora: LoraSpec, model=None):
    from peft import LoraConfig

    targets: list[str] | str
    if lora.target_modules == "attention":
        targets = ATTENTION_MODULES
    else:
        targets = lora.target_modules
    if model is not None:
        _check_rank(model, lora.r, targets)
    return LoraConfig(r=lora.r, lora_alpha=lora.lora_alpha, lora_dropout=lora.dropout, target_modules=targets,
                      use_rslora=lora.alpha_policy == "rslora", bias="none", task_type="CAUSAL_LM")


def _check_rank(model, r: int, targets: list[str] | str) -> None:
    import torch

    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or "lm_head" in name:
            continue
        if targets != "all-linear" and name.rsplit(".", 1)[-1] not in targets:
            continue
        smallest = min(module.in_features, module.out_features)
        if r > smallest:
            raise SpecError(f"field 'lora.r': rank {r} is larger than layer {name} allows "
                            f"({module.in_features}x{module.out_features}); use r <= {smallest}")


class HFBackend(TrainingBackend):
    """transformers + PEFT + TRL: runs everywhere (CPU included)."""

    name = "hf-peft-trl"

    def add_adapter(self, model, lora: LoraSpec):
        from peft import get_peft_model

        return get_peft_model(model, lora_config(lora, model))

    def remove_adapter(self, model):
        return model.unload()

    def train_sft(self, model, tokenizer, examples, spec, out_dir, on_log=None, on_step=None) -> TrainOutcome:
        import torch
        from datasets import Dataset
        from trl import SFTConfig

        from harness.prompting import ensure_chat_template

        ensure_chat_template(tokenizer)
        # Conversational prompt/completion: TRL renders both with the chat template and puts the loss
        # on the completion only, i.e. the assistant turn including its end-of-turn token.
        dataset = Dataset.from_list([
            {"prompt": ex.prompt, "completion": [{"role": "assistant", "content": ex.reference}]}
            for ex in examples
        ])
        cuda = torch.cuda.is_available()
        args = SFTConfig(
            output_dir=str(out_dir), num_train_epochs=spec.epochs, max_steps=spec.max_steps,
            per_device_train_batch_size=spec.batch_size, gradient_accumulation_steps=spec.grad_accum,
            learning_rate=spec.learning_rate, lr_scheduler_type=spec.lr_scheduler, warmup_steps=spec.warmup_ratio,  # < 1: a ratio
            weight_decay=spec.weight_decay, seed=spec.seed, data_seed=spec.seed, max_length=spec.max_length,
            completion_only_loss=spec.completion_only_loss, logging_steps=spec.logging_steps,
            save_strategy="no", report_to="none", bf16=cuda, use_cpu=not cuda,
            gradient_checkpointing=spec.gradient_checkpointing, dataloader_num_workers=0,
            disable_tqdm=False, dataset_num_proc=None,
        )
        log: list[dict[str, Any]] = []
        with forward_restored(model):
            trainer = guarded_trainer_class("SFTTrainer")(model=model, args=args, train_dataset=dataset,
                                               processing_class=tokenizer, callbacks=[LogCallback(log, on_log, on_step)])
            tokens = _count_tokens(trainer.train_dataset)
            t0 = time.perf_counter()
            result = trainer.train()
            runtime = time.perf_counter() - t0
        epochs_run = trainer.state.epoch or spec.epochs
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        return TrainOutcome(steps=trainer.state.global_step, tokens_trained=int(tokens * epochs_run),
                            runtime_s=runtime, final_loss=float(result.training_loss), log=log,
                            trainable_params=trainable)


@contextmanager
def forward_restored(model) -> Iterator[None]:
    """Undo the forward patch TRL puts on the base model for each trainer (its fused LM head).

    The base model is reused across a worker's trials; without this the patches would stack up."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    saved = vars(base).get("forward")
    try:
        yield
    finally:
        if saved is not None:
            base.forward = saved
        else:
            vars(base).pop("forward", None)


def _log_callback_class():
    from transformers import TrainerCallback

    class LogCallback(TrainerCallback):
        """Collects logged rows (loss, learning rate, DPO rewards, ...) and forwards steps to the trial."""

        def __init__(self, log: list[dict[str, Any]], on_log=None, on_step=None) -> None:
            self.log, self.forward_log, self.forward_step = log, on_log, on_step

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                row = {"step": state.global_step, "epoch": state.epoch, **logs}
                self.log.append(row)
                if self.forward_log:
                    self.forward_log(row)

        def on_step_end(self, args, state, control, **kw):
            if self.forward_step:
                self.forward_step(state.global_step)

    return LogCallback


def LogCallback(log: list[dict[str, Any]], on_log=None, on_step=None):
    """A transformers TrainerCallback (built lazily: transformers is imported only when training)."""
    return _log_callback_class()(log, on_log, on_step)


def _count_tokens(dataset) -> int:
    column = "input_ids" if "input_ids" in dataset.column_names else None
    return sum(len(x) for x in dataset[column]) if column else 0


def guarded_trainer_class(name: str):
    """TRL's `SFTTrainer` or `DPOTrainer`, stopping at the first step whose loss is not finite."""
    import trl  # lazily: `harness list` and friends must not pay for TRL

    from harness import cpu_logprob

    cpu_logprob.install()  # TRL's log-probs use a Triton kernel; CPU gets a plain-autograd stand-in

    class Guarded(getattr(trl, name)):
        def training_step(self, model, inputs, num_items_in_batch=None):
            loss = super().training_step(model, inputs, num_items_in_batch)
            value = float(loss.detach().float().mean())
            if not math.isfinite(value):
                raise NonFiniteLoss(self.state.global_step + 1, value)
            return loss

    Guarded.__name__ = f"Guarded{name}"
    return Guarded


def select_backend(prefer: str | None = None) -> TrainingBackend:
    """HF everywhere for now; the Unsloth backend is chosen here when CUDA and unsloth are present."""
    return HFBackend()
