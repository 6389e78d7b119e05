"""The registered experiments run end to end on CPU with their smoke presets, and their reports render."""

from __future__ import annotations

import json

import pytest

import layout
from cli_runner import harness
from harness.results import read_json

pytestmark = pytest.mark.slow


def _run(name: str, results, home, *extra: str, cwd=None):
    """Run and report a smoke preset; with `cwd`, from that folder with the default relative results/."""
    env = {"HARNESS_HOME": str(home), "WANDB_MODE": "disabled"}
    where = [] if cwd else ["--results", str(results)]
    if cwd:
        env["HARNESS_RESULTS"] = ""  # the default: ./results under the working directory
    proc = harness("run", name, "--preset", "smoke", *where, *extra, env=env, cwd=cwd)
    report = harness("report", name, "--preset", "smoke", *where, env=env, cwd=cwd)
    return proc, report


def _results(study_dir):
    return [read_json(p) for p in sorted(study_dir.glob("trial-*/result.json"))]


def test_rank_ablation_smoke_reports_qlora_as_not_run(tmp_path, harness_home):
    proc, report = _run("rank_ablation", tmp_path, harness_home)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = _results(tmp_path / "rank_ablation-smoke")
    assert len(results) == 8
    not_run = [r for r in results if r["params"]["model.load_in_4bit"]]
    assert {r["status"] for r in not_run} == {"not_run"}
    assert all("CUDA" in r["reason"] for r in not_run)
    done = [r for r in results if not r["params"]["model.load_in_4bit"]]
    assert {r["status"] for r in done} == {"complete"}
    params = {r["params"]["lora.r"]: r["metrics"]["cost"]["trainable_params"] for r in done}
    assert params[8] == 4 * params[2]
    assert all(r["metrics"]["cost"]["adapter_bytes"] > 0 for r in done)
    assert report.returncode == 0, report.stderr[-3000:]
    text = (tmp_path / "rank_ablation-smoke" / "report.md").read_text()
    assert "not run" in text.lower() and "CUDA" in text
    # The rank contrast is answered with LoRA; QLoRA vs LoRA at each rank says why it is not.
    assert "#### lora.r: each level vs lora.r=2" in text and "| tuned | 8 | 2 | 1/2 |" in text
    assert "not compared, tuned[model.load_in_4bit=True,lora.r=8] vs tuned[model.load_in_4bit=False,lora.r=8]: " \
           "no complete trial of 'tuned' at lora.r=8, model.load_in_4bit=True (2 trials not run: 4-bit QLoRA" in text
    _figures_have_data(tmp_path / "rank_ablation-smoke", expect={"loss_curves", "quality_vs_rank", "levels_lora_r"})
    layout.check(tmp_path / "rank_ablation-smoke", "rank_ablation")


def _figures_have_data(study_dir, expect: set[str]) -> None:
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


