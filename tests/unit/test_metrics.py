"""The metric registry: what a spec's `eval.metrics` and `eval.format` add to a task's scores, and bad input."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from harness.errors import SpecError
from harness.evaluation.metrics import (HIGHER, LOWER, NEITHER, Metric, ScoreSpec, all_metrics, declare_scores,
                                        display_name, get_metric, is_declared, register_metric, score_spec, scorer_for)
from harness.spec import load_spec, spec_dump
from tests.support.ci import ROOT

LISTING = "3-Bed Two-Story Home in Gilbert | $180,000\n\nA quiet home.\n\nListed at $180,000 ($120 per sq ft)."


def _spec(tmp_path: Path, eval_section: dict) -> Path:
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump({"description": "metrics", "model": {"base": "random:tiny"},
                                    "data": {"builtin": "voice"}, "eval": eval_section}, sort_keys=False))
    return path


def test_every_metric_file_registers_itself():
    assert {"json", "exact_match", "label", "chrf", "rouge_l", "format", "length"} <= set(all_metrics())
    for metric in all_metrics().values():
        assert metric.description


def test_chrf_and_rouge_l_are_the_libraries_figures(tmp_path):
    from rouge_score.rouge_scorer import RougeScorer
    from sacrebleu.metrics import CHRF

    pred, ref = "A quiet two-story home in Gilbert.", "A quiet one-story home in Gilbert with a garage."
    scores = scorer_for("text", load_spec(_spec(tmp_path, {"metrics": ["chrf", "rouge_l"]})).eval)(pred, ref)
    assert scores["chrf"] == pytest.approx(CHRF().sentence_score(pred, [ref]).score / 100)
    assert scores["rouge_l"] == pytest.approx(RougeScorer(["rougeL"], use_stemmer=True).score(ref, pred)["rougeL"].fmeasure)
    assert 0 < scores["chrf"] < 1 and scores["exact_match"] == 0.0  # the task's own scorer still runs
    assert scorer_for("text")(ref, ref)["exact_match"] == 1.0


def test_format_rules_score_each_rule_and_all_together(tmp_path):
    spec = load_spec(_spec(tmp_path, {"metrics": ["format", "length"], "format": [
        {"name": "closing", "must_match": r"\nListed at \$[\d,]+ \(\$\d+ per sq ft\)\.$"},
        {"name": "calm", "must_not_match": "!"},
        {"name": "short", "min_words": 5, "max_words": 20}]}))
    score = scorer_for("text", spec.eval)
    good = score(LISTING, LISTING)
    assert good["format.closing"] == good["format.calm"] == good["format.short"] == good["format_ok"] == 1.0
    assert good["words"] == len(LISTING.split())
    shouty = score(LISTING.replace("quiet", "AMAZING!"), LISTING)
    assert shouty["format.calm"] == 0.0 and shouty["format.closing"] == 1.0 and shouty["format_ok"] == 0.0
    assert score("Listed", LISTING)["format.short"] == 0.0


def test_label_accuracy_reads_the_first_line():
    label = get_metric("label")
    assert label("**Spam**.\nBecause it sells pills", "spam", None) == {"label_accuracy": 1.0}
    assert label("Label: ham", "spam", None) == {"label_accuracy": 0.0}


def test_an_unknown_metric_lists_the_registered_ones(tmp_path):
    with pytest.raises(SpecError) as e:
        load_spec(_spec(tmp_path, {"metrics": ["bleurt"]}))
    assert "unknown metric 'bleurt'" in str(e.value) and "chrf" in str(e.value) and "rouge_l" in str(e.value)
    assert "m.yaml" in str(e.value)


@pytest.mark.parametrize("rules, message", [
    ([{"name": "x"}], "checks nothing"),
    ([{"name": "x", "must_match": "(unclosed"}], "not a valid regex"),
    ([{"name": "x", "min_words": 9, "max_words": 3}], "min_words > max_words"),
])
def test_bad_format_rules_name_the_rule(tmp_path, rules, message):
    with pytest.raises(SpecError, match=message):
        load_spec(_spec(tmp_path, {"metrics": ["format"], "format": rules}))


def test_the_format_metric_without_rules_is_refused(tmp_path):
    with pytest.raises(SpecError, match="eval.format declares no rules"):
        load_spec(_spec(tmp_path, {"metrics": ["format"]}))


def test_new_eval_fields_stay_out_of_old_specs_dumps(tmp_path):
    plain = spec_dump(load_spec(ROOT / "experiments" / "quickstart.yaml"))
    assert "metrics" not in plain["eval"] and "format" not in plain["eval"]
    voice = spec_dump(load_spec(ROOT / "experiments" / "voice.yaml"))
    assert voice["eval"]["metrics"] == ["chrf", "rouge_l", "format", "length"] and voice["eval"]["format"]


def test_voice_references_follow_every_declared_voice_rule(harness_home):
    """The reference listings are the voice: each passes the rules the experiment declares."""
    from harness.data.prepare import prepare_data

    spec = load_spec(ROOT / "experiments" / "voice.yaml")
    data = prepare_data(spec.data, harness_home / "data")
    score = scorer_for(data.scorer, spec.eval)
    assert data.scorer == "text" and len(data.heldout) == 100
    for ex in data.train[:200] + data.heldout:
        s = score(ex.reference, ex.reference)
        assert s["format_ok"] == 1.0 and s["chrf"] == pytest.approx(1.0), ex.id
    broken = score(data.heldout[0].reference.replace("\nHighlights:", "\nHighlights:\n- A fourth one"),
                   data.heldout[0].reference)
    assert broken["format.highlights"] == 0.0


# ---------------------------------------------------------------- what each score means


def test_every_score_a_metric_emits_has_a_declared_meaning(tmp_path):
    spec = load_spec(_spec(tmp_path, {"metrics": ["chrf", "rouge_l", "format", "length", "label"], "format": [
        {"name": "calm", "must_not_match": "!"}]}))
    emitted = {**scorer_for("text", spec.eval)(LISTING, LISTING),
               **scorer_for("json")('{"price": 1, "city": "Ames"}', '{"price": 1, "city": "Ames"}')}
    assert {"chrf", "rouge_l", "rouge_lsum", "format.calm", "format_ok", "words", "label_accuracy", "json_valid",
            "field_accuracy", "field.price", "field.city", "exact_match"} <= set(emitted)
    assert all(is_declared(key) for key in emitted)
    for metric in all_metrics().values():
        assert metric.scores and all(isinstance(s, ScoreSpec) for s in metric.scores)


def test_declared_meanings_say_direction_range_aggregation_and_name():
    words = score_spec("words")
    assert (words.direction, words.low, words.high, words.aggregation) == (NEITHER, 0.0, math.inf, "mean")
    assert words.descriptive and not words.bounded and words.improves(5.0) is None
    assert display_name("words") == "length (words)" and words.range_text() == "[0, ∞)"
    field = score_spec("field.price")  # a family of keys, declared once by its pattern
    assert field.key == "field.*" and field is score_spec("field.city") and display_name("field.price") == "field price"
    assert field.unit_interval and field.improves(0.1) and not field.improves(-0.1)
    assert display_name("format.calm") == "format rule calm" and score_spec("format_ok").direction == HIGHER
    # Scores from outside this folder: lm-eval accuracies (per task) and the LLM judge.
    assert display_name("arc_easy_local acc") == "arc_easy_local accuracy" and score_spec("piqa acc").unit_interval
    assert score_spec("judge").direction == HIGHER and score_spec("judge.win_rate").unit_interval
    # The range of a mean, a paired difference, a slope's weights.
    assert field.range_of((1.0,)) == (0.0, 1.0) and field.range_of((1.0, -1.0)) == (-1.0, 1.0)
    assert field.range_of((-0.5, 0.0, 0.5)) == (-0.5, 0.5) and words.range_of((1.0, -1.0)) == (-math.inf, math.inf)


def test_a_key_nobody_declared_reads_as_descriptive_and_unbounded():
    spec = score_spec("kl_to_base")
    assert not is_declared("kl_to_base") and spec.descriptive and (spec.low, spec.high) == (-math.inf, math.inf)
    assert display_name("kl_to_base") == "kl_to_base"


def test_a_metric_without_declared_meanings_cannot_register():
    with pytest.raises(TypeError, match="scores"):
        register_metric("undeclared", "no meaning")  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="declares no scores"):
        register_metric("undeclared", "no meaning", scores=[])
    with pytest.raises(TypeError, match="must be ScoreSpec"):
        register_metric("undeclared", "no meaning", scores=[{"key": "x", "direction": "higher"}])
    with pytest.raises(ValueError, match="declared twice with different meanings"):
        register_metric("undeclared", "words, but better when longer",
                        scores=[ScoreSpec("undeclared_score", "u", HIGHER), ScoreSpec("words", "words", HIGHER)])
    assert "undeclared" not in all_metrics() and not is_declared("undeclared_score")  # a refusal leaves no trace
    declare_scores([score_spec("words")], by="a second emitter of the same score")  # the same meaning is fine


@pytest.mark.parametrize("fields, message", [
    (dict(direction="up"), "direction must be one of higher, lower, neither"),
    (dict(aggregation="median"), "aggregation must be one of mean"),
    (dict(low=1.0, high=1.0), "low < high"),
    (dict(key="a.*.*"), "at most one"),
])
def test_a_meaning_that_does_not_make_sense_is_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        ScoreSpec(**{"key": "x", "display": "x", "direction": LOWER, **fields})


def test_a_score_a_metric_emits_without_declaring_it_is_an_error():
    metric = Metric("sloppy", lambda p, r, o: {"declared": 1.0, "stray": 2.0}, "emits one key too many",
                    (ScoreSpec("declared", "declared", HIGHER),))
    with pytest.raises(ValueError, match="emitted 'stray', which it does not declare"):
        metric("a", "b")
