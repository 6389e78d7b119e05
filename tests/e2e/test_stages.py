"""The stage registry's contract, checked over every registered stage: its section round-trips through YAML
and `--set`, bad input names the file, line and field, and it runs in a trial's pipeline (with a backend
that records what it is asked to train) writing the arms and blocks it declares.

The runs of it that take more than a few seconds; the rest is tests/unit/test_stages.py."""

from __future__ import annotations

import json
import time

import pytest

from harness.spec import load_spec
from harness.stages import registry as stages
from tests.support.stages import stage_named, write_spec


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


@pytest.mark.parametrize("name", [s.name for s in stages.all_stages()])
def test_stage_runs_in_the_pipeline_and_writes_what_it_declares(name, tmp_path, harness_home, request):
    from harness.results import read_json
    from harness.stages.registry import planned_arms
    from harness.trial.runner import Worker, run_trial
    from tests.support.ci import SHARED, require

    stage = stage_named(name)
    url = None
    if stage.section in ("distill", "contestants", "judge"):  # a real OpenAI-compatible server on loopback
        url = request.getfixturevalue("llama").url
    if stage.section == "forgetting":
        require((SHARED / "data" / "benchmarks" / "arc-easy" / "test.jsonl").exists(),
                "../shared/data/benchmarks (real ARC-Easy items for the local lm-eval task)")
    if stage.method is not None and stage.method != "sft":
        pytest.skip(f"{name} replaces SFT; covered by its own experiment")
    spec = load_spec(write_spec(tmp_path, {**_contract_extra(stage, url), "tracking": {"wandb": "offline"}}))
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
    # every stage's own peak, and each arm's own model in memory (the quantised ones: their files, smaller)
    assert set(metrics["cost"]["stage_peak_mem_gb"]) == {s.name for s, _ in stages.pipeline(spec)}
    assert all(0 < gb <= metrics["cost"]["peak_mem_gb"] for gb in metrics["cost"]["stage_peak_mem_gb"].values())
    sizes = manifest["arm_model_bytes"]
    assert {"base", manifest["final_arm"]} <= set(sizes) and sizes[manifest["final_arm"]] > sizes["base"] > 0
    if name == "quantize":
        assert sizes["q8_0"] < sizes["merged"]
    trainers = [c.split(":")[1] for c in backend.calls if c.startswith("fit:")]
    assert trainers[0] == stage_named("sft").trainer and backend.calls[-1] == "remove_adapter"
    assert manifest["training_only_prefixes"] == list(stages.training_only_prefixes())
    if stage.produces and stage.after:  # a continuing stage trains after SFT and its arm is the final one
        assert len(trainers) == 2 and trainers[1] == stage.trainer
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
