"""SFT → DPO: pairs mined from the SFT model's own failures, DPO against the SFT policy, users' pair files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.data.example import Example
from harness.errors import DataError, HarnessError, SpecError, SplitError
from harness.evaluation.evaluate import Generation
from harness.evaluation.scoring import score
from harness.stages.dpo import DPOSpec, load_preference_pairs, mine_pairs, pairs_from_rows, train_dpo
from tests.support.dpo import dev_items, row


def test_spec_defaults_and_validation(tmp_path):
    spec = DPOSpec()
    assert (spec.beta, spec.pairs, spec.fail_below, spec.metric, spec.max_steps) == (
        0.1, "mined", 1.0, "field_accuracy", -1)
    assert DPOSpec(pairs="file", preference_file=tmp_path / "p.jsonl").preference_file == tmp_path / "p.jsonl"
    with pytest.raises(ValueError, match="needs preference_file"):
        DPOSpec(pairs="file")
    with pytest.raises(ValueError, match="only read with pairs: file"):
        DPOSpec(preference_file=tmp_path / "p.jsonl")
    with pytest.raises(ValueError):
        DPOSpec(betta=0.2)  # extra fields are refused
    with pytest.raises(ValueError):
        DPOSpec(beta=0)


def test_pairs_from_rows_keeps_failures_in_dev_order():
    dev = dev_items(5)
    preds = [dev[0].reference,                   # right: not a failure
             '{"id": 1, "name": "wrong"}',       # half right: field_accuracy 0.5
             "",                                 # empty output: a real failure, kept
             dev[3].reference.upper(),           # wrong keys (metric 0) but the same text normalised: never a pair
             "no json at all"]
    pairs = pairs_from_rows(dev, [row(ex, p) for ex, p in zip(dev, preds)], metric="field_accuracy",
                            fail_below=1.0, max_pairs=10)
    assert [p.id for p in pairs] == ["d1", "d2", "d4"]
    for p in pairs:
        src = dev[int(p.id[1:])]
        assert (p.prompt, p.reference, p.cluster, p.origin) == (src.prompt, src.reference, src.cluster, src.origin)
        assert p.rejected == preds[int(p.id[1:])]
    assert pairs[0].meta["dpo_mined"] == {"metric": "field_accuracy", "score": 0.5}

    # the threshold: only items below it count; the cap keeps the first ones
    strict = pairs_from_rows(dev, [row(ex, p) for ex, p in zip(dev, preds)], metric="field_accuracy",
                             fail_below=0.5, max_pairs=10)
    assert [p.id for p in strict] == ["d2", "d4"]
    capped = pairs_from_rows(dev, [row(ex, p) for ex, p in zip(dev, preds)], metric="field_accuracy",
                             fail_below=1.0, max_pairs=2)
    assert [p.id for p in capped] == ["d1", "d2"]
    # even when every item "fails", a prediction equal to its reference is never a pair
    everything = pairs_from_rows(dev, [row(ex, p) for ex, p in zip(dev, preds)], metric="field_accuracy",
                                 fail_below=2.0, max_pairs=10)
    assert [p.id for p in everything] == ["d1", "d2", "d4"]


def test_pairs_from_rows_refuses_an_unknown_metric_and_misaligned_rows():
    dev = dev_items(2)
    rows = [row(ex, "x") for ex in dev]
    with pytest.raises(SpecError, match="'rouge' is not a score.*field_accuracy"):
        pairs_from_rows(dev, rows, metric="rouge", fail_below=1.0, max_pairs=5)
    with pytest.raises(ValueError, match="out of order"):
        pairs_from_rows(dev, rows[::-1], metric="field_accuracy", fail_below=1.0, max_pairs=5)
    with pytest.raises(ValueError, match="1 scored rows for 2"):
        pairs_from_rows(dev, rows[:1], metric="field_accuracy", fail_below=1.0, max_pairs=5)


def test_mine_pairs_never_mines_a_prediction_equal_to_its_reference(monkeypatch):
    import harness.evaluation.evaluate

    dev = dev_items(3)
    outputs = {dev[0].prompt[0]["content"]: " " + dev[0].reference + "\n",  # the reference, modulo whitespace
               dev[1].prompt[0]["content"]: "{}",
               dev[2].prompt[0]["content"]: dev[2].reference}

    def fake_generate(model, tok, prompts, *, max_new_tokens, batch_size, progress=None):
        return [Generation(outputs[p[0]["content"]], 0.1, 5, 3, 0) for p in prompts]

    monkeypatch.setattr(harness.evaluation.evaluate, "generate", fake_generate)
    pairs = mine_pairs(None, None, dev, score, metric="field_accuracy", fail_below=2.0, max_pairs=10,
                       max_new_tokens=8, batch_size=2)
    assert [(p.id, p.rejected) for p in pairs] == [("d1", "{}")]
    with pytest.raises(DataError, match="dev split, which is empty"):
        mine_pairs(None, None, [], score, metric="field_accuracy", fail_below=1.0, max_pairs=10,
                   max_new_tokens=8, batch_size=2)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_preference_file_loads_as_pairs(tmp_path):
    path = write_jsonl(tmp_path / "prefs.jsonl", [
        {"prompt": "Capital of France?", "chosen": "Paris", "rejected": "Lyon"},
        {"prompt": [{"role": "user", "content": "2+2?"}], "chosen": [{"role": "assistant", "content": "4"}],
         "rejected": [{"role": "assistant", "content": "5"}]},
        {"prompt": "Colour of the sky?", "chosen": "blue", "rejected": "green"},
    ])
    pairs = load_preference_pairs(path, max_pairs=2, system_prompt="Be brief.")
    assert [(p.reference, p.rejected) for p in pairs] == [("Paris", "Lyon"), ("4", "5")]
    assert pairs[0].prompt == [{"role": "system", "content": "Be brief."},
                               {"role": "user", "content": "Capital of France?"}]
    assert pairs[1].origin == f"{path}:2"


def test_preference_file_with_chosen_equal_rejected_is_refused_at_its_line(tmp_path):
    path = write_jsonl(tmp_path / "prefs.jsonl", [
        {"prompt": "a?", "chosen": "yes", "rejected": "no"},
        {"prompt": "b?", "chosen": "same", "rejected": " same "},
    ])
    with pytest.raises(DataError, match=rf"^{path}:2: field 'rejected': same as 'chosen'"):
        load_preference_pairs(path, max_pairs=10)


def test_preference_file_with_missing_fields_is_refused(tmp_path):
    path = write_jsonl(tmp_path / "prefs.jsonl", [
        {"prompt": "a?", "chosen": "yes", "rejected": "no"},
        {"prompt": "b?", "chosen": "yes"},
    ])
    with pytest.raises(DataError, match=rf"^{path}:2: field 'rejected': missing"):
        load_preference_pairs(path, max_pairs=10)
    # a file in this harness's own format is read as it is: rows without `rejected` are no pairs
    native = write_jsonl(tmp_path / "native.jsonl", [
        {"id": "x", "prompt": [{"role": "user", "content": "a?"}], "reference": "yes"}])
    with pytest.raises(DataError, match=rf"^{native}:1: field 'rejected': missing"):
        load_preference_pairs(native, max_pairs=10)


def test_preference_file_may_not_hold_heldout_prompts(tmp_path):
    path = write_jsonl(tmp_path / "prefs.jsonl", [{"prompt": "Item 1 as JSON, please.", "chosen": "{}",
                                                    "rejected": "no"}])
    with pytest.raises(SplitError, match="held-out item"):
        load_preference_pairs(path, max_pairs=10, heldout=dev_items(3))


def test_train_dpo_refuses_bad_input_before_building_a_trainer(tmp_path):
    with pytest.raises(DataError, match="no preference pairs"):
        train_dpo(object(), None, [], DPOSpec(), 0, tmp_path)
    no_rejected = [Example(id="a", prompt=[{"role": "user", "content": "q"}], reference="r")]
    with pytest.raises(DataError, match="no rejected answer"):
        train_dpo(object(), None, no_rejected, DPOSpec(), 0, tmp_path)
    pair = [Example(id="a", prompt=[{"role": "user", "content": "q"}], reference="r", rejected="s")]
    with pytest.raises(HarnessError, match="continues an SFT adapter"):
        train_dpo(object(), None, pair, DPOSpec(), 0, tmp_path)
