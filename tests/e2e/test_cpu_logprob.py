"""The CPU stand-in for TRL's Triton kernel gives TRL's fused loss the model's own values and gradients.

The runs of it that take more than a few seconds; the rest is tests/unit/test_cpu_logprob.py."""

from __future__ import annotations

import pytest
import torch

from harness.backends import cpu_logprob


class _AutogradLogProb:
    """The stand-in as it was before it had its own backward: plain autograd over the full logits, the
    entropy with autograd history. Kept to show that the faster one trains the same."""

    @staticmethod
    def apply(hidden, weight, bias, targets, temperature, chunk_size, final_logit_softcapping=None,
              logit_scale=1.0, outputs=cpu_logprob.OPTIONAL_OUTPUTS):
        logits = torch.nn.functional.linear(hidden, weight, bias).float() * logit_scale
        logits = logits / temperature
        log_z = torch.logsumexp(logits, dim=-1)
        logprobs = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - log_z
        entropy = log_z - (torch.softmax(logits, dim=-1) * logits).sum(-1) if "entropy" in outputs else None
        is_top1 = (logits.argmax(-1) == targets) if "is_top1" in outputs else None
        return logprobs, entropy, None, None, is_top1


@pytest.mark.skipif(cpu_logprob.importlib.util.find_spec("triton") is not None, reason="Triton present: TRL's kernel runs")
def test_sft_logs_the_same_losses_and_diagnostics_step_by_step_as_the_autograd_stand_in(harness_home, tmp_path,
                                                                                         monkeypatch):
    import trl.trainer.utils as trl_utils

    from harness.backends import HFBackend
    from harness.data.prepare import prepare_data
    from harness.models import load_model, resolve_model
    from harness.spec import DataSpec, LoraSpec, TrainSpec

    examples = prepare_data(DataSpec(builtin="realestate"), harness_home / "data").train[:12]
    logs = {}
    for name, kernel in (("autograd", _AutogradLogProb), ("own backward", cpu_logprob.TorchLogProb)):
        monkeypatch.setattr(trl_utils, "_ChunkedLogProbFunction", kernel)
        base, tok = load_model(resolve_model("random:tiny"))
        torch.manual_seed(0)
        model = HFBackend().add_adapter(base, LoraSpec(r=4))
        spec = TrainSpec(max_steps=3, batch_size=4, logging_steps=1, learning_rate=1e-2)
        logs[name] = HFBackend().train_sft(model, tok, examples, spec, tmp_path / name).log
    old, new = logs["autograd"], logs["own backward"]
    assert [row["step"] for row in new] == [1, 2, 3]
    for key in ("loss", "entropy", "mean_token_accuracy", "grad_norm"):  # the diagnostics are all still logged
        assert [row[key] for row in new] == pytest.approx([row[key] for row in old], rel=1e-4), key
    assert new[0]["loss"] != new[-1]["loss"]  # it trained
