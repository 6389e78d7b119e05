"""OpenAI-compatible endpoints: real calls, disk cache, retries with backoff, per-item failures.

Failure behaviour runs against a real misbehaving HTTP server on loopback (flaky_server.py); real
generations against llama-cpp-python's server with the embedded SmolLM2 (llama_server.py, slow)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from harness.evaluation.endpoint import (Completion, Endpoint, EndpointError, EndpointSpec, cost_per_1k_calls,
                                         latency_percentiles, run_many)
from tests.support.endpoint import spec
from tests.support.flaky_server import FlakyServer, error, malformed, ok
from tests.support.llama_server import free_port

HELLO = [{"role": "user", "content": "Say hello."}]


def cache_files(d: Path) -> list[Path]:
    return sorted(d.rglob("*.json")) if d.exists() else []


def test_spec_forbids_unknown_fields():
    with pytest.raises(ValueError):
        EndpointSpec(url="http://x/v1", model="m", price_per_m=1.0)
    with pytest.raises(ValueError, match="http://"):
        EndpointSpec(url="127.0.0.1:8080/v1", model="m")


def test_chat_parses_usage_and_prices_tokens(tmp_path):
    with FlakyServer([ok("hi there", prompt_tokens=1000, completion_tokens=500)]) as srv:
        ep = Endpoint(spec(srv.url, price_input_per_m=2.0, price_output_per_m=10.0), tmp_path)
        c = ep.chat(HELLO)
    assert (c.text, c.input_tokens, c.output_tokens, c.cached) == ("hi there", 1000, 500, False)
    assert c.cost_usd == pytest.approx(1000 * 2.0 / 1e6 + 500 * 10.0 / 1e6)
    assert c.latency_s > 0
    req = srv.requests[0]
    assert req.path == "/v1/chat/completions"
    assert req.body == {"model": "m", "messages": HELLO, "temperature": 0.0, "max_tokens": 16}


def test_backoff_grows_exponentially_then_succeeds(tmp_path):
    # 503, then a malformed body, then success: both failures are retried, each wait twice the last.
    with FlakyServer([error(503), malformed(), ok("done")]) as srv:
        c = Endpoint(spec(srv.url, backoff_base_s=0.15), tmp_path).chat(HELLO)
    assert c.text == "done"
    assert len(srv.requests) == 3
    first, second = srv.gaps()
    assert 0.15 <= first < 0.15 * 1.25 + 0.2
    assert 0.30 <= second < 0.30 * 1.25 + 0.2
    assert len(cache_files(tmp_path)) == 1  # only the success is cached


def test_retry_after_is_honoured(tmp_path):
    with FlakyServer([error(429, retry_after="1"), ok("after wait")]) as srv:
        c = Endpoint(spec(srv.url, backoff_base_s=0.01), tmp_path).chat(HELLO)
    assert c.text == "after wait"
    assert 1.0 <= srv.gaps()[0] < 2.0


def test_down_endpoint_raises_clear_error_after_all_tries(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(EndpointError) as info:
        Endpoint(spec(url, model="teacher-x", max_retries=2), tmp_path).chat(HELLO)
    e = info.value
    assert e.tries == 3 and e.model == "teacher-x"
    msg = str(e)
    assert url in msg and "teacher-x" in msg and "3 tries" in msg and "ConnectError" in msg
    assert cache_files(tmp_path) == []


def test_persistent_malformed_json_fails_and_is_not_cached(tmp_path):
    with FlakyServer(then=malformed("<html>gateway</html>")) as srv:
        with pytest.raises(EndpointError, match=r"after 3 tries: malformed response.*gateway"):
            Endpoint(spec(srv.url, max_retries=2), tmp_path).chat(HELLO)
    assert len(srv.requests) == 3
    assert cache_files(tmp_path) == []


def test_client_error_is_not_retried(tmp_path):
    with FlakyServer([error(400)]) as srv:
        with pytest.raises(EndpointError, match="HTTP 400.*not retried") as info:
            Endpoint(spec(srv.url), tmp_path).chat(HELLO)
    assert len(srv.requests) == 1 and info.value.status == 400


def test_rerun_is_served_from_cache_with_the_server_gone(tmp_path):
    with FlakyServer([ok("cached answer", 10, 4)]) as srv:
        ep = Endpoint(spec(srv.url, price_input_per_m=1.0, price_output_per_m=1.0), tmp_path)
        first = ep.complete("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    # The server is stopped: a second call with the same payload makes no HTTP request.
    again = ep.complete("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    assert again.cached and not first.cached
    assert (again.text, again.input_tokens, again.output_tokens, again.latency_s, again.cost_usd) == (
        first.text, first.input_tokens, first.output_tokens, first.latency_s, first.cost_usd)
    assert srv.requests[0].path == "/v1/completions"
    # Anything not cached does need the server, which is really gone.
    with pytest.raises(EndpointError):
        Endpoint(spec(srv.url, max_retries=0), tmp_path).complete("something else")


def test_cache_key_covers_model_and_generation_settings(tmp_path):
    with FlakyServer() as srv:
        Endpoint(spec(srv.url), tmp_path).chat(HELLO)
        assert Endpoint(spec(srv.url), tmp_path).chat(HELLO).cached
        assert not Endpoint(spec(srv.url, max_tokens=17), tmp_path).chat(HELLO).cached
        assert not Endpoint(spec(srv.url, model="other"), tmp_path).chat(HELLO).cached
        assert not Endpoint(spec(srv.url), tmp_path).complete("Say hello.").cached
        assert not Endpoint(spec(srv.url), None).chat(HELLO).cached  # no cache dir: always calls
    assert len(srv.requests) == 5


def test_api_key_is_sent_from_the_named_variable(tmp_path, monkeypatch):
    with FlakyServer() as srv:
        monkeypatch.delenv("HARNESS_TEST_KEY", raising=False)
        with pytest.raises(EndpointError, match="HARNESS_TEST_KEY"):
            Endpoint(spec(srv.url, api_key_env="HARNESS_TEST_KEY"), tmp_path).chat(HELLO)
        assert srv.requests == []
        monkeypatch.setenv("HARNESS_TEST_KEY", "sk-test")
        Endpoint(spec(srv.url, api_key_env="HARNESS_TEST_KEY"), tmp_path).chat(HELLO)
    assert srv.requests[0].headers["Authorization"] == "Bearer sk-test"
    assert "sk-test" not in "".join(p.read_text() for p in cache_files(tmp_path))


def test_run_many_records_failures_per_item(tmp_path):
    prompts = [[{"role": "user", "content": f"q{i}"}] for i in range(3)]
    with FlakyServer([ok("a"), error(503), ok("c")]) as srv:
        ep = Endpoint(spec(srv.url, max_retries=0), tmp_path)
        out = run_many(ep, prompts, lambda e, p: e.chat(p))
    assert isinstance(out[0], Completion) and isinstance(out[2], Completion)
    assert isinstance(out[1], EndpointError) and out[1].status == 503
    # Endpoint down now: what was cached is still returned, the rest fails item by item.
    again = run_many(ep, prompts, lambda e, p: e.chat(p), workers=2)
    assert [type(x).__name__ for x in again] == ["Completion", "EndpointError", "Completion"]
    assert again[0].cached and again[2].cached and again[0].text == "a"


def test_cost_and_latency_summaries():
    cs = [Completion("x", 10, 5, lat, cost) for lat, cost in [(0.1, 0.001), (0.2, 0.003), (1.0, 0.002)]]
    err = EndpointError("down", url="u", model="m", tries=1)
    assert cost_per_1k_calls(cs + [err]) == pytest.approx(2.0)
    lat = latency_percentiles(cs + [err])
    assert lat["latency_p50_s"] == pytest.approx(0.2)
    assert 0.2 < lat["latency_p95_s"] <= 1.0
    assert math.isnan(cost_per_1k_calls([err]))
