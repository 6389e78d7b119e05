"""The frozen-split guard as a user meets it: freeze, then edits and leaks stop the run before training."""

from __future__ import annotations

import json

import pytest

from tests.support.cli_runner import harness


def _rows(prefix: str, n: int) -> list[dict]:
    return [{"instruction": f"{prefix} question {i}: what is {i} plus {i}?", "output": str(2 * i)} for i in range(n)]


@pytest.fixture
def user_experiment(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _rows("train", 12)))
    (data / "heldout.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _rows("heldout", 4)))
    spec = tmp_path / "mine.yaml"
    spec.write_text(
        "description: Does the guard hold?\n"
        "model: {base: 'random:tiny'}\n"
        f"data: {{train: {data / 'train.jsonl'}, heldout: {data / 'heldout.jsonl'}}}\n"
        "train: {max_steps: 1, batch_size: 2}\n"
        "eval: {max_new_tokens: 4, limit: 2}\n"
        "tracking: {wandb: disabled}\n")
    return spec, data


def test_freeze_then_edit_is_refused_naming_the_item(user_experiment, harness_home, tmp_path):
    spec, data = user_experiment
    env = {"HARNESS_HOME": str(harness_home)}
    proc = harness("data", "freeze", str(spec), env=env, check=True)
    assert "frozen" in proc.stderr and (data / "heldout.jsonl.frozen.json").exists()
    lines = (data / "heldout.jsonl").read_text().splitlines()
    lines[2] = json.dumps({"instruction": "heldout question 2: what is 2 plus 2?", "output": "5"})
    (data / "heldout.jsonl").write_text("\n".join(lines) + "\n")
    proc = harness("run", str(spec), "--results", str(tmp_path / "results"), env=env)
    assert proc.returncode == 2
    assert "heldout-3" in proc.stderr and "changed" in proc.stderr.lower()
    assert not list((tmp_path / "results").rglob("trial-*")), "nothing trained on a changed split"


def test_training_file_containing_a_heldout_item_is_refused(user_experiment, harness_home, tmp_path):
    spec, data = user_experiment
    leak = {"instruction": "HELDOUT  question 1: what is 1 plus 1?", "output": "2"}
    with (data / "train.jsonl").open("a") as f:
        f.write(json.dumps(leak) + "\n")
    proc = harness("run", str(spec), "--results", str(tmp_path / "results"), env={"HARNESS_HOME": str(harness_home)})
    assert proc.returncode == 2
    assert "heldout-2" in proc.stderr and "train-13" in proc.stderr
    assert not list((tmp_path / "results").rglob("trial-*"))


def test_missing_field_on_line_37_names_file_line_field(tmp_path, harness_home):
    rows = _rows("train", 40)
    del rows[36]["output"]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "heldout.jsonl").write_text(json.dumps(_rows("h", 1)[0]) + "\n")
    spec = tmp_path / "bad.yaml"
    spec.write_text(f"description: x\nmodel: {{base: 'random:tiny'}}\n"
                    f"data: {{train: {path}, heldout: {tmp_path / 'heldout.jsonl'}}}\n")
    proc = harness("data", "summary", str(spec), env={"HARNESS_HOME": str(harness_home)})
    assert proc.returncode == 2
    assert f"{path}:37" in proc.stderr and "output" in proc.stderr
