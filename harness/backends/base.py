"""What every training backend shares: the `TrainingBackend` interface and its one training entry point
(`fit`, a TRL trainer for every method), LoRA configs, the checkpointing plan, the log callback and the
non-finite-loss guard."""

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

if TYPE_CHECKING:
    from harness.config import LoraSpec, OptimArgs, TrainSpec
    from harness.backends.memory_plan import CheckpointPlan

ATTENTION_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj"]
SFT_TRAINER = "SFTTrainer"  # the TRL trainer of `fit_sft`, the one SFT path (the sft stage declares it)
# The adapter TRL's DPO and GRPO trainers copy a PEFT policy into, as their frozen reference (see
# `DPOTrainer.__init__`): a continuing stage drops it once trained.
REF_ADAPTER = "ref"


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
    switches on; the training run itself (`fit`) is a TRL trainer for every backend and method."""

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

    def config_overrides(self, trainer: str) -> dict[str, Any]:
        """Backend-specific fields of the trainer's config (kernels)."""
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
        from harness.evaluation.prompting import ensure_chat_template

        ensure_chat_template(tokenizer)
        return self.fit_sft(model, tokenizer, sft_dataset(examples), spec, out_dir, on_log=on_log, on_step=on_step)

    def fit_sft(self, model, tokenizer, dataset, spec: TrainSpec, out_dir: Path,
                on_log: Callable[[dict[str, Any]], None] | None = None,
                on_step: Callable[[int], None] | None = None,
                on_tokens: Callable[[int, int], None] | None = None, count_tokens: bool = False) -> TrainOutcome:
        """TRL's SFTTrainer on a prompt/completion dataset, or an already tokenized one (`input_ids`,
        optional `labels`): the one SFT path of trials and of `harness bench`.

        `on_tokens(step, tokens)` follows the non-padding input tokens seen (counted when `count_tokens`)."""
        packing = self.resolve_packing(model, spec)
        batching, collator = self.batching(tokenizer, packing)
        config = dict(lr_scheduler_type=spec.lr_scheduler, warmup_steps=spec.warmup_ratio,  # < 1: a ratio
                      weight_decay=spec.weight_decay, max_length=spec.max_length,
                      completion_only_loss=spec.completion_only_loss, packing=packing == "bfd",
                      dataset_num_proc=None,
                      include_num_input_tokens_seen="non_padding" if count_tokens else "no", **batching)
        return self.fit(SFT_TRAINER, model, tokenizer, dataset, spec, out_dir, seed=spec.seed, config=config,
                        checkpointing=spec.gradient_checkpointing, tokens_per_step=spec.batch_size * spec.max_length,
                        collator=collator, on_log=on_log, on_step=on_step, on_tokens=on_tokens,
                        settings={"packing": packing})

    def fit(self, trainer: str, model, tokenizer, dataset, optim: OptimArgs, out_dir: Path, *, seed: int,
            config: dict[str, Any], tokens_per_step: int, checkpointing: bool | str = "auto", collator=None,
            trainer_kwargs: dict[str, Any] | None = None, on_log: Callable[[dict[str, Any]], None] | None = None,
            on_step: Callable[[int], None] | None = None, on_tokens: Callable[[int, int], None] | None = None,
            before_train: Callable[[Any], None] | None = None,
            tokens: Callable[[Any, float], int] | None = None, settings: dict[str, Any] | None = None) -> TrainOutcome:
        """Train `model` with TRL's `trainer` ("SFTTrainer", "DPOTrainer", "GRPOTrainer", ...): every method's
        training goes through here, so each gets the backend's memory plan and kernels, the non-finite-loss
        guard, the log callback and a record of what ran (`TrainOutcome.settings`).

        `config` holds the method's own fields of `trl.<Method>Config`; the shared ones come from `optim`.
        `before_train(trainer)` may check the built trainer; `tokens(trainer, epochs)` counts tokens trained
        (default: the tokenized dataset's `input_ids` times the epochs run)."""
        import torch
        import trl

        cuda = torch.cuda.is_available()
        config_class = getattr(trl, trainer.removesuffix("Trainer") + "Config")
        args = config_class(
            output_dir=str(out_dir), num_train_epochs=optim.epochs, max_steps=optim.max_steps,
            per_device_train_batch_size=optim.batch_size, gradient_accumulation_steps=optim.grad_accum,
            learning_rate=optim.learning_rate, seed=seed, data_seed=seed, logging_steps=optim.logging_steps,
            save_strategy="no", report_to="none", bf16=cuda, use_cpu=not cuda,
            # Checkpointing is set on the model per layer (see `apply_checkpointing`), not by the Trainer.
            gradient_checkpointing=False, dataloader_num_workers=0, disable_tqdm=False,
            **{**config, **self.config_overrides(trainer)})
        plan = checkpoint_plan(model, checkpointing, tokens_per_step)
        self.apply_checkpointing(model, plan)
        log: list[dict[str, Any]] = []
        extra = {"data_collator": collator} if collator is not None else {}
        with forward_restored(model):
            built = guarded_trainer_class(trainer)(
                model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                callbacks=[LogCallback(log, on_log, on_step, on_tokens)], **extra, **(trainer_kwargs or {}))
            if before_train is not None:
                before_train(built)
            t0 = time.perf_counter()
            result = built.train()
            runtime = time.perf_counter() - t0
        epochs_run = built.state.epoch or optim.epochs
        trained = tokens(built, epochs_run) if tokens else int(_count_tokens(built.train_dataset) * epochs_run)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        base_config = (model.get_base_model() if hasattr(model, "get_base_model") else model).config
        return TrainOutcome(steps=built.state.global_step, tokens_trained=int(trained), runtime_s=runtime,
                            final_loss=float(result.training_loss), log=log, trainable_params=trainable,
                            settings={"backend": self.name, "trainer": trainer, **(settings or {}),
                                      "checkpointing": plan.to_json(),
                                      "attn_implementation": getattr(base_config, "_attn_implementation", None)})


def sft_dataset(examples: list[Example]):
    """Conversational prompt/completion rows: TRL renders both with the chat template and puts the loss
    on the completion only, i.e. the assistant turn including its end-of-turn token."""
    from datasets import Dataset

    return Dataset.from_list([
        {"prompt": ex.prompt, "completion": [{"role": "assistant", "content": ex.reference}]} for ex in examples
    ])


def checkpoint_plan(model, setting: bool | str, tokens_per_step: int) -> CheckpointPlan:
    """The checkpointing `setting` (true, false, "auto") asks for, sized to this model, step and device."""
    from harness.backends.memory_plan import ModelShape, device_memory_bytes, model_weight_bytes, plan_checkpointing

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return plan_checkpointing(
        setting, ModelShape.of(base.config.get_text_config()),
        weight_bytes=model_weight_bytes(base), trainable_params=sum(p.numel() for p in model.parameters()
                                                                    if p.requires_grad),
        tokens_per_step=tokens_per_step, device_bytes=device_memory_bytes())


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

    import harness.backends.cpu_logprob as cpu_logprob

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


def drop_adapter(model, name: str, keep: str = "default") -> None:
    """Remove a trainer's frozen reference copy (`name`) of the adapter, leaving `keep` active and trainable.

    DPO and GRPO (with a KL term) continue a PEFT adapter by copying it into a frozen reference adapter;
    the trial then evaluates, saves and unloads the model as SFT left it, with one adapter."""
    if name in model.peft_config:
        model.delete_adapter(name)
    model.set_adapter(keep)
