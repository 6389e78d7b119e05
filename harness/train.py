"""Training backends: attach a LoRA adapter to a loaded base model and fine-tune it.

`HFBackend` is TRL's SFTTrainer over PEFT LoRA (with Liger's kernels under CUDA); `UnslothBackend`
(harness.unsloth_backend) is chosen when CUDA and unsloth are present. Experiments never name a
backend unless they insist (`train.backend`); the manifest records which ran.
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
from harness.errors import HarnessError, SpecError, Unavailable

if TYPE_CHECKING:  # spec.py imports the DPO section, which imports this module
    from harness.memory_plan import CheckpointPlan
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
    settings: dict[str, Any] = field(default_factory=dict)  # backend, packing, checkpointing: what ran


class TrainingBackend(ABC):
    """What a trial needs from a trainer: adapters on and off a reusable base, and a training run.

    A backend differs in how it loads the base, attaches adapters, checkpoints and which kernels it
    switches on; the SFT run itself (`fit_sft`) is TRL's SFTTrainer for every backend."""

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
    def apply_checkpointing(self, model, plan: CheckpointPlan) -> None:
        """Recompute `plan.checkpointed_layers` decoder layers in backward, keep the rest."""

    def sft_config_overrides(self) -> dict[str, Any]:
        """Backend-specific `SFTConfig` fields (kernels)."""
        return {}

    def resolve_packing(self, model, spec: TrainSpec) -> str:
        """`spec.packing`, with "auto" decided: padding-free only where attention takes packed sequences
        natively. SDPA and eager attention get a block mask over the whole flattened batch, which on
        the CPU measured 1.3-1.4x slower per step than padded batches of the same examples."""
        if spec.packing != "auto":
            return spec.packing
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        attention = str(getattr(base.config, "_attn_implementation", ""))
        return "padding_free" if attention.startswith("flash_attention") else "none"

    def batching(self, tokenizer, packing: str) -> tuple[dict[str, Any], Any]:
        """(`SFTConfig` fields, data collator or None) for a resolved `train.packing`.

        "padding_free": each batch is one flattened sequence with per-example position ids, so no
        pad token is computed on; the examples in a step, and so the optimisation, are unchanged.
        TRL allows that only with packing or without max_length, so its own collator is passed in
        padding-free mode and the trainer still truncates to max_length while preparing the data.
        "bfd": TRL's best-fit-decreasing packing (a batch holds `batch_size` packed rows)."""
        if packing != "padding_free":
            return {}, None
        from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        return {}, DataCollatorForLanguageModeling(pad_token_id=pad_id, padding_free=True)

    @contextmanager
    def inference(self, model) -> Iterator[None]:
        """Generation mode for evaluation (a backend with a faster inference path switches to it)."""
        yield

    def train_sft(self, model, tokenizer, examples: list[Example], spec: TrainSpec, out_dir: Path,
                  on_log: Callable[[dict[str, Any]], None] | None = None,
                  on_step: Callable[[int], None] | None = None) -> TrainOutcome:
        """Supervised fine-tuning on the assistant turn as the chat template renders it.

        `on_log` gets each logged row (loss, learning rate, ...); `on_step` is called after every
        optimiser step and may raise to stop training (a pruned trial).
        """
        from harness.prompting import ensure_chat_template

        ensure_chat_template(tokenizer)
        return self.fit_sft(model, tokenizer, sft_dataset(examples), spec, out_dir, on_log=on_log, on_step=on_step)

    def fit_sft(self, model, tokenizer, dataset, spec: TrainSpec, out_dir: Path,
                on_log: Callable[[dict[str, Any]], None] | None = None,
                on_step: Callable[[int], None] | None = None,
                on_tokens: Callable[[int, int], None] | None = None, count_tokens: bool = False) -> TrainOutcome:
        """TRL's SFTTrainer on a prompt/completion dataset, or an already tokenized one (`input_ids`,
        optional `labels`): the one training path of trials and of `harness bench`.

        `on_tokens(step, tokens)` follows the non-padding input tokens seen (counted when `count_tokens`)."""
        import torch
        from trl import SFTConfig

        cuda = torch.cuda.is_available()
        packing = self.resolve_packing(model, spec)
        batching, collator = self.batching(tokenizer, packing)
        args = SFTConfig(
            output_dir=str(out_dir), num_train_epochs=spec.epochs, max_steps=spec.max_steps,
            per_device_train_batch_size=spec.batch_size, gradient_accumulation_steps=spec.grad_accum,
            learning_rate=spec.learning_rate, lr_scheduler_type=spec.lr_scheduler, warmup_steps=spec.warmup_ratio,  # < 1: a ratio
            weight_decay=spec.weight_decay, seed=spec.seed, data_seed=spec.seed, max_length=spec.max_length,
            completion_only_loss=spec.completion_only_loss, logging_steps=spec.logging_steps,
            packing=packing == "bfd", save_strategy="no", report_to="none", bf16=cuda, use_cpu=not cuda,
            # Checkpointing is set on the model per layer (see `apply_checkpointing`), not by the Trainer.
            gradient_checkpointing=False, dataloader_num_workers=0, disable_tqdm=False, dataset_num_proc=None,
            include_num_input_tokens_seen="non_padding" if count_tokens else "no",
            **self.sft_config_overrides(), **batching,
        )
        plan = checkpoint_plan(model, spec)
        self.apply_checkpointing(model, plan)
        log: list[dict[str, Any]] = []
        with forward_restored(model):
            trainer = guarded_trainer_class("SFTTrainer")(
                model=model, args=args, train_dataset=dataset, processing_class=tokenizer, data_collator=collator,
                callbacks=[LogCallback(log, on_log, on_step, on_tokens)])
            tokens = _count_tokens(trainer.train_dataset)
            t0 = time.perf_counter()
            result = trainer.train()
            runtime = time.perf_counter() - t0
        epochs_run = trainer.state.epoch or spec.epochs
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        base_config = (model.get_base_model() if hasattr(model, "get_base_model") else model).config
        settings = {"backend": self.name, "packing": packing, "checkpointing": plan.to_json(),
                    "attn_implementation": getattr(base_config, "_attn_implementation", None)}
        return TrainOutcome(steps=trainer.state.global_step, tokens_trained=int(tokens * epochs_run),
                            runtime_s=runtime, final_loss=float(result.training_loss), log=log,
                            trainable_params=trainable, settings=settings)


