"""`harness data draft` against a real OpenAI-compatible server (llama.cpp with the embedded SmolLM2)."""

from __future__ import annotations

import json

from harness.data.formats import load_examples
from harness.data.review import Review, provenance_line
from tests.support.cli_runner import harness


def test_draft_with_a_real_model_then_rerun_from_the_cache_with_the_server_gone(llama, tmp_path):
    src = tmp_path / "prompts.csv"
    src.write_text("id,prompt\nfr,Capital of France?\nfruit,Name a fruit.\n")
    out = tmp_path / "train.jsonl"
    args = ("data", "draft", str(src), "--out", str(out), "--url", llama.url, "--model", llama.model,
            "--max-tokens", "8", "--price-input-per-m", "0.5", "--price-output-per-m", "1.5", "--max-retries", "0")
    first = harness(*args, check=True)
    assert "drafted 2 pairs" in first.stdout + first.stderr and "0 from the cache" in first.stdout + first.stderr
    pairs = load_examples(out)
    assert [p.id for p in pairs] == ["fr", "fruit"] and all(p.reference for p in pairs)
    meta = pairs[0].meta["drafted"]
    assert meta["model"] == llama.model and 0 < meta["output_tokens"] <= 8 and meta["cost_usd"] > 0
    drafted = out.read_text()
    llama.stop()
    again = harness(*args, check=True)  # every call is cached: nothing is asked of the (stopped) server
    assert "2 from the cache" in again.stdout + again.stderr and "$0.0000 paid this run" in again.stdout + again.stderr
    assert [json.loads(line)["reference"] for line in out.read_text().splitlines()] == [
        json.loads(line)["reference"] for line in drafted.splitlines()]
    review = Review.open(out)
    for pair_id in ("fr", "fruit"):
        review.decide(pair_id, "keep", reviewer="ann")
    assert provenance_line(review.summary()) == (
        f"2 pairs: drafted by {llama.model}, reviewed in 1 batch(es) by ann, 0 fixed, 0 deleted")
