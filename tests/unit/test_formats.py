"""Loading alpaca / chat / preference data from JSONL, CSV and `datasets`, and the errors users see."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from harness.data.example import Example
from harness.data.formats import SYSTEM_FROM_SPEC, format_summary, load_examples, summarize
from harness.errors import DataError

ALPACA = [
    {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"},
    {"instruction": "Name a colour.", "output": "Blue", "id": "colour", "cluster": "c1"},
]
CHAT = [
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                  {"role": "assistant", "content": "Hello"}]},
    {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"},
                  {"role": "user", "content": "and 3+3?"}, {"role": "assistant", "content": "6"}], "id": 7},
]
PREFERENCE = [
    {"prompt": "Capital of France?", "chosen": "Paris", "rejected": "Lyon"},
    {"prompt": [{"role": "user", "content": "Say yes"}], "chosen": "Yes", "rejected": "No", "cluster": "c"},
]


def jsonl(path: Path, rows: list[Any], blank_after: int | None = None) -> Path:
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    if blank_after is not None:
        lines.insert(blank_after, "")
    path.write_text("".join(line + "\n" for line in lines))
    return path


def csv_file(path: Path, rows: list[dict[str, Any]]) -> Path:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: json.dumps(v) if isinstance(v, list) else v for k, v in row.items()})
    return path


def saved_dataset(path: Path, rows: list[dict[str, Any]]) -> Path:
    import datasets

    datasets.Dataset.from_list(rows).save_to_disk(str(path))
    return path


def error_of(path: Path, **kwargs: Any) -> str:
    with pytest.raises(DataError) as info:
        load_examples(path, **kwargs)
    return str(info.value)


# ---------------------------------------------------------------- the three formats


def check_alpaca(examples: list[Example], first_id: str) -> None:
    first, second = examples
    assert first.prompt == [{"role": "user", "content": "Add the numbers.\n\n2 and 3"}]
    assert first.reference == "5" and first.rejected is None
    assert first.id == first_id  # <file stem>-<line>
    assert second.prompt == [{"role": "user", "content": "Name a colour."}]
    assert (second.id, second.cluster) == ("colour", "c1")


def check_chat(examples: list[Example]) -> None:
    first, second = examples
    assert first.prompt == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert first.reference == "Hello"
    assert len(second.prompt) == 3 and second.prompt[-1]["content"] == "and 3+3?"
    assert (second.reference, second.id) == ("6", "7")


def check_preference(examples: list[Example]) -> None:
    first, second = examples
    assert first.prompt == [{"role": "user", "content": "Capital of France?"}]
    assert (first.reference, first.rejected) == ("Paris", "Lyon")
    assert second.prompt == [{"role": "user", "content": "Say yes"}]
    assert (second.reference, second.rejected, second.cluster) == ("Yes", "No", "c")


def test_jsonl_each_format(tmp_path: Path) -> None:
    check_alpaca(load_examples(jsonl(tmp_path / "alp.jsonl", ALPACA)), "alp-1")
    check_chat(load_examples(jsonl(tmp_path / "chat.jsonl", CHAT)))
    check_preference(load_examples(jsonl(tmp_path / "pref.jsonl", PREFERENCE)))


def test_csv_each_format(tmp_path: Path) -> None:
    check_alpaca(load_examples(csv_file(tmp_path / "alp.csv", ALPACA)), "alp-2")  # line 1 is the header
    check_chat(load_examples(csv_file(tmp_path / "chat.csv", CHAT)))
    check_preference(load_examples(csv_file(tmp_path / "pref.csv", PREFERENCE)))


def test_saved_dataset_each_format(tmp_path: Path) -> None:
    # Dataset.from_list takes its columns from the first row, so every row names every column
    rows = [dict(row, id=row.get("id", f"r{i}"), cluster=row.get("cluster")) for i, row in enumerate(ALPACA)]
    examples = load_examples(saved_dataset(tmp_path / "alp", rows))
    assert [ex.id for ex in examples] == ["r0", "colour"]
    assert examples[0].prompt[0]["content"] == "Add the numbers.\n\n2 and 3"
    assert examples[1].cluster == "c1" and examples[0].cluster is None  # absent column -> None
    check_chat(load_examples(saved_dataset(tmp_path / "chat", [dict(r, id=str(r.get("id", "x"))) for r in CHAT])))
    pref = [{"prompt": "Q1", "chosen": "a", "rejected": "b"}, {"prompt": "Q2", "chosen": "c", "rejected": "d"}]
    examples = load_examples(saved_dataset(tmp_path / "pref", pref))
    assert [(ex.id, ex.reference, ex.rejected) for ex in examples] == [("pref-1", "a", "b"), ("pref-2", "c", "d")]


def test_parquet_file(tmp_path: Path) -> None:
    import datasets

    datasets.Dataset.from_list(PREFERENCE[:1]).to_parquet(str(tmp_path / "p.parquet"))
    (example,) = load_examples(tmp_path / "p.parquet")
    assert (example.reference, example.rejected) == ("Paris", "Lyon")


def test_saved_dataset_row_errors_name_the_row(tmp_path: Path) -> None:
    rows = [{"instruction": "a", "output": "b"}, {"instruction": "c", "output": ""}]
    path = saved_dataset(tmp_path / "ds", rows)
    assert error_of(path) == f"{path}:2: field 'output': empty"


@pytest.mark.parametrize("rows, wanted", [
    (ALPACA, "alpaca"), (CHAT, "chat"), (PREFERENCE, "preference"),
])
def test_auto_detection_matches_explicit_format(tmp_path: Path, rows: list, wanted: str) -> None:
    path = jsonl(tmp_path / "d.jsonl", rows)
    assert load_examples(path) == load_examples(path, format=wanted)


def test_system_prompt_becomes_first_message_unless_the_data_has_one(tmp_path: Path) -> None:
    alpaca = load_examples(jsonl(tmp_path / "a.jsonl", ALPACA), system_prompt="You help.")
    assert alpaca[0].prompt[0] == {"role": "system", "content": "You help."}
    assert alpaca[0].meta == {SYSTEM_FROM_SPEC: True}
    chat = load_examples(jsonl(tmp_path / "c.jsonl", CHAT), system_prompt="You help.")
    assert chat[0].prompt[0]["content"] == "Be brief."  # the data's own system message is kept
    assert chat[1].prompt[0]["content"] == "You help."


def test_whitespace_only_input_adds_nothing(tmp_path: Path) -> None:
    (example,) = load_examples(jsonl(tmp_path / "a.jsonl", [{"instruction": "Hi", "input": "  ", "output": "o"}]))
    assert example.prompt[0]["content"] == "Hi"


# ---------------------------------------------------------------- errors name file:line and field


def test_missing_field_on_line_37_of_40(tmp_path: Path) -> None:
    rows = [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(40)]
    del rows[36]["output"]
    path = jsonl(tmp_path / "train.jsonl", rows)
    with pytest.raises(DataError) as info:
        load_examples(path)
    assert str(info.value) == f"{path}:37: field 'output': missing"
    assert info.value.where == f"{path}:37"


def test_blank_lines_are_skipped_but_lines_stay_physical(tmp_path: Path) -> None:
    rows = [{"instruction": "a", "output": "b"}, {"instruction": "c", "output": 3}]
    path = jsonl(tmp_path / "t.jsonl", rows, blank_after=1)
    assert error_of(path) == f"{path}:3: field 'output': must be text, got a number"


def test_bad_json(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "t.jsonl", [ALPACA[0], ALPACA[1], '{"instruction": "x", "output": '])
    assert error_of(path).startswith(f"{path}:3: not valid JSON: Expecting value")


def test_chosen_equal_to_rejected(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "p.jsonl", [PREFERENCE[0], {"prompt": "Q", "chosen": "Same", "rejected": "Same "}])
    assert error_of(path).startswith(f"{path}:2: field 'rejected': same as 'chosen'")


def test_wrong_role(tmp_path: Path) -> None:
    bad = {"messages": [{"role": "human", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]}
    path = jsonl(tmp_path / "c.jsonl", [CHAT[0], bad])
    assert error_of(path) == f"{path}:2: field 'messages[0].role': 'human' is not one of system, user, assistant"


@pytest.mark.parametrize("messages, field, problem", [
    ("Hi", "messages", "must be a list of {role, content} messages, got text"),
    ([], "messages", "empty"),
    ([{"role": "user", "content": "Hi"}], "messages[0].role", "the final message must be 'assistant'"),
    ([{"role": "assistant", "content": "Hi"}], "messages", "needs a prompt message"),
    ([{"role": "user"}, {"role": "assistant", "content": "x"}], "messages[0].content", "missing"),
    ([{"role": "user", "content": 1}, {"role": "assistant", "content": "x"}], "messages[0].content", "must be text"),
])
def test_bad_messages(tmp_path: Path, messages: Any, field: str, problem: str) -> None:
    path = jsonl(tmp_path / "c.jsonl", [{"messages": messages}])
    assert error_of(path, format="chat").startswith(f"{path}:1: field '{field}': {problem}")


def test_duplicate_ids(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "t.jsonl", [dict(ALPACA[0], id="x"), dict(ALPACA[1], id="x")])
    assert error_of(path) == f"{path}:2: field 'id': duplicate 'x' (first on line 1)"


def test_mixed_formats_fail_at_first_misfit(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "m.jsonl", [ALPACA[0], ALPACA[1], CHAT[0]])
    assert error_of(path) == f"{path}:3: row is in chat format, but the file is alpaca (as line 1 shows)"
    assert error_of(path, format="chat").startswith(f"{path}:1: row is in alpaca format, but the file is chat")


def test_undetectable_format(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "u.jsonl", [{"question": "q", "answer": "a"}])
    assert error_of(path).startswith(f"{path}:1: cannot tell the format from the fields (answer, question)")


def test_several_problems_in_one_message(tmp_path: Path) -> None:
    rows = [{"instruction": "q", "output": ""} for _ in range(9)]
    message = error_of(jsonl(tmp_path / "t.jsonl", rows))
    first, *rest = message.splitlines()
    assert first.endswith("t.jsonl:1: field 'output': empty")
    assert rest[0] == "8 more problem line(s):"
    assert rest[1].endswith("t.jsonl:2: field 'output': empty") and rest[-1] == "  ... and 3 more"


def test_empty_and_missing_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n  \n")
    assert error_of(empty) == f"{empty}: empty file: no rows"
    assert error_of(tmp_path / "nope.jsonl") == f"{tmp_path / 'nope.jsonl'}: file not found"
    header_only = tmp_path / "h.csv"
    header_only.write_text("instruction,output\n")
    assert error_of(header_only) == f"{header_only}: empty file: no rows"


def test_csv_line_numbers_count_multiline_cells(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text('instruction,output\n"line one\nline two",ok\n\nq,\n')
    assert error_of(path) == f"{path}:5: field 'output': empty"
    short = tmp_path / "s.csv"
    short.write_text("instruction,output\nq\n")
    assert error_of(short) == f"{short}:2: 1 cells, but the header (line 1) has 2"


def test_csv_bad_messages_json(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text('messages\n"[{""role"": ""user""}"\n')
    assert error_of(path, format="chat").startswith(f"{path}:2: field 'messages': not valid JSON")


def test_unknown_extension(tmp_path: Path) -> None:
    path = tmp_path / "data.txt"
    path.write_text("x")
    assert "unknown file type '.txt'" in error_of(path)


# ---------------------------------------------------------------- summaries


class FakeTokenizer:
    """One token per whitespace-separated word; a chat template that adds two marker tokens."""

    chat_template = "fake"

    def apply_chat_template(self, messages: list[dict], tokenize: bool, add_generation_prompt: bool) -> str:
        assert not tokenize and add_generation_prompt
        return " ".join(f"<{m['role']}> {m['content']}" for m in messages) + " <assistant>"

    def __call__(self, text: str, add_special_tokens: bool) -> dict[str, list[int]]:
        return {"input_ids": list(range(len(text.split())))}


def test_summarize_counts_and_token_percentiles(tmp_path: Path) -> None:
    examples = load_examples(jsonl(tmp_path / "c.jsonl", CHAT))
    assert summarize(examples) == {
        "examples": 2, "preference_pairs": 0, "clusters": 0, "with_system_message": 1, "multi_turn": 1,
    }
    summary = summarize(examples, FakeTokenizer())
    # prompts: "<system> Be brief. <user> Hi <assistant>" = 6 words; the 3-message one = 8
    assert summary["tokens"]["prompt"] == {"p50": 6, "p90": 8, "p99": 8, "max": 8}
    assert summary["tokens"]["total"]["max"] == 9
    text = format_summary(summary)
    assert "examples: 2" in text and text.splitlines()[-1].split() == ["total", "7", "9", "9", "9"]
