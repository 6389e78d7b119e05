"""The kd stage's bad input, refused naming the field before any training: a teacher that does not resolve,
one with another vocabulary, one too large for the device, lmbda outside [0, 1] or other than the stable
trainer's 1, a temperature <= 0; and the memory `harness plan` counts for the teacher."""

from __future__ import annotations

import json

import pytest

from harness.errors import SpecError
from harness.spec import load_spec
from harness.stages.kd import check_same_vocabulary, check_teacher_memory, preflight, teacher_weight_bytes
from tests.support.stages import write_spec


def kd_spec(tmp_path, **kd):
    return load_spec(write_spec(tmp_path, {"train": {"method": "kd"}, "kd": {"teacher": "random:tiny", **kd}}))


@pytest.mark.parametrize("field, value, message", [
    ("lmbda", 1.5, "kd.lmbda"), ("lmbda", -0.1, "kd.lmbda"), ("temperature", 0, "kd.temperature"),
    ("temperature", -1.0, "kd.temperature"), ("beta", 2.0, "kd.beta")])
def test_out_of_range_settings_name_the_field(tmp_path, field, value, message):
    with pytest.raises(SpecError, match=message):
        kd_spec(tmp_path, **{field: value})


def test_an_off_policy_share_is_refused_naming_the_trainer(tmp_path):
    with pytest.raises(SpecError, match=r"(?s)kd.lmbda.*DistillationTrainer trains on the student's own "
                                        r"completions only \(lmbda = 1\)"):
        kd_spec(tmp_path, lmbda=0.5)


def test_a_teacher_that_does_not_resolve_is_refused_naming_the_field(tmp_path):
    spec = kd_spec(tmp_path, teacher="random:no-such-arch")
    with pytest.raises(SpecError, match="kd.teacher.*unknown architecture 'no-such-arch'"):
        preflight(spec, spec.kd)
    (tmp_path / "empty").mkdir()
    spec = kd_spec(tmp_path, teacher=str(tmp_path / "empty"))
    with pytest.raises(SpecError, match="kd.teacher.*neither a model directory"):
        preflight(spec, spec.kd)


def test_a_teacher_with_another_vocabulary_is_refused_naming_both(tmp_path):
    from transformers import LlamaConfig

    from harness.models import ARCHITECTURES, load_tokenizer, resolve_model

    tok = load_tokenizer(resolve_model("random:tiny"))
    teacher = tmp_path / "teacher"
    tok.add_tokens(["<extra_token_a>", "<extra_token_b>"])  # a vocabulary one token apart is still another one
    tok.save_pretrained(teacher)
    LlamaConfig(**{**ARCHITECTURES["tiny"], "vocab_size": len(tok)}).save_pretrained(teacher)
    spec = kd_spec(tmp_path, teacher=str(teacher))
    with pytest.raises(SpecError, match=f"kd.teacher.*teacher '{teacher}'.*{len(tok)} tokens.*student 'random:tiny'"):
        check_same_vocabulary(spec, spec.kd)


def test_a_teacher_too_large_for_the_device_is_refused_and_plan_counts_it(tmp_path):
    spec = kd_spec(tmp_path, teacher="random:llama-3.1-8b")
    teacher_gib = teacher_weight_bytes(spec, spec.kd) / 2**30
    assert 14 < teacher_gib < 16  # 8B parameters at 2 bytes
    with pytest.raises(SpecError, match=r"kd.teacher.*random:llama-3.1-8b.*GiB of weights.*of the device's 8.0 GiB"):
        check_teacher_memory(spec, spec.kd, device_bytes=8 * 2**30)
    check_teacher_memory(spec, spec.kd, device_bytes=80 * 2**30)  # fits an H100
    check_teacher_memory(spec, spec.kd, device_bytes=None)  # a CPU: host memory is not modelled


def test_plan_adds_the_teacher_to_the_memory_estimate(tmp_path):
    from harness.grid.plan import _config, _memory
    from harness.backends.memory_plan import ModelShape

    small, large = kd_spec(tmp_path, teacher="random:tiny"), kd_spec(tmp_path, teacher="random:llama-3.1-8b")
    config = _config(small)
    peaks = [_memory(s, ModelShape.of(config), config, 80)[0] for s in (small, large)]
    assert peaks[1] - peaks[0] == pytest.approx(teacher_weight_bytes(large, large.kd) / 2**30, abs=0.2)
    assert "does not fit" in _memory(large, ModelShape.of(config), config, 8)[1]


