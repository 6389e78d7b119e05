"""Training on a reviewed dataset: re-derived from its original plus the audit log before use, refused when it
differs, its review summary in the manifest, the report and the model card; duplicates shown while reviewing."""

from __future__ import annotations

import json

import pytest

from analysis.load import load_study
from analysis.markdown import trials_section
from analysis.synthetic import write_synthetic_study
from harness.config import DataSpec
from harness.data.prepare import prepare_data
from harness.data.review import Review, log_path, reviewed_path
from harness.data.split import duplicates
from harness.errors import DataError
from harness.export.publish import build_card
from harness.results import read_json, write_json
from tests.support.cli_runner import harness


def _files(tmp_path, n=60):
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"id": f"p{i}", "instruction": f"question {i}", "output": f"answer {i}"}) + "\n"
                            for i in range(n)))
    (tmp_path / "held.jsonl").write_text(json.dumps({"instruction": "held out", "output": "x"}) + "\n")
    return train, tmp_path / "held.jsonl"


def _reviewed(train):
    review = Review.open(train)
    for i in range(50):
        decision = "delete" if i % 10 == 0 else "fix" if i % 10 == 1 else "keep"
        review.decide(f"p{i}", decision, reviewer="ann", output="better" if decision == "fix" else None)
    return review


def test_a_reviewed_file_is_verified_and_its_summary_recorded(tmp_path):
    train, held = _files(tmp_path)
    _reviewed(train)
    data = prepare_data(DataSpec(train=reviewed_path(train), heldout=held), tmp_path / "cache")
    assert len(data.train) == 45  # 50 decided, 5 deleted; the 10 undecided are left out
    r = data.review
    assert (r["kept"], r["fixed"], r["deleted"], r["undecided"], r["batches_closed"]) == (40, 5, 5, 10, 1)
    assert r["reviewers"] == ["ann"] and r["reviewed_sha256"] == data.file_hashes[str(reviewed_path(train))]
    assert r["provenance"] == ("45 pairs: reviewed in 1 batch(es) by ann, 5 fixed, 5 deleted, "
                               "10 not yet reviewed (left out)")
    assert prepare_data(DataSpec(train=train, heldout=held), tmp_path / "cache").review is None


def test_a_hand_edited_or_orphaned_reviewed_file_is_refused_naming_both_files(tmp_path):
    train, held = _files(tmp_path)
    _reviewed(train)
    path = reviewed_path(train)
    lines = path.read_text().splitlines()
    row = json.loads(lines[3])
    row["reference"] = "edited by hand"
    path.write_text("\n".join([*lines[:3], json.dumps(row), *lines[4:]]) + "\n")
    with pytest.raises(DataError) as e:
        prepare_data(DataSpec(train=path, heldout=held), tmp_path / "cache")
    assert str(e.value).startswith(f"{path}: differs from {train} replayed through {log_path(train)}")
    assert f"line 4, pair '{row['id']}'" in str(e.value)
    log_path(train).rename(tmp_path / "aside.jsonl")
    with pytest.raises(DataError, match=f"checked against the review log, {log_path(train)}, which is missing"):
        prepare_data(DataSpec(train=path, heldout=held), tmp_path / "cache")


def test_the_report_and_the_model_card_state_the_provenance(tmp_path):
    study = write_synthetic_study(tmp_path, ranks=(8,), seeds=(0,), failed_trial=False)
    line = "45 pairs: drafted by teacher-x, reviewed in 1 batch(es) by ann, 5 fixed, 5 deleted"
    tdir = study / "trial-0000"
    manifest = read_json(tdir / "manifest.json")
    manifest.update({"model": {"name": "random:tiny"}, "backend": "hf", "git_commit": "abc",
                     "data": {"source": "t + h", "train_items": 45, "heldout_items": 1,
                              "review": {"provenance": line, "reviewed_sha256": "f" * 64}}})
    manifest["spec"].update({"lora": {"r": 8, "target_modules": "all-linear"}})
    write_json(tdir / "manifest.json", manifest)
    assert f"- training data: {line}" in trials_section(load_study(study))
    card, _ = build_card(tdir)
    assert f"Training data: {line} (every pair read by a person; reviewed file sha256 `ffffffffffff`" in card


def test_duplicates_are_grouped_as_the_leak_guard_compares():
    from harness.data.example import Example

    def ex(i, prompt, ref="r"):
        return Example(id=i, prompt=[{"role": "user", "content": prompt}], reference=ref)

    items = [ex("a", "Hello there."), ex("b", "other"), ex("c", "hello   THERE"), ex("d", "fresh")]
    assert [[e.id for e in g] for g in duplicates(items)] == [["a", "c"]]
    assert duplicates([ex("x", "one"), ex("y", "two")]) == []


def test_data_summary_shows_the_review_state_and_duplicates(tmp_path, harness_home):
    train, held = _files(tmp_path, n=4)
    with train.open("a") as f:
        f.write(json.dumps({"id": "dup", "instruction": "Question 1!", "output": "again"}) + "\n")
    spec = tmp_path / "s.yaml"
    spec.write_text(f"description: x\nmodel: {{base: 'random:tiny'}}\ndata: {{train: {train}, heldout: {held}}}\n")
    env = {"HARNESS_HOME": str(harness_home)}
    proc = harness("data", "summary", str(spec), env=env, check=True)
    out = proc.stdout + proc.stderr
    assert f"review (train): none yet (`harness data review {spec}`)" in out
    assert "train: 2 items in 1 groups of duplicates" in out and f"p1 ({train}:2) = dup ({train}:5)" in out
    Review.open(train).decide("p0", "delete", reviewer="ann")
    proc = harness("data", "summary", str(spec), env=env, check=True)
    out = proc.stdout + proc.stderr
    assert "review (train, train.jsonl): 1 of 5 pairs decided, 0/1 batches closed: 0 pairs: " in out


def test_a_spec_on_the_reviewed_file_reviews_its_original(tmp_path):
    train, held = _files(tmp_path, n=3)
    Review.open(train).decide("p1", "fix", reviewer="ann", output="better")
    spec = tmp_path / "s.yaml"
    spec.write_text(f"description: x\ndata: {{train: {reviewed_path(train)}, heldout: {held}}}\n")
    proc = harness("data", "review", str(spec), "--diff", check=True)
    assert json.loads(proc.stdout + proc.stderr)["after"] == "better"
    assert not log_path(reviewed_path(train)).exists()  # no review of the derived file itself
