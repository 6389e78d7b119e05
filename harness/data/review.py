"""A person's review of a dataset, pair by pair: an audit log beside the data, the reviewed dataset derived from it.

Every decision (keep, fix with a new output, delete) is one line appended to `<data file>.review.jsonl`,
flushed to disk before it is acknowledged, with the pair's hash before and after, the batch, the time and
the reviewer. The reviewed dataset is never edited in place: it is the original file replayed through the
log (the last decision on a pair wins), so a review resumes where the log ends, replays on another
machine, and diffs against the original. A log line whose pair no longer hashes as it did when it was
decided means the file changed on disk under the review; that is an error, never a silent re-decision.

Pairs are reviewed in batches of `BATCH` in file order; a batch is closed when each of its pairs has a
decision (a researcher's standards drift within a long session; a batch boundary is where they reset).
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from harness.data.example import Example
from harness.data.formats import load_examples
from harness.data.split import file_sha256, item_hash
from harness.errors import DataError
from harness.results import write_jsonl

BATCH = 50
DECISIONS = ("keep", "fix", "delete")
MODES = ("train", "heldout")
LOG_SUFFIX = ".review.jsonl"
REVIEWED_SUFFIX = ".reviewed.jsonl"
REVIEW_META = "review"  # an item's meta key in the reviewed file: its decision, batch and reviewer
RESTART_HINT = "restore the file as it was, or move the log aside to start the review afresh"


def log_path(data_path: Path) -> Path:
    """`train.jsonl` -> `train.jsonl.review.jsonl`, beside the data."""
    return Path(data_path).with_name(Path(data_path).name + LOG_SUFFIX)


def reviewed_path(data_path: Path) -> Path:
    """`train.jsonl` -> `train.jsonl.reviewed.jsonl`: the original replayed through the log."""
    return Path(data_path).with_name(Path(data_path).name + REVIEWED_SUFFIX)


def reviewer_name(flag: str | None = None) -> str:
    """The reviewer: the flag, else $HARNESS_REVIEWER, else the login name."""
    name = flag or os.environ.get("HARNESS_REVIEWER") or os.environ.get("USER") or os.environ.get("LOGNAME")
    if not name:
        raise DataError("no reviewer name: pass --reviewer NAME or set HARNESS_REVIEWER")
    return name


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Decision:
    """One line of the audit log."""

    id: str
    decision: str
    before: str  # item_hash of the pair as the reviewer saw it
    after: str | None  # its hash after the decision; None when deleted
    batch: int
    time: str
    reviewer: str
    mode: str = "train"
    output: str | None = None  # the new output of a fix

    def to_json(self) -> dict[str, Any]:
        # `after` stays, null for a delete; `output` only on a fix
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None or k == "after"}


class Review:
    """A dataset file and its audit log, replayed: the pairs as they are now and the decision on each."""

    def __init__(self, data_path: Path, examples: list[Example], *, mode: str = "train", batch_size: int = BATCH):
        if mode not in MODES:
            raise DataError(f"unknown review mode '{mode}': use {' or '.join(MODES)}")
        if not examples:
            raise DataError("no pairs to review", where=data_path)
        self.data_path, self.mode, self.batch_size = Path(data_path), mode, batch_size
        self.log_path, self.reviewed_path = log_path(data_path), reviewed_path(data_path)
        self.original = {ex.id: ex for ex in examples}
        self.order = [ex.id for ex in examples]
        self.current: dict[str, Example] = dict(self.original)
        self.decisions: dict[str, Decision] = {}
        self.history: list[Decision] = []

    @classmethod
    def open(cls, data_path: Path, *, format: str = "auto", mode: str = "train", batch_size: int = BATCH) -> "Review":
        """Read the data file and replay its log; a log that no longer fits the file is a `DataError`."""
        review = cls(data_path, load_examples(Path(data_path), format), mode=mode, batch_size=batch_size)
        if review.log_path.exists():
            for number, line in enumerate(review.log_path.read_text().splitlines(), 1):
                if line.strip():
                    review._replay(_parse(line, f"{review.log_path}:{number}"), f"{review.log_path}:{number}")
        return review

    # ------------------------------------------------------------ the state

    def hash_of(self, pair_id: str) -> str:
        return item_hash(self.current[pair_id])

    def batches(self) -> list[list[str]]:
        return [self.order[i:i + self.batch_size] for i in range(0, len(self.order), self.batch_size)]

    def batch_of(self, pair_id: str) -> int:
        return self.order.index(pair_id) // self.batch_size

    def closed(self, batch: int) -> bool:
        return all(i in self.decisions for i in self.batches()[batch])

    def resume_batch(self) -> int:
        """The first batch with an undecided pair; the last one when every batch is closed."""
        batches = self.batches()
        return next((b for b in range(len(batches)) if not self.closed(b)), len(batches) - 1)

    def derived(self) -> list[Example]:
        """The reviewed dataset: kept and fixed pairs in file order, each with its decision in `meta`."""
        out = []
        for pair_id in self.order:
            d = self.decisions.get(pair_id)
            if d is not None and d.decision != "delete":
                ex = self.current[pair_id]
                out.append(dataclasses.replace(ex, meta={**ex.meta, REVIEW_META: {
                    "decision": d.decision, "batch": d.batch, "reviewer": d.reviewer, "time": d.time}}))
        return out

    def summary(self) -> dict[str, Any]:
        """Counts of each decision, batches closed, reviewers; the hash of the reviewed file when written."""
        counts = {k: sum(d.decision == k for d in self.decisions.values()) for k in DECISIONS}
        batches = self.batches()
        out: dict[str, Any] = {
            "file": str(self.data_path), "mode": self.mode, "pairs": len(self.order),
            "kept": counts["keep"], "fixed": counts["fix"], "deleted": counts["delete"],
            "undecided": len(self.order) - len(self.decisions),
            "batches": len(batches), "batches_closed": sum(self.closed(b) for b in range(len(batches))),
            "reviewers": sorted({d.reviewer for d in self.history}), "decisions_logged": len(self.history),
            "source_sha256": file_sha256(self.data_path),
        }
        drafted = sorted({str(ex.meta["drafted"].get("model")) for ex in self.original.values()
                          if isinstance(ex.meta.get("drafted"), dict)})
        if drafted:
            out["drafted_by"] = drafted
        if self.reviewed_path.exists():
            out["reviewed_sha256"] = file_sha256(self.reviewed_path)
        return out

    def diff(self) -> list[dict[str, Any]]:
        """Each pair the review changed: deleted, or fixed with its output before and after."""
        out = []
        for pair_id in self.order:
            d = self.decisions.get(pair_id)
            if d is None or d.decision == "keep":
                continue
            row: dict[str, Any] = {"id": pair_id, "decision": d.decision, "batch": d.batch, "reviewer": d.reviewer,
                                   "before": self.original[pair_id].reference}
            if d.decision == "fix":
                row["after"] = self.current[pair_id].reference
            out.append(row)
        return out

    def reread(self, n: int, seed: int | None = None) -> list[str]:
        """`n` random pairs from those already decided (all of them when fewer), in file order."""
        decided = [i for i in self.order if i in self.decisions]
        picked = set(random.Random(seed).sample(decided, min(n, len(decided))))
        return [i for i in self.order if i in picked]

    # ------------------------------------------------------------ deciding

    def decide(self, pair_id: str, decision: str, *, reviewer: str, expected: str | None = None,
               output: str | None = None) -> Decision:
        """Record one decision: appended to the log and on disk before this returns, then the reviewed file.

        `expected` is the pair's hash as the reviewer saw it; a pair that has changed since is refused."""
        if pair_id not in self.current:
            raise DataError(f"no pair '{pair_id}' in the data", where=self.data_path)
        if decision not in DECISIONS:
            raise DataError(f"unknown decision '{decision}': use {', '.join(DECISIONS)}")
        before = self.hash_of(pair_id)
        if expected is not None and expected != before:
            raise DataError(f"pair '{pair_id}' changed since it was shown (hash {expected[:12]} then, "
                            f"{before[:12]} now): reload it and decide again", where=self.data_path)
        if decision == "fix":
            if output is None or not output.strip():
                raise DataError(f"pair '{pair_id}': a fix needs the new output (to drop the pair, delete it)")
            if output == self.current[pair_id].reference:
                decision, output = "keep", None  # nothing was changed: recorded as what it is
        elif output is not None and output != self.current[pair_id].reference:
            raise DataError(f"pair '{pair_id}': the output was edited; record it as a fix, not '{decision}'")
        else:
            output = None
        after = None if decision == "delete" else (
            item_hash(dataclasses.replace(self.current[pair_id], reference=output)) if output is not None else before)
        entry = Decision(id=pair_id, decision=decision, before=before, after=after, batch=self.batch_of(pair_id),
                         time=_now(), reviewer=reviewer, mode=self.mode, output=output)
        _append(self.log_path, entry.to_json())
        self._apply(entry)
        self.write_reviewed()
        return entry

    def write_reviewed(self) -> Path:
        write_jsonl(self.reviewed_path, (ex.to_json() for ex in self.derived()))
        return self.reviewed_path

    def _apply(self, entry: Decision) -> None:
        if entry.output is not None:
            self.current[entry.id] = dataclasses.replace(self.current[entry.id], reference=entry.output)
        self.decisions[entry.id] = entry
        self.history.append(entry)

    def _replay(self, entry: Decision, where: str) -> None:
        if entry.id not in self.current:
            raise DataError(f"the log decides pair '{entry.id}', which is no longer in {self.data_path.name}; "
                            f"{RESTART_HINT}", where=where)
        now = self.hash_of(entry.id)
        if now != entry.before:
            origin = self.original[entry.id].origin or self.data_path
            raise DataError(f"pair '{entry.id}' ({origin}) changed on disk since it was reviewed on {entry.time} "
                            f"(hash {entry.before[:12]} then, {now[:12]} now); {RESTART_HINT}", where=where)
        if entry.output is not None:
            fixed = item_hash(dataclasses.replace(self.current[entry.id], reference=entry.output))
            if fixed != entry.after:
                raise DataError(f"the fix of pair '{entry.id}' does not hash to the one logged: the log was edited",
                                where=where)
        self._apply(entry)


