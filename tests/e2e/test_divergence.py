"""Divergence through llama.cpp: its logits against transformers' for the same model, the quantised types in
order, and the figures llama.cpp's own `llama-perplexity --kl-divergence` reports for the same tokens.

The model is the embedded SmolLM2-135M-Instruct (real weights, offline): a random model's near-uniform
distributions would hide what quantisation does. The unit side is tests/unit/test_divergence.py."""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
from scipy.special import logsumexp

from harness.evaluation.divergence import (
    KL,
    LOGLIK,
    TOP1,
    HFLogits,
    LlamaCppLogits,
    ScoredText,
    context_for,
    divergences,
    item_divergence,
    log_softmax,
    plain_text,
    prompt_and_answer,
)
from tests.e2e.test_quant import converter  # noqa: F401  (the fixture)

MODEL = "smollm2-135m-instruct"
TEXTS = ("The harbour was quiet before dawn; only the gulls and a single trawler moved on the grey water.",
         "To bake bread, mix flour, water, salt and yeast, knead the dough, let it rise, then bake it hot.",
         "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen inside the leaves.")
# llama.cpp's tool, where a user has one: on PATH, or named by this variable (llama-cpp-python ships none).
PERPLEXITY_ENV = "HARNESS_LLAMA_PERPLEXITY"


@pytest.fixture(scope="module")
def smollm(harness_home, converter, tmp_path_factory):  # noqa: F811
    """SmolLM2 in transformers (float32) and its f32 / f16 / q8_0 / q4_k_m GGUFs."""
    from harness.export.gguf import export_gguf
    from harness.models import load_model, resolve_model

    resolved = resolve_model(MODEL)
    model, tok = load_model(resolved, "float32", device="cpu")
    ggufs = export_gguf(resolved.path, tmp_path_factory.mktemp("gguf"), ("f32", "q8_0", "q4_k_m"), threads=2)
    return model.eval(), tok, ggufs


def _texts(tok) -> list[ScoredText]:
    chat = "<|im_start|>user\nName three rooms of a house.<|im_end|>\n<|im_start|>assistant\n"
    return [*(plain_text(str(i), tok, t) for i, t in enumerate(TEXTS)),
            prompt_and_answer("chat", tok, chat, "A kitchen, a bedroom and a bathroom.")]


def test_llama_cpp_f32_logits_are_transformers_logits(smollm):
    model, tok, ggufs = smollm
    texts = _texts(tok)
    with LlamaCppLogits(ggufs["f32"], context_for(texts), n_threads=2) as llama:
        for t in texts:  # llama.cpp keeps its KV cache in f16: close, not bit-equal
            np.testing.assert_allclose(llama.logits(t), HFLogits(model).logits(t), atol=0.05)
        found = divergences(HFLogits(model), llama, texts)
    print("f32 GGUF vs transformers:", found)
    assert all(d[KL] < 1e-5 and d[TOP1] == 1.0 and abs(d[LOGLIK]) < 1e-3 for d in found), found


def test_q8_0_stays_closer_to_the_model_than_q4_k_m(smollm):
    model, tok, ggufs = smollm
    texts = _texts(tok)
    kl = {}
    for t in ("q8_0", "q4_k_m"):
        with LlamaCppLogits(ggufs[t], context_for(texts), n_threads=2) as llama:
            found = divergences(HFLogits(model), llama, texts)
        kl[t] = float(np.mean([d[KL] for d in found]))
        assert all(d[KL] > 0 for d in found), (t, found)
    print("mean KL vs transformers f32:", kl)
    assert 0 < kl["q8_0"] < kl["q4_k_m"], kl


def _perplexity_tool() -> str | None:
    return os.environ.get(PERPLEXITY_ENV) or shutil.which("llama-perplexity")


