"""Dataset files as users bring them, read into `Example`s.

Sources: JSONL, CSV (or TSV), and `datasets` data (a folder written by `Dataset.save_to_disk`, or a
`.parquet` / `.arrow` file). Formats, one per file:

    alpaca       {"instruction", "input"?, "output"}
    chat         {"messages": [{"role", "content"}, ...]}   the final assistant message is the reference
    preference   {"prompt" (text or messages), "chosen", "rejected"}   chosen is the reference

plus optional `id` and `cluster` columns. Files this harness writes itself (one `Example.to_json()`
per line, e.g. a materialised train/held-out split) are read back as they are, whatever format
was asked for.

Every bad row is reported as `file:line: field 'name': problem`, the first one first, so a user
can open the file at the right line. JSONL lines are physical lines; a CSV row's line is the line
it starts on; a `datasets` row's "line" is its 1-based row number.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.data.example import Example
from harness.errors import DataError

FORMATS = ("alpaca", "chat", "preference")
ROLES = ("system", "user", "assistant")
# Set on examples whose system message came from the spec's `system_prompt`, not the data, so the
# frozen split's item hashes do not change when an experiment changes its system prompt.
SYSTEM_FROM_SPEC = "system_prompt_from_spec"
# Files this harness writes: one `Example.to_json()` per line.
_NATIVE = "example"
_MORE_PROBLEMS = 5  # lines listed after the first problem, enough to show a pattern


@dataclass
class _Row:
    """One raw row, or the reason it could not even be parsed."""

    line: int
    values: dict[str, Any] | None
    problem: str | None = None
    from_text: bool = False  # CSV: every cell is text; list-valued fields arrive as JSON text


class _RowError(Exception):
    def __init__(self, field: str | None, problem: str) -> None:
        self.field, self.problem = field, problem
        super().__init__(problem)


# ---------------------------------------------------------------- reading rows


def _read_rows(path: Path) -> list[_Row]:
    if not path.exists():
        raise DataError("file not found", where=path)
    suffix = path.suffix.lower()
    if path.is_dir() or suffix in (".parquet", ".arrow"):
        return _read_dataset(path)
    if suffix in (".jsonl", ".json", ".ndjson"):
        return _read_jsonl(path)
    if suffix in (".csv", ".tsv"):
        return _read_csv(path, delimiter="\t" if suffix == ".tsv" else ",")
    raise DataError(
        f"unknown file type '{suffix}': use .jsonl, .csv, .parquet, .arrow "
        "or a folder written by Dataset.save_to_disk",
        where=path,
    )


def _read_jsonl(path: Path) -> list[_Row]:
    rows = []
    try:
        # utf-8-sig: editors on Windows put a byte-order mark before line 1
        with path.open(encoding="utf-8-sig") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    value = json.loads(line)
                except json.JSONDecodeError as e:
                    array = number == 1 and line.lstrip().startswith("[")
                    hint = " (one JSON array? JSONL wants one object per line)" if array else ""
                    rows.append(_Row(number, None, f"not valid JSON: {e.msg} at column {e.colno}{hint}"))
                    continue
                if not isinstance(value, dict):
                    hint = " (JSONL wants one object per line)" if isinstance(value, list) else ""
                    rows.append(_Row(number, None, f"expected a JSON object, got {_kind(value)}{hint}"))
                    continue
                rows.append(_Row(number, value))
    except UnicodeDecodeError as e:
        raise DataError(f"not UTF-8 text ({e.reason} at byte {e.start})", where=path) from e
    return rows


def _read_csv(path: Path, delimiter: str) -> list[_Row]:
    rows: list[_Row] = []
    header: list[str] | None = None
    header_line = end = 0
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f, delimiter=delimiter)
            for cells in reader:
                # a quoted cell may span lines: the row starts just after the previous one ended
                start, end = end + 1, reader.line_num
                if not any(cell.strip() for cell in cells):
                    continue
                if header is None:
                    header, header_line = [cell.strip() for cell in cells], start
                    named = [name for name in header if name]
                    if len(set(named)) != len(named):
                        twice = sorted({name for name in named if named.count(name) > 1})
                        raise DataError(f"header repeats column(s) {', '.join(twice)}", where=f"{path}:{start}")
                    continue
                if len(cells) != len(header):
                    problem = f"{len(cells)} cells, but the header (line {header_line}) has {len(header)}"
                    rows.append(_Row(start, None, problem))
                    continue
                # unnamed columns (e.g. a pandas index written without a name) carry nothing
                values = {name: cell for name, cell in zip(header, cells) if name}
                rows.append(_Row(start, values, from_text=True))
    except csv.Error as e:
        raise DataError(f"not readable as CSV: {e}", where=f"{path}:{end + 1}") from e
    except UnicodeDecodeError as e:
        raise DataError(f"not UTF-8 text ({e.reason} at byte {e.start})", where=path) from e
    return rows


def _read_dataset(path: Path) -> list[_Row]:
    try:
        import datasets
    except ImportError as e:
        raise DataError("reading parquet, arrow or saved datasets needs `pip install datasets`", where=path) from e
    bars_were_on = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # a bar per small file is noise in the CLI's output
    try:
        if path.is_dir():
            data = datasets.load_from_disk(str(path))
        elif path.suffix.lower() == ".parquet":
            data = datasets.Dataset.from_parquet(str(path))
        else:
            data = datasets.Dataset.from_file(str(path))
    except Exception as e:  # datasets raises many types for unreadable input; all mean the same here
        raise DataError(f"not readable as a `datasets` dataset: {e}", where=path) from e
    finally:
        if bars_were_on:
            datasets.enable_progress_bars()
    if isinstance(data, datasets.DatasetDict):
        if len(data) != 1:
            first = next(iter(data), "train")
            raise DataError(
                f"holds several splits ({', '.join(data)}); point at one, e.g. {path / first}", where=path
            )
        data = next(iter(data.values()))
    return [_Row(number, dict(row)) for number, row in enumerate(data, 1)]


# ---------------------------------------------------------------- rows to examples


def _present(values: dict[str, Any]) -> set[str]:
    """Fields that hold something: `datasets` fills absent columns with None, CSV with ''."""
    return {key for key, value in values.items() if value is not None and value != ""}


def detect_format(values: dict[str, Any]) -> str | None:
    """The format a row's fields suggest, or None when they suggest none."""
    keys = _present(values)
    if keys & {"chosen", "rejected"}:
        return "preference"
    if "messages" in keys:
        return "chat"
    if "reference" in keys:
        return _NATIVE
    if keys & {"instruction", "output"}:
        return "alpaca"
    return None


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "text", bool: "true/false", type(None): "null",
             int: "a number", float: "a number"}
    return names.get(type(value), f"a {type(value).__name__}")