def test_distill_vs_data_smoke_with_a_real_teacher(tmp_path, harness_home, llama):
    url = llama.url
    proc, report = _run("distill_vs_data", tmp_path, harness_home, "--set", f"distill.teacher.url={url}",
                        "--set", "distill.teacher.price_output_per_m=2.0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = _results(tmp_path / "distill_vs_data-smoke")
    assert len(results) == 4 and {r["status"] for r in results} == {"complete"}
    distilled = [r for r in results if r["params"]["distill.arm"] == "distilled"]
    original = [r for r in results if r["params"]["distill.arm"] == "original"]
    for r in distilled:
        teacher = r["metrics"]["teacher"]
        assert teacher["n"] == 4 and teacher["output_tokens"] > 0 and teacher["cost_usd"] > 0
    assert distilled[1]["metrics"]["teacher"]["paid_usd"] == 0, "the second seed reuses the cached teacher calls"
    assert all("teacher" not in r["metrics"] for r in original)
    assert report.returncode == 0, report.stderr[-3000:]
    assert (tmp_path / "distill_vs_data-smoke" / "report.json").exists()
    layout.check(tmp_path / "distill_vs_data-smoke", "distill_vs_data")


def test_sft_vs_dpo_smoke_mines_dev_failures_and_compares_three_arms(tmp_path, harness_home):
    proc, report = _run("sft_vs_dpo", tmp_path, harness_home)
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = tmp_path / "sft_vs_dpo-smoke"
    results = _results(study)
    assert len(results) == 2 and {r["status"] for r in results} == {"complete"}
    for r in results:
        # The final arm's held-out aggregates and, apart from them, DPO's training summary.
        assert {"base", "sft", "dpo"} <= set(r["metrics"]) and r["metrics"]["training"]["dpo"]["pairs"] > 0
        assert r["metrics"]["dpo"]["n"] == 6 and "field_accuracy" in r["metrics"]["dpo"]
        trial = study / f"trial-{r['number']:04d}"
        pairs = [json.loads(line) for line in (trial / "dpo_pairs.jsonl").read_text().splitlines()]
        heldout_ids = {json.loads(line)["item_id"] for line in (trial / "eval" / "dpo.jsonl").read_text().splitlines()}
        assert pairs and not {p["id"] for p in pairs} & heldout_ids, "pairs are mined on the dev split only"
        assert all(p["rejected"] != p["reference"] for p in pairs)
        assert (trial / "adapter-sft").exists() and (trial / "adapter").exists()
    assert report.returncode == 0, report.stderr[-3000:]
    layout.check(study, "sft_vs_dpo")
    status = harness("status", "sft_vs_dpo", "--preset", "smoke", "--results", str(tmp_path),
                     env={"HARNESS_HOME": str(harness_home)})
    assert status.returncode == 0, status.stderr[-2000:]
    out = status.stdout + status.stderr
    rows = [line.split() for line in out.splitlines() if " complete " in line]
    assert len(rows) == 2 and all(row[-2] == "dpo" and row[-3] != "–" for row in rows), out  # the final arm's score
    assert "dpo_vs_sft" in json.dumps(read_json(study / "report.json"))


def test_sft_vs_grpo_smoke_rewards_with_the_task_scorer_and_compares_three_arms(tmp_path, harness_home):
    proc, report = _run("sft_vs_grpo", tmp_path, harness_home)
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = tmp_path / "sft_vs_grpo-smoke"
    results = _results(study)
    assert len(results) == 2 and {r["status"] for r in results} == {"complete"}
    for r in results:
        m = r["metrics"]
        assert {"base", "sft", "grpo"} <= set(m) and m["grpo"]["n"] == 6 and m["training"]["grpo"]["steps"] == 2
        log = [json.loads(line) for line in (study / f"trial-{r['number']:04d}" / "grpo_log.jsonl").read_text().splitlines()]
        assert log and all("rewards/field_accuracy/mean" in row and "rewards/json_valid/mean" in row for row in log)
        manifest = read_json(study / f"trial-{r['number']:04d}" / "manifest.json")
        assert manifest["final_arm"] == "grpo" and manifest["stage_pairs"] == [["grpo", "sft"]]
        assert manifest["trainings"]["grpo"]["trainer"] == "GRPOTrainer"
    assert report.returncode == 0, report.stderr[-3000:]
    groups = json.dumps(read_json(study / "report.json"))
    assert "grpo_vs_sft" in groups and "sft" in (study / "report.md").read_text()
    layout.check(study, "sft_vs_grpo")


def test_three_way_smoke_against_a_real_endpoint(tmp_path, harness_home, llama):
    proc, report = _run("three_way", tmp_path, harness_home, "--set", f"contestants.0.endpoint.url={llama.url}",
                        "--set", "contestants.0.endpoint.model=smollm2", "--set", "contestants.0.endpoint.api_key_env=null",
                        "--set", "contestants.0.endpoint.max_tokens=16")
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = tmp_path / "three_way-smoke"
    results = _results(study)
    assert len(results) == 2 and {r["status"] for r in results} == {"complete"}
    for r in results:
        m = r["metrics"]
        assert {"base", "tuned", "frontier"} <= set(m)
        assert m["frontier"]["cost_per_1k_calls_usd"] > 0 and m["frontier"]["latency_p50_s"] > 0
        assert m["tuned"]["cost_per_1k_calls_usd"] > 0  # from the device price and measured busy time
    rows = [json.loads(line) for line in (study / "trial-0000" / "eval" / "frontier.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all(row["latency_s"] > 0 and row["output_tokens"] > 0 for row in rows)
    assert report.returncode == 0, report.stderr[-3000:]
    text = (study / "report.md").read_text()
    assert "frontier" in text and "When to use" in text
    layout.check(study, "three_way")


def test_forgetting_smoke_pairs_base_and_tuned_on_lm_eval_items(tmp_path, harness_home):
    from conftest import SHARED, require

    require((SHARED / "data" / "benchmarks" / "arc-easy" / "test.jsonl").exists(),
            "../shared/data/benchmarks (real ARC-Easy items for the local lm-eval task)")
    env = {"HARNESS_HOME": str(harness_home), "WANDB_MODE": "disabled"}
    proc = harness("run", "forgetting", "--preset", "smoke", "--results", str(tmp_path), env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trial = tmp_path / "forgetting-smoke" / "trial-0000"
    check = read_json(trial / "metrics.json")["forgetting"]["arc_easy_local"]
    assert check["n"] == 8 and 0 <= check["base_acc"] <= 1 and check["regression"] in (True, False)
    rows = [json.loads(line) for line in (trial / "lm_eval" / "arc_easy_local.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and {"doc_id", "correct"} <= set(rows[0])
    layout.check(tmp_path / "forgetting-smoke", "forgetting")


def test_quant_delta_smoke_evaluates_merged_and_gguf_arms_on_the_same_items(tmp_path, harness_home):
    # As a user runs it: the default relative results/ folder, from a folder that is not the repository
    # (the GGUF converter runs in its own directory, so every path it is handed must be absolute).
    work = tmp_path / "work"
    work.mkdir()
    proc, report = _run("quant_delta", None, harness_home, cwd=work)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    trial = work / "results" / "quant_delta-smoke" / "trial-0000"
    quant = read_json(trial / "quant" / "quant.json")
    assert quant["arms"]["nf4"]["status"] == "not run" and "CUDA" in quant["arms"]["nf4"]["reason"]
    sizes = {arm: quant["arms"][arm]["size_bytes"] for arm in ("merged", "q8_0", "q4_k_m")}
    assert sizes["q4_k_m"] < sizes["q8_0"] < sizes["merged"]
    ids = {arm: [json.loads(line)["item_id"] for line in (trial / "eval" / f"{arm}.jsonl").read_text().splitlines()]
           for arm in ("tuned", "merged", "q8_0", "q4_k_m")}
    assert ids["merged"] == ids["q8_0"] == ids["q4_k_m"] and set(ids["merged"]) == set(ids["tuned"])
    assert report.returncode == 0, report.stderr[-3000:]
    layout.check(work / "results" / "quant_delta-smoke", "quant_delta")
