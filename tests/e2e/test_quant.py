"""Quantisation delta and local serving: merge → GGUF → llama.cpp, with one rendered prompt for every runner.

The runs of it that take more than a few seconds; the rest is tests/unit/test_quant.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.errors import HarnessError
from tests.support.ci import require
from tests.support.quant import QUESTION


@pytest.fixture(scope="module")
def converter(harness_home) -> Path:
    """llama.cpp's converter in the session's cache: linked from the user's cache, else fetched (PyPI)."""
    from harness.export.converter import converter_dir, ensure_converter, llama_cpp_version

    require(__import__("importlib").util.find_spec("sentencepiece") is not None,
            "the GGUF converter needs sentencepiece (pip install -e .)")
    version = llama_cpp_version()
    user_cache = Path.home() / ".cache" / "harness" / "llama.cpp" / version
    target = converter_dir(version)
    if user_cache.exists() and not target.exists() and user_cache.resolve() != target.resolve():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(user_cache)
    try:
        return ensure_converter()
    except HarnessError as e:  # offline and never fetched
        require(False, f"llama.cpp's converter is not cached and could not be fetched: {e}")


@pytest.fixture(scope="module")
def tiny_adapter(tmp_path_factory, harness_home):
    """random:tiny and a freshly initialised LoRA adapter whose B is non-zero (so merging changes weights)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from harness.models import load_model, resolve_model

    base, tok = load_model(resolve_model("random:tiny"), device="cpu")
    carrier, _ = load_model(resolve_model("random:tiny"), device="cpu")
    torch.manual_seed(1)
    peft_model = get_peft_model(carrier, LoraConfig(
        r=4, lora_alpha=8, init_lora_weights=False,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
    assert any(p.abs().sum() > 0 for n, p in peft_model.named_parameters() if "lora_B" in n)
    adapter = tmp_path_factory.mktemp("tiny") / "adapter"
    peft_model.save_pretrained(adapter)
    return base, tok, adapter


def test_same_prompt_reaches_transformers_and_llama_cpp(harness_home):
    """The text LlamaCppRunner hands llama.cpp is render_prompt's, byte for byte; both engines answer Paris."""
    from harness.evaluation.prompting import render_prompt
    from harness.evaluation.runners import HFRunner, LlamaCppRunner, Runner
    from harness.models import embedded_gguf_path, load_model, resolve_model

    model, tok = load_model(resolve_model("smollm2-135m-instruct"), device="cpu")
    messages = [{"role": "user", "content": QUESTION}]
    text = render_prompt(tok, messages)

    runner = LlamaCppRunner(embedded_gguf_path("smollm2-135m-instruct"), n_ctx=512, n_threads=2)
    assert isinstance(runner, Runner)
    sent_text: list[bytes] = []
    sent_tokens: list[list[int]] = []
    tokenize, complete = runner.llm.tokenize, runner.llm.create_completion

    def spy_tokenize(data, *args, **kwargs):
        sent_text.append(data)
        return tokenize(data, *args, **kwargs)

    def spy_complete(*args, **kwargs):
        sent_tokens.append(list(kwargs["prompt"]))
        return complete(*args, **kwargs)

    def no_chat_handler(*args, **kwargs):
        raise AssertionError("llama-cpp-python's chat handler must never render the prompt")

    runner.llm.tokenize, runner.llm.create_completion = spy_tokenize, spy_complete
    runner.llm.create_chat_completion = no_chat_handler
    try:
        (cpp,) = runner.generate([text], max_new_tokens=24)
    finally:
        runner.close()
    assert sent_text == [text.encode("utf-8")]  # the runner's boundary: exactly the rendered text
    assert sent_tokens == [tok(text, add_special_tokens=False)["input_ids"]]  # and the same tokens as HF
    assert "Paris" in cpp.text, cpp.text
    assert cpp.output_tokens > 0 and cpp.latency_s > 0 and runner.tokens_per_s > 0
    assert runner.size_bytes == embedded_gguf_path("smollm2-135m-instruct").stat().st_size

    (hf,) = HFRunner(model, tok, batch_size=1).generate([text], max_new_tokens=24)
    assert "Paris" in hf.text, hf.text


