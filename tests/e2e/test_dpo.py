"""SFT → DPO: pairs mined from the SFT model's own failures, DPO against the SFT policy, users' pair files.

The runs of it that take more than a few seconds; the rest is tests/unit/test_dpo.py."""

from __future__ import annotations

import math

import pytest

from harness.backends import HFBackend, NonFiniteLoss
from harness.data.example import Example
from harness.evaluation.scoring import score
from harness.spec import LoraSpec, TrainSpec
from harness.stages.dpo import DPOSpec, mine_pairs, train_dpo
from tests.support.dpo import dev_items


@pytest.fixture(scope="module")
def tiny(harness_home):
    from harness.models import load_model, resolve_model

    return load_model(resolve_model("random:tiny"))


def test_mining_on_random_tiny_pairs_its_own_outputs_with_the_references(tiny):
    from harness.evaluation.evaluate import generate

    model, tok = tiny
    dev = dev_items(5)
    pairs = mine_pairs(model, tok, dev, score, metric="field_accuracy", fail_below=1.0, max_pairs=3,
                       max_new_tokens=8, batch_size=4)
    own = generate(model, tok, [ex.prompt for ex in dev], max_new_tokens=8, batch_size=4)
    assert [p.id for p in pairs] == ["d0", "d1", "d2"]  # random weights fail everything; capped in dev order
    for p, ex, g in zip(pairs, dev, own):
        assert p.reference == ex.reference and p.rejected == g.text and p.prompt == ex.prompt
    again = mine_pairs(model, tok, dev, score, metric="field_accuracy", fail_below=1.0, max_pairs=3,
                       max_new_tokens=8, batch_size=2)
    assert [(p.id, p.rejected) for p in again] == [(p.id, p.rejected) for p in pairs]


def _chosen_logps(model, tok, pairs: list[Example]) -> list[float]:
    """Summed log-probabilities of each pair's chosen answer (the assistant turn as the chat template renders it)."""
    import torch

    out = []
    for ex in pairs:
        prompt = tok.apply_chat_template(ex.prompt, add_generation_prompt=True, tokenize=False)
        full = tok.apply_chat_template([*ex.prompt, {"role": "assistant", "content": ex.reference}], tokenize=False)
        assert full.startswith(prompt)
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        ids = tok(full, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0, :-1].float()
        logp = torch.log_softmax(logits, -1).gather(-1, torch.tensor(ids[1:])[:, None]).squeeze(-1)
        out.append(float(logp[len(p_ids) - 1:].sum()))
    return out


def test_dpo_continues_the_sft_adapter_against_the_sft_policy(tiny, tmp_path):
    import torch

    base, tok = tiny
    backend = HFBackend()
    model = backend.add_adapter(base, LoraSpec(r=4))
    try:
        dev = dev_items(4)
        sft = backend.train_sft(model, tok, dev, TrainSpec(learning_rate=2e-2, max_steps=2, batch_size=2,
                                                           max_length=128, logging_steps=1), tmp_path / "sft")
        pairs = mine_pairs(model, tok, dev, score, metric="field_accuracy", fail_below=1.0, max_pairs=2,
                           max_new_tokens=8, batch_size=4)
        assert len(pairs) == 2

        model.eval()
        sft_logps = _chosen_logps(model, tok, pairs)
        with model.disable_adapter():
            base_logps = _chosen_logps(model, tok, pairs)
        spec = DPOSpec(beta=0.1, learning_rate=1e-3, max_steps=2, batch_size=2, max_length=128)
        # what step 1 would log if the reference were the adapter-free base instead of the SFT policy
        base_ref_reward = spec.beta * (sum(sft_logps) - sum(base_logps)) / len(pairs)
        assert abs(base_ref_reward) > 1e-2

        before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
        out = train_dpo(model, tok, pairs, spec, seed=0, out_dir=tmp_path / "dpo")

        first = out.log[0]
        assert first["step"] == 1
        # Step 1's metrics come from the forward before the first update: policy == SFT. A zero reward
        # means the reference is the SFT policy too; against the base it would be `base_ref_reward`.
        assert first["logps/chosen"] == pytest.approx(sum(sft_logps) / len(pairs), rel=1e-4)
        for key in ("rewards/chosen", "rewards/rejected", "rewards/margins"):
            assert abs(first[key]) < 1e-5, key
        assert first["loss"] == pytest.approx(math.log(2), abs=1e-5)
        assert {"rewards/accuracies", "rewards/margins", "logps/rejected"} <= set(out.log[-1])
        assert out.log[-1]["rewards/margins"] != 0.0  # the policy moved away from the reference

        assert out.steps == 2 and len(out.log) == 2
        assert math.isfinite(out.final_loss) and out.tokens_trained > 0 and out.runtime_s > 0
        assert out.trainable_params == sft.trainable_params
        changed = [n for n, p in model.named_parameters() if "lora_" in n and not torch.equal(p, before[n])]
        assert changed and all(".default." in n for n in changed)
        # TRL's frozen reference copy is gone: the model is as train_sft left it, ready to evaluate and save
        assert list(model.peft_config) == ["default"] and model.active_adapter == "default"
        assert all(p.requires_grad == ("lora_" in n) for n, p in model.named_parameters())
    finally:
        backend.remove_adapter(model)


