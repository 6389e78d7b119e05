"""Per-item scoring of JSON and text answers."""

from __future__ import annotations

import pytest

from harness.errors import HarnessError
from harness.evaluation.metrics import TASK_SCORERS, scorer_for
from harness.evaluation.scoring import first_object, parse_object, score, score_text

REF = ('{"price_per_sqft": 142, "neighborhood_median_ppsf": 131, "vs_neighborhood": "above", '
       '"drivers": ["good condition", "built 2005"], "verdict": "Priced 8% above."}')


def test_exact_prediction_scores_one_everywhere():
    s = score(REF, REF)
    assert s["json_valid"] == s["exact_match"] == s["field_accuracy"] == 1.0
    assert {k for k in s if k.startswith("field.")} == {
        "field.price_per_sqft", "field.neighborhood_median_ppsf", "field.vs_neighborhood", "field.drivers",
        "field.verdict"}


def test_trailing_text_fails_strict_metrics_but_fields_still_count():
    s = score(REF + "\nI hope this helps! {\"x\": 1}", REF)
    assert s["json_valid"] == 0.0 and s["exact_match"] == 0.0
    assert s["field_accuracy"] == 1.0


def test_leading_text_and_a_broken_first_brace():
    s = score('Here is {not json} then ' + REF, REF)
    assert s["json_valid"] == 0.0 and s["field_accuracy"] == 1.0


def test_fenced_json_is_valid():
    for fenced in (f"```json\n{REF}\n```", f"  ```\n{REF}```\n", f"```{REF}```"):
        s = score(fenced, REF)
        assert s["json_valid"] == s["exact_match"] == 1.0, fenced


def test_key_order_and_whitespace_do_not_matter_for_exact_match():
    assert score('{"b": [1, 2],\n "a": "x"}', '{"a": "x", "b": [1, 2]}')["exact_match"] == 1.0


def test_field_values_case_whitespace_and_lists():
    pred = ('{"price_per_sqft": 142, "neighborhood_median_ppsf": 130, "vs_neighborhood": "  ABOVE ", '
            '"drivers": ["Built   2005", "good condition"], "verdict": "priced 8% above."}')
    s = score(pred, REF)
    assert s["exact_match"] == 0.0
    assert s["field.vs_neighborhood"] == s["field.drivers"] == s["field.verdict"] == 1.0
    assert s["field.neighborhood_median_ppsf"] == 0.0
    assert s["field_accuracy"] == pytest.approx(4 / 5)


def test_lists_are_multisets():
    ref = '{"d": ["a", "a", "b"]}'
    assert score('{"d": ["b", "a", "a"]}', ref)["field.d"] == 1.0
    assert score('{"d": ["a", "b"]}', ref)["field.d"] == 0.0
    assert score('{"d": "a, a, b"}', ref)["field.d"] == 0.0


def test_numeric_tolerance_is_relative():
    ref = '{"n": 100, "z": 0}'
    assert score('{"n": 103, "z": 0}', ref)["field.n"] == 0.0
    assert score('{"n": 103, "z": 0}', ref, numeric_tolerance=0.05)["field.n"] == 1.0
    assert score('{"n": 106, "z": 0}', ref, numeric_tolerance=0.05)["field.n"] == 0.0
    assert score('{"n": 100.0, "z": 0.0}', ref)["field_accuracy"] == 1.0
    assert score('{"n": "100", "z": false}', ref)["field_accuracy"] == 0.0  # no coercion across types


def test_missing_keys_and_invalid_predictions():
    s = score('{"price_per_sqft": 142}', REF)
    assert s["json_valid"] == 1.0 and s["field_accuracy"] == pytest.approx(1 / 5)
    for bad in ("", "no json here", '{"price_per_sqft": 142', "[1, 2]", "142"):
        s = score(bad, REF)
        assert s["json_valid"] == s["exact_match"] == s["field_accuracy"] == 0.0, bad
        assert all(v == 0.0 for k, v in s.items() if k.startswith("field."))


def test_non_json_reference_gives_text_exact_match_only():
    assert score("  The Answer\n is 42 ", "the answer is 42") == {"exact_match": 1.0}
    assert score('{"a": 1}', "the answer is 42") == {"exact_match": 0.0}
    assert score("[1, 2]", "[1, 2]") == {"exact_match": 1.0}  # JSON, but not an object
    assert score_text("a b", "a  B") == {"exact_match": 1.0}


def test_parsers():
    assert parse_object(' {"a": 1} ') == {"a": 1}
    assert parse_object('{"a": 1} extra') is None
    assert first_object('x {"a": {"b": 2}} {"c": 3}') == {"a": {"b": 2}}
    assert first_object("nothing") is None


def test_task_scorers_score_as_before():
    assert set(TASK_SCORERS) == {"json", "text"}
    assert scorer_for("json")(REF, REF) == score(REF, REF)
    assert scorer_for("text")("A  b", "a b") == score_text("A  b", "a b")
    with pytest.raises(HarnessError, match="known: json, text"):
        scorer_for("bleu")
