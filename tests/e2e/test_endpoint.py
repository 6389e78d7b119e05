"""OpenAI-compatible endpoints: real calls, disk cache, retries with backoff, per-item failures.

The runs of it that take more than a few seconds; the rest is tests/unit/test_endpoint.py."""

from __future__ import annotations

import pytest

from harness.evaluation.endpoint import Endpoint, EndpointError, cost_per_1k_calls, latency_percentiles
from tests.support.endpoint import spec


def test_llama_chat_and_raw_completion(llama, tmp_path):
    ep = Endpoint(spec(llama.url, model=llama.model, price_input_per_m=0.5, price_output_per_m=1.5,
                       max_tokens=16, timeout_s=120), tmp_path)
    # An own short system message: SmolLM2's default one would add ~30 slow prompt tokens per call.
    chat = ep.chat([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}])
    raw = ep.complete("<|im_start|>user\nCapital of France?<|im_end|>\n<|im_start|>assistant\n")
    for c in (chat, raw):
        assert c.text and not c.cached
        assert c.input_tokens > 0 and 0 < c.output_tokens <= 16
        assert c.latency_s > 0
        assert c.cost_usd == pytest.approx((c.input_tokens * 0.5 + c.output_tokens * 1.5) / 1e6)
    assert cost_per_1k_calls([chat, raw]) > 0
    assert latency_percentiles([chat, raw])["latency_p95_s"] > 0


def test_llama_cache_hit_after_stopping_the_server(llama, tmp_path):
    ep = Endpoint(spec(llama.url, model=llama.model, max_tokens=12, timeout_s=120), tmp_path)
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a fruit."}]
    first = ep.chat(msgs)
    llama.stop()
    again = Endpoint(spec(llama.url, model=llama.model, max_tokens=12, timeout_s=120), tmp_path).chat(msgs)
    assert again.cached and again.text == first.text and again.latency_s == first.latency_s
    with pytest.raises(EndpointError, match="ConnectError"):
        Endpoint(spec(llama.url, model=llama.model, max_tokens=12, max_retries=1), tmp_path).chat(
            [{"role": "user", "content": "Name a vegetable."}])
