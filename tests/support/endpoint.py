"""Helpers shared by tests/unit/test_endpoint.py and tests/e2e/test_endpoint.py."""

from __future__ import annotations

from harness.evaluation.endpoint import EndpointSpec


def spec(url: str, **kw) -> EndpointSpec:
    base = {"url": url, "model": "m", "backoff_base_s": 0.01, "backoff_max_s": 5.0, "timeout_s": 10.0,
            "max_tokens": 16}
    return EndpointSpec(**{**base, **kw})
