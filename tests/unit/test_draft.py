"""`harness data draft`: outputs drafted through the endpoint client (cached, costed, retried), each pair's
provenance in its meta, a stopped draft resumed; against a real misbehaving HTTP server on loopback."""

from __future__ import annotations

import json

import pytest

from harness.data.formats import load_examples
from harness.data.review import Review
from harness.errors import DataError
from harness.review.draft import DraftStopped, cache_dir, draft
from tests.support.cli_runner import harness
from tests.support.endpoint import spec
from tests.support.flaky_server import FlakyServer, error, ok


def _inputs(tmp_path, rows, name="prompts.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_drafted_pairs_carry_their_provenance_and_read_back_as_a_dataset(tmp_path):
    src = _inputs(tmp_path, [{"id": "a", "prompt": "Name a colour."}, {"instruction": "Add", "input": "2+2"},
                             {"messages": [{"role": "system", "content": "Be brief."},
                                           {"role": "user", "content": "Hi"}], "cluster": "c1"}])
    out = tmp_path / "drafted.jsonl"
    with FlakyServer([ok("red", 1000, 500), ok("4"), ok("hello")]) as srv:
        result = draft(src, out, spec(srv.url, model="teacher-x", price_input_per_m=2.0, price_output_per_m=10.0))
    assert [r.body["messages"][-1]["content"] for r in srv.requests] == ["Name a colour.", "Add\n\n2+2", "Hi"]
    pairs = load_examples(out, "alpaca")  # the harness's own format is read as it is, whatever is asked
    assert [(p.id, p.reference) for p in pairs] == [("a", "red"), ("prompts-2", "4"), ("prompts-3", "hello")]
    assert pairs[2].prompt[0]["role"] == "system" and pairs[2].cluster == "c1"
    assert pairs[0].origin == f"{src}:1"
    meta = pairs[0].meta["drafted"]
    assert meta["model"] == "teacher-x" and meta["url"] == srv.url and meta["time"].endswith("+00:00")
    assert (meta["input_tokens"], meta["output_tokens"]) == (1000, 500)
    assert meta["cost_usd"] == pytest.approx(1000 * 2.0 / 1e6 + 500 * 10.0 / 1e6)
    assert result.pairs == 3 and result.cached == 0 and result.paid_usd == pytest.approx(result.cost_usd)
    assert Review.open(out).summary()["drafted_by"] == ["teacher-x"]


def test_an_endpoint_that_fails_mid_draft_keeps_what_was_drafted_and_a_rerun_resumes(tmp_path):
    src = _inputs(tmp_path, [{"prompt": f"question {i}"} for i in range(5)])
    out = tmp_path / "drafted.jsonl"
    with FlakyServer([ok("one"), ok("two"), error(503), error(503)], then=ok("rest")) as srv:
        with pytest.raises(DraftStopped, match=r"stopped at input prompts-3 \(.*prompts.jsonl:3\), 2 of 5") as e:
            draft(src, out, spec(srv.url, max_retries=1))
        assert "run the same command again to draft the other 3" in str(e.value) and "HTTP 503" in str(e.value)
        assert not out.exists()  # a half-drafted file is never left where a dataset is expected
        assert len(list(cache_dir(out).rglob("*.json"))) == 2
        result = draft(src, out, spec(srv.url, max_retries=1))
    assert len(srv.requests) == 4 + 3 and result.cached == 2
    assert [p.reference for p in load_examples(out)] == ["one", "two", "rest", "rest", "rest"]


def test_bad_inputs_are_refused_naming_file_line_and_field(tmp_path):
    s = spec("http://127.0.0.1:9/v1")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(DataError, match="empty.jsonl: empty file: no inputs"):
        draft(empty, tmp_path / "o.jsonl", s)
    odd = tmp_path / "prompts.txt"
    odd.write_text("hello\n")
    with pytest.raises(DataError, match="prompts.txt: unknown file type '.txt'"):
        draft(odd, tmp_path / "o.jsonl", s)
    src = _inputs(tmp_path, [{"prompt": "fine"}, {"question": "what?"}, {"instruction": "x", "output": "done"},
                             {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}])
    with pytest.raises(DataError) as e:
        draft(src, tmp_path / "o.jsonl", s)
    text = str(e.value)
    assert text.startswith(f"{src}:2: no input in the fields (question)")
    assert f"{src}:3: field 'output': this row already has an output" in text
    assert f"{src}:4: field 'messages[1].role': already ends with the assistant's answer" in text
    csv = tmp_path / "p.csv"
    csv.write_text("id,prompt\nx,hello\ny,\n")
    with pytest.raises(DataError, match=r"p.csv:3: field 'prompt': empty"):
        draft(csv, tmp_path / "o.jsonl", s)
    with pytest.raises(DataError, match="would overwrite the inputs"):
        draft(src, src, s)


def test_empty_drafts_are_refused_naming_the_inputs(tmp_path):
    src = _inputs(tmp_path, [{"prompt": "a"}, {"prompt": "b"}])
    with FlakyServer([ok("fine"), ok("")]) as srv:
        with pytest.raises(DataError, match=r"empty output for 1 input\(s\): .*prompts.jsonl:2"):
            draft(src, tmp_path / "o.jsonl", spec(srv.url))
    assert not (tmp_path / "o.jsonl").exists()


def test_the_cli_drafts_and_reports_bad_input_with_exit_2(tmp_path):
    src = _inputs(tmp_path, [{"prompt": "a"}, {"prompt": "b"}])
    out = tmp_path / "d.jsonl"
    with FlakyServer(then=ok("drafted", 10, 5)) as srv:
        proc = harness("data", "draft", str(src), "--out", str(out), "--url", srv.url, "--model", "t",
                       "--price-output-per-m", "1000", check=True)
    assert "drafted 2 pairs with t" in proc.stdout + proc.stderr and "$0.0100" in proc.stdout + proc.stderr
    assert [p.reference for p in load_examples(out)] == ["drafted", "drafted"]
    proc = harness("data", "draft", str(src), "--out", str(out), "--url", "localhost:1", "--model", "t")
    assert proc.returncode == 2 and "--url: " in proc.stdout + proc.stderr and "Traceback" not in proc.stderr