def _parse(line: str, where: str) -> Decision:
    try:
        raw = json.loads(line)
        fields = {f.name for f in dataclasses.fields(Decision)}
        entry = Decision(**{k: v for k, v in raw.items() if k in fields})
    except (ValueError, TypeError) as e:
        raise DataError(f"unreadable review-log line ({e}); {RESTART_HINT}", where=where) from e
    if entry.decision not in DECISIONS:
        raise DataError(f"unknown decision '{entry.decision}' in the review log", where=where)
    return entry


def _append(path: Path, row: dict[str, Any]) -> None:
    """One line, flushed and fsynced: a decision acknowledged is a decision on disk."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, sort_keys=True, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def original_path(path: Path) -> Path | None:
    """`train.jsonl.reviewed.jsonl` -> `train.jsonl`; None for a file that is not a reviewed dataset."""
    name = Path(path).name
    if not name.endswith(REVIEWED_SUFFIX) or name == REVIEWED_SUFFIX:
        return None
    return Path(path).with_name(name[:-len(REVIEWED_SUFFIX)])


def verify_reviewed(path: Path, *, format: str = "auto") -> dict[str, Any]:
    """The review summary (and its provenance line) of a reviewed dataset, after re-deriving it from its
    original plus the audit log: a file that differs (edited by hand, or a stale copy) is a `DataError`."""
    path = Path(path)
    original = original_path(path)
    if original is None:
        raise DataError(f"not a reviewed dataset (its name ends in {REVIEWED_SUFFIX})", where=path)
    log = log_path(original)
    for needed, what in ((original, "its original"), (log, "the review log")):
        if not needed.exists():
            raise DataError(f"a reviewed dataset is checked against {what}, {needed}, which is missing; keep the "
                            "original and its log beside it (or train on the original)", where=path)
    review = Review.open(original, format=format)
    expected = [json.loads(json.dumps(ex.to_json(), sort_keys=True)) for ex in review.derived()]
    found = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if found != expected:
        where = next((i for i, (a, b) in enumerate(zip(found, expected)) if a != b), min(len(found), len(expected)))
        rows = found if where < len(found) else expected
        pair = rows[where].get("id", "?") if where < len(rows) else "?"
        raise DataError(
            f"differs from {original} replayed through {log} ({len(found)} pairs in the file, {len(expected)} "
            f"derived; the first difference is at line {where + 1}, pair '{pair}'): it was edited by hand or is "
            f"stale. Make changes as fixes in `harness data review`; to re-derive it, delete it and decide any "
            "pair again (or run `harness data review NAME`, which writes it afresh)", where=path)
    summary = review.summary()
    summary["reviewed_sha256"] = file_sha256(path)
    summary["provenance"] = provenance_line(summary)
    return summary


def review_state(data_path: Path, *, format: str = "auto") -> dict[str, Any] | None:
    """The review summary of a data file that has a log, else None."""
    if not log_path(data_path).exists():
        return None
    return Review.open(data_path, format=format).summary()


def provenance_line(summary: dict[str, Any]) -> str:
    """"512 pairs: drafted by X, reviewed in 11 batches, 37 fixed, 51 deleted" from a review summary."""
    kept = summary["kept"] + summary["fixed"]
    parts = [f"{kept} pairs"]
    rest = []
    if summary.get("drafted_by"):
        rest.append(f"drafted by {', '.join(summary['drafted_by'])}")
    rest.append(f"reviewed in {summary['batches_closed']} batch(es) by {', '.join(summary['reviewers']) or 'no one'}")
    rest.append(f"{summary['fixed']} fixed")
    rest.append(f"{summary['deleted']} deleted")
    if summary["undecided"]:
        rest.append(f"{summary['undecided']} not yet reviewed (left out)")
    return f"{parts[0]}: {', '.join(rest)}"