def _text(values: dict[str, Any], field: str, required: bool = True) -> str:
    value = values.get(field)
    if value is None:
        if required:
            raise _RowError(field, "missing")
        return ""
    if not isinstance(value, str):
        raise _RowError(field, f"must be text, got {_kind(value)}")
    if required and not value.strip():
        raise _RowError(field, "empty")
    return value


def _structured(row: _Row, field: str) -> Any:
    """A list-valued field; in CSV it arrives as JSON text in the cell."""
    value = row.values.get(field) if row.values else None
    if row.from_text and isinstance(value, str) and value.lstrip().startswith("["):
        try:
            return json.loads(value)
        except json.JSONDecodeError as e:
            raise _RowError(field, f"not valid JSON: {e.msg} at column {e.colno}") from e
    return value


def _messages(value: Any, field: str) -> list[dict[str, str]]:
    if value is None:
        raise _RowError(field, "missing")
    if not isinstance(value, list):
        raise _RowError(field, f"must be a list of {{role, content}} messages, got {_kind(value)}")
    if not value:
        raise _RowError(field, "empty")
    messages = []
    for i, message in enumerate(value):
        at = f"{field}[{i}]"
        if not isinstance(message, dict):
            raise _RowError(at, f"must be a {{role, content}} object, got {_kind(message)}")
        role, content = message.get("role"), message.get("content")
        if role is None:
            raise _RowError(f"{at}.role", "missing")
        if role not in ROLES:
            raise _RowError(f"{at}.role", f"'{role}' is not one of {', '.join(ROLES)}")
        if content is None:
            raise _RowError(f"{at}.content", "missing")
        if not isinstance(content, str):
            raise _RowError(f"{at}.content", f"must be text, got {_kind(content)}")
        if not content.strip():
            raise _RowError(f"{at}.content", "empty")
        messages.append({"role": role, "content": content})
    return messages