def test_the_figures_are_llama_perplexity_kl_divergence_figures(smollm, tmp_path):
    """Same tokens, same positions (the second half of each chunk, the chunk's first token a BOS), the f16 GGUF
    as the base: llama.cpp's Mean KLD, Same top p and ln(PPL(Q)/PPL(base)) are ours."""
    tool = _perplexity_tool()
    if tool is None:
        pytest.skip("no llama-perplexity binary (llama-cpp-python ships none): put one on PATH or set "
                    f"{PERPLEXITY_ENV}")
    _, _, ggufs = smollm
    corpus = tmp_path / "text.txt"
    corpus.write_text((Path(__file__).parents[2] / "README.md").read_text()[:12000])
    n_ctx, base_file = 128, tmp_path / "base.kld"
    common = ["-f", str(corpus), "-c", str(n_ctx), "-b", str(n_ctx), "--chunks", "4", "-t", "2", "-ngl", "0"]
    subprocess.run([tool, "-m", str(ggufs["f16"]), *common, "--kl-divergence-base", str(base_file)],
                   check=True, capture_output=True, text=True)
    run = subprocess.run([tool, "-m", str(ggufs["q4_k_m"]), *common, "--kl-divergence-base", str(base_file),
                          "--kl-divergence"], check=True, capture_output=True, text=True)
    log = run.stdout + run.stderr
    theirs = {key: float(re.search(pattern, log).group(1)) for key, pattern in (
        (KL, r"Mean\s+KLD:\s+([-\d.]+)"), (TOP1, r"Same top p:\s+([-\d.]+)"),
        ("ln_ppl_ratio", r"Mean ln\(PPL\(Q\)/PPL\(base\)\)\s*:\s+([-\d.]+)"))}

    raw = base_file.read_bytes()
    assert raw[:8] == b"_logits_"
    file_ctx, n_vocab, n_chunk = struct.unpack_from("<Iii", raw, 8)
    tokens = np.frombuffer(raw, dtype=np.int32, count=file_ctx * n_chunk, offset=20).reshape(n_chunk, file_ctx)
    with LlamaCppLogits(ggufs["f16"], n_ctx, n_threads=2) as base:
        bos = base.llm.token_bos() if base.llm.metadata.get("tokenizer.ggml.add_bos_token", "true") == "true" else None
        first = n_ctx // 2
        texts = []
        for i, chunk in enumerate(tokens.tolist()):
            chunk = [bos, *chunk[1:]] if bos is not None else chunk
            texts.append(ScoredText(f"chunk {i}", tuple(chunk[:first + 1]), tuple(chunk[first + 1:])))
        reference = [base.logits(t) for t in texts]
    with LlamaCppLogits(ggufs["q4_k_m"], n_ctx, n_threads=2) as candidate:
        candidates = [candidate.logits(t) for t in texts]
    ours = [item_divergence(r, c, t.target) for r, c, t in zip(reference, candidates, texts)]
    # llama.cpp floors the base's stored log-probabilities at 16 nats below the top logit: its
    # ln(PPL(Q)/PPL(base)) is over the floored base log-likelihoods, so ours is floored the same way here.
    nll, nll_base = [], []
    for r, c, t in zip(reference, candidates, texts):
        rows, tok = np.arange(len(t.target)), np.array(t.target)
        lp_r, lp_c = log_softmax(r), log_softmax(c)
        floor = np.maximum(r.min(-1), r.max(-1) - 16) - logsumexp(r.astype(np.float64), axis=-1)
        nll += list(-lp_c[rows, tok])
        nll_base += list(-np.maximum(lp_r[rows, tok], floor))
    mean = {k: float(np.mean([d[k] for d in ours])) for k in (KL, TOP1, LOGLIK)}  # equal chunks: pooled = mean
    print("ours:", mean, "llama-perplexity:", theirs)
    assert mean[KL] > 0.001
    # llama.cpp stores the base's log-probabilities as 16-bit steps: agreement to a few percent, not to the bit.
    assert mean[KL] == pytest.approx(theirs[KL], rel=0.05), (mean, theirs)
    assert 100 * mean[TOP1] == pytest.approx(theirs[TOP1], abs=1.0), (mean, theirs)
    ppl_q, ppl_base = (float(v) for v in re.findall(r"Mean PPL\((?:Q|base)\)\s*:\s+([-\d.]+)", log))
    # The base's log-likelihood is llama.cpp's to the printed digits; the q4_k_m's differs by about 1%
    # (llama-perplexity's CPU kernels for k-quants are not llama-cpp-python's), which moves the ratio.
    assert float(np.exp(np.mean(nll_base))) == pytest.approx(ppl_base, rel=1e-5), (ppl_base, nll_base[:3])
    assert float(np.exp(np.mean(nll))) == pytest.approx(ppl_q, rel=0.02), ppl_q
    assert np.mean(nll) - np.mean(nll_base) == pytest.approx(theirs["ln_ppl_ratio"], abs=0.02), (mean, theirs)
    assert mean[LOGLIK] < 0  # the q4_k_m finds the text less likely than the f16 does
