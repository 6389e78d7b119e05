"""TRL's fused LM-head log-probabilities where Triton is absent (CPU machines).

TRL (>= 1.14) computes the SFT and DPO losses through a chunked Triton kernel. On a CPU-only torch
there is no Triton, and TRL's forward would fail. This module installs a plain-autograd function with
the same arguments and outputs, so the CPU path runs TRL's own loss code unchanged: same objective,
same metrics, only the kernel differs.
"""

from __future__ import annotations

import importlib.util

import torch
import torch.nn.functional as F


class TorchLogProb:
    """Drop-in for `trl.kernels.ChunkedLogProbFunction` (same `apply` signature and outputs)."""

    @staticmethod
    def apply(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor,
              temperature: float, chunk_size: int, final_logit_softcapping: float | None = None,
              logit_scale: float = 1.0,
              outputs: tuple[str, ...] = ("entropy", "log_sum_sq_probs", "mean_logits", "is_top1")):
        logits = F.linear(hidden, weight, bias).float() * logit_scale
        if final_logit_softcapping is not None:
            logits = final_logit_softcapping * torch.tanh(logits / final_logit_softcapping)
        logits = logits / temperature
        log_z = torch.logsumexp(logits, dim=-1)
        logprobs = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - log_z
        entropy = log_sum_sq = mean_logits = is_top1 = None
        if "entropy" in outputs:
            entropy = log_z - (torch.softmax(logits, dim=-1) * logits).sum(-1)
        with torch.no_grad():
            if "log_sum_sq_probs" in outputs:
                log_sum_sq = torch.logsumexp(2 * (logits - log_z.unsqueeze(-1)), dim=-1)
            if "mean_logits" in outputs:
                mean_logits = logits.mean(-1)
            if "is_top1" in outputs:
                is_top1 = logits.argmax(-1) == targets
        return logprobs, entropy, log_sum_sq, mean_logits, is_top1


def install() -> bool:
    """Use `TorchLogProb` in TRL when its Triton kernel is unavailable; True if installed."""
    if importlib.util.find_spec("triton") is not None:
        return False
    import trl.trainer.utils as trl_utils

    if getattr(trl_utils, "_ChunkedLogProbFunction", None) is None:
        trl_utils._ChunkedLogProbFunction = TorchLogProb
        return True
    return trl_utils._ChunkedLogProbFunction is TorchLogProb
