"""Helpers shared by tests/unit/test_quant.py and tests/e2e/test_quant.py."""

from __future__ import annotations

QUESTION = "What is the capital of France? Answer in one sentence."
