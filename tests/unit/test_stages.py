"""The stage registry's contract, checked over every registered stage: its section round-trips through YAML
and `--set`, bad input names the file, line and field, and it runs in a trial's pipeline (with a backend
that records what it is asked to train) writing the arms and blocks it declares."""

from __future__ import annotations

import json

import pytest

from harness.errors import SpecError
from harness.spec import load_spec, spec_dump
from harness.stages import registry as stages
from tests.support.stages import stage_named, write_spec

SECTIONS = [s.name for s in stages.sections()]


def test_every_stage_is_found_and_ordered_by_phase():
    names = [s.name for s in stages.all_stages()]
    for expected in ("base_eval", "teacher_data", "sft", "dpo", "grpo", "select", "final_eval", "quantize",
                     "forgetting", "contestants"):
        assert expected in names
    phases = [s.phase for s in stages.all_stages()]
    assert phases == sorted(phases)
    assert names.index("quantize") < names.index("forgetting") < names.index("contestants")  # today's order


def test_every_stage_is_one_file_holding_its_declaration_and_its_run():
    for stage in stages.all_stages():
        assert stage.module == f"harness.stages.{stage.name}", stage.name
        assert callable(stage.run) and stage.run.__module__ == stage.module, stage.name
        if stage.preflight is not None:
            assert stage.preflight.__module__ == stage.module, stage.name
    with pytest.raises(ValueError, match="without its run"):
        stages.register_stage("no_run", stages.Phase.PROBE)


def test_every_training_stage_names_its_trl_trainer_and_the_params_that_only_train():
    import trl

    from harness.spec import ExperimentSpec

    training = [s for s in stages.all_stages() if s.phase in (stages.Phase.TRAIN, stages.Phase.CONTINUE)]
    assert {s.name for s in training} >= {"sft", "dpo", "grpo"}
    for stage in training:
        assert stage.trainer and isinstance(getattr(trl, stage.trainer, None), type), stage.name
        # Its own section's params, or, for a stage that `train.method` chooses, the train: section's.
        own = f"{stage.section}." if stage.section else "train."
        assert own in stage.training_only, f"stage {stage.name} declares no training-only params of its section"
    for prefix in stages.training_only_prefixes():
        assert prefix.endswith(".") and prefix[:-1] in ExperimentSpec.model_fields, prefix
    # What analysis has always treated as training-only stays so: arm labels, and so reports, stay as they were
    # (a new stage adds its own prefixes, and no list here).
    assert set(stages.training_only_prefixes()) >= {"distill.", "dpo.", "grpo.", "lora.", "train."}


def test_every_section_stage_has_a_runnable_example():
    for stage in stages.sections():
        assert stage.example is not None, f"stage {stage.name} gives no example of its section"


@pytest.mark.parametrize("name", SECTIONS)
def test_section_round_trips_through_yaml_and_set(name, tmp_path):
    stage = stage_named(name)
    path = write_spec(tmp_path, {stage.section: stage.example})
    spec = load_spec(path)
    dumped = spec_dump(spec)[stage.section]
    again = load_spec(write_spec(tmp_path, {stage.section: json.loads(json.dumps(dumped))}, name="again"))
    assert spec_dump(again)[stage.section] == dumped
    # Every scalar field of the section can be set from the command line, and the value lands there.
    first = dumped[0] if stage.many else dumped
    for field, value in first.items():
        if isinstance(value, (bool, int, float, str)) and not isinstance(value, bool) and field != "name":
            key = f"{stage.section}.0.{field}" if stage.many else f"{stage.section}.{field}"
            overridden = load_spec(path, overrides={key: value})
            got = spec_dump(overridden)[stage.section]
            assert (got[0] if stage.many else got)[field] == value


@pytest.mark.parametrize("name", SECTIONS)
def test_unknown_field_in_a_section_names_file_line_and_field(name, tmp_path):
    stage = stage_named(name)
    example = json.loads(json.dumps(stage.example))
    (example[0] if stage.many else example)["no_such_field"] = 1
    path = write_spec(tmp_path, {stage.section: example})
    with pytest.raises(SpecError) as e:
        load_spec(path)
    field = f"{stage.section}.0.no_such_field" if stage.many else f"{stage.section}.no_such_field"
    assert f"field '{field}'" in str(e.value) and f"{path}:" in str(e.value)


