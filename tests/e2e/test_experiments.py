"""Every registered experiment runs end to end on CPU with its smoke preset, as a user runs it (from a folder
of its own, default results/, endpoints on a real llama.cpp server), and its report renders.

One parametrised test covers every experiments/*.yaml; the checks below it read the same runs and assert
only what one experiment is there to show."""

from __future__ import annotations

import json

import pytest

from harness.results import read_json, read_jsonl
from tests.support import layout
from tests.support.figure_layout import assert_layout_ok
from tests.support.smoke import experiments


def _results(study_dir):
    return [read_json(p) for p in sorted(study_dir.glob("trial-*/result.json"))]


def _figures_have_data(study_dir, expect: set[str] = frozenset()) -> None:
    """A report from a real study: every table is written and every figure shows data, not blank axes."""
    import matplotlib.image
    import numpy as np

    data = read_json(study_dir / "report.json")
    assert expect <= set(data["figures"]), data.get("skipped_figures")
    for name, paths in data["figures"].items():
        png = next(study_dir / p for p in paths if p.endswith(".png"))
        pixels = matplotlib.image.imread(png)[..., :3]
        assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20, f"{name} looks blank"
    for table in data["tables"].values():
        for kind in ("csv", "markdown", "latex"):
            assert (study_dir / table[kind]).stat().st_size > 0


@pytest.mark.parametrize("name", experiments())
def test_smoke_run_completes_reports_and_keeps_its_layout(name, smoke_runs):
    run = smoke_runs(name)
    assert run.run.returncode == 0, run.run.stdout[-2000:] + run.run.stderr[-3000:]
    results = _results(run.study)
    assert results and any(r["status"] == "complete" for r in results)
    for r in results:  # a trial this machine cannot run says why; none fails
        assert r["status"] == "complete" or (r["status"] == "not_run" and r["reason"]), r
    assert not list(run.study.rglob("*.tmp")), "no temporary files left behind"
    assert run.report.returncode == 0, run.report.stderr[-3000:]
    assert (run.study / "report.md").read_text().strip()
    _figures_have_data(run.study)
    # Every figure passes a look: no text overlaps or leaves the canvas, no legend covers data, no panel repeats.
    assert_layout_ok(run.report_figures().items())
    layout.check(run.study, name)


def test_rank_ablation_reports_qlora_as_not_run(smoke_runs):
    run = smoke_runs("rank_ablation")
    results = _results(run.study)
    assert len(results) == 8
    not_run = [r for r in results if r["params"]["model.load_in_4bit"]]
    assert {r["status"] for r in not_run} == {"not_run"}
    assert all("CUDA" in r["reason"] for r in not_run)
    done = [r for r in results if not r["params"]["model.load_in_4bit"]]
    assert {r["status"] for r in done} == {"complete"}
    params = {r["params"]["lora.r"]: r["metrics"]["cost"]["trainable_params"] for r in done}
    assert params[8] == 4 * params[2]
    assert all(r["metrics"]["cost"]["adapter_bytes"] > 0 for r in done)
    text = (run.study / "report.md").read_text()
    assert "not run" in text.lower() and "CUDA" in text
    # The rank contrast is answered with LoRA; QLoRA vs LoRA at each rank says why it is not.
    assert "#### lora.r: each level vs lora.r=2" in text and "| tuned | 8 | 2 | 1/2 |" in text
    assert "not compared, tuned[model.load_in_4bit=True,lora.r=8] vs tuned[model.load_in_4bit=False,lora.r=8]: " \
           "no complete trial of 'tuned' at lora.r=8, model.load_in_4bit=True (2 trials not run: 4-bit QLoRA" in text
    _figures_have_data(run.study, expect={"loss_curves", "quality_vs_rank", "levels_lora_r"})


def test_distill_vs_data_calls_a_real_teacher_once_per_item(smoke_runs):
    run = smoke_runs("distill_vs_data")
    results = _results(run.study)
    assert len(results) == 8 and {r["status"] for r in results} == {"complete"}
    distilled = [r for r in results if r["params"]["distill.arm"] == "distilled"]
    original = [r for r in results if r["params"]["distill.arm"] != "distilled"]
    for r in distilled:
        teacher = r["metrics"]["teacher"]
        assert teacher["n"] == 4 and teacher["output_tokens"] > 0 and teacher["cost_usd"] > 0
    assert distilled[1]["metrics"]["teacher"]["paid_usd"] == 0, "the second seed reuses the cached teacher calls"
    assert all("teacher" not in r["metrics"] for r in original)
    # The logits arm trained with TRL's DistillationTrainer for its 2 steps, logged its KD loss, named its
    # teacher with a hash, and scored the teacher itself on the same held-out items.
    for r in (r for r in results if r["params"]["distill.arm"] == "logits"):
        trial = run.study / f"trial-{r['number']:04d}"
        log = read_jsonl(trial / "train_log.jsonl")
        assert [row["step"] for row in log] == [1, 2] and all("loss" in row and "entropy" in row for row in log)
        kd = read_json(trial / "manifest.json")["trainings"]["kd"]
        assert kd["trainer"] == "DistillationTrainer" and kd["teacher"]["name"] == "random:tiny"
        assert kd["teacher"]["sha256"] and r["metrics"]["teacher_model"]["n"] == r["metrics"]["tuned"]["n"]
    text = (run.study / "report.md").read_text()
    assert "distill.arm: each level vs distill.arm=original_n" in text


