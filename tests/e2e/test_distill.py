"""Distillation: a teacher endpoint writes the references of N training prompts, cached and costed.

The runs of it that take more than a few seconds; the rest is tests/unit/test_distill.py."""

from __future__ import annotations

import pytest

from harness.stages.teacher_data import DistillSpec
from harness.stages.teacher_data import teacher_written as distill
from tests.support.distill import examples, teacher


def test_distill_against_llama_server_then_rerun_from_cache(llama, tmp_path):
    specs = [DistillSpec(teacher=teacher(llama.url, model=llama.model), n=2, mode=mode)
             for mode in ("answer", "rewrite")]
    results = [distill(examples(), spec, tmp_path) for spec in specs]
    for res in results:
        assert len(res.examples) == 2 and all(ex.reference for ex in res.examples)
        assert all(ex.meta["distilled_from"] == llama.model for ex in res.examples)
        assert res.input_tokens > 0 and 0 < res.output_tokens <= 2 * 16
        assert res.cost_usd == pytest.approx((res.input_tokens * 3.0 + res.output_tokens * 15.0) / 1e6)
        assert res.paid_usd == res.cost_usd and res.cached == 0
        assert res.latency["latency_p50_s"] > 0
    # Rewrite prompts carry the reference, so they are longer than the bare training prompts.
    assert results[1].input_tokens > results[0].input_tokens
    llama.stop()
    for spec, res in zip(specs, results):
        again = distill(examples(), spec, tmp_path)
        assert again.cached == 2 and again.paid_usd == 0 and again.cost_usd == pytest.approx(res.cost_usd)
        assert again.examples == res.examples
