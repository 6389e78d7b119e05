"""The frozen held-out split: freezing, verifying, leakage, the one-file split and the dev set."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from harness.data.example import Example
from harness.data.formats import load_examples
from harness.data.split import (FrozenSplit, check_leakage, dev_split, ensure_frozen, file_sha256, item_hash,
                                manifest_path, materialise_split, normalise, split_one_file)
from harness.errors import SplitError


def example(i: int, question: str | None = None, cluster: str | None = None) -> Example:
    return Example(
        id=f"q{i}",
        prompt=[{"role": "user", "content": question or f"What is {i} squared?"}],
        reference=str(i * i),
        cluster=cluster,
        origin=f"data/x.jsonl:{i + 1}",
    )


def write_alpaca(path: Path, n: int) -> Path:
    rows = [{"id": f"r{i}", "instruction": f"Double {i}.", "output": str(2 * i)} for i in range(n)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture
def heldout() -> list[Example]:
    return [example(i) for i in range(10)]


def split_error(call, *args) -> str:
    with pytest.raises(SplitError) as info:
        call(*args)
    return str(info.value)


# ---------------------------------------------------------------- hashing


def test_item_hash_covers_id_prompt_reference_rejected() -> None:
    base = example(1)
    assert item_hash(base) == item_hash(example(1))
    for change in ({"id": "other"}, {"reference": "2"}, {"rejected": "3"},
                   {"prompt": [{"role": "user", "content": "What is 1 squared"}]}):
        assert item_hash(dataclasses.replace(base, **change)) != item_hash(base)
    assert item_hash(dataclasses.replace(base, origin="elsewhere:9", cluster="c")) == item_hash(base)


def test_spec_system_prompt_is_not_part_of_the_item(tmp_path: Path) -> None:
    path = write_alpaca(tmp_path / "h.jsonl", 3)
    plain = load_examples(path)
    prompted = load_examples(path, system_prompt="You are terse.")
    assert [item_hash(ex) for ex in plain] == [item_hash(ex) for ex in prompted]


def test_normalise() -> None:
    assert normalise("  What IS\t2 +\n 2?? ") == "what is 2 + 2"
    assert normalise("ﬁve — ＡＢＣ.") == normalise("five — abc")  # NFKC folds ligatures, full-width letters
    assert normalise("...") == ""


# ---------------------------------------------------------------- freezing and verifying


def test_freeze_then_verify(tmp_path: Path, heldout: list[Example]) -> None:
    path = tmp_path / "heldout.jsonl"
    frozen = FrozenSplit.freeze(heldout, path)
    manifest = json.loads((tmp_path / "heldout.jsonl.frozen.json").read_text())
    assert manifest_path(path) == frozen.manifest == tmp_path / "heldout.jsonl.frozen.json"
    assert manifest["count"] == 10 and manifest["split_hash"] == frozen.split_hash
    assert [item["sha256"] for item in manifest["items"]] == [item_hash(ex) for ex in heldout]
    assert manifest["created"]
    verified = FrozenSplit.verify(list(heldout), path)
    assert verified.split_hash == frozen.split_hash and verified.created == frozen.created
    assert FrozenSplit.freeze(heldout, path).created == frozen.created  # same items: a no-op


def test_edited_item_is_named(tmp_path: Path, heldout: list[Example]) -> None:
    path = tmp_path / "heldout.jsonl"
    FrozenSplit.freeze(heldout, path)
    heldout[3] = dataclasses.replace(heldout[3], reference="ten")
    message = split_error(FrozenSplit.verify, heldout, path)
    assert message.startswith(f"{manifest_path(path)}: the held-out set no longer matches")
    assert "changed (1): q3 (data/x.jsonl:4)" in message
    assert "missing" not in message and "added" not in message
    assert "harness data freeze --force" in message


def test_deleted_added_and_reordered_items(tmp_path: Path, heldout: list[Example]) -> None:
    path = tmp_path / "heldout.jsonl"
    FrozenSplit.freeze(heldout, path)
    assert "missing (1): q5" in split_error(FrozenSplit.verify, heldout[:5] + heldout[6:], path)
    assert "added (1): q99" in split_error(FrozenSplit.verify, heldout + [example(99)], path)
    swapped = [heldout[1], heldout[0], *heldout[2:]]
    assert "reordered (2): q1" in split_error(FrozenSplit.verify, swapped, path)


def test_refreezing_a_changed_split_needs_force(tmp_path: Path, heldout: list[Example]) -> None:
    path = tmp_path / "heldout.jsonl"
    FrozenSplit.freeze(heldout, path)
    message = split_error(FrozenSplit.freeze, heldout[:-1], path)
    assert "refusing to re-freeze" in message and "missing (1): q9" in message
    refrozen = FrozenSplit.freeze(heldout[:-1], path, force=True)
    assert FrozenSplit.verify(heldout[:-1], path).split_hash == refrozen.split_hash


def test_ensure_frozen_freezes_first_then_verifies(tmp_path: Path, heldout: list[Example]) -> None:
    path = tmp_path / "heldout.jsonl"
    first = ensure_frozen(heldout, path)
    assert manifest_path(path).exists()
    assert ensure_frozen(heldout, path).split_hash == first.split_hash
    with pytest.raises(SplitError, match="changed"):
        ensure_frozen([dataclasses.replace(heldout[0], reference="x"), *heldout[1:]], path)


def test_verify_without_or_with_tampered_manifest(tmp_path: Path, heldout: list[Example]) -> None:
    path = tmp_path / "heldout.jsonl"
    assert "never frozen" in split_error(FrozenSplit.verify, heldout, path)
    FrozenSplit.freeze(heldout, path)
    raw = json.loads(manifest_path(path).read_text())
    raw["items"][0]["sha256"] = "0" * 64
    manifest_path(path).write_text(json.dumps(raw))
    assert "edited by hand" in split_error(FrozenSplit.verify, heldout, path)


# ---------------------------------------------------------------- leakage


def test_leakage_is_refused_and_names_the_items(heldout: list[Example]) -> None:
    train = [example(i) for i in range(100, 120)]
    check_leakage(train, heldout, where="train.jsonl")  # disjoint: fine
    copied = dataclasses.replace(heldout[4], id="t-copy", origin="train.jsonl:21")
    message = split_error(check_leakage, train + [copied], heldout, "train.jsonl")
    assert message.startswith("train.jsonl: 1 held-out item(s) also in the training data")
    assert "q4 (data/x.jsonl:5) = training t-copy (train.jsonl:21)" in message


def test_leakage_ignores_case_whitespace_and_end_punctuation(heldout: list[Example]) -> None:
    disguised = Example(
        id="t1",
        prompt=[{"role": "system", "content": "A different system prompt."},
                {"role": "user", "content": "  what IS 7\n squared "}],
        reference="something else",
    )
    assert "q7 (data/x.jsonl:8) = training t1" in split_error(check_leakage, [disguised], heldout, None)


def test_leakage_with_empty_visible_prompts_compares_whole_items() -> None:
    only_system = lambda i, ref: Example(  # noqa: E731
        id=f"s{i}", prompt=[{"role": "system", "content": "Write a haiku."}], reference=ref)
    check_leakage([only_system(1, "autumn moon")], [only_system(2, "spring rain")], None)
    with pytest.raises(SplitError, match="s2"):
        check_leakage([only_system(1, "Autumn moon.")], [only_system(2, "autumn moon")], None)


def test_leakage_list_is_capped() -> None:
    heldout = [example(i) for i in range(30)]
    train = [dataclasses.replace(ex, id=f"t{ex.id}") for ex in heldout]
    message = split_error(check_leakage, train, heldout, None)
    assert message.startswith("30 held-out item(s)") and "... and 10 more" in message
    assert message.count(" = training ") == 20


# ---------------------------------------------------------------- splitting


def test_one_file_split_is_deterministic() -> None:
    examples = [example(i) for i in range(40)]
    train, heldout = split_one_file(examples, 0.25, seed=3)
    assert len(heldout) == 10 and len(train) == 30
    assert {ex.id for ex in train}.isdisjoint(ex.id for ex in heldout)
    assert split_one_file(examples, 0.25, seed=3) == (train, heldout)
    assert split_one_file(list(reversed(examples)), 0.25, seed=3)[1] == list(reversed(heldout))  # order-free
    assert split_one_file(examples, 0.25, seed=4)[1] != heldout


def test_clusters_stay_on_one_side() -> None:
    examples = [example(i, cluster=f"c{i // 4}") for i in range(40)]
    train, heldout = split_one_file(examples, 0.2, seed=0)
    assert {ex.cluster for ex in train}.isdisjoint(ex.cluster for ex in heldout)


def test_split_needs_two_sides() -> None:
    with pytest.raises(SplitError, match="cannot split 1 item"):
        split_one_file([example(0)], 0.5, seed=0)


def test_materialise_split_once_then_reuse(tmp_path: Path) -> None:
    source = write_alpaca(tmp_path / "all.jsonl", 20)
    train_path, heldout_path = materialise_split(source, 0.25, seed=1)
    assert train_path == tmp_path / "all.split-1-0.25" / "train.jsonl"
    assert heldout_path.parent == train_path.parent
    recorded = json.loads((train_path.parent / "source.json").read_text())
    assert recorded["sha256"] == file_sha256(source) and (recorded["train"], recorded["heldout"]) == (15, 5)

    # the written files load back as the same items, whatever user format the spec names
    heldout = load_examples(heldout_path, format="alpaca")
    original = {ex.id: ex for ex in load_examples(source)}
    assert [(ex.prompt, ex.reference, ex.origin) for ex in heldout] == [
        (original[ex.id].prompt, original[ex.id].reference, original[ex.id].origin) for ex in heldout]
    assert len(load_examples(train_path)) == 15

    before = heldout_path.stat().st_mtime_ns
    assert materialise_split(source, 0.25, seed=1) == (train_path, heldout_path)
    assert heldout_path.stat().st_mtime_ns == before  # reused, not rewritten


def test_materialise_split_refuses_a_changed_source(tmp_path: Path) -> None:
    source = write_alpaca(tmp_path / "all.jsonl", 20)
    materialise_split(source, 0.25, seed=1)
    with source.open("a") as f:
        f.write(json.dumps({"id": "new", "instruction": "Double 99.", "output": "198"}) + "\n")
    message = split_error(materialise_split, source, 0.25, 1)
    assert message.startswith(f"{source}: changed since it was split into all.split-1-0.25")
    assert materialise_split(source, 0.25, seed=2)[0].parent.name == "all.split-2-0.25"  # a new split is fine


def test_dev_split_comes_from_training() -> None:
    train = [example(i) for i in range(30)]
    rest, dev = dev_split(train, 5, seed=0)
    assert len(dev) == 5 and len(rest) == 25
    assert {ex.id for ex in rest} | {ex.id for ex in dev} == {ex.id for ex in train}
    assert dev_split(train, 5, seed=0) == (rest, dev)
    assert dev_split(train, 0, seed=0) == (train, [])
    with pytest.raises(SplitError, match="leaves no training items"):
        dev_split(train, 30, seed=0)


def test_file_sha256_of_a_saved_dataset_folder(tmp_path: Path) -> None:
    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "a.arrow").write_bytes(b"one")
    first = file_sha256(folder)
    (folder / "a.arrow").write_bytes(b"two")
    assert file_sha256(folder) != first
