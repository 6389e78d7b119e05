"""TRL's fused LM-head log-probabilities (and distillation divergence) where Triton is absent (CPU machines).

TRL (>= 1.14) computes the SFT and DPO losses through a chunked Triton kernel. On a CPU-only torch
there is no Triton, and TRL's forward would fail. This module installs an autograd function with the
same arguments and outputs, so the CPU path runs TRL's own loss code unchanged: same objective, same
metrics, only the kernel differs.

It costs what the model's own cross-entropy costs: one log-softmax over the logits, kept for the
backward, which turns it into the logits' gradient in place. The extra outputs TRL asks for (entropy,
top-1) are one more read of that tensor each, without autograd history unless their gradient is used.
"""

from __future__ import annotations

import importlib.util

import torch
import torch.nn.functional as F

OPTIONAL_OUTPUTS = ("entropy", "log_sum_sq_probs", "mean_logits", "is_top1")
_ROWS = 32  # tokens per slice when reducing over the vocabulary: the slice's temporaries stay in cache


class TorchLogProb(torch.autograd.Function):
    """Drop-in for `trl.kernels.ChunkedLogProbFunction` (same `apply` signature and outputs)."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor,
                temperature: float, chunk_size: int, final_logit_softcapping: float | None = None,
                logit_scale: float = 1.0, outputs: tuple[str, ...] = OPTIONAL_OUTPUTS):
        ctx.set_materialize_grads(False)  # entropy is mostly logged only: no zero gradient to push through
        logits = F.linear(hidden, weight, bias).float()
        tanh = None
        if final_logit_softcapping is not None:
            logits = logits * (logit_scale / final_logit_softcapping)
            tanh = logits.tanh_()
            logits = tanh * (final_logit_softcapping / temperature)
        elif logit_scale != 1.0 or temperature != 1.0:
            logits = logits * (logit_scale / temperature)
        mean_logits = logits.mean(-1) if "mean_logits" in outputs else None
        logp = torch.log_softmax(logits, dim=-1)
        del logits
        logprobs = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        entropy = _entropy(logp) if "entropy" in outputs else None
        log_sum_sq = torch.logsumexp(2 * logp, dim=-1) if "log_sum_sq_probs" in outputs else None
        is_top1 = logp.argmax(-1) == targets if "is_top1" in outputs else None  # the first maximum, as TRL's kernel
        ctx.save_for_backward(hidden, weight, bias, targets, logp, entropy, tanh)
        ctx.scale = (logit_scale / temperature, final_logit_softcapping is not None)
        ctx.mark_non_differentiable(*(x for x in (log_sum_sq, mean_logits, is_top1) if x is not None))
        return logprobs, entropy, log_sum_sq, mean_logits, is_top1

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_logprobs: torch.Tensor | None, grad_entropy: torch.Tensor | None, *_):
        if getattr(ctx, "spent", False):  # the saved log-softmax was overwritten by the first backward
            raise RuntimeError("TorchLogProb's backward runs once per forward (retain_graph is not supported)")
        ctx.spent = True
        hidden, weight, bias, targets, logp, entropy, tanh = ctx.saved_tensors
        scale, softcapped = ctx.scale
        grad = logp  # overwritten in place: the saved log-softmax becomes d loss / d logits
        if grad_entropy is None and grad_logprobs is not None:
            g = grad_logprobs.float()
            grad.exp_().mul_(-g.unsqueeze(-1))  # d log p_t / d z_j = 1[j = t] - p_j
            grad.scatter_add_(-1, targets.unsqueeze(-1), g.unsqueeze(-1))
        else:
            for rows in range(0, grad.shape[0], _ROWS):
                lp = grad[rows:rows + _ROWS]
                p = lp.exp()
                acc = torch.zeros_like(lp)
                if grad_entropy is not None:  # d H / d z_j = -p_j (log p_j + H)
                    acc -= grad_entropy[rows:rows + _ROWS, None].float() * p * (lp + entropy[rows:rows + _ROWS, None])
                if grad_logprobs is not None:
                    g = grad_logprobs[rows:rows + _ROWS].float()
                    acc -= g.unsqueeze(-1) * p
                    acc.scatter_add_(-1, targets[rows:rows + _ROWS].unsqueeze(-1), g.unsqueeze(-1))
                lp.copy_(acc)
        if softcapped:
            grad.mul_(1 - tanh * tanh)
        if scale != 1.0:
            grad.mul_(scale)
        needs_hidden, needs_weight, needs_bias = ctx.needs_input_grad[:3]
        grad = grad.to(weight.dtype)
        grad_hidden = (grad @ weight).to(hidden.dtype) if needs_hidden else None
        grad_weight = (grad.t() @ hidden.to(weight.dtype)) if needs_weight else None
        grad_bias = grad.sum(0).to(bias.dtype) if needs_bias else None
        return grad_hidden, grad_weight, grad_bias, None, None, None, None, None, None


def _entropy(logp: torch.Tensor) -> torch.Tensor:
    """-sum_j p_j log p_j per row, a slice of rows at a time (no full-size temporary)."""
    out = torch.empty(logp.shape[:-1], dtype=logp.dtype, device=logp.device)
    for rows in range(0, logp.shape[0], _ROWS):
        lp = logp[rows:rows + _ROWS]
        out[rows:rows + _ROWS] = -torch.linalg.vecdot(lp.exp(), lp)
    return out


def _logits(hidden, weight, bias, scale: float, softcap: float | None, temperature: float) -> torch.Tensor:
    """The logits TRL's divergence kernel forms on its tiles: scaled, soft-capped, then over the temperature."""
    logits = F.linear(hidden, weight, bias).float() * scale
    if softcap is not None:
        logits = softcap * torch.tanh(logits / softcap)
    return logits / temperature


