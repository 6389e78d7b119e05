"""The review's audit log: decisions appended and replayed, the reviewed dataset derived, a changed file refused."""

from __future__ import annotations

import json

import pytest

from harness.data.formats import load_examples
from harness.data.review import Review, log_path, provenance_line, reviewed_path
from harness.errors import DataError


def _data(tmp_path, n=120):
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps({"id": f"p{i}", "instruction": f"question {i}", "output": f"answer {i}"}) + "\n"
                            for i in range(n)))
    return path


def test_decisions_are_logged_and_the_reviewed_dataset_is_derived(tmp_path):
    path = _data(tmp_path)
    review = Review.open(path)
    assert [len(b) for b in review.batches()] == [50, 50, 20] and review.resume_batch() == 0
    review.decide("p0", "keep", reviewer="ann", expected=review.hash_of("p0"))
    review.decide("p1", "fix", reviewer="ann", output="a better answer")
    review.decide("p2", "delete", reviewer="bob")
    log = [json.loads(line) for line in log_path(path).read_text().splitlines()]
    assert [e["decision"] for e in log] == ["keep", "fix", "delete"]
    assert log[1]["before"] != log[1]["after"] and log[2]["after"] is None and "output" not in log[2]
    assert {e["batch"] for e in log} == {0} and log[2]["reviewer"] == "bob"
    derived = load_examples(reviewed_path(path))
    assert [ex.id for ex in derived] == ["p0", "p1"] and derived[1].reference == "a better answer"
    assert derived[1].meta["review"]["decision"] == "fix"
    s = review.summary()
    assert (s["kept"], s["fixed"], s["deleted"], s["undecided"], s["batches_closed"]) == (1, 1, 1, 117, 0)
    assert s["reviewers"] == ["ann", "bob"]
    assert review.diff() == [
        {"id": "p1", "decision": "fix", "batch": 0, "reviewer": "ann", "before": "answer 1",
         "after": "a better answer"},
        {"id": "p2", "decision": "delete", "batch": 0, "reviewer": "bob", "before": "answer 2"}]


def test_a_reopened_review_replays_the_log_and_resumes_at_the_first_open_batch(tmp_path):
    path = _data(tmp_path)
    review = Review.open(path)
    for i in range(50):
        review.decide(f"p{i}", "keep", reviewer="ann")
    review.decide("p50", "fix", reviewer="ann", output="fixed 50")
    review.decide("p50", "fix", reviewer="ann", output="fixed again")  # a later decision on a pair wins
    review.decide("p51", "delete", reviewer="ann")
    again = Review.open(path)
    assert again.resume_batch() == 1 and again.closed(0) and not again.closed(1)
    assert again.current["p50"].reference == "fixed again" and again.summary()["decisions_logged"] == 53
    assert [ex.id for ex in again.derived()] == [ex.id for ex in review.derived()]
    assert set(again.reread(10, seed=1)) <= set(again.decisions) and len(again.reread(10, seed=1)) == 10
    assert again.reread(10, seed=1) == again.reread(10, seed=1)
    summary = again.summary()
    assert again.decisions["p51"].decision == "delete" and "p51" not in {ex.id for ex in again.derived()}
    assert provenance_line(summary) == "51 pairs: reviewed in 1 batch(es) by ann, 1 fixed, 1 deleted, " \
                                       "68 not yet reviewed (left out)"


def test_a_pair_that_changed_on_disk_is_refused_naming_it_and_the_log_line(tmp_path):
    path = _data(tmp_path, n=3)
    review = Review.open(path)
    review.decide("p0", "keep", reviewer="ann")
    review.decide("p1", "keep", reviewer="ann")
    path.write_text(path.read_text().replace("answer 1", "answer one"))
    with pytest.raises(DataError) as e:
        Review.open(path)
    assert "pair 'p1'" in str(e.value) and "changed on disk" in str(e.value) and f"{log_path(path)}:2" in str(e.value)
    path.write_text(path.read_text().replace('"id": "p1"', '"id": "q1"'))
    with pytest.raises(DataError, match="'p1', which is no longer in train.jsonl"):
        Review.open(path)


def test_a_stale_page_and_bad_decisions_are_refused(tmp_path):
    path = _data(tmp_path, n=2)
    review = Review.open(path)
    shown = review.hash_of("p0")
    review.decide("p0", "fix", reviewer="ann", output="new")
    with pytest.raises(DataError, match="changed since it was shown"):
        review.decide("p0", "keep", reviewer="bob", expected=shown)
    with pytest.raises(DataError, match="unknown decision 'maybe'"):
        review.decide("p1", "maybe", reviewer="ann")
    with pytest.raises(DataError, match="record it as a fix"):
        review.decide("p1", "keep", reviewer="ann", output="edited")
    with pytest.raises(DataError, match="no pair 'p9'"):
        review.decide("p9", "keep", reviewer="ann")
    assert review.decide("p1", "fix", reviewer="ann", output="answer 1").decision == "keep"  # unchanged text
    log_path(path).write_text(log_path(path).read_text() + "{not json\n")
    with pytest.raises(DataError, match="unreadable review-log line"):
        Review.open(path)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataError, match="empty file"):
        Review.open(empty)