def _answer(row: _Row, field: str) -> str:
    """A preference answer: text, or a conversation ending in the assistant's answer (TRL style)."""
    value = _structured(row, field)
    if isinstance(value, list):
        messages = _messages(value, field)
        if messages[-1]["role"] != "assistant":
            raise _RowError(f"{field}[{len(messages) - 1}].role", "the last message must be 'assistant'")
        return messages[-1]["content"]
    return _text(row.values, field)


def _alpaca_prompt(values: dict[str, Any]) -> list[dict[str, str]]:
    instruction = _text(values, "instruction")
    extra = _text(values, "input", required=False)
    return [{"role": "user", "content": instruction + (f"\n\n{extra}" if extra.strip() else "")}]


def _alpaca(row: _Row) -> tuple[list[dict[str, str]], str, str | None]:
    prompt = _alpaca_prompt(row.values)
    return prompt, _text(row.values, "output"), None


def _chat(row: _Row) -> tuple[list[dict[str, str]], str, str | None]:
    messages = _messages(_structured(row, "messages"), "messages")
    last = len(messages) - 1
    if messages[-1]["role"] != "assistant":
        problem = f"the final message must be 'assistant' (the reference), got '{messages[-1]['role']}'"
        raise _RowError(f"messages[{last}].role", problem)
    if last == 0:
        raise _RowError("messages", "needs a prompt message before the final assistant answer")
    return messages[:-1], messages[-1]["content"], None


def _prompt(row: _Row) -> list[dict[str, str]]:
    """A `prompt` field: messages, or text that becomes one user message."""
    value = _structured(row, "prompt")
    if isinstance(value, list):
        return _messages(value, "prompt")
    return [{"role": "user", "content": _text(row.values, "prompt")}]


def _preference(row: _Row) -> tuple[list[dict[str, str]], str, str | None]:
    prompt = _prompt(row)
    chosen, rejected = _answer(row, "chosen"), _answer(row, "rejected")
    if chosen.strip() == rejected.strip():
        raise _RowError("rejected", "same as 'chosen' (a preference pair needs two different answers)")
    return prompt, chosen, rejected


def _native(row: _Row) -> tuple[list[dict[str, str]], str, str | None]:
    prompt = _prompt(row)
    reference = _text(row.values, "reference")
    rejected = _text(row.values, "rejected", required=False) or None
    return prompt, reference, rejected


_CONVERTERS = {"alpaca": _alpaca, "chat": _chat, "preference": _preference, _NATIVE: _native}


def _label(values: dict[str, Any], field: str) -> str | None:
    """An id or cluster: text or an integer; None when absent."""
    value = values.get(field)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise _RowError(field, f"must be text or an integer, got {_kind(value)}")
    return str(value).strip()


def _example(row: _Row, fmt: str, why: str, path: Path, system_prompt: str | None) -> Example:
    values = row.values or {}
    other = detect_format(values)
    if other is not None and other != fmt:
        raise _RowError(None, f"row is in {other} format, but the file is {fmt} ({why})")
    prompt, reference, rejected = _CONVERTERS[fmt](row)
    where = f"{path}:{row.line}"
    meta: dict[str, Any] = {}
    origin = where
    if fmt == _NATIVE:
        # a file we wrote: keep where the item first came from, and what it carried
        origin = _text(values, "origin", required=False) or where
        meta = values.get("meta") or {}
        if not isinstance(meta, dict):
            raise _RowError("meta", f"must be an object, got {_kind(meta)}")
        meta = dict(meta)
    if system_prompt and prompt[0]["role"] != "system":
        # the data's own system message, where it has one, wins over the spec's default
        prompt = [{"role": "system", "content": system_prompt}, *prompt]
        meta[SYSTEM_FROM_SPEC] = True
    return Example(
        id=_label(values, "id") or f"{path.stem}-{row.line}",
        prompt=prompt,
        reference=reference,
        rejected=rejected,
        cluster=_label(values, "cluster"),
        origin=origin,
        meta=meta,
    )


