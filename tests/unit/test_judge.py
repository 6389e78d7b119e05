"""The LLM judge: verdicts in both orders, position flips as ties, failures and unparsed replies recorded per
item (never a win or a loss), cost, agreement and self-agreement; against a scripted HTTP server and a real
llama.cpp server on loopback; and its bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness.errors import SpecError
from harness.evaluation.judge import Ask, judge_trial, pairwise_verdict, parse_grade, parse_pairwise
from harness.results import read_jsonl
from harness.spec import load_spec
from harness.stages.judge import JudgeSpec
from tests.support.flaky_server import FlakyServer, error, malformed, ok
from tests.support.judge import RUBRIC, judged_arms, judged_items


def _cfg(url: str, **kw) -> JudgeSpec:
    return JudgeSpec.model_validate({"endpoint": {"url": url, "model": "judge", "max_retries": 2, "backoff_base_s": 0,
                                                  "price_input_per_m": 1.0, "price_output_per_m": 2.0},
                                     "rubric": RUBRIC, **kw})


def test_replies_parse_from_json_or_words_and_nothing_else():
    assert parse_pairwise('{"winner": "A"}') == "A" and parse_pairwise('ok {"winner": "tie"}') == "tie"
    assert parse_pairwise("Winner: B") == "B" and parse_pairwise("b.") == "B"
    assert parse_pairwise("The answer that follows the rubric better is:\n-") is None
    assert parse_pairwise('{"winner": "C"}') is None
    assert parse_grade('{"score": 4}', 1, 5) == 4 and parse_grade("Score: 2", 1, 5) == 2 and parse_grade("3", 1, 5) == 3
    assert parse_grade("Score: 9", 1, 5) is None and parse_grade("great", 1, 5) is None


def test_a_verdict_that_follows_the_position_is_a_tie():
    ask = lambda parsed: Ask("ab", 0, str(parsed), parsed)  # noqa: E731
    assert pairwise_verdict(ask("A"), ask("B")) == ("a", False)  # a first: A; b first: B (= a)
    assert pairwise_verdict(ask("A"), ask("A")) == ("tie", True)  # whoever is shown first wins
    assert pairwise_verdict(ask("tie"), ask("B")) == ("tie", False)
    assert pairwise_verdict(ask(None), ask("B")) == (None, False)


def test_pairwise_against_a_flaky_server(tmp_path):
    items = judged_items(4)
    script = [ok('{"winner": "A"}'), ok('{"winner": "B"}'),  # i0: tuned wins in both orders
              ok("Winner: A"), ok('{"winner": "A"}'),  # i1: the first shown wins: a position flip, a tie
              error(500), malformed(), ok("I like both of them"), ok('{"winner": "B"}'),  # i2: unparsed
              error(503), error(503), error(503), ok("tie")]  # i3: failed after its retries
    with FlakyServer(script, then=error(503)) as srv:
        block, files = judge_trial(_cfg(srv.url), judged_arms(items, [0.9, 0.9, 0.9, 0.9]), items, [("tuned", "base")],
                                   [], tmp_path / "cache")
        assert len(srv.requests) == 12
        # Again: answered calls come from the cache; only the failed one is asked again (and fails again).
        block2, _ = judge_trial(_cfg(srv.url), judged_arms(items, [0.9] * 4), items, [("tuned", "base")], [],
                                tmp_path / "cache")
        assert len(srv.requests) == 15
    assert block2["cached_calls"] == 7 and block2["pairwise"]["tuned_vs_base"]["wins"] == 1
    assert srv.requests[0].body["messages"][0]["content"].count("tuned answer i0") == 1
    first_shown = [r.body["messages"][0]["content"] for r in srv.requests[:2]]
    assert first_shown[0].index("tuned answer") < first_shown[0].index("base answer")
    assert first_shown[1].index("base answer") < first_shown[1].index("tuned answer")
    pair = block["pairwise"]["tuned_vs_base"]
    assert (pair["n"], pair["wins"], pair["losses"], pair["ties"], pair["failed"]) == (2, 1, 0, 1, 2)
    assert pair["win_rate"] == 0.75 and pair["tie_rate"] == 0.5 and pair["position_flip_rate"] == 0.5
    assert pair["unparsed"] == 1 and pair["failed_calls"] == 1
    assert pair["agreement"]["chrf"] == {"rate": 1.0, "n": 1} and "format_ok" in pair["agreement"]
    assert block["failed_calls"] == 1 and block["unparsed_replies"] == 1 and block["calls"] == 8
    assert block["cost_usd"] == pytest.approx(7 * (7 * 1.0 + 3 * 2.0) / 1e6)  # 7 answered calls
    rows = {r["item_id"]: r for r in files["tuned_vs_base"]}
    assert rows["i2"]["verdict"] is None and rows["i2"]["reason"] == "unparsed"
    assert rows["i2"]["asks"][0]["reply"] == "I like both of them"  # the raw reply, kept
    assert rows["i3"]["reason"] == "failed" and "503" in rows["i3"]["asks"][0]["error"]
    assert rows["i1"]["position_flip"] and rows["i1"]["value"] == 0.5


def test_single_grades_and_self_agreement(tmp_path):
    items = judged_items(3)
    # repeats 2: per item, repeat 0 then repeat 1
    script = [ok('{"score": 4}'), ok('{"score": 4}'), ok("Score: 9"), ok("Score: 2"), ok("2"), ok("3")]
    with FlakyServer(script) as srv:
        block, files = judge_trial(_cfg(srv.url, mode="single", repeats=2), judged_arms(items, [0.9, 0.1, 0.5]), items,
                                   [], ["tuned"], tmp_path / "cache")
    assert [r.body.get("seed") for r in srv.requests] == [None, 1] * 3  # each repeat its own request
    single = block["single"]["tuned"]
    assert single["n"] == 2 and single["unparsed"] == 1 and single["mean"] == 3.0
    assert single["self_agreement"] == 0.5  # i0 agrees (4, 4); i2 does not (2, 3); i1 has an unparsed repeat
    assert single["agreement"]["chrf"]["spearman"] == pytest.approx(1.0)
    assert [r["score"] for r in files["single_tuned"]] == [4.0, None, 2.0]


def _spec(tmp_path: Path, judge: dict, **extra) -> Path:
    path = tmp_path / "j.yaml"
    path.write_text(yaml.safe_dump({"description": "judge", "model": {"base": "random:tiny"},
                                    "data": {"builtin": "voice"}, "judge": judge, **extra}, sort_keys=False))
    return path


@pytest.mark.parametrize("judge, message", [
    ({"rubric": {"text": "good"}, "mode": "single"}, "judge.rubric has no scale"),
    ({"rubric": {"text": "good", "scale": {"min": 5, "max": 5}}}, "scale min"),
    ({"rubric": RUBRIC, "pairwise_prompt": "{answer_a} {answer_b} {shoe_size}"}, "unknown placeholders"),
    ({"rubric": RUBRIC, "pairwise_prompt": "only {answer_a}"}, "must show answer_b"),
    ({"rubric": RUBRIC, "pairs": [["tuned", "gpt"]]}, "no arm 'gpt'"),
])
def test_bad_judge_sections_are_refused_at_load(tmp_path, judge, message):
    with pytest.raises(SpecError, match=message) as e:
        load_spec(_spec(tmp_path, {"endpoint": {"url": "http://127.0.0.1:9/v1", "model": "m"}, **judge}))
    assert "j.yaml" in str(e.value)


def test_a_required_judge_that_does_not_answer_stops_the_preflight(tmp_path, harness_home):
    from harness.trial.runner import preflight

    with FlakyServer() as srv:
        url = srv.url
    judge = {"endpoint": {"url": url, "model": "m", "max_retries": 0, "timeout_s": 2}, "rubric": RUBRIC}
    with pytest.raises(SpecError, match="the judge endpoint does not answer") as e:
        preflight([load_spec(_spec(tmp_path, judge))])
    assert "judge.endpoint" in str(e.value) and url in str(e.value)
    preflight([load_spec(_spec(tmp_path, {**judge, "required": False}))])  # per-item failures instead


def test_dpo_mines_the_items_the_judge_grades_low(tmp_path):
    """`dpo.metric: judge`: the judge's grade (0-1) decides failures; an ungraded item is never mined."""
    from harness.evaluation.judge import grade_rows
    from harness.stages.dpo import pairs_from_rows

    items = judged_items(3)
    rows = judged_arms(items, [0.9, 0.9, 0.9])["tuned"]
    with FlakyServer([ok('{"score": 5}'), ok('{"score": 1}'), ok("no idea")]) as srv:
        grade_rows(_cfg(srv.url, mode="single"), rows, items, tmp_path / "cache", tmp_path / "graded.jsonl")
    assert [r["scores"]["judge"] for r in rows][:2] == [1.0, 0.0] and rows[2]["scores"]["judge"] != rows[2]["scores"]["judge"]
    pairs = pairs_from_rows(items, rows, metric="judge", fail_below=0.5, max_pairs=10)
    assert [p.id for p in pairs] == ["i1"] and pairs[0].rejected == "tuned answer i1"
    assert len(read_jsonl(tmp_path / "graded.jsonl")) == 3


def test_dpo_by_judge_needs_a_judge_with_a_scale(tmp_path):
    path = tmp_path / "d.yaml"
    path.write_text(yaml.safe_dump({"description": "d", "model": {"base": "random:tiny"},
                                    "data": {"builtin": "voice", "dev_size": 4}, "dpo": {"metric": "judge"}}))
    with pytest.raises(SpecError, match="dpo.metric: judge grades the dev answers"):
        load_spec(path)
