"""The frozen held-out split: hashed before training, verified on every run, never leaked into.

A held-out score means something only if the held-out items are the same from run to run and
none of them was trained on. So:

* `FrozenSplit.freeze` writes `<heldout file>.frozen.json` beside the data: one hash per item, in
  order, and a hash of the whole split. `verify` refuses a held-out set that no longer matches,
  naming the changed, missing and added items. `ensure_frozen` freezes on the first run.
* `check_leakage` refuses training data that contains a held-out prompt, compared after
  normalising case, Unicode forms, whitespace and end punctuation.
* A single file is split once (`materialise_split`), written to disk, and reused; if the source
  changes afterwards the split is refused rather than silently redrawn.
* `dev_split` carves a model-selection set from the training side, never from the held-out.

Random choices rank items by a sha256 of (seed, purpose, id), so they do not depend on Python's
RNG or on the order of the file, and items sharing a `cluster` always land on the same side.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from harness.data.example import Example
from harness.data.formats import SYSTEM_FROM_SPEC, load_examples
from harness.errors import SplitError
from harness.results import write_json, write_jsonl

MANIFEST_SUFFIX = ".frozen.json"
SOURCE_FILE = "source.json"
REFREEZE_HINT = (
    "If you changed the held-out set on purpose, run `harness data freeze --force` to re-freeze it; "
    "results from before and after then do not compare."
)
_LISTED = 20  # offending items named in one message; the rest are counted


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _listing(items: list[str], limit: int = _LISTED) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... and {len(items) - limit} more" if len(items) > limit else "")


# ---------------------------------------------------------------- hashing and normalising


def item_hash(ex: Example) -> str:
    """sha256 of the item's id, prompt, reference and rejected answer, as canonical JSON.

    A system message that came from the spec, not the data, is left out: changing an
    experiment's system prompt does not change the held-out items.
    """
    prompt = ex.prompt[1:] if ex.meta.get(SYSTEM_FROM_SPEC) else ex.prompt
    canonical = {"id": ex.id, "prompt": prompt, "reference": ex.reference, "rejected": ex.rejected}
    return _sha256(json.dumps(canonical, sort_keys=True, ensure_ascii=False, separators=(",", ":")))


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes; for a folder (a saved dataset), of its files' names and hashes."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        listing = "".join(f"{p.relative_to(path).as_posix()}\0{file_sha256(p)}\n" for p in files)
        return _sha256(listing)
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def normalise(text: str) -> str:
    """Text as compared for leakage: NFKC, lowercased, whitespace collapsed, end punctuation stripped."""
    text = " ".join(unicodedata.normalize("NFKC", text).casefold().split())
    start, end = 0, len(text)
    skip = lambda ch: ch.isspace() or unicodedata.category(ch).startswith("P")  # noqa: E731
    while start < end and skip(text[start]):
        start += 1
    while end > start and skip(text[end - 1]):
        end -= 1
    return text[start:end]


def visible_prompt(ex: Example) -> str:
    """What the user asked: the prompt messages' contents, without system messages."""
    return "\n".join(m["content"] for m in ex.prompt if m["role"] != "system")


# ---------------------------------------------------------------- the frozen split


def manifest_path(heldout_path: Path) -> Path:
    """`heldout.jsonl` -> `heldout.jsonl.frozen.json`, beside the data."""
    heldout_path = Path(heldout_path)
    return heldout_path.with_name(heldout_path.name + MANIFEST_SUFFIX)


