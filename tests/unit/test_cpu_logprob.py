"""The CPU stand-in for TRL's Triton kernel gives TRL's fused loss the model's own values and gradients."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from harness.backends import cpu_logprob


def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2)
    return LlamaForCausalLM(cfg)


@pytest.mark.skipif(cpu_logprob.importlib.util.find_spec("triton") is not None, reason="Triton present: TRL's kernel runs")
def test_trl_fused_loss_equals_the_model_loss_on_cpu():
    from trl.trainer.utils import add_fused_lm_head

    assert cpu_logprob.install()
    plain, fused = tiny_llama(), tiny_llama()
    add_fused_lm_head(fused, outputs=("log_probs", "entropy", "is_top1"))
    ids = torch.randint(0, 97, (3, 11))
    labels = ids.clone()
    labels[:, :4] = -100  # completion-only: the prompt is masked
    loss_plain = plain(input_ids=ids, labels=labels).loss
    out = fused(input_ids=ids, labels=labels, fused_lm_head=True)
    assert out.loss.item() == pytest.approx(loss_plain.item(), rel=1e-5)
    loss_plain.backward()
    out.loss.backward()
    for (name, p), q in zip(plain.named_parameters(), fused.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-6), name
    assert out.entropy is not None and out.is_top1.dtype == torch.bool


def test_logprob_outputs_match_log_softmax():
    torch.manual_seed(1)
    hidden, weight = torch.randn(5, 8), torch.randn(13, 8)
    targets = torch.randint(0, 13, (5,))
    logprobs, entropy, log_sum_sq, mean_logits, top1 = cpu_logprob.TorchLogProb.apply(
        hidden, weight, None, targets, 2.0, 4)
    logp = torch.log_softmax(hidden @ weight.T / 2.0, dim=-1)
    assert torch.allclose(logprobs, logp.gather(-1, targets[:, None]).squeeze(-1), atol=1e-6)
    assert torch.allclose(entropy, -(logp.exp() * logp).sum(-1), atol=1e-5)
    assert torch.allclose(log_sum_sq, torch.log((logp.exp() ** 2).sum(-1)), atol=1e-5)
    assert torch.equal(top1, logp.argmax(-1) == targets)


def _exact(hidden, weight, bias, targets, temperature, softcap, scale):
    """The per-token statistics from full float64 logits, the textbook way."""
    z = torch.nn.functional.linear(hidden, weight, bias).double() * scale
    if softcap is not None:
        z = softcap * torch.tanh(z / softcap)
    z = z / temperature
    logp = torch.log_softmax(z, -1)
    entropy = -(logp.exp() * logp).sum(-1)
    return logp.gather(-1, targets[:, None]).squeeze(-1), entropy, z.mean(-1), torch.logsumexp(2 * logp, -1)


@pytest.mark.parametrize("softcap,temperature,scale", [(None, 1.0, 1.0), (None, 0.7, 1.3), (30.0, 0.9, 1.1)])
def test_values_and_gradients_match_full_logits_with_entropy_softcap_and_bias(softcap, temperature, scale):
    torch.manual_seed(2)
    hidden = torch.randn(9, 8, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(13, 8, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(13, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 13, (9,))
    w_logp, w_entropy = torch.randn(9, dtype=torch.float64), torch.randn(9, dtype=torch.float64)
    for entropy_in_loss in (False, True):  # SFT only logs the entropy; a loss may use it
        logp, entropy, log_sum_sq, mean_logits, top1 = cpu_logprob.TorchLogProb.apply(
            hidden, weight, bias, targets, temperature, 4, softcap, scale)
        e_logp, e_entropy, e_mean, e_sum_sq = _exact(hidden, weight, bias, targets, temperature, softcap, scale)
        for got, want in ((logp, e_logp), (entropy, e_entropy), (mean_logits, e_mean), (log_sum_sq, e_sum_sq)):
            assert torch.allclose(got.double(), want, atol=1e-5)  # the logits are float32, as TRL's kernel keeps them
        got_grads = torch.autograd.grad((logp * w_logp).sum() + entropy_in_loss * (entropy * w_entropy).sum(),
                                        (hidden, weight, bias))
        want_grads = torch.autograd.grad((e_logp * w_logp).sum() + entropy_in_loss * (e_entropy * w_entropy).sum(),
                                         (hidden, weight, bias))
        for got, want in zip(got_grads, want_grads):
            assert torch.allclose(got, want, atol=1e-5)
