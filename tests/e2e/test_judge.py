"""The LLM judge: verdicts in both orders, position flips as ties, failures and unparsed replies recorded per
item (never a win or a loss), cost, agreement and self-agreement; against a scripted HTTP server and a real
llama.cpp server on loopback; and its bad input.

The runs of it that take more than a few seconds; the rest is tests/unit/test_judge.py."""

from __future__ import annotations

from harness.evaluation.judge import judge_trial
from harness.stages.judge import JudgeSpec
from tests.support.judge import RUBRIC, judged_arms, judged_items


def test_judge_against_a_real_llama_server(tmp_path, llama):
    """The embedded SmolLM2 as judge: whatever it replies is either a verdict or recorded unparsed, with the
    raw reply; a second run is served from the cache."""
    items = judged_items(2)
    cfg = JudgeSpec.model_validate({"endpoint": {"url": llama.url, "model": llama.model, "max_tokens": 8},
                                    "rubric": RUBRIC, "repeats": 2})
    block, files = judge_trial(cfg, judged_arms(items, [0.9, 0.1]), items, [("tuned", "base")], [], tmp_path / "c")
    assert block["calls"] == 8 and block["failed_calls"] == 0 and block["cost_usd"] == 0.0
    for row in files["tuned_vs_base"]:
        assert row["verdict"] in ("a", "b", "tie") or row["reason"] == "unparsed"
        assert all(isinstance(a["reply"], str) for a in row["asks"]) and len(row["asks"]) == 4
    pair = block["pairwise"]["tuned_vs_base"]
    assert pair["n"] + pair["failed"] == 2 and "self_agreement" in pair
    again, _ = judge_trial(cfg, judged_arms(items, [0.9, 0.1]), items, [("tuned", "base")], [], tmp_path / "c")
    assert again["cached_calls"] == 8 and again["pairwise"] == block["pairwise"]
