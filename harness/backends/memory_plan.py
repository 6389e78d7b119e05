"""Memory-aware gradient checkpointing: recompute only as many layers as the device needs.

Checkpointing trades a second forward pass for activation memory. Where the model, the batch and
the activations fit, recomputing is pure loss (on Llama-3.2-1B with Liger kernels, turning it off was
1.37x faster), so `train.gradient_checkpointing: auto` estimates the step's peak memory and keeps as
many decoder layers' activations as fit under a safety margin; the rest are recomputed.

The estimate is deliberately on the high side: it counts every tensor a bf16 Llama layer saves for
backward with SDPA-style attention (no seq^2 term) and PEFT LoRA, calibrated against the measured
peaks in issue 7 (Llama-3.2-1B, 4 x 2048 tokens, no checkpointing: 19.4 GiB; Llama-3.1-8B with
checkpointing: 20.1 GiB).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

GIB = 2**30


@dataclass(frozen=True)
class ModelShape:
    """What activation memory depends on; read from a transformers config."""

    hidden: int
    intermediate: int
    layers: int
    kv_dim: int
    vocab: int

    @classmethod
    def of(cls, config) -> "ModelShape":
        heads = config.num_attention_heads
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        return cls(config.hidden_size, config.intermediate_size, config.num_hidden_layers, kv_heads * head_dim,
                   config.vocab_size)

    def activation_bytes_per_token_per_layer(self, bytes_per_value: int = 2) -> int:
        """Tensors a decoder layer keeps for backward, per token: norms' inputs and outputs, q/k/v and their
        rotated copies, attention output, residuals (~16 hidden-sized), k/v (2 kv-sized) and the MLP's
        gate, up, activation and product with margin (6 intermediate-sized)."""
        return bytes_per_value * (16 * self.hidden + 2 * self.kv_dim + 6 * self.intermediate)


@dataclass(frozen=True)
class CheckpointPlan:
    """How many of the model's decoder layers recompute their activations in backward."""

    checkpointed_layers: int
    total_layers: int
    estimated_peak_gib: float
    budget_gib: float | None
    reason: str

    @property
    def enabled(self) -> bool:
        return self.checkpointed_layers > 0

    @property
    def kept_layers(self) -> int:
        """Layers that keep their activations (Unsloth's `checkpoint_skip_layers`)."""
        return self.total_layers - self.checkpointed_layers

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def estimate_peak_bytes(shape: ModelShape, *, weight_bytes: int, trainable_params: int, tokens_per_step: int,
                        checkpointed_layers: int) -> int:
    """Peak training memory for one optimiser step with `checkpointed_layers` of `shape.layers` recomputed."""
    per_layer = shape.activation_bytes_per_token_per_layer() * tokens_per_step
    kept = shape.layers - checkpointed_layers
    # A checkpointed layer keeps its input; in backward one layer at a time is rebuilt in full.
    activations = kept * per_layer + checkpointed_layers * 2 * shape.hidden * tokens_per_step
    if checkpointed_layers:
        activations += per_layer
    # LoRA weight (bf16), gradient, and AdamW's two fp32 moments plus an fp32 master copy.
    optimizer = trainable_params * (2 + 2 + 12)
    # The fused LM head computes log-probs in chunks; its working set is a slice of the logits.
    head = 4 * shape.vocab * min(tokens_per_step, 1024) * 2
    return weight_bytes + optimizer + activations + head + GIB // 2  # CUDA context, allocator slack


def plan_checkpointing(setting: bool | str, shape: ModelShape, *, weight_bytes: int, trainable_params: int,
                       tokens_per_step: int, device_bytes: int | None, headroom: float = 0.85) -> CheckpointPlan:
    """Checkpoint every layer (True), none (False), or, for "auto", the fewest that fit the device.

    `device_bytes` None means no accelerator: on a CPU the host's memory is not the constraint the
    estimate models, so "auto" keeps everything (as the plain PyTorch loop does)."""
    def plan(k: int, reason: str) -> CheckpointPlan:
        peak = estimate_peak_bytes(shape, weight_bytes=weight_bytes, trainable_params=trainable_params,
                                   tokens_per_step=tokens_per_step, checkpointed_layers=k)
        return CheckpointPlan(k, shape.layers, round(peak / GIB, 2),
                              round(device_bytes * headroom / GIB, 2) if device_bytes else None, reason)

    if setting is True:
        return plan(shape.layers, "gradient_checkpointing: true")
    if setting is False:
        return plan(0, "gradient_checkpointing: false")
    if setting != "auto":
        raise ValueError(f"gradient_checkpointing must be true, false or auto, not {setting!r}")
    if device_bytes is None:
        return plan(0, "auto: no accelerator, activations kept")
    budget = device_bytes * headroom
    for k in range(shape.layers + 1):  # fewest recomputed layers whose estimate fits
        candidate = plan(k, f"auto: {k} of {shape.layers} layers recomputed to fit "
                            f"{budget / GIB:.1f} GiB ({headroom:.0%} of the device)")
        if candidate.estimated_peak_gib * GIB <= budget:
            return candidate
    return plan(shape.layers, f"auto: even with every layer recomputed the estimate exceeds "
                              f"{budget / GIB:.1f} GiB; checkpointing all layers")


def model_weight_bytes(model) -> int:
    """Bytes the model's parameters and buffers occupy (4-bit weights count as packed bytes)."""
    return (sum(p.numel() * p.element_size() for p in model.parameters())
            + sum(b.numel() * b.element_size() for b in model.buffers()))


def device_memory_bytes() -> int | None:
    """Total memory of the CUDA device in use, or None without one."""
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory


def peak_memory_bytes() -> int:
    """Peak memory since the last reset: CUDA allocations on a GPU, the process's resident set on a CPU."""
    import resource

    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # ru_maxrss is KiB on Linux


def apply_to_hf_model(model, plan: CheckpointPlan) -> None:
    """Turn checkpointing on for `plan.checkpointed_layers` evenly spaced decoder layers and off for the rest."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not plan.enabled:
        if getattr(base, "is_gradient_checkpointing", False):
            base.gradient_checkpointing_disable()
        return
    base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    layers = [m for m in base.modules() if isinstance(m, GradientCheckpointingLayer)]
    keep = set(_evenly_spaced(len(layers), len(layers) - plan.checkpointed_layers))
    for i, layer in enumerate(layers):
        layer.gradient_checkpointing = i not in keep


def _evenly_spaced(n: int, count: int) -> list[int]:
    return [(k + 1) * n // count - 1 for k in range(count)] if count > 0 else []