def test_mined_dpo_pairs_without_a_dev_split_are_refused(tmp_path):
    path = write_spec(tmp_path, {"dpo": {"pairs": "mined"}, "data": {"builtin": "realestate", "dev_size": 0}})
    with pytest.raises(SpecError, match="dpo.pairs: mined needs data.dev_size") as e:
        load_spec(path)
    assert f"{path}:" in str(e.value) and "field 'dpo.pairs'" in str(e.value)


def test_a_contestant_name_given_twice_is_refused_at_the_second(tmp_path):
    endpoint = {"url": "http://127.0.0.1:9/v1", "model": "m"}
    path = write_spec(tmp_path, {"contestants": [{"name": "a", "endpoint": endpoint}, {"name": "a", "endpoint": endpoint}]})
    with pytest.raises(SpecError, match="field 'contestants.1.name': contestant name 'a' is given twice"):
        load_spec(path)


@pytest.mark.parametrize("name, clash", [("cost", "metrics block 'cost'"), ("base", "stage 'base_eval'"),
                                         ("tuned", "stage 'final_eval'"), ("training", "metrics block 'training'")])
def test_a_contestant_named_like_an_arm_or_block_is_refused_naming_both(name, clash, tmp_path):
    path = write_spec(tmp_path, {"contestants": [{"name": name, "endpoint": {"url": "http://127.0.0.1:9/v1",
                                                                              "model": "m"}}]})
    with pytest.raises(SpecError) as e:
        load_spec(path)
    message = str(e.value)
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if f"name: {name}" in text)
    assert f"{path}:{line}: field 'contestants.0.name'" in message and f"arm '{name}'" in message and clash in message


def test_two_stages_writing_one_arm_are_refused_naming_both(tmp_path):
    path = write_spec(tmp_path, {"dpo": {"max_steps": 1}, "grpo": {"max_steps": 1}})
    with pytest.raises(SpecError, match="arm 'sft' is written by both stage 'dpo' and stage 'grpo'"):
        load_spec(path)


def test_unknown_training_method_lists_the_registered_ones(tmp_path):
    path = write_spec(tmp_path, {"train": {"method": "rlhf", "max_steps": 1}})
    registered = ", ".join(stages.train_methods())
    with pytest.raises(SpecError, match=f"train.method 'rlhf' is not a training method \\(registered: {registered}\\)"):
        load_spec(path)


def test_pipeline_follows_the_spec_and_names_the_final_arm(tmp_path):
    def names(extra: dict) -> list[str]:
        return [s.name for s, _ in stages.pipeline(load_spec(write_spec(tmp_path, extra)))]

    assert names({}) == ["base_eval", "sft", "select", "final_eval"]
    assert names({"eval": {"compare_base": False, "limit": 3}}) == ["sft", "select", "final_eval"]
    assert names({"dpo": {}, "quantize": {}}) == ["base_eval", "sft", "dpo", "select", "final_eval", "quantize"]
    spec = load_spec(write_spec(tmp_path, {"grpo": {}}))
    assert stages.final_arm(spec) == "grpo" and stages.stage_pairs(spec) == [("grpo", "sft")]
    assert stages.final_arm(load_spec(write_spec(tmp_path, {}))) == "tuned"


def test_forgetting_base_key_tells_bases_loaded_differently_apart():
    from harness.results import forgetting_base_key

    default = forgetting_base_key({"base": "m", "dtype": "auto", "load_in_4bit": False}, ["arc"], 8)
    # Unchanged for the default load, so base evaluations cached by existing studies still match.
    import hashlib
    assert default == hashlib.sha256(json.dumps(["m", ["arc"], 8]).encode()).hexdigest()[:16]
    nf4 = forgetting_base_key({"base": "m", "dtype": "auto", "load_in_4bit": True}, ["arc"], 8)
    bf16 = forgetting_base_key({"base": "m", "dtype": "bfloat16", "load_in_4bit": False}, ["arc"], 8)
    assert len({default, nf4, bf16}) == 3
