"""Spec validation: typos, wrong types and missing fields name the file, the line and the field."""

from __future__ import annotations

import pytest

from harness.errors import SpecError
from harness.experiments import find_experiment, registered
from harness.spec import load_spec


def write(tmp_path, text: str):
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


def test_registered_experiments_validate_and_have_descriptions():
    experiments = registered()
    assert "quickstart" in experiments
    for exp in experiments.values():
        spec = load_spec(exp.path)
        assert spec.description.strip(), exp.path
        for preset in spec.presets:
            load_spec(exp.path, preset=preset)


def test_typo_key_names_file_line_and_field(tmp_path):
    path = write(tmp_path, "description: x\nlora:\n  r: 8\n  alpah: 16\n")
    with pytest.raises(SpecError) as e:
        load_spec(path)
    msg = str(e.value)
    assert f"{path}:4" in msg and "lora.alpah" in msg and "unknown field" in msg


def test_wrong_type_names_field(tmp_path):
    path = write(tmp_path, "description: x\ntrain:\n  learning_rate: fast\n")
    with pytest.raises(SpecError) as e:
        load_spec(path)
    assert f"{path}:3" in str(e.value) and "train.learning_rate" in str(e.value)


def test_missing_description_is_an_error(tmp_path):
    path = write(tmp_path, "model:\n  base: random:tiny\n")
    with pytest.raises(SpecError) as e:
        load_spec(path)
    assert "description" in str(e.value) and str(path) in str(e.value)


def test_invalid_yaml_names_line(tmp_path):
    path = write(tmp_path, "description: x\nlora: [1,\n")
    with pytest.raises(SpecError) as e:
        load_spec(path)
    assert str(path) in str(e.value) and "YAML" in str(e.value)


def test_data_sources_are_exclusive(tmp_path):
    path = write(tmp_path, "description: x\ndata:\n  builtin: realestate\n  file: a.jsonl\n  heldout_fraction: 0.2\n")
    with pytest.raises(SpecError, match="one of"):
        load_spec(path)


def test_default_data_is_the_builtin_task(tmp_path):
    spec = load_spec(write(tmp_path, "description: x\n"))
    assert spec.data.builtin == "realestate" and spec.name == "exp"


def test_unknown_preset_lists_known(tmp_path):
    path = write(tmp_path, "description: x\npresets:\n  smoke: {train: {max_steps: 1}}\n")
    assert load_spec(path, preset="smoke").train.max_steps == 1
    with pytest.raises(SpecError, match="known: smoke"):
        load_spec(path, preset="fast")


def test_unknown_experiment_lists_registered():
    with pytest.raises(SpecError, match="quickstart"):
        find_experiment("no-such-experiment")


def test_dev_checkpoints_without_a_dev_split_name_the_field(tmp_path):
    """A dev learning curve scores the dev split: without one the spec is refused at the field (the held-out
    split is never scored mid-training)."""
    path = write(tmp_path, "description: x\neval:\n  dev_every_steps: 4\n")
    with pytest.raises(SpecError) as e:
        load_spec(path)
    assert f"{path}:3" in str(e.value) and "eval.dev_every_steps" in str(e.value) and "data.dev_size" in str(e.value)
    assert load_spec(write(tmp_path, "description: x\ndata: {dev_size: 4}\neval: {dev_every_steps: 4}\n"))