def sft_dataset(examples: list[Example]):
    """Conversational prompt/completion rows: TRL renders both with the chat template and puts the loss
    on the completion only, i.e. the assistant turn including its end-of-turn token."""
    from datasets import Dataset

    return Dataset.from_list([
        {"prompt": ex.prompt, "completion": [{"role": "assistant", "content": ex.reference}]} for ex in examples
    ])


def checkpoint_plan(model, spec: TrainSpec) -> CheckpointPlan:
    """The checkpointing `spec.gradient_checkpointing` asks for, sized to this model, batch and device."""
    from harness.memory_plan import ModelShape, device_memory_bytes, model_weight_bytes, plan_checkpointing

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return plan_checkpointing(
        spec.gradient_checkpointing, ModelShape.of(base.config.get_text_config()),
        weight_bytes=model_weight_bytes(base), trainable_params=sum(p.numel() for p in model.parameters()
                                                                    if p.requires_grad),
        tokens_per_step=spec.batch_size * spec.max_length, device_bytes=device_memory_bytes())


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
    """transformers + PEFT + TRL: runs everywhere (CPU included); Liger's kernels when CUDA has them."""

    def __init__(self, liger: bool | None = None) -> None:
        import importlib.util

        import torch

        available = torch.cuda.is_available() and importlib.util.find_spec("liger_kernel") is not None
        if liger and not available:
            raise Unavailable("Liger kernels need CUDA and the liger-kernel package (pip install 'harness[cuda]')")
        self.liger = available if liger is None else liger
        self.name = "hf-peft-trl+liger" if self.liger else "hf-peft-trl"

    def add_adapter(self, model, lora: LoraSpec):
        from peft import get_peft_model

        return get_peft_model(model, lora_config(lora, model))

    def remove_adapter(self, model):
        return model.unload()

    def sft_config_overrides(self) -> dict[str, Any]:
        if not self.liger:
            return {}
        # TRL already fuses the LM head with the loss (chunked log-probs, no full logits); Liger adds
        # the layer kernels. Its own fused linear cross-entropy would replace TRL's forward patch.
        return {"use_liger_kernel": True,
                "liger_kernel_config": {"rope": True, "rms_norm": True, "swiglu": True, "cross_entropy": False,
                                        "fused_linear_cross_entropy": False}}

    def apply_checkpointing(self, model, plan: CheckpointPlan) -> None:
        from harness.memory_plan import apply_to_hf_model

        apply_to_hf_model(model, plan)


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

        def __init__(self, log: list[dict[str, Any]], on_log=None, on_step=None, on_tokens=None) -> None:
            self.log, self.forward_log, self.forward_step, self.forward_tokens = log, on_log, on_step, on_tokens

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                row = {"step": state.global_step, "epoch": state.epoch, **logs}
                self.log.append(row)
                if self.forward_log:
                    self.forward_log(row)

        def on_step_end(self, args, state, control, **kw):
            if self.forward_tokens:
                self.forward_tokens(state.global_step, state.num_input_tokens_seen)
            if self.forward_step:
                self.forward_step(state.global_step)

    return LogCallback


def LogCallback(log: list[dict[str, Any]], on_log=None, on_step=None, on_tokens=None):
    """A transformers TrainerCallback (built lazily: transformers is imported only when training)."""
    return _log_callback_class()(log, on_log, on_step, on_tokens)


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
        from harness.unsloth_backend import UnslothBackend

        return UnslothBackend()
    return HFBackend()