def test_distill_vs_data_logits_arm_trains_with_kd_and_needs_a_kd_section(tmp_path):
    from harness.stages.registry import pipeline, planned_arms

    distill = {"teacher": {"url": "http://127.0.0.1:1/v1", "model": "t"}, "n": 2, "k": 2, "arm": "logits"}
    spec = load_spec(write_spec(tmp_path, {"distill": distill, "kd": {"teacher": "random:tiny"}}))
    assert [s.name for s, _ in pipeline(spec) if s.phase == 30] == ["kd"]
    assert planned_arms(spec)["teacher_model"] == ("kd", "untuned")
    with pytest.raises(SpecError, match="distill.arm.*add a kd: section"):
        load_spec(write_spec(tmp_path, {"distill": distill}, name="nokd"))
    other = load_spec(write_spec(tmp_path, {"distill": {**distill, "arm": "original_n"}, "kd": {"teacher": "x"}},
                                 name="sft"))
    assert [s.name for s, _ in pipeline(other) if s.phase == 30] == ["sft"]


def _teacher_trial(tmp_path, source: str, split_hash: str):
    trial = tmp_path / "teacher-study" / "trial-0000"
    (trial / "adapter").mkdir(parents=True)
    (trial / "manifest.json").write_text(json.dumps({"model": {"name": "random:tiny"}, "split_hash": split_hash,
                                                     "data": {"source": source}}))
    return trial


def test_a_teacher_trial_that_held_out_another_split_of_the_same_data_is_refused(tmp_path):
    from harness.stages.kd import check_teacher_split

    spec = kd_spec(tmp_path, teacher=str(_teacher_trial(tmp_path, "builtin:realestate", "ab" * 32)))
    with pytest.raises(SpecError, match=r"kd.teacher.*trained on builtin:realestate with held-out split abab.*"
                                        r"may be this study's held-out items"):
        check_teacher_split(spec.kd, "builtin:realestate", "cd" * 32)
    assert check_teacher_split(spec.kd, "builtin:realestate", "ab" * 32) == "same frozen held-out split"
    assert "other data" in check_teacher_split(spec.kd, "files:other.jsonl", "cd" * 32)
    assert "not a trial" in check_teacher_split(kd_spec(tmp_path).kd, "builtin:realestate", "cd" * 32)


def test_preflight_checks_a_teacher_trial_against_this_study_s_frozen_split(tmp_path, harness_home):
    from harness.data.prepare import prepare_data
    from harness.models import harness_home as home

    spec = kd_spec(tmp_path)
    data = prepare_data(spec.data, home() / "data", freeze=False)
    spec = kd_spec(tmp_path, teacher=str(_teacher_trial(tmp_path, data.source, "ab" * 32)))
    with pytest.raises(SpecError, match="may be this study's held-out items"):
        preflight(spec, spec.kd)
    (tmp_path / "teacher-study" / "trial-0000" / "manifest.json").write_text(json.dumps(
        {"model": {"name": "random:tiny"}, "split_hash": data.split.split_hash, "data": {"source": data.source}}))
    preflight(spec, spec.kd)  # the same split: accepted


def test_the_worker_keeps_a_second_model_across_trials_of_its_stage_and_releases_it_for_others():
    from harness.trial.runner import Worker

    worker, loaded = Worker(), []
    load = lambda: loaded.append(1) or object()  # noqa: E731
    first = worker.keep("kd", "teacher-a", load)
    assert worker.keep("kd", "teacher-a", load) is first and worker.loads == {"kd": 1}
    worker.keep("kd", "teacher-b", load)  # another teacher replaces it: one at a time
    assert worker.loads == {"kd": 2} and list(worker._kept) == [("kd", "teacher-b")]
    worker.release(lambda stage, key: stage != "kd")
    assert list(worker._kept) == [("kd", "teacher-b")]
    worker.release(lambda stage, key: stage == "kd")
    assert not worker._kept
