"""The quickstart's smoke run (the shared one of tests/test_experiments.py) read closely: records, manifest,
W&B read-back, resuming, publishing."""

from __future__ import annotations

import time

import pytest

from harness.results import read_json, read_jsonl
from harness.tracking import read_offline_run
from tests.support.cli_runner import harness


@pytest.fixture(scope="module")
def smoke_run(smoke_runs):
    run = smoke_runs("quickstart")
    assert run.run.returncode == 0, run.run.stderr[-3000:]
    return run.study, run.run


def test_trial_writes_every_record(smoke_run):
    study_dir, proc = smoke_run
    trial = study_dir / "trial-0000"
    for name in ("manifest.json", "metrics.json", "result.json", "train_log.jsonl", "eval/base.jsonl",
                 "eval/tuned.jsonl", "adapter/adapter_model.safetensors"):
        assert (trial / name).exists(), name
    assert not list(study_dir.rglob("*.tmp")), "no temporary files left behind"
    result = read_json(trial / "result.json")
    assert result["status"] == "complete"
    assert "frozen held-out split" in proc.stderr and "tuned" in proc.stderr


def test_per_item_rows_are_scored_and_timed(smoke_run):
    study_dir, _ = smoke_run
    for arm in ("base", "tuned"):
        rows = read_jsonl(study_dir / "trial-0000" / "eval" / f"{arm}.jsonl")
        assert len(rows) == 8  # eval.limit of the smoke preset
        assert len({r["item_id"] for r in rows}) == 8
        for r in rows:
            assert {"json_valid", "exact_match", "field_accuracy"} <= set(r["scores"])
            assert r["latency_s"] > 0 and r["output_tokens"] >= 1 and r["reference"].startswith("{")
    metrics = read_json(study_dir / "trial-0000" / "metrics.json")
    assert metrics["tuned"]["n"] == 8 and metrics["cost"]["tokens_trained"] > 0
    assert metrics["cost"]["train_steps"] == 4


def test_manifest_records_what_ran(smoke_run):
    study_dir, _ = smoke_run
    manifest = read_json(study_dir / "trial-0000" / "manifest.json")
    assert manifest["model"]["name"] == "random:tiny" and manifest["backend"] == "hf-peft-trl"
    assert len(manifest["split_hash"]) == 64
    assert manifest["data"]["heldout_items"] == 100 and manifest["data"]["train_items"] == 16
    assert {"torch", "transformers", "trl", "peft"} <= set(manifest["packages"])
    assert manifest["hardware"]["cpu_count"] >= 1 and manifest["seed"] == 0
    assert manifest["spec"]["lora"]["r"] == 16


def test_wandb_offline_run_reads_back_logged_values(smoke_run):
    study_dir, _ = smoke_run
    # The trial's run (the report logs a run of its own, with no trial number).
    runs = [run for run in sorted((study_dir / "wandb").glob("offline-run-*"))
            if read_offline_run(run)["config"].get("trial") is not None]
    assert len(runs) == 1
    # wandb-core may still be flushing the offline log just after the run's process exits
    deadline = time.monotonic() + 30
    logged = read_offline_run(runs[0])
    while not any("eval/tuned" in row for row in logged["history"]):
        assert time.monotonic() < deadline, "the offline run never got its final records"
        time.sleep(1)
        logged = read_offline_run(runs[0])
    assert logged["config"]["lora"]["r"] == 16 and logged["config"]["trial"] == 0
    losses = [row["train/loss"] for row in logged["history"] if "train/loss" in row]
    recorded = [row["loss"] for row in read_jsonl(study_dir / "trial-0000" / "train_log.jsonl")]
    assert losses == pytest.approx(recorded) and len(losses) == 4
    metrics = read_json(study_dir / "trial-0000" / "metrics.json")
    tuned = [row for row in logged["history"] if "tuned/field_accuracy" in row]
    assert tuned and tuned[0]["tuned/field_accuracy"] == pytest.approx(metrics["tuned"]["field_accuracy"])
    tables = [row["eval/tuned"] for row in logged["history"] if "eval/tuned" in row]
    assert tables and tables[0]["_type"] == "table-file" and tables[0]["nrows"] == 8, "the per-item table is logged"
    assert (runs[0] / "files" / tables[0]["path"]).exists()


def test_rerun_resumes_without_retraining(smoke_run, smoke_runs):
    study_dir, _ = smoke_run
    before = (study_dir / "trial-0000" / "result.json").stat().st_mtime_ns
    proc = smoke_runs("quickstart").harness("run")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (study_dir / "trial-0000" / "result.json").stat().st_mtime_ns == before
    assert not (study_dir / "trial-0001").exists()


def test_publish_writes_a_hub_folder_with_an_honest_card(smoke_run, harness_home, tmp_path):
    import yaml

    study_dir, _ = smoke_run
    out = tmp_path / "publish"
    proc = harness("publish", str(study_dir / "trial-0000"), "--out", str(out), "--repo-id", "me/model",
                   env={"HARNESS_HOME": str(harness_home), "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "not uploaded" in proc.stderr
    assert (out / "adapter_model.safetensors").exists() and (out / "harness-manifest.json").exists()
    card = (out / "README.md").read_text()
    header = yaml.safe_load(card.split("---")[1])
    assert header["library_name"] == "peft" and header["base_model"] == "random:tiny"
    assert "95% CI" in card and "Known failure modes" in card and "Ames" in card
    assert "Quantization delta" in card and "Forgetting check" in card