def test_sft_vs_dpo_mines_dev_failures_and_compares_three_arms(smoke_runs):
    run = smoke_runs("sft_vs_dpo")
    results = _results(run.study)
    assert len(results) == 2 and {r["status"] for r in results} == {"complete"}
    for r in results:
        # The final arm's held-out aggregates and, apart from them, DPO's training summary.
        assert {"base", "sft", "dpo"} <= set(r["metrics"]) and r["metrics"]["training"]["dpo"]["pairs"] > 0
        assert r["metrics"]["dpo"]["n"] == 6 and "field_accuracy" in r["metrics"]["dpo"]
        trial = run.study / f"trial-{r['number']:04d}"
        pairs = read_jsonl(trial / "dpo_pairs.jsonl")
        heldout_ids = {row["item_id"] for row in read_jsonl(trial / "eval" / "dpo.jsonl")}
        assert pairs and not {p["id"] for p in pairs} & heldout_ids, "pairs are mined on the dev split only"
        assert all(p["rejected"] != p["reference"] for p in pairs)
        assert (trial / "adapter-sft").exists() and (trial / "adapter").exists()
        # The dev learning curve: every step of SFT's, then of DPO's, counted on; the objective is its last point.
        curve = read_jsonl(trial / "dev_curve.jsonl")
        assert [(p["stage"], p["step"]) for p in curve] == [("sft", 1), ("sft", 2), ("dpo", 3), ("dpo", 4)], curve
        assert r["objective"] == curve[-1]["value"]
    assert "dev_curve" in read_json(run.study / "report.json")["figures"]
    status = run.harness("status")
    assert status.returncode == 0, status.stderr[-2000:]
    out = status.stdout + status.stderr
    rows = [line.split() for line in out.splitlines() if " complete " in line]
    assert len(rows) == 2 and all(row[-2] == "dpo" and row[-3] != "–" for row in rows), out  # the final arm's score
    assert "dpo_vs_sft" in json.dumps(read_json(run.study / "report.json"))


def test_sft_vs_grpo_rewards_with_the_task_scorer_and_compares_three_arms(smoke_runs):
    run = smoke_runs("sft_vs_grpo")
    results = _results(run.study)
    assert len(results) == 2 and {r["status"] for r in results} == {"complete"}
    for r in results:
        m = r["metrics"]
        assert {"base", "sft", "grpo"} <= set(m) and m["grpo"]["n"] == 6 and m["training"]["grpo"]["steps"] == 2
        trial = run.study / f"trial-{r['number']:04d}"
        log = read_jsonl(trial / "grpo_log.jsonl")
        assert log and all("rewards/field_accuracy/mean" in row and "rewards/json_valid/mean" in row for row in log)
        manifest = read_json(trial / "manifest.json")
        assert manifest["final_arm"] == "grpo" and manifest["stage_pairs"] == [["grpo", "sft"]]
        assert manifest["trainings"]["grpo"]["trainer"] == "GRPOTrainer"
    groups = json.dumps(read_json(run.study / "report.json"))
    assert "grpo_vs_sft" in groups and "sft" in (run.study / "report.md").read_text()


def test_three_way_measures_a_real_endpoint_and_the_tuned_model_on_cost_and_latency(smoke_runs):
    run = smoke_runs("three_way")
    results = _results(run.study)
    assert len(results) == 2 and {r["status"] for r in results} == {"complete"}
    for r in results:
        m = r["metrics"]
        assert {"base", "tuned", "frontier"} <= set(m)
        assert m["frontier"]["cost_per_1k_calls_usd"] > 0 and m["frontier"]["latency_p50_s"] > 0
        assert m["tuned"]["cost_per_1k_calls_usd"] > 0  # from the device price and measured busy time
    rows = read_jsonl(run.study / "trial-0000" / "eval" / "frontier.jsonl")
    assert len(rows) == 6 and all(row["latency_s"] > 0 and row["output_tokens"] > 0 for row in rows)
    text = (run.study / "report.md").read_text()
    assert "frontier" in text and "When to use" in text


def test_forgetting_pairs_base_and_tuned_on_lm_eval_items(smoke_runs):
    trial = smoke_runs("forgetting").study / "trial-0000"
    check = read_json(trial / "metrics.json")["forgetting"]["arc_easy_local"]
    assert check["n"] == 8 and 0 <= check["base_acc"] <= 1 and check["regression"] in (True, False)
    rows = read_jsonl(trial / "lm_eval" / "arc_easy_local.jsonl")
    assert len(rows) == 8 and {"doc_id", "correct"} <= set(rows[0])


def test_quant_delta_evaluates_merged_and_gguf_arms_on_the_same_items(smoke_runs):
    # Run from a folder that is not the repository (the GGUF converter runs in its own directory, so every
    # path it is handed must be absolute).
    trial = smoke_runs("quant_delta").study / "trial-0000"
    quant = read_json(trial / "quant" / "quant.json")
    assert quant["arms"]["nf4"]["status"] == "not run" and "CUDA" in quant["arms"]["nf4"]["reason"]
    sizes = {arm: quant["arms"][arm]["size_bytes"] for arm in ("merged", "q8_0", "q4_k_m")}
    assert sizes["q4_k_m"] < sizes["q8_0"] < sizes["merged"]
    ids = {arm: [row["item_id"] for row in read_jsonl(trial / "eval" / f"{arm}.jsonl")]
           for arm in ("tuned", "merged", "q8_0", "q4_k_m")}
    assert ids["merged"] == ids["q8_0"] == ids["q4_k_m"] and set(ids["merged"]) == set(ids["tuned"])
