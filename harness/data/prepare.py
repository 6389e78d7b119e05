"""From a spec's `data:` section to train / dev / frozen held-out examples, guarded before training."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from harness.data.example import Example
from harness.data.formats import load_examples
from harness.data.review import original_path, verify_reviewed
from harness.data.split import (FrozenSplit, check_leakage, dev_split, ensure_frozen, file_sha256, manifest_path,
                                materialise_split)
from harness.errors import DataError
from harness.config import DataSpec


# Built-in datasets: name → module with `load_builtin(seed, cache_dir)` and `cache_directory(cache_dir, seed)`.
BUILTINS = {"realestate": "harness.data.realestate", "voice": "harness.data.voice"}


@dataclass
class PreparedData:
    """The examples one trial may use. `heldout` is read only by evaluation, never by training."""

    train: list[Example]
    dev: list[Example]
    heldout: list[Example]
    split: FrozenSplit
    source: str  # "builtin:realestate" or the files
    file_hashes: dict[str, str]
    scorer: str  # "json" or "text"
    card: str | None = None
    review: dict | None = None  # a reviewed training file's review summary (`harness.data.review.verify_reviewed`)


def _with_system(examples: list[Example], system_prompt: str | None) -> list[Example]:
    if not system_prompt:
        return examples
    return [dataclasses.replace(ex, prompt=[{"role": "system", "content": system_prompt}, *ex.prompt])
            if ex.prompt[0]["role"] != "system" else ex for ex in examples]


def data_files(spec: DataSpec, cache_dir: Path) -> tuple[Path, Path, str, str | None,
                                                         tuple[list[Example], list[Example]] | None]:
    """(train file, held-out file, source, card, (train, held-out) examples of a built-in or None): where a
    spec's data is, the one file split (and a built-in built) on first use."""
    if spec.builtin is not None:
        if spec.builtin not in BUILTINS:
            raise DataError(f"unknown built-in dataset '{spec.builtin}' (known: {', '.join(BUILTINS)})")
        import importlib

        module = importlib.import_module(BUILTINS[spec.builtin])
        built = module.load_builtin(spec.seed, cache_dir)
        directory = module.cache_directory(cache_dir, spec.seed)
        return (directory / "train.jsonl", directory / "heldout.jsonl", f"builtin:{spec.builtin}(seed={spec.seed})",
                built.card, (built.train, built.heldout))
    if spec.file is not None:
        train_path, heldout_path = materialise_split(spec.file, spec.heldout_fraction, spec.seed, spec.format)
    else:
        train_path, heldout_path = spec.train, spec.heldout
    return train_path, heldout_path, f"{train_path} + {heldout_path}", None, None


def prepare_data(spec: DataSpec, cache_dir: Path, *, refreeze: bool = False, freeze: bool = True) -> PreparedData:
    """Load the data a spec names, freeze (or verify) its held-out split and refuse leakage.

    `freeze=False` (`harness check`) verifies a split that is frozen but writes no manifest for one
    that is not: the first run freezes it, a check only looks."""
    train_path, heldout_path, source, card, built = data_files(spec, cache_dir)
    if built is not None:
        train, heldout = built
    else:
        train, heldout = load_examples(train_path, spec.format), load_examples(heldout_path, spec.format)
    if not heldout:
        raise DataError("the held-out split is empty", where=heldout_path)
    # A reviewed dataset is trained on only as its original plus the audit log derive it, never as edited.
    review = verify_reviewed(train_path, format=spec.format) if original_path(train_path) is not None else None
    if refreeze:
        split = FrozenSplit.freeze(heldout, heldout_path, force=True)
    elif freeze or manifest_path(heldout_path).exists():
        split = ensure_frozen(heldout, heldout_path)
    else:
        split = FrozenSplit.of(heldout, heldout_path)
    check_leakage(train, heldout, heldout_path)
    train = _with_system(train, spec.system_prompt)
    heldout = _with_system(heldout, spec.system_prompt)
    train, dev = dev_split(train, spec.dev_size, spec.seed) if spec.dev_size else (train, [])
    if spec.train_limit is not None:
        train = train[: spec.train_limit]
    if not train:
        raise DataError("no training items left", where=train_path)
    hashes = {str(p): file_sha256(p) for p in (train_path, heldout_path)}
    return PreparedData(train, dev, heldout, split, source, hashes, _scorer_for(heldout), card, review)


def _scorer_for(heldout: list[Example]) -> str:
    import json

    try:
        return "json" if isinstance(json.loads(heldout[0].reference), dict) else "text"
    except ValueError:
        return "text"