def test_merge_and_export_random_tiny(tiny_adapter, converter, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from harness.evaluation.runners import LlamaCppRunner
    from harness.export.gguf import export_gguf
    from harness.export.merge import merge_adapter
    from harness.models import load_model, resolve_model

    base, tok, adapter = tiny_adapter
    before = {k: v.clone() for k, v in base.state_dict().items()}
    merged_dir = merge_adapter(base, adapter, tmp_path / "merged", tokenizer=tok)
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())  # the shared base is untouched
    for name in ("config.json", "model.safetensors", "tokenizer.json", "harness-merge.json"):
        assert (merged_dir / name).exists(), name
    assert (merged_dir / "chat_template.jinja").exists() or "chat_template" in (
        merged_dir / "tokenizer_config.json").read_text()

    merged = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    reference = PeftModel.from_pretrained(load_model(resolve_model("random:tiny"), device="cpu")[0], adapter).eval()
    ids = torch.randint(0, len(tok), (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        merged_logits, ref_logits, base_logits = merged(ids).logits, reference(ids).logits, base(ids).logits
    assert torch.allclose(merged_logits, ref_logits, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(merged_logits, base_logits, atol=1e-3)  # the adapter did change the model

    files = export_gguf(merged_dir, tmp_path / "gguf", ("q8_0", "q4_k_m"))
    assert set(files) == {"f16", "q8_0", "q4_k_m"}
    sizes = {t: p.stat().st_size for t, p in files.items()}
    assert sizes["q4_k_m"] < sizes["q8_0"] < sizes["f16"], sizes
    for t in ("q8_0", "q4_k_m"):
        runner = LlamaCppRunner(files[t], n_ctx=256, n_threads=2)
        try:
            (gen,) = runner.generate(["<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"], max_new_tokens=4)
        finally:
            runner.close()
        assert gen.output_tokens > 0, t
        assert runner.size_bytes == sizes[t]


def test_unsupported_architecture_is_a_clear_error(converter, tmp_path):
    from transformers import OPTConfig, OPTForCausalLM

    from harness.export.gguf import export_gguf

    config = OPTConfig(vocab_size=128, hidden_size=16, num_hidden_layers=1, ffn_dim=32, num_attention_heads=2,
                       max_position_embeddings=64, word_embed_proj_dim=16)
    OPTForCausalLM(config).save_pretrained(tmp_path / "opt")
    with pytest.raises(HarnessError) as info:
        export_gguf(tmp_path / "opt", tmp_path / "gguf", ("q8_0",))
    message = str(info.value)
    assert "OPTForCausalLM" in message and "not supported" in message
    assert "converter" in message
    assert not list((tmp_path / "gguf").glob("*.gguf"))  # nothing half-written left behind


def test_quant_delta_writes_rows_per_arm(tiny_adapter, converter, tmp_path):
    import torch

    from harness.data.realestate import load_builtin
    from harness.evaluation.metrics import scorer_for
    from harness.evaluation.prompting import render_prompt
    from harness.export.quant_delta import NF4_NEEDS_CUDA, quant_delta
    from harness.results import read_json, read_jsonl

    base, tok, adapter = tiny_adapter
    heldout = load_builtin(0, tmp_path / "data").heldout[:3]
    out = tmp_path / "quant"
    arms = quant_delta(base, tok, adapter, heldout, scorer_for("json"), out,
                       types=("q8_0", "q4_k_m"), max_new_tokens=8, batch_size=4, n_threads=2)

    ran = {"merged", "q8_0", "q4_k_m"} | ({"nf4"} if torch.cuda.is_available() else set())
    assert set(arms) == ran
    ids = [ex.id for ex in heldout]
    for arm in ran:
        rows = read_jsonl(out / "eval" / f"{arm}.jsonl")
        assert rows == json.loads(json.dumps(arms[arm]))
        assert [r["item_id"] for r in rows] == ids
        assert {"item_id", "arm", "prediction", "reference", "scores", "latency_s", "input_tokens",
                "output_tokens", "batch", "cluster"} <= set(rows[0])
        assert all(r["arm"] == arm and "json_valid" in r["scores"] for r in rows)
    # The one rendering: every arm got these texts, and the same number of prompt tokens.
    prompts = read_jsonl(out / "prompts.jsonl")
    assert [p["text"] for p in prompts] == [render_prompt(tok, ex.prompt) for ex in heldout]
    for arm in ran - {"merged"}:
        assert [r["input_tokens"] for r in arms[arm]] == [r["input_tokens"] for r in arms["merged"]]

    quant = read_json(out / "quant.json")
    for arm in ran:
        entry = quant["arms"][arm]
        assert entry["status"] == "complete" and entry["size_bytes"] > 0 and entry["tokens_per_s"] > 0
    assert quant["arms"]["q4_k_m"]["size_bytes"] < quant["arms"]["q8_0"]["size_bytes"]
    # Each arm's divergence from the merged arm on the reference answers, in its rows; merged's own at 0 / 1 / 0.
    assert all(r["scores"]["kl"] == 0 and r["scores"]["top1_agree"] == 1 and r["scores"]["loglik_delta"] == 0
               for r in arms["merged"])
    for arm in ran - {"merged"}:
        assert all(r["scores"]["kl"] > 0 and 0 <= r["scores"]["top1_agree"] <= 1 and r["divergence_tokens"] > 0
                   for r in arms[arm]), arm
        assert [r["divergence_tokens"] for r in arms[arm]] == [r["divergence_tokens"] for r in arms["merged"]]
    print("mean KL vs merged:", {a: quant["arms"][a]["metrics"]["kl"] for a in ran})
    assert not list(out.glob(".divergence-*"))  # the merged arm's stored logits are gone
    assert "delta_vs_merged" in quant["arms"]["q8_0"]
    if not torch.cuda.is_available():
        assert quant["arms"]["nf4"] == {"status": "not run", "reason": NF4_NEEDS_CUDA,
                                         "runner": "transformers+bitsandbytes", "size_bytes": None,
                                         "tokens_per_s": None}
        assert not (out / "eval" / "nf4.jsonl").exists()
