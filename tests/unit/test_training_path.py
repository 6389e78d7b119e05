"""The training path shared by every backend: padding-free batches, memory-aware checkpointing,
backend choice and refusals, and `harness bench` on this machine's device."""

from __future__ import annotations

import pytest
import torch

from harness.backends import HFBackend, backend_unavailable, select_backend
from harness.backends.memory_plan import (CheckpointPlan, ModelShape, apply_to_hf_model, estimate_peak_bytes,
                                          plan_checkpointing)
from harness.errors import Unavailable
from harness.models import ARCHITECTURES, load_model, resolve_model
from harness.spec import LoraSpec, TrainSpec
from tests.support.ci import ROOT
from tests.support.cli_runner import harness

GIB = 2**30


def _tiny_with_adapter(r: int = 4):
    model, tok = load_model(resolve_model("random:tiny"))
    torch.manual_seed(0)
    return HFBackend().add_adapter(model, LoraSpec(r=r)), tok


def _realestate(harness_home, n: int):
    from harness.data.prepare import prepare_data
    from harness.spec import DataSpec

    return prepare_data(DataSpec(builtin="realestate"), harness_home / "data").train[:n]


def _collated(tok, examples, packing: str):
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    rows = []
    for ex in examples:  # prompt tokens masked, completion tokens trained, as TRL prepares them
        prompt = tok.apply_chat_template(ex.prompt, add_generation_prompt=True, tokenize=False)
        full = tok.apply_chat_template(ex.prompt + [{"role": "assistant", "content": ex.reference}], tokenize=False)
        p_ids, ids = tok(prompt, add_special_tokens=False)["input_ids"], tok(full, add_special_tokens=False)["input_ids"]
        rows.append({"input_ids": ids, "labels": [-100] * len(p_ids) + ids[len(p_ids):]})
    _, collator = HFBackend().batching(tok, packing)
    collator = collator or DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id)
    return collator(rows), rows


def test_padding_free_batch_has_no_pad_and_the_same_loss(harness_home):
    model, tok = _tiny_with_adapter()
    examples = _realestate(harness_home, 4)
    packed, rows = _collated(tok, examples, "padding_free")
    padded, _ = _collated(tok, examples, "none")
    lengths = [len(r["input_ids"]) for r in rows]
    assert len(set(lengths)) > 1  # real examples differ in length: the padded batch pays for padding
    assert packed["input_ids"].shape == (1, sum(lengths)) and "attention_mask" not in packed
    assert padded["input_ids"].shape == (4, max(lengths)) and int(padded["attention_mask"].sum()) == sum(lengths)
    with torch.no_grad():  # use_cache=False as TRL's compute_loss passes it: with a cache transformers
        # skips the per-example mask that position ids imply
        loss_packed = model(**packed, use_cache=False).loss
        loss_padded = model(**padded, use_cache=False).loss
        # Without the per-example position ids the examples would attend to each other: a different loss.
        leaky = model(input_ids=packed["input_ids"], labels=packed["labels"], use_cache=False).loss
    assert loss_packed.item() == pytest.approx(loss_padded.item(), rel=1e-5)
    assert abs(leaky.item() - loss_padded.item()) > 1e-4


def test_auto_packing_is_padding_free_only_with_a_flash_attention_kernel():
    model, _ = _tiny_with_adapter()
    backend = HFBackend()
    assert backend.resolve_packing(model, TrainSpec()) == "none"  # SDPA: a block mask would cost more
    assert backend.resolve_packing(model, TrainSpec(packing="padding_free")) == "padding_free"
    model.get_base_model().config._attn_implementation = "flash_attention_2"
    assert backend.resolve_packing(model, TrainSpec()) == "padding_free"


def test_one_training_step_is_the_same_with_and_without_padding(harness_home, tmp_path):
    examples = _realestate(harness_home, 8)
    runs = {}
    for packing in ("padding_free", "none"):
        model, tok = _tiny_with_adapter()
        spec = TrainSpec(max_steps=2, batch_size=4, logging_steps=1, learning_rate=1e-2, packing=packing)
        outcome = HFBackend().train_sft(model, tok, examples, spec, tmp_path / packing)
        lora = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
        runs[packing] = (outcome, lora)
    (free, lora_free), (padded, lora_padded) = runs["padding_free"], runs["none"]
    assert free.settings["packing"] == "padding_free" and padded.settings["packing"] == "none"
    assert [row["loss"] for row in free.log] == pytest.approx([row["loss"] for row in padded.log], rel=1e-4)
    # Adam's first steps move each weight by about +-lr whatever the gradient's size, so float noise in
    # near-zero gradients shows up as small differences; a wrong mask would move whole matrices.
    diffs = torch.stack([(value - lora_padded[name]).abs().max() for name, value in lora_free.items()])
    assert float(diffs.max()) < 2e-3 and float(diffs.median()) < 1e-5


def _shape(arch: str) -> ModelShape:
    from transformers import LlamaConfig

    return ModelShape.of(LlamaConfig(**ARCHITECTURES[arch]))


# Issue 7's measurements on an H100 (4 x 2048 tokens, LoRA r=16 on all linear layers, bf16):
# Llama-3.2-1B without checkpointing peaked at 19.4 GiB, Llama-3.1-8B with checkpointing at 20.1 GiB.
MEASURED = [("llama-3.2-1b", 1_235_814_400, 11_272_192, 0, 19.4), ("llama-3.1-8b", 8_030_261_248, 41_943_040, 32, 20.1)]


