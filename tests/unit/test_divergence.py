"""Per-token divergence of a candidate from its reference: the reduction, real tiny models, the forgetting texts,
and the analysis pairing. llama.cpp's side is tests/e2e/test_divergence.py."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from harness.errors import HarnessError
from harness.evaluation.divergence import (
    KL,
    LOGLIK,
    REFERENCE_SCORES,
    TOP1,
    HFLogits,
    ReferenceLogits,
    ScoredText,
    add_divergence,
    divergences,
    item_divergence,
    plain_text,
    prompt_and_answer,
)


def _tiny(seed: int = 0):
    """random:tiny with seed 0 (as harness.models builds it) or the same architecture drawn with another seed."""
    import torch
    from transformers import AutoModelForCausalLM

    from harness.models import load_model, resolve_model

    model, tok = load_model(resolve_model("random:tiny"), device="cpu")
    if seed:
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(model.config, dtype=torch.float32)
    return model.eval(), tok


def test_the_reduction_matches_scipy_and_is_zero_against_itself():
    from scipy.special import softmax
    from scipy.stats import entropy

    rng = np.random.default_rng(0)
    ref, cand = rng.normal(size=(5, 40)).astype(np.float32), rng.normal(size=(5, 40)).astype(np.float32)
    target = rng.integers(0, 40, size=5)
    assert item_divergence(ref, ref, target) == {KL: 0.0, TOP1: 1.0, LOGLIK: 0.0} == REFERENCE_SCORES

    got = item_divergence(ref, cand, target)
    p, q = softmax(ref.astype(float), axis=-1), softmax(cand.astype(float), axis=-1)
    assert got[KL] == pytest.approx(np.mean([entropy(p[i], q[i]) for i in range(5)]), rel=1e-9)
    assert got[KL] > 0
    assert got[TOP1] == np.mean(ref.argmax(-1) == cand.argmax(-1))
    assert got[LOGLIK] == pytest.approx(np.mean(np.log(q[range(5), target]) - np.log(p[range(5), target])))


def test_a_token_the_reference_rules_out_adds_nothing_one_the_candidate_rules_out_is_infinite():
    ref = np.array([[0.0, 1.0, -np.inf]])
    assert item_divergence(ref, np.array([[0.0, 1.0, 5.0]]), [0])[KL] > 0  # finite: only the mass moved
    assert math.isfinite(item_divergence(ref, np.array([[0.0, 1.0, 5.0]]), [0])[KL])
    assert item_divergence(np.array([[0.0, 1.0, 5.0]]), ref, [0])[KL] == math.inf


def test_logits_of_another_shape_are_refused():
    with pytest.raises(HarnessError, match="shape"):
        item_divergence(np.zeros((3, 10)), np.zeros((3, 11)), [0, 1, 2])


def test_a_text_needs_context_and_tokens_to_score():
    with pytest.raises(HarnessError, match="item 'x'"):
        ScoredText("x", (1, 2), ())
    with pytest.raises(HarnessError, match="item 'y'"):
        ScoredText("y", (), (1,))


def test_random_tiny_against_itself_is_zero_and_against_another_seed_positive(harness_home):
    model, tok = _tiny()
    other, _ = _tiny(seed=1)
    texts = [prompt_and_answer("a", tok, "<|im_start|>user\nWhere is the house?<|im_end|>\n<|im_start|>assistant\n",
                               '{"city": "Lyon", "rooms": 3}'),
             plain_text("b", tok, "The quick brown fox jumps over the lazy dog.")]
    same = divergences(HFLogits(model), HFLogits(model), texts)
    assert same == [REFERENCE_SCORES, REFERENCE_SCORES]
    apart = divergences(HFLogits(model), HFLogits(other), texts)
    assert all(d[KL] > 0.01 and d[LOGLIK] != 0 for d in apart), apart
    assert min(d[TOP1] for d in apart) < 1, apart  # near-uniform random models can still share a top token


def test_hf_logits_are_the_full_forward_at_the_scored_positions(harness_home):
    import torch

    model, tok = _tiny()
    text = prompt_and_answer("a", tok, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", "Hello there.")
    got = HFLogits(model).logits(text)
    with torch.no_grad():
        full = model(torch.tensor([text.ids])).logits[0].numpy()
    n = len(text.context)
    assert got.shape == (len(text.target), full.shape[-1])
    np.testing.assert_allclose(got, full[n - 1:-1], atol=1e-5)
    assert text.context == tuple(tok("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
                                     add_special_tokens=False)["input_ids"])  # the eval's prompt tokens


def test_stored_reference_logits_give_what_both_models_loaded_give_and_are_removed(harness_home, tmp_path):
    model, tok = _tiny()
    other, _ = _tiny(seed=2)
    texts = [plain_text(str(i), tok, f"Item {i}: a flat with {i + 1} rooms.") for i in range(3)]
    with ReferenceLogits(HFLogits(model), texts, under=tmp_path) as stored:
        assert len(list(tmp_path.glob(".divergence-*/*.npy"))) == 3
        assert stored.compare(HFLogits(other)) == divergences(HFLogits(model), HFLogits(other), texts)
        assert stored.compare(HFLogits(model)) == [REFERENCE_SCORES] * 3
    assert not list(tmp_path.iterdir())


def test_add_divergence_writes_scores_and_refuses_misaligned_rows():
    texts = [ScoredText("a", (1,), (2, 3)), ScoredText("b", (1,), (4,))]
    rows = [{"item_id": "a", "scores": {"exact_match": 1.0}}, {"item_id": "b", "scores": {}}]
    add_divergence(rows, texts, [REFERENCE_SCORES, {KL: 0.5, TOP1: 0.0, LOGLIK: -1.0}])
    assert rows[0] == {"item_id": "a", "scores": {"exact_match": 1.0, **REFERENCE_SCORES}, "divergence_tokens": 2}
    assert rows[1]["scores"][KL] == 0.5 and rows[1]["divergence_tokens"] == 1
    with pytest.raises(HarnessError, match="line up"):
        add_divergence(rows[::-1], texts, [REFERENCE_SCORES] * 2)


def test_the_scores_are_declared_with_direction_and_range():
    from harness.evaluation.metrics import HIGHER, LOWER, display_name, score_spec

    assert (score_spec(KL).direction, score_spec(KL).low, score_spec(KL).high) == (LOWER, 0.0, math.inf)
    assert (score_spec(TOP1).direction, score_spec(TOP1).low, score_spec(TOP1).high) == (HIGHER, 0.0, 1.0)
    assert (score_spec(LOGLIK).direction, score_spec(LOGLIK).low) == (HIGHER, -math.inf)
    assert "KL" in display_name(KL)


def test_forgetting_text_from_a_file_and_its_errors(harness_home, tmp_path):
    from harness.capabilities.divergence import check_source, texts_for

    _, tok = _tiny()
    good = tmp_path / "general.jsonl"
    good.write_text("\n".join(json.dumps(r) for r in ({"id": "w1", "text": "Rain fell on the city."},
                                                      {"text": "Bread is baked in an oven."},
                                                      {"text": "A third line."})) + "\n")
    texts = texts_for(str(good), [], 2, tok)
    assert [(t.item_id, meta) for t, meta in texts] == [("w1", {"source": "general.jsonl", "doc_id": 0}),
                                                        ("1", {"source": "general.jsonl", "doc_id": 1})]
    assert texts[0][0].context == (tok.bos_token_id,) if tok.bos_token_id is not None else True
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"txt": "typo"}\n')
    with pytest.raises(HarnessError, match="line 2"):
        texts_for(str(bad), [], None, tok)
    with pytest.raises(HarnessError, match="divergence_text"):
        check_source("general.txt")
    with pytest.raises(HarnessError, match="no such file"):
        check_source(str(tmp_path / "absent.jsonl"))
    check_source("tasks")
    check_source("none")


def test_forgetting_divergence_pairs_tuned_rows_with_the_reference_value(tmp_path):
    from analysis.compare import pair_statistics
    from analysis.divergence import forgetting_divergence
    from analysis.errors import UnpairedItemsError
    from harness.capabilities.divergence import divergence_path
    from harness.results import write_jsonl

    rng = np.random.default_rng(0)
    folders = [tmp_path / f"trial-{s}" for s in (0, 1)]
    for f in folders:
        write_jsonl(divergence_path(f), [{"item_id": f"t/{i}", "source": "t", "doc_id": i, KL: float(k),
                                          TOP1: 0.9, LOGLIK: -0.1, "tokens": 5}
                                         for i, k in enumerate(rng.uniform(0.01, 0.05, size=12))])
    scores = forgetting_divergence("tuned", folders, [0, 1])
    assert [s.metric for s in scores] == [KL, TOP1, LOGLIK]
    kl = scores[0]
    assert kl.a.shape == (2, 12) and not kl.b.any() and kl.b_label == "base"
    c = pair_statistics(kl, n_resamples=500)
    assert 0.01 < c.ci_low < c.diff < c.ci_high < 0.05
    assert pair_statistics(scores[1], n_resamples=200).diff == pytest.approx(-0.1)
    assert forgetting_divergence("tuned", [tmp_path / "none"], [0]) == []
    write_jsonl(divergence_path(folders[1]), [{"item_id": "other", KL: 0.0, TOP1: 1.0, LOGLIK: 0.0}])
    with pytest.raises(UnpairedItemsError, match="different texts"):
        forgetting_divergence("tuned", folders, [0, 1])
