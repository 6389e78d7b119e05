"""The stage registry's contract, checked over every registered stage: its section round-trips through YAML
and `--set`, bad input names the file, line and field, and it runs in a trial's pipeline (with a backend
that records what it is asked to train) writing the arms and blocks it declares."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from harness.errors import SpecError
from harness.spec import load_spec, spec_dump, stages

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = [s.name for s in stages.sections()]


def _write_spec(tmp_path: Path, extra: dict, name: str = "contract") -> Path:
    raw = {"description": "stage contract", "model": {"base": "random:tiny"},
           "data": {"builtin": "realestate", "train_limit": 8, "dev_size": 4},
           "train": {"max_steps": 1, "batch_size": 2, "logging_steps": 1},
           "eval": {"limit": 3, "max_new_tokens": 4, "batch_size": 3}, **extra}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _stage(name: str) -> stages.Stage:
    return next(s for s in stages.all_stages() if s.name == name)


def test_every_stage_is_found_and_ordered_by_phase():
    names = [s.name for s in stages.all_stages()]
    for expected in ("base_eval", "teacher_data", "sft", "dpo", "grpo", "select", "final_eval", "quantize",
                     "forgetting", "contestants"):
        assert expected in names
    phases = [s.phase for s in stages.all_stages()]
    assert phases == sorted(phases)
    assert names.index("quantize") < names.index("forgetting") < names.index("contestants")  # today's order


def test_every_declared_stage_has_its_runner_in_the_file_of_the_same_name():
    from harness.stages import all_runners, runner_for

    declared = stages.all_stages()
    assert set(all_runners()) == {s.name for s in declared}
    for stage in declared:
        runner = runner_for(stage)
        assert stage.module.rsplit(".", 1)[-1] == runner.run.__module__.rsplit(".", 1)[-1], stage.name


def test_every_section_stage_has_a_runnable_example():
    for stage in stages.sections():
        assert stage.example is not None, f"stage {stage.name} gives no example of its section"


@pytest.mark.parametrize("name", SECTIONS)
def test_section_round_trips_through_yaml_and_set(name, tmp_path):
    stage = _stage(name)
    path = _write_spec(tmp_path, {stage.section: stage.example})
    spec = load_spec(path)
    dumped = spec_dump(spec)[stage.section]
    again = load_spec(_write_spec(tmp_path, {stage.section: json.loads(json.dumps(dumped))}, name="again"))
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
    stage = _stage(name)
    example = json.loads(json.dumps(stage.example))
    (example[0] if stage.many else example)["no_such_field"] = 1
    path = _write_spec(tmp_path, {stage.section: example})
    with pytest.raises(SpecError) as e:
        load_spec(path)
    field = f"{stage.section}.0.no_such_field" if stage.many else f"{stage.section}.no_such_field"
    assert f"field '{field}'" in str(e.value) and f"{path}:" in str(e.value)


def test_mined_dpo_pairs_without_a_dev_split_are_refused(tmp_path):
    path = _write_spec(tmp_path, {"dpo": {"pairs": "mined"}, "data": {"builtin": "realestate", "dev_size": 0}})
    with pytest.raises(SpecError, match="dpo.pairs: mined needs data.dev_size") as e:
        load_spec(path)
    assert f"{path}:" in str(e.value) and "field 'dpo.pairs'" in str(e.value)


def test_a_contestant_name_given_twice_is_refused_at_the_second(tmp_path):
    endpoint = {"url": "http://127.0.0.1:9/v1", "model": "m"}
    path = _write_spec(tmp_path, {"contestants": [{"name": "a", "endpoint": endpoint}, {"name": "a", "endpoint": endpoint}]})
    with pytest.raises(SpecError, match="field 'contestants.1.name': contestant name 'a' is given twice"):
        load_spec(path)


@pytest.mark.parametrize("name, clash", [("cost", "metrics block 'cost'"), ("base", "stage 'base_eval'"),
                                         ("tuned", "stage 'final_eval'"), ("training", "metrics block 'training'")])
def test_a_contestant_named_like_an_arm_or_block_is_refused_naming_both(name, clash, tmp_path):
    path = _write_spec(tmp_path, {"contestants": [{"name": name, "endpoint": {"url": "http://127.0.0.1:9/v1",
                                                                              "model": "m"}}]})
    with pytest.raises(SpecError) as e:
        load_spec(path)
    message = str(e.value)
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if f"name: {name}" in text)
    assert f"{path}:{line}: field 'contestants.0.name'" in message and f"arm '{name}'" in message and clash in message


def test_two_stages_writing_one_arm_are_refused_naming_both(tmp_path):
    path = _write_spec(tmp_path, {"dpo": {"max_steps": 1}, "grpo": {"max_steps": 1}})
    with pytest.raises(SpecError, match="arm 'sft' is written by both stage 'dpo' and stage 'grpo'"):
        load_spec(path)


def test_unknown_training_method_lists_the_registered_ones(tmp_path):
    path = _write_spec(tmp_path, {"train": {"method": "kd", "max_steps": 1}})
    with pytest.raises(SpecError, match="train.method 'kd' is not a training method \\(registered: sft\\)"):
        load_spec(path)


def test_pipeline_follows_the_spec_and_names_the_final_arm(tmp_path):
    def names(extra: dict) -> list[str]:
        return [s.name for s, _ in stages.pipeline(load_spec(_write_spec(tmp_path, extra)))]

    assert names({}) == ["base_eval", "sft", "select", "final_eval"]
    assert names({"eval": {"compare_base": False, "limit": 3}}) == ["sft", "select", "final_eval"]
    assert names({"dpo": {}, "quantize": {}}) == ["base_eval", "sft", "dpo", "select", "final_eval", "quantize"]
    spec = load_spec(_write_spec(tmp_path, {"grpo": {}}))
    assert stages.final_arm(spec) == "grpo" and stages.stage_pairs(spec) == [("grpo", "sft")]
    assert stages.final_arm(load_spec(_write_spec(tmp_path, {}))) == "tuned"


def test_forgetting_base_key_tells_bases_loaded_differently_apart():
    from harness.results import forgetting_base_key

    default = forgetting_base_key({"base": "m", "dtype": "auto", "load_in_4bit": False}, ["arc"], 8)
    # Unchanged for the default load, so base evaluations cached by existing studies still match.
    import hashlib
    assert default == hashlib.sha256(json.dumps(["m", ["arc"], 8]).encode()).hexdigest()[:16]
    nf4 = forgetting_base_key({"base": "m", "dtype": "auto", "load_in_4bit": True}, ["arc"], 8)
    bf16 = forgetting_base_key({"base": "m", "dtype": "bfloat16", "load_in_4bit": False}, ["arc"], 8)
    assert len({default, nf4, bf16}) == 3


# ---- every stage in a real pipeline, training recorded instead of run -----------------------------------


class RecordingBackend:
    """The HF backend with training replaced by a record of what was asked: which TRL trainer, on what data."""

    def __new__(cls):
        from harness.backends import HFBackend, TrainOutcome

        class Recording(HFBackend):
            def __init__(self) -> None:
                super().__init__(liger=False)
                self.calls: list[str] = []

            def add_adapter(self, model, lora):
                self.calls.append("add_adapter")
                return super().add_adapter(model, lora)

            def remove_adapter(self, model):
                self.calls.append("remove_adapter")
                return super().remove_adapter(model)

            def fit(self, trainer, model, tokenizer, dataset, optim, out_dir, **kw):
                self.calls.append(f"fit:{trainer}:{len(dataset)}")
                return TrainOutcome(steps=1, tokens_trained=10, runtime_s=0.01, final_loss=1.0,
                                    log=[{"step": 1, "loss": 1.0}], trainable_params=1, settings={"trainer": trainer})

        return Recording()


def _contract_extra(stage: stages.Stage, llama_url: str | None) -> dict:
    example = json.loads(json.dumps(stage.example)) if stage.example is not None else None
    if stage.section == "distill":
        example["teacher"]["url"] = llama_url
    if stage.section == "contestants":
        example[0]["endpoint"].update(url=llama_url, max_tokens=4)
    if stage.section == "judge":
        example["endpoint"].update(url=llama_url, model="judge", max_tokens=6)
    return {stage.section: example} if stage.section else {}


@pytest.mark.slow
@pytest.mark.parametrize("name", [s.name for s in stages.all_stages()])
def test_stage_runs_in_the_pipeline_and_writes_what_it_declares(name, tmp_path, harness_home, request):
    from conftest import SHARED, require
    from harness.trial.runner import Worker, run_trial
    from harness.results import read_json
    from harness.spec.stages import planned_arms

    stage = _stage(name)
    url = None
    if stage.section in ("distill", "contestants", "judge"):  # a real OpenAI-compatible server on loopback
        url = request.getfixturevalue("llama").url
    if stage.section == "forgetting":
        require((SHARED / "data" / "benchmarks" / "arc-easy" / "test.jsonl").exists(),
                "../shared/data/benchmarks (real ARC-Easy items for the local lm-eval task)")
    if stage.method is not None and stage.method != "sft":
        pytest.skip(f"{name} replaces SFT; covered by its own experiment")
    spec = load_spec(_write_spec(tmp_path, {**_contract_extra(stage, url), "tracking": {"wandb": "offline"}}))
    assert stage in [s for s, _ in stages.pipeline(spec)]
    worker = Worker()
    backend = RecordingBackend()
    worker._backends["auto"] = backend
    run_trial(spec, tmp_path / "study", 0, {}, worker)

    trial = tmp_path / "study" / "trial-0000"
    manifest, metrics = read_json(trial / "manifest.json"), read_json(trial / "metrics.json")
    planned = planned_arms(spec)
    assert manifest["arms"] == {arm: role for arm, (_, role) in planned.items()
                                if (trial / "eval" / f"{arm}.jsonl").exists()}
    for arm, (owner, _) in planned.items():
        if owner == name and arm != "nf4":  # NF4 is recorded as not run without CUDA
            assert (trial / "eval" / f"{arm}.jsonl").exists(), f"stage {name} declared arm {arm} but did not write it"
            assert metrics[arm]["n"] == 3, f"arm {arm} has no held-out aggregates in metrics.json"
    for block in stage.blocks:
        assert block in metrics
    trainers = [c.split(":")[1] for c in backend.calls if c.startswith("fit:")]
    assert trainers[0] == "SFTTrainer" and backend.calls[-1] == "remove_adapter"
    if stage.produces and stage.after:  # a continuing stage trains after SFT and its arm is the final one
        assert len(trainers) == 2 and trainers[1] == f"{name.upper()}Trainer"
        assert manifest["final_arm"] == name and manifest["stage_pairs"] == [[name, stage.after]]
        assert {"n", "field_accuracy"} <= set(metrics[name])  # the arm's aggregates, not the training summary
        assert metrics["training"][name]["steps"] == 1
        assert (trial / "eval" / f"{stage.after}.jsonl").exists() and (trial / "adapter-sft").exists()
        from harness.tracking import read_offline_run

        run = next((tmp_path / "study" / "wandb").glob("offline-run-*"))
        deadline = time.monotonic() + 30  # wandb-core may still be flushing the offline log
        while not any(f"eval/{name}" in row for row in read_offline_run(run)["history"]):
            assert time.monotonic() < deadline, "the offline run never got its final records"
            time.sleep(1)
        keys = {k for row in read_offline_run(run)["history"] for k in row}
        assert {f"{name}/field_accuracy", f"training/{name}/steps"} <= keys, "the final arm is logged, and apart from it the training"