@pytest.mark.parametrize("arch,params,trainable,checkpointed,measured_gib", MEASURED)
def test_peak_estimate_is_at_or_above_the_measured_peak_and_close(arch, params, trainable, checkpointed,
                                                                   measured_gib):
    est = estimate_peak_bytes(_shape(arch), weight_bytes=2 * params, trainable_params=trainable,
                              tokens_per_step=4 * 2048, checkpointed_layers=checkpointed) / GIB
    assert measured_gib <= est <= 1.3 * measured_gib


def test_auto_checkpointing_keeps_what_fits():
    h100 = 80 * GIB
    small = plan_checkpointing("auto", _shape("llama-3.2-1b"), weight_bytes=2 * 1_235_814_400,
                               trainable_params=11_272_192, tokens_per_step=8192, device_bytes=h100)
    assert small.checkpointed_layers == 0 and not small.enabled  # the 1B model fits: no recomputation
    big = plan_checkpointing("auto", _shape("llama-3.1-8b"), weight_bytes=2 * 8_030_261_248,
                             trainable_params=41_943_040, tokens_per_step=8192, device_bytes=h100)
    assert 0 < big.checkpointed_layers < 32 and big.estimated_peak_gib <= big.budget_gib  # down, not off
    tight = plan_checkpointing("auto", _shape("llama-3.1-8b"), weight_bytes=2 * 8_030_261_248,
                               trainable_params=41_943_040, tokens_per_step=8192, device_bytes=24 * GIB)
    assert tight.checkpointed_layers == 32
    cpu = plan_checkpointing("auto", _shape("llama-3.1-8b"), weight_bytes=1, trainable_params=1,
                             tokens_per_step=8192, device_bytes=None)
    assert cpu.checkpointed_layers == 0
    forced = plan_checkpointing(True, _shape("llama-3.2-1b"), weight_bytes=1, trainable_params=1,
                                tokens_per_step=8192, device_bytes=h100)
    assert forced.checkpointed_layers == 16 and "true" in forced.reason


def test_partial_checkpointing_recomputes_only_some_layers_and_keeps_the_gradients(harness_home):
    from transformers.modeling_layers import GradientCheckpointingLayer

    grads = {}
    for k in (0, 1, 2):
        model, tok = _tiny_with_adapter()
        apply_to_hf_model(model, CheckpointPlan(k, 2, 0.0, None, "test"))
        layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
        assert sum(bool(layer.gradient_checkpointing) for layer in layers) == k
        model.train()
        ids = torch.randint(3, 100, (2, 16), generator=torch.Generator().manual_seed(0))
        model(input_ids=ids, labels=ids).loss.backward()
        grads[k] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    for k in (1, 2):
        for name, g in grads[0].items():
            assert torch.allclose(g, grads[k][name], atol=1e-6), (k, name)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without CUDA")
def test_without_cuda_auto_is_hf_and_insisting_on_cuda_paths_is_refused():
    backend = select_backend("auto")
    assert isinstance(backend, HFBackend) and backend.name == "hf-peft-trl"  # no Liger without CUDA
    assert "needs CUDA" in backend_unavailable("unsloth")
    with pytest.raises(Unavailable, match="unsloth needs CUDA"):
        select_backend("unsloth")
    with pytest.raises(Unavailable, match="Liger kernels need CUDA"):
        HFBackend(liger=True)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without CUDA")
def test_a_spec_insisting_on_unsloth_is_refused_before_any_trial(tmp_path, harness_home):
    proc = harness("run", "quickstart", "--preset", "smoke", "--set", "train.backend=unsloth",
                   "--results", str(tmp_path))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2
    assert "field 'train.backend'" in out and "unsloth needs CUDA" in out
    assert not list(tmp_path.rglob("trial-*"))  # nothing ran


def test_bench_refuses_an_unknown_architecture_listing_the_known_ones(tmp_path):
    proc = harness("bench", "--arch", "random:llama-9-70b", "--results", str(tmp_path))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2
    assert "unknown architecture 'random:llama-9-70b'" in out
    for arch in ("random:tiny", "random:llama-3.1-8b", "random:llama-3.2-1b"):
        assert arch in out


def test_dpo_bench_pairs_render_to_exactly_the_asked_length(harness_home):
    from harness.bench import dpo_pairs
    from harness.models import load_tokenizer

    tok = load_tokenizer(resolve_model("random:tiny"))
    for seq in (96, 512):
        pairs = dpo_pairs(tok, 3, seq)
        assert len({p["prompt"][0]["content"] for p in pairs}) == 3  # different pairs
        for pair in pairs:
            for answer in ("chosen", "rejected"):
                text = tok.apply_chat_template(pair["prompt"] + pair[answer], tokenize=False)
                assert len(tok(text, add_special_tokens=False)["input_ids"]) == seq


def test_the_raw_reference_loop_ships_with_the_project():
    from harness.bench import DEFAULT_REFERENCE

    root = ROOT
    assert DEFAULT_REFERENCE.is_file() and DEFAULT_REFERENCE.resolve().is_relative_to(root)
    for source in (root / "harness").rglob("*.py"):  # the harness needs nothing from next to the checkout
        assert "bench_lora_reference" not in source.read_text(), source
