"""The forgetting check's divergence: the tuned model's per-token divergence from its base on general text.

Which text (`forgetting.divergence_text`), all of it offline in a user's clone:

- `tasks`: each forgetting item's question and correct answer, as lm-eval words them (its task's
  `doc_to_text`, target delimiter and correct choice), from the tasks' own data: the same items, under
  the same doc_ids, as the lm-eval rows;
- a path to a `.jsonl` file of `{"text": ..., "id": ...}` rows (`id` optional), the first `limit` of them;
- `none`: no divergence.

Each text is scored after a BOS token (`harness.evaluation.divergence.plain_text`); base and tuned are the same
PEFT model with its adapter off and on, so both logits are at hand and each item costs one forward pass per
model. The rows go to `<trial>/lm_eval/divergence.jsonl` beside the lm-eval rows: item_id (`<task>/<doc_id>`
or the file's id), source (task or file name), doc_id, kl, top1_agree, loglik_delta, tokens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.capabilities.evaluate import LM_EVAL_DIR
from harness.capabilities.tasks import needs_registry, resolve_tasks, task_manager
from harness.errors import HarnessError
from harness.evaluation.divergence import DIVERGENCE_SCORES, HFLogits, ScoredText, item_divergence, plain_text
from harness.results import read_jsonl

TASKS, NONE = "tasks", "none"
DIVERGENCE_FILE = "divergence.jsonl"


def divergence_path(folder: Path) -> Path:
    """Where a trial's (or a forgetting folder's) divergence rows are."""
    return Path(folder) / LM_EVAL_DIR / DIVERGENCE_FILE


def check_source(source: str) -> None:
    """`tasks`, `none`, or a readable .jsonl file; a HarnessError naming the field otherwise."""
    if source in (TASKS, NONE):
        return
    path = Path(source)
    if path.suffix != ".jsonl":
        raise HarnessError(f"forgetting.divergence_text: '{source}' is neither '{TASKS}', '{NONE}' nor a .jsonl file")
    if not path.is_file():
        raise HarnessError("forgetting.divergence_text: no such file", where=path)


def texts_for(source: str, tasks: list[str], limit: int | None, tokenizer: Any) -> list[tuple[ScoredText, dict]]:
    """The texts of `source`, tokenised, each with what its row says of it (source, doc_id)."""
    check_source(source)
    raw = _task_texts(tasks, limit) if source == TASKS else _file_texts(Path(source), limit)
    return [(plain_text(item_id, tokenizer, text), meta) for item_id, text, meta in raw]


def _task_texts(tasks: list[str], limit: int | None) -> list[tuple[str, str, dict]]:
    """Question + target delimiter + correct answer of each lm-eval item, in lm-eval's doc_id order."""
    from lm_eval.tasks import get_task_dict

    from harness.models import harness_home

    specs = resolve_tasks(tasks, cache_dir=harness_home() / "lm_eval_datasets")
    out = []
    for name, task in _leaf_tasks(get_task_dict(specs, task_manager(needs_registry(specs)))):
        for doc_id, doc in enumerate(task.eval_docs):
            if limit is not None and doc_id >= limit:
                break
            out.append((f"{name}/{doc_id}", _item_text(task, doc, name, doc_id), {"source": name, "doc_id": doc_id}))
    return out


def _leaf_tasks(tasks: dict) -> list[tuple[str, Any]]:
    """(name, Task) of every task in lm-eval's task dict, groups expanded."""
    out = []
    for key, value in tasks.items():
        if isinstance(value, dict):
            out += _leaf_tasks(value)
        else:
            out.append((getattr(value, "config", None) and value.config.task or str(key), value))
    return out


def _item_text(task: Any, doc: dict, name: str, doc_id: int) -> str:
    question, target = task.doc_to_text(doc), task.doc_to_target(doc)
    if task.OUTPUT_TYPE == "multiple_choice":
        choices = task.doc_to_choice(doc)
        if isinstance(target, int):
            target = choices[target]
        elif isinstance(target, str) and target not in choices and target.isdigit():
            target = choices[int(target)]
    if isinstance(target, list):
        target = target[0]
    if not isinstance(question, str) or not isinstance(target, (str, int)):
        raise HarnessError(f"task '{name}' item {doc_id}: no question and answer text to score "
                           f"(doc_to_text gave {type(question).__name__}, the target {type(target).__name__})")
    return f"{question}{task.config.target_delimiter}{target}"


def _file_texts(path: Path, limit: int | None) -> list[tuple[str, str, dict]]:
    out = []
    for i, row in enumerate(read_jsonl(path)):
        if limit is not None and i >= limit:
            break
        if not isinstance(row, dict) or not isinstance(row.get("text"), str) or not row["text"].strip():
            raise HarnessError(f"forgetting.divergence_text: line {i + 1} has no non-empty 'text' string", where=path)
        out.append((str(row.get("id", i)), row["text"], {"source": path.name, "doc_id": i}))
    if not out:
        raise HarnessError("forgetting.divergence_text: the file holds no texts", where=path)
    return out


def adapter_divergence(peft_model: Any, texts: list[tuple[ScoredText, dict]]) -> list[dict[str, Any]]:
    """Per text, the model with its adapter on against the same model with it off (the base): one row each."""
    logits = HFLogits(peft_model)
    rows = []
    for text, meta in texts:
        with peft_model.disable_adapter():
            reference = logits.logits(text)
        value = item_divergence(reference, logits.logits(text), text.target)
        rows.append({"item_id": text.item_id, **meta, **value, "tokens": len(text.target)})
    return rows


def summary(rows: list[dict[str, Any]], source: str) -> dict[str, Any]:
    """The metrics.json block: the text, how many items and tokens, the mean of each score over items."""
    return {"text": source, "n": len(rows), "tokens": sum(r["tokens"] for r in rows),
            **{k: sum(r[k] for r in rows) / len(rows) if rows else None for k in DIVERGENCE_SCORES}}
