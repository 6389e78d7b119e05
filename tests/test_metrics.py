"""The metric registry: what a spec's `eval.metrics` and `eval.format` add to a task's scores, and bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness.errors import SpecError
from harness.evaluation.metrics import all_metrics, get_metric, scorer_for
from harness.spec import load_spec, spec_dump

ROOT = Path(__file__).resolve().parent.parent
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