@dataclass(frozen=True)
class FrozenSplit:
    """A held-out set's identity: its item ids and hashes in order, and the hash over them."""

    manifest: Path
    ids: tuple[str, ...]
    item_hashes: tuple[str, ...]
    created: str

    @property
    def count(self) -> int:
        return len(self.ids)

    @property
    def split_hash(self) -> str:
        return _sha256("\n".join(self.item_hashes))

    @classmethod
    def of(cls, heldout: list[Example], heldout_path: Path) -> "FrozenSplit":
        """The split as it is now, not yet written."""
        return cls(
            manifest=manifest_path(heldout_path),
            ids=tuple(ex.id for ex in heldout),
            item_hashes=tuple(item_hash(ex) for ex in heldout),
            created=_now(),
        )

    @classmethod
    def read(cls, manifest: Path) -> "FrozenSplit":
        try:
            raw = json.loads(Path(manifest).read_text())
            items = raw["items"]
            frozen = cls(
                manifest=Path(manifest),
                ids=tuple(str(item["id"]) for item in items),
                item_hashes=tuple(str(item["sha256"]) for item in items),
                created=str(raw["created"]),
            )
            stored = raw["split_hash"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise SplitError(f"frozen-split manifest is unreadable ({e}). {REFREEZE_HINT}", where=manifest) from e
        if stored != frozen.split_hash or raw.get("count") != frozen.count:
            raise SplitError(f"frozen-split manifest was edited by hand (its hashes do not add up). {REFREEZE_HINT}",
                             where=manifest)
        return frozen

    def write(self, data_name: str) -> None:
        write_json(self.manifest, {
            "data": data_name,
            "count": self.count,
            "split_hash": self.split_hash,
            "created": self.created,
            "items": [{"id": i, "sha256": h} for i, h in zip(self.ids, self.item_hashes)],
        })

    @classmethod
    def freeze(cls, heldout: list[Example], heldout_path: Path, force: bool = False) -> "FrozenSplit":
        """Write the manifest. Freezing the same items again is a no-op; different items need `force`."""
        current = cls.of(heldout, heldout_path)
        if current.manifest.exists() and not force:
            frozen = cls.read(current.manifest)
            if frozen.split_hash == current.split_hash:
                return frozen
            raise SplitError(
                f"refusing to re-freeze a changed held-out set\n{_differences(frozen, current, heldout)}\n"
                f"{REFREEZE_HINT}",
                where=current.manifest,
            )
        current.write(Path(heldout_path).name)
        return current

    @classmethod
    def verify(cls, heldout: list[Example], heldout_path: Path) -> "FrozenSplit":
        """The frozen split, if `heldout` still matches it item for item and in order; else `SplitError`."""
        path = manifest_path(heldout_path)
        if not path.exists():
            raise SplitError("the held-out set was never frozen (no manifest); run `harness data freeze`", where=path)
        frozen = cls.read(path)
        current = cls.of(heldout, heldout_path)
        if frozen.split_hash != current.split_hash:
            raise SplitError(
                f"the held-out set no longer matches the split frozen on {frozen.created}\n"
                f"{_differences(frozen, current, heldout)}\n{REFREEZE_HINT}",
                where=path,
            )
        return frozen


def _differences(frozen: FrozenSplit, current: FrozenSplit, heldout: list[Example]) -> str:
    """Which items changed, went missing, were added or moved, each with where it is now."""
    origin = {ex.id: ex.origin for ex in heldout}
    named = lambda ids: [f"{i} ({origin[i]})" if origin.get(i) else i for i in ids]  # noqa: E731
    before, after = dict(zip(frozen.ids, frozen.item_hashes)), dict(zip(current.ids, current.item_hashes))
    changed = [i for i in current.ids if i in before and before[i] != after[i]]
    missing = [i for i in frozen.ids if i not in after]
    added = [i for i in current.ids if i not in before]
    common_before = [i for i in frozen.ids if i in after]
    common_after = [i for i in current.ids if i in before]
    moved = [b for a, b in zip(common_before, common_after) if a != b]

    lines = [f"  frozen: {frozen.count} items; now: {current.count}"]
    for label, ids in (("changed", named(changed)), ("missing", missing), ("added", named(added)),
                       ("reordered", named(moved))):
        if ids:
            lines.append(f"  {label} ({len(ids)}): {_listing(ids)}")
    if len(lines) == 1:  # only possible with repeated ids, where a per-id account is ambiguous
        lines.append("  items changed (repeated ids prevent naming them)")
    return "\n".join(lines)


def ensure_frozen(heldout: list[Example], heldout_path: Path) -> FrozenSplit:
    """Verify against the manifest if there is one; the first run freezes."""
    if manifest_path(heldout_path).exists():
        return FrozenSplit.verify(heldout, heldout_path)
    return FrozenSplit.freeze(heldout, heldout_path)


# ---------------------------------------------------------------- leakage


def _keys(ex: Example) -> list[tuple[str, str]]:
    """What two items are compared by: the normalised prompt (when not empty) and prompt+reference."""
    prompt = normalise(visible_prompt(ex))
    whole = ("whole", normalise(f"{visible_prompt(ex)}\n{ex.reference}"))
    return [("prompt", prompt), whole] if prompt else [whole]


def _by_key(examples: list[Example]) -> dict[tuple[str, str], list[Example]]:
    out: dict[tuple[str, str], list[Example]] = {}
    for ex in examples:
        for key in _keys(ex):
            out.setdefault(key, []).append(ex)
    return out


def _matches(ex: Example, by_key: dict[tuple[str, str], list[Example]]) -> list[Example]:
    found = [t for key in _keys(ex) for t in by_key.get(key, [])]
    return list({id(t): t for t in found}.values())  # one item can match both ways


def duplicates(examples: list[Example]) -> list[list[Example]]:
    """Groups of items the leak guard would call the same (normalised prompt, or prompt+reference), in file
    order: within one split they are not a leak, but each is trained on twice."""
    by_key = _by_key(examples)
    order = {id(e): i for i, e in enumerate(examples)}
    seen: set[int] = set()
    groups = []
    for ex in examples:
        if id(ex) in seen:
            continue
        group, todo = [], [ex]
        while todo:  # a matches b by prompt, b matches c by prompt+reference: one group
            item = todo.pop()
            if id(item) in seen:
                continue
            seen.add(id(item))
            group.append(item)
            todo.extend(t for t in _matches(item, by_key) if id(t) not in seen)
        if len(group) > 1:
            groups.append(sorted(group, key=lambda e: order[id(e)]))
    return groups


def check_leakage(train: list[Example], heldout: list[Example], where: str | Path | None) -> None:
    """Refuse training data that contains a held-out item.

    An item leaks if its normalised prompt (system messages excluded) is a training prompt, or its
    normalised prompt+reference is a training item's. The second catches items whose visible prompt
    is empty (everything in the system message), where prompts alone would match everything.
    """
    by_key = _by_key(train)
    leaks: list[str] = []
    for ex in heldout:
        hits = _matches(ex, by_key)
        if hits:
            shown = [f"{t.id} ({t.origin})" if t.origin else t.id for t in hits]
            leaks.append(f"  {ex.id} ({ex.origin or 'held-out'}) = training {_listing(shown, 3)}")
    if leaks:
        more = f"\n  ... and {len(leaks) - _LISTED} more" if len(leaks) > _LISTED else ""
        raise SplitError(
            f"{len(leaks)} held-out item(s) also in the training data (compared ignoring case, whitespace "
            f"and end punctuation); training on them would inflate the held-out score:\n"
            + "\n".join(leaks[:_LISTED]) + more
            + "\nRemove them from the training data.",
            where=where,
        )


# ---------------------------------------------------------------- splitting


def _rank(seed: int, purpose: str, key: str) -> str:
    return _sha256(f"{seed}\0{purpose}\0{key}")


def _pick(examples: list[Example], k: int, seed: int, purpose: str) -> set[int]:
    """Indices of about `k` items chosen by seeded hash; clusters are taken whole (so may overshoot)."""
    groups: dict[str, list[int]] = {}
    for i, ex in enumerate(examples):
        # an item without a cluster is a group of its own (with any repeats of its id)
        key = f"cluster\0{ex.cluster}" if ex.cluster is not None else f"item\0{ex.id}"
        groups.setdefault(key, []).append(i)
    chosen: set[int] = set()
    for key in sorted(groups, key=lambda g: _rank(seed, purpose, g)):
        if len(chosen) >= k:
            break
        chosen.update(groups[key])
    return chosen


def _divide(examples: list[Example], k: int, seed: int, purpose: str) -> tuple[list[Example], list[Example]]:
    """(rest, chosen), each in the original order."""
    chosen = _pick(examples, k, seed, purpose)
    rest = [ex for i, ex in enumerate(examples) if i not in chosen]
    return rest, [ex for i, ex in enumerate(examples) if i in chosen]


def split_one_file(examples: list[Example], heldout_fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """(train, heldout): a seeded, deterministic split; items of one cluster stay together."""
    if not 0 < heldout_fraction < 1:
        raise SplitError(f"heldout_fraction must be between 0 and 1, got {heldout_fraction}")
    k = max(1, round(len(examples) * heldout_fraction))
    train, heldout = _divide(examples, k, seed, "heldout")
    if not train or not heldout:
        raise SplitError(
            f"cannot split {len(examples)} item(s) in {len({ex.cluster or ex.id for ex in examples})} group(s) "
            f"into non-empty train and held-out sides at fraction {heldout_fraction}"
        )
    return train, heldout


def dev_split(train: list[Example], dev_size: int, seed: int) -> tuple[list[Example], list[Example]]:
    """(train_rest, dev): about `dev_size` training items set aside for model selection."""
    if dev_size <= 0:
        return list(train), []
    rest, dev = _divide(train, dev_size, seed, "dev")
    if not rest:
        raise SplitError(f"dev_size {dev_size} leaves no training items (training has {len(train)})")
    return rest, dev


def split_folder(path: Path, heldout_fraction: float, seed: int) -> Path:
    """Where `materialise_split` writes: `<stem>.split-<seed>-<fraction>/` beside the source."""
    path = Path(path)
    return path.parent / f"{path.stem}.split-{seed}-{heldout_fraction:g}"


def materialise_split(path: Path, heldout_fraction: float, seed: int, format: str = "auto") -> tuple[Path, Path]:
    """Split a single file once into train.jsonl and heldout.jsonl beside it, then reuse them.

    The source's sha256 is kept in `source.json`; a source that changed since is refused, because
    redrawing the split would silently change the held-out set.
    """
    path = Path(path)
    folder = split_folder(path, heldout_fraction, seed)
    train_path, heldout_path, source_path = folder / "train.jsonl", folder / "heldout.jsonl", folder / SOURCE_FILE
    # source.json is written last, so without it an earlier split was interrupted: redo it
    if source_path.exists():
        _check_source(path, folder, source_path)
        for needed in (train_path, heldout_path):
            if not needed.exists():
                raise SplitError(f"{needed.name} is missing from the split; delete {folder} to split afresh",
                                 where=needed)
        return train_path, heldout_path

    train, heldout = split_one_file(load_examples(path, format), heldout_fraction, seed)
    write_jsonl(train_path, (ex.to_json() for ex in train))
    write_jsonl(heldout_path, (ex.to_json() for ex in heldout))
    write_json(source_path, {
        "source": path.name,
        "sha256": file_sha256(path),
        "heldout_fraction": heldout_fraction,
        "seed": seed,
        "train": len(train),
        "heldout": len(heldout),
        "created": _now(),
    })
    return train_path, heldout_path


def _check_source(path: Path, folder: Path, source_path: Path) -> None:
    try:
        recorded: dict[str, Any] = json.loads(source_path.read_text())
        digest = recorded["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SplitError(f"unreadable ({e}); delete {folder} to split afresh", where=source_path) from e
    if not path.exists():
        raise SplitError(f"the source of {folder.name} is gone", where=path)
    if file_sha256(path) != digest:
        raise SplitError(
            f"changed since it was split into {folder.name} on {recorded.get('created', '?')}; the held-out "
            f"side is frozen, so it is not split again. Restore the file, or delete {folder} to split afresh "
            "(results from before and after then do not compare).",
            where=path,
        )