def test_a_non_finite_dpo_loss_stops_at_its_step(tiny, tmp_path):
    import torch

    base, tok = tiny
    backend = HFBackend()
    model = backend.add_adapter(base, LoraSpec(r=4))
    try:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.fill_(float("nan"))
        pairs = [Example(id="a", prompt=[{"role": "user", "content": "q?"}], reference="yes", rejected="no")]
        with pytest.raises(NonFiniteLoss) as err:
            train_dpo(model, tok, pairs, DPOSpec(max_steps=2, batch_size=1, max_length=64), 0, tmp_path)
        assert err.value.step == 1 and math.isnan(err.value.value)
        assert list(model.peft_config) == ["default"]  # cleaned up on the way out
    finally:
        backend.remove_adapter(model)


def test_reference_log_probs_computed_once_train_the_same_as_a_reference_forward_per_step(tiny, tmp_path):
    import torch

    base, tok = tiny
    backend = HFBackend()
    pairs = [Example(id=f"p{i}", prompt=ex.prompt, reference=ex.reference, rejected=f"not {i}, nor {i + 1}")
             for i, ex in enumerate(dev_items(6))]
    logs, calls = {}, {}
    for precompute in (False, True):
        torch.manual_seed(1)
        model = backend.add_adapter(base, LoraSpec(r=4))
        try:
            with torch.no_grad():  # an adapter that is not the identity: the reference is not the base
                for name, p in model.named_parameters():
                    if "lora_B" in name:
                        p.normal_(0, 0.05)
            ref_forwards = []
            hook = model.get_base_model().model.norm.register_forward_hook(
                lambda module, args, out: ref_forwards.append(torch.is_grad_enabled()))
            spec = DPOSpec(beta=0.1, learning_rate=1e-3, max_steps=3, batch_size=2, max_length=128)
            logs[precompute] = train_dpo(model, tok, pairs, spec, seed=0, out_dir=tmp_path / str(precompute),
                                         precompute_reference=precompute).log
            hook.remove()
            calls[precompute] = ref_forwards
        finally:
            backend.remove_adapter(model)
    # no-grad forwards: one per step before, one per batch of pairs up front now; the policy's are the same
    assert calls[False].count(False) == 3 and calls[True].count(False) == 3 and \
        calls[False].count(True) == calls[True].count(True) == 3
    assert [row["step"] for row in logs[True]] == [1, 2, 3]
    for key in ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen", "logps/rejected"):
        assert [row[key] for row in logs[True]] == pytest.approx([row[key] for row in logs[False]], rel=1e-4,
                                                                  abs=1e-6), key
    assert logs[True][-1]["rewards/margins"] != 0.0  # the policy moved away from the reference