class _Problems:
    """Collects bad rows so one error shows the first and a few more."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.found: list[tuple[int, str]] = []

    def add(self, line: int, field: str | None, problem: str) -> None:
        self.found.append((line, f"field '{field}': {problem}" if field else problem))

    def raise_any(self) -> None:
        if not self.found:
            return
        (line, first), more = self.found[0], self.found[1:]
        message = first
        if more:
            listed = "\n".join(f"  {self.path}:{n}: {p}" for n, p in more[:_MORE_PROBLEMS])
            rest = len(more) - _MORE_PROBLEMS
            message += f"\n{len(more)} more problem line(s):\n{listed}"
            message += f"\n  ... and {rest} more" if rest > 0 else ""
        raise DataError(message, where=f"{self.path}:{line}")


def _choose_format(rows: list[_Row], format: str, path: Path) -> tuple[str, str]:
    """The file's format and how we know it (for 'row is in X format, but the file is Y')."""
    first = next((row for row in rows if row.values is not None), None)
    seen = detect_format(first.values) if first is not None else None
    # files we wrote are read as they are, whichever user format the spec names
    if seen == _NATIVE or (format == "auto" and seen is not None):
        return seen, f"as line {first.line} shows"
    if format != "auto":
        return format, "as asked"
    problems = _Problems(path)
    problems.found = [(row.line, row.problem) for row in rows if row.problem is not None]
    if first is not None:
        fields = ", ".join(sorted(_present(first.values))) or "none"
        problems.add(
            first.line, None,
            f"cannot tell the format from the fields ({fields}): expected instruction+output (alpaca), "
            "messages (chat) or prompt+chosen+rejected (preference)",
        )
    problems.found.sort()
    problems.raise_any()
    raise AssertionError("unreachable: an undetectable file always has a problem")


def load_examples(path: Path, format: str = "auto", system_prompt: str | None = None) -> list[Example]:
    """Read a dataset file into examples, or raise a `DataError` naming the first bad row and field.

    `format` is auto, alpaca, chat or preference; auto decides from the first row's fields. A
    `system_prompt` becomes the first prompt message of every example that has no system message.
    """
    path = Path(path)
    if format not in ("auto", *FORMATS):
        raise DataError(f"unknown format '{format}': use auto, {', '.join(FORMATS)}", where=path)
    rows = _read_rows(path)
    if not rows:
        raise DataError("empty file: no rows", where=path)

    fmt, why = _choose_format(rows, format, path)
    problems = _Problems(path)
    examples: list[Example] = []
    first_line_of: dict[str, int] = {}
    for row in rows:
        if row.problem is not None:
            problems.add(row.line, None, row.problem)
            continue
        try:
            example = _example(row, fmt, why, path, system_prompt)
        except _RowError as e:
            problems.add(row.line, e.field, e.problem)
            continue
        if example.id in first_line_of:
            problems.add(row.line, "id", f"duplicate '{example.id}' (first on line {first_line_of[example.id]})")
            continue
        first_line_of[example.id] = row.line
        examples.append(example)
    problems.raise_any()
    return examples


# ---------------------------------------------------------------- inputs without outputs


@dataclass(frozen=True)
class Input:
    """One prompt awaiting an output (`harness data draft`): its id, messages, cluster and file:line."""

    id: str
    prompt: list[dict[str, str]]
    cluster: str | None
    origin: str


_OUTPUT_FIELDS = ("output", "reference", "chosen", "rejected")


def _input_prompt(row: _Row) -> list[dict[str, str]]:
    values = row.values or {}
    keys = {key for key, value in values.items() if value is not None}  # an empty cell is an empty input
    if "prompt" in keys:
        return _prompt(row)
    if "messages" in keys:
        messages = _messages(_structured(row, "messages"), "messages")
        if messages[-1]["role"] == "assistant":
            raise _RowError(f"messages[{len(messages) - 1}].role", "already ends with the assistant's answer; "
                            "drafting is for inputs without outputs")
        return messages
    if "instruction" in keys:
        return _alpaca_prompt(values)
    fields = ", ".join(sorted(_present(values))) or "none"
    raise _RowError(None, f"no input in the fields ({fields}): expected prompt (text or messages), "
                          "instruction (+ input) or messages")