class TorchDivergence:
    """Drop-in for `trl.kernels.chunked_divergence.ChunkedDivergenceFunction` (same `apply` signature and
    outputs: per-token divergence and student entropy) where Triton is absent.

    The divergence is TRL's own generalised JSD (`GKDTrainer.generalized_jsd_loss`, the same mixture
    `(1 - beta) p_student + beta p_teacher` the kernel uses), on full logits with plain autograd; the gradient
    reaches the student only, as the kernel's does."""

    @staticmethod
    def apply(student_hidden, student_weight, student_bias, teacher_hidden, teacher_weight, teacher_bias,
              beta: float, temperature: float = 1.0, student_logit_scale: float = 1.0,
              student_final_logit_softcapping: float | None = None, teacher_logit_scale: float = 1.0,
              teacher_final_logit_softcapping: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        from trl.experimental.gkd.gkd_trainer import GKDTrainer

        with torch.no_grad():
            teacher = _logits(teacher_hidden, teacher_weight, teacher_bias, teacher_logit_scale,
                              teacher_final_logit_softcapping, temperature)
        student = _logits(student_hidden, student_weight, student_bias, student_logit_scale,
                          student_final_logit_softcapping, temperature)
        divergence = GKDTrainer.generalized_jsd_loss(student, teacher, beta=beta, reduction="none").sum(-1)
        with torch.no_grad():
            entropy = _entropy(torch.log_softmax(student, dim=-1))
        return divergence, entropy


def install() -> bool:
    """Use `TorchLogProb` (and `TorchDivergence`) in TRL when its Triton kernels are unavailable; True if
    installed."""
    if importlib.util.find_spec("triton") is not None:
        return False
    import sys
    import types

    # TRL imports its divergence kernel inside the distillation loss; its module needs Triton to import at all.
    name = "trl.kernels.chunked_divergence"
    if name not in sys.modules:
        stand_in = types.ModuleType(name)
        stand_in.ChunkedDivergenceFunction = TorchDivergence
        sys.modules[name] = stand_in
    import trl.trainer.utils as trl_utils

    if getattr(trl_utils, "_ChunkedLogProbFunction", None) is None:
        trl_utils._ChunkedLogProbFunction = TorchLogProb
        return True
    return trl_utils._ChunkedLogProbFunction is TorchLogProb
