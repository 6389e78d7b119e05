"""Distillation: a teacher endpoint writes the references of N training prompts, cached and costed."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import DataError
from harness.evaluation.endpoint import EndpointError
from harness.stages.teacher_data import REWRITE_TEMPLATE, DistillSpec
from harness.stages.teacher_data import teacher_written as distill
from tests.support.distill import examples, teacher
from tests.support.flaky_server import FlakyServer, error, ok


def cache_files(d: Path) -> list[Path]:
    return sorted(d.rglob("*.json")) if d.exists() else []


def test_spec_forbids_unknown_fields_and_bad_mode():
    with pytest.raises(ValueError):
        DistillSpec(teacher=teacher("http://x/v1"), n=2, mode="summarise")
    with pytest.raises(ValueError):
        DistillSpec(teacher=teacher("http://x/v1"), n=2, k=4)


def test_answer_mode_sends_the_prompt_and_replaces_references(tmp_path):
    with FlakyServer([ok("four", 20, 2), ok("blue", 18, 1)]) as srv:
        res = distill(examples(), DistillSpec(teacher=teacher(srv.url), n=2), tmp_path)
    assert [r.body["messages"] for r in srv.requests] == [ex.prompt for ex in examples(2)]
    assert [ex.reference for ex in res.examples] == ["four", "blue"]
    for new, old in zip(res.examples, examples(2)):
        assert (new.id, new.prompt, new.cluster) == (old.id, old.prompt, old.cluster)
        assert new.meta == {"source": "unit", "distilled_from": "teacher", "distill_mode": "answer"}
    assert (res.input_tokens, res.output_tokens, res.cached) == (38, 3, 0)
    assert res.cost_usd == pytest.approx((38 * 3.0 + 3 * 15.0) / 1e6) == res.paid_usd
    assert res.summary()["n"] == 2 and res.summary()["teacher"] == "teacher"


def test_rewrite_mode_gives_the_teacher_the_reference(tmp_path):
    with FlakyServer() as srv:
        distill(examples(), DistillSpec(teacher=teacher(srv.url), n=1, mode="rewrite"), tmp_path)
    (msg,) = srv.requests[0].body["messages"]
    ex = examples(1)[0]
    assert msg == {"role": "user", "content": REWRITE_TEMPLATE.format(prompt=ex.prompt_text,
                                                                      reference=ex.reference)}


def test_teacher_down_midway_raises_and_keeps_what_was_cached(tmp_path):
    with FlakyServer([ok("a"), ok("b")], then=error(503, retry_after="0")) as srv:
        spec = DistillSpec(teacher=teacher(srv.url, max_retries=1), n=3)
        with pytest.raises(EndpointError, match="after 2 tries: HTTP 503"):
            distill(examples(), spec, tmp_path)
    assert len(srv.requests) == 4 and len(cache_files(tmp_path)) == 2
    # The server is gone: the two answers paid for are still there.
    res = distill(examples(), spec.model_copy(update={"n": 2}), tmp_path)
    assert [ex.reference for ex in res.examples] == ["a", "b"]
    assert res.cached == 2 and res.paid_usd == 0 and res.cost_usd > 0


def test_too_few_examples_or_empty_teacher_answers_are_errors(tmp_path):
    with pytest.raises(DataError, match="n=5"):
        distill(examples(), DistillSpec(teacher=teacher("http://127.0.0.1:9/v1"), n=5), tmp_path)
    with FlakyServer([ok("fine"), ok("")]) as srv:
        with pytest.raises(DataError, match="empty answer for 1 item.*ex1"):
            distill(examples(), DistillSpec(teacher=teacher(srv.url), n=2), tmp_path)