def load_inputs(path: Path) -> list[Input]:
    """Read a file of prompts without outputs (JSONL, CSV, parquet, ...), or raise a `DataError` naming the first
    bad row and field. A row has `prompt` (text or messages), `instruction` (+ `input`), or `messages` ending
    in a user turn; optional `id` and `cluster`. A row that already has an output is refused."""
    path = Path(path)
    rows = _read_rows(path)
    if not rows:
        raise DataError("empty file: no inputs", where=path)
    problems = _Problems(path)
    inputs: list[Input] = []
    first_line_of: dict[str, int] = {}
    for row in rows:
        if row.problem is not None:
            problems.add(row.line, None, row.problem)
            continue
        try:
            done = sorted(_present(row.values or {}) & set(_OUTPUT_FIELDS))
            if done:
                raise _RowError(done[0], "this row already has an output; drafting is for inputs without one")
            prompt = _input_prompt(row)
            pair_id = _label(row.values or {}, "id") or f"{path.stem}-{row.line}"
            cluster = _label(row.values or {}, "cluster")
        except _RowError as e:
            problems.add(row.line, e.field, e.problem)
            continue
        if pair_id in first_line_of:
            problems.add(row.line, "id", f"duplicate '{pair_id}' (first on line {first_line_of[pair_id]})")
            continue
        first_line_of[pair_id] = row.line
        inputs.append(Input(pair_id, prompt, cluster, f"{path}:{row.line}"))
    problems.raise_any()
    return inputs


# ---------------------------------------------------------------- summaries


def _percentiles(values: list[int]) -> dict[str, int]:
    """Nearest-rank percentiles: each is a length that actually occurs."""
    if not values:
        return {"p50": 0, "p90": 0, "p99": 0, "max": 0}
    ordered = sorted(values)
    at = lambda q: ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]  # noqa: E731
    return {"p50": at(50), "p90": at(90), "p99": at(99), "max": ordered[-1]}


def _render_prompt(tokenizer: Any, prompt: list[dict[str, str]]) -> str:
    """The prompt as the model will see it: through the chat template where there is one."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    return "\n\n".join(message["content"] for message in prompt)


def _count_tokens(tokenizer: Any, text: str) -> int:
    # special tokens are already in the rendered template; adding them again would double-count BOS
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def summarize(examples: list[Example], tokenizer: Any = None) -> dict[str, Any]:
    """Counts, and with a (Hugging Face) tokenizer, token-length percentiles of prompt, reference, total."""
    summary: dict[str, Any] = {
        "examples": len(examples),
        "preference_pairs": sum(ex.rejected is not None for ex in examples),
        "clusters": len({ex.cluster for ex in examples if ex.cluster is not None}),
        "with_system_message": sum(bool(ex.prompt) and ex.prompt[0]["role"] == "system" for ex in examples),
        "multi_turn": sum(sum(m["role"] != "system" for m in ex.prompt) > 1 for ex in examples),
    }
    if tokenizer is not None and examples:
        prompt = [_count_tokens(tokenizer, _render_prompt(tokenizer, ex.prompt)) for ex in examples]
        reference = [_count_tokens(tokenizer, ex.reference) for ex in examples]
        summary["tokens"] = {
            "prompt": _percentiles(prompt),
            "reference": _percentiles(reference),
            "total": _percentiles([p + r for p, r in zip(prompt, reference)]),
        }
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    """`summarize`'s dict as a few aligned lines for the terminal."""
    lines = [
        f"examples: {summary['examples']}   preference pairs: {summary['preference_pairs']}   "
        f"clusters: {summary['clusters']}   with system message: {summary['with_system_message']}   "
        f"multi-turn: {summary['multi_turn']}"
    ]
    tokens = summary.get("tokens")
    if tokens:
        columns = ("p50", "p90", "p99", "max")
        lines.append(f"{'tokens':<10}" + "".join(f"{c:>8}" for c in columns))
        for part, stats in tokens.items():
            lines.append(f"{part:<10}" + "".join(f"{stats[c]:>8}" for c in columns))
    return "\n".join(lines)
