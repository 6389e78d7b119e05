"""`harness plan`: one row per grid point (its seeds together), memory verdicts from the memory plan,
tokens, time measured (a bench file, the study's trials) or else a FLOPs estimate, cost; a table whose
parameter names and values are whole at 80 and 120 columns."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import optuna
import pytest

from harness.errors import HarnessError
from harness.experiments import find_experiment
from harness.grid.plan import FLOPS_UTILISATION, PEAK_BF16_TFLOPS, flops_seconds, plan_grid
from harness.grid.plan_text import format_plan
from harness.spec import load_spec
from tests.support.ci import ROOT
from tests.support.cli_runner import harness

SPEC = """\
description: plan test
model: {{base: 'random:{arch}'}}
data: {{builtin: realestate, train_limit: 8}}
train: {{max_steps: 10, batch_size: {bs}, max_length: {length}, gradient_checkpointing: {gc}}}
eval: {{limit: 4}}
tracking: {{wandb: disabled}}
pricing: {{device_price_per_hour: 2.5}}
search:
  grid: {grid}
  seeds: [0, 1]
"""


def spec(tmp_path: Path, arch="tiny", bs=4, length=512, gc="false", grid="{lora.r: [8, 16]}"):
    path = tmp_path / "plan.yaml"
    path.write_text(SPEC.format(arch=arch, bs=bs, length=length, gc=gc, grid=grid))
    return load_spec(path)


def write_bench(results: Path, device="h100", tok_s=1000) -> Path:
    bench = results / "bench" / device
    bench.mkdir(parents=True)
    path = bench / "train-tiny-lora-realestate.json"
    path.write_text(json.dumps({"arch": "tiny", "harness": {"tok_s": tok_s}}))
    return path


def headers(text: str) -> list[str]:
    """The first table's column names, each put back together from its wrapped lines above the rule (the
    plan's heading, one line at these widths, above them)."""
    lines = text.splitlines()[1:]
    rule = next(i for i, line in enumerate(lines) if line.startswith("-") and set(line) <= {"-", " "})
    spans = [(len(lines[rule][:m]), len(lines[rule][:m]) + len(run))
             for m, run in _runs(lines[rule])]
    names = []
    for start, end in spans:
        name = ""
        for line in lines[:rule]:
            piece = line[start:end].strip()
            if piece:
                name += piece if not name or name[-1] in "._" else " " + piece
        names.append(name)
    return names


def _runs(rule: str):
    i = 0
    while i < len(rule):
        if rule[i] == "-":
            j = rule.index(" ", i) if " " in rule[i:] else len(rule)
            yield i, rule[i:j]
            i = j
        else:
            i += 1


def test_flops_estimate_is_4nt_at_the_stated_share_of_the_bf16_peak():
    # 8e9 parameters x 1e6 tokens x 4 = 3.2e16 FLOPs; at 35% of 989 TFLOPS that is 92.4 s, of 312 TFLOPS 293 s
    assert FLOPS_UTILISATION == 0.35 and PEAK_BF16_TFLOPS["h100"] == 989
    assert flops_seconds(8_000_000_000, 1_000_000, "h100") == pytest.approx(92.44, rel=1e-3)
    assert flops_seconds(8_000_000_000, 1_000_000, "a100") == pytest.approx(293.0, rel=1e-3)
    assert flops_seconds(8_000_000_000, 1_000_000, "cpu") is None


def test_without_a_measured_figure_time_is_a_labelled_flops_estimate(tmp_path, harness_home):
    from transformers import AutoModelForCausalLM, LlamaConfig

    from harness.models import ARCHITECTURES, load_tokenizer, resolve_model

    plan = plan_grid(spec(tmp_path), "h100", 2, tmp_path / "results")
    assert [(p.index, p.params, p.trials) for p in plan.points] == [(0, {"lora.r": 8}, [0, 1]),
                                                                    (1, {"lora.r": 16}, [2, 3])]
    assert plan.keys == ["lora.r"] and plan.trials == 4
    # N counted on the meta device is the parameter count of the real model built from the same config
    config = LlamaConfig(vocab_size=len(load_tokenizer(resolve_model("random:tiny"))), **ARCHITECTURES["tiny"])
    assert plan.base_params == sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())
    for p in plan.points:
        assert p.verdict == "fits" and p.tokens % 40 == 0 and 0 < p.tokens <= 10 * 4 * 512
        assert p.seconds == pytest.approx(4 * plan.base_params * p.tokens / (0.35 * 989e12))
        assert p.all_seconds == pytest.approx(2 * p.seconds)
    assert plan.time.kind == "flops" and plan.grid_seconds == pytest.approx(2 * plan.points[1].seconds)
    text = format_plan(plan, "plan")
    assert max(len(line) for line in text.splitlines()) <= 80
    words = " ".join(text.split())  # the notes wrap at 80 columns
    assert "FLOPs estimate" in words and "35% of the H100's bf16 peak" in words and "not measured" in words
    assert "generation and eval are not in it" in words and "$" in words


def test_a_cpu_without_a_measured_figure_cannot_estimate_time(tmp_path, harness_home):
    plan = plan_grid(spec(tmp_path), "cpu", 1, tmp_path / "results")
    assert plan.time.kind == "none" and all(p.seconds is None for p in plan.points)
    assert plan.grid_seconds is None and plan.cost is None
    assert "cannot estimate" in format_plan(plan, "plan")


def test_a_bench_figure_is_preferred_then_the_study_then_flops(tmp_path, harness_home):
    study = optuna.create_study()
    study.add_trial(optuna.trial.create_trial(value=1.0, user_attrs={"duration_s": 120.0}))
    assert plan_grid(spec(tmp_path), "h100", 1, tmp_path / "results").time.kind == "flops"
    from_study = plan_grid(spec(tmp_path), "h100", 1, tmp_path / "results", study)
    assert from_study.time.kind == "study" and all(p.seconds == 120.0 for p in from_study.points)
    path = write_bench(tmp_path / "results")
    plan = plan_grid(spec(tmp_path), "h100", 2, tmp_path / "results", study)
    per_trial = plan.points[0].tokens / 1000
    assert plan.time.kind == "bench" and plan.points[0].seconds == pytest.approx(per_trial)
    assert plan.grid_seconds == pytest.approx(2 * per_trial)  # four equal trials on two GPUs: two rounds
    assert plan.cost == pytest.approx(2.5 * 2 * plan.grid_seconds / 3600)
    text = format_plan(plan, "plan", width=200)
    assert "time measured: training at 1,000 tokens/s on h100" in text and path.name in text
    assert "FLOPs" not in text and "~" not in text  # a measured figure is not marked as an estimate


@pytest.mark.parametrize("width", [80, 120])
def test_rank_ablation_one_row_per_point_with_its_parameters_whole(tmp_path, harness_home, width):
    ablation = load_spec(find_experiment("rank_ablation"),
                         overrides={"model.base": "random:tiny", "data.train_limit": 8})
    grid, seeds = ablation.search.grid, ablation.search.seeds
    plan = plan_grid(ablation, "h100", 8, tmp_path / "results")
    assert len(plan.points) == math.prod(len(v) for v in grid.values()) == 72
    assert plan.trials == 72 * len(seeds) == 216 and {p.seeds for p in plan.points} == {len(seeds)}
    assert sorted(plan.keys) == sorted(grid)
    text = format_plan(plan, "rank_ablation", width=width)
    lines = text.splitlines()
    assert "…" not in text and max(len(line) for line in lines) <= width
    names = headers(text)
    assert names[1:1 + len(grid)] == plan.keys and "lora.alpha_policy" in names and "model.load_in_4bit" in names
    rows = [line for line in lines if line[:2].strip().isdigit()]
    assert len(rows) == 72 and all(f"×{len(seeds)}" in row for row in rows)
    cells = [row.split() for row in rows]
    column = {key: {c[1 + i] for c in cells} for i, key in enumerate(plan.keys)}
    assert column["lora.target_modules"] == {"attention", "all-linear"}
    assert column["lora.alpha_policy"] == {"r", "2r", "rslora"}
    assert column["model.load_in_4bit"] == {"true", "false"}
    assert column["lora.r"] == {str(r) for r in grid["lora.r"]}


def test_distillation_arms_train_on_n_teacher_answers_or_k_times_n_originals(tmp_path, harness_home):
    distill = load_spec(find_experiment("distill_vs_data"), overrides={"model.base": "random:tiny"})
    plan = plan_grid(distill, "h100", 1, tmp_path / "results")
    tokens = {p.params["distill.arm"]: p.tokens for p in plan.points}
    assert tokens["original"] == distill.distill.k * tokens["distilled"] > 0


def test_a_grid_too_wide_for_one_table_prints_parameters_and_figures_apart(tmp_path, harness_home):
    grid = ("{lora.r: [8, 16], lora.alpha_policy: [r, rslora], lora.target_modules: [attention, all-linear], "
            "lora.dropout: [0.0, 0.1], train.learning_rate: [0.0001, 0.001], train.grad_accum: [1, 2]}")
    plan = plan_grid(spec(tmp_path, grid=grid), "h100", 1, tmp_path / "results")
    assert len(plan.points) == 64 and plan.trials == 128
    text = format_plan(plan, "wide")
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 80
    rows = [line.split()[0] for line in text.splitlines() if line[:2].strip().isdigit()]
    assert rows == [str(i) for i in range(64)] * 2  # each point once in each table
    assert "train.learning_rate" in headers(text) and "lora.target_modules" in headers(text)


def test_memory_verdicts_follow_the_memory_plan(tmp_path, harness_home):
    big = dict(arch="llama-3.1-8b", bs=16, length=4096)
    assert "does not fit without checkpointing" in plan_grid(spec(tmp_path, **big), "a100", 1, tmp_path).points[0].verdict
    auto = plan_grid(spec(tmp_path, **big, gc="auto"), "a100", 1, tmp_path)
    assert auto.points[0].verdict.startswith("fits, checkpointing")
    assert max(len(line) for line in format_plan(auto, "big").splitlines()) <= 80
    huge = plan_grid(spec(tmp_path, arch="llama-3.1-8b", bs=64, length=8192, gc="true"), "h100", 1, tmp_path)
    assert huge.points[0].verdict.startswith("does not fit: lower train.batch_size")
    assert huge.points[0].peak_gib > 80
    text = format_plan(huge, "huge")  # the long verdict wraps in its column, whole
    assert max(len(line) for line in text.splitlines()) <= 80
    assert " ".join(text.split()).count("does not fit: lower train.batch_size or max_length") == 2


def test_attention_targets_count_the_four_projections_lora_trains(tmp_path, harness_home):
    import torch
    from transformers import AutoModelForCausalLM

    from harness.grid.plan import _config, _sizes

    attention = spec(tmp_path, grid="{lora.target_modules: [attention]}")
    config = _config(attention)
    model = AutoModelForCausalLM.from_config(config)
    projections = [m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)
                   and n.rsplit(".", 1)[-1] in ("q_proj", "k_proj", "v_proj", "o_proj")]
    resolved = attention.model_copy(update={"lora": attention.lora.model_copy(update={"target_modules": "attention"})})
    assert len(projections) == 4 * config.num_hidden_layers
    assert _sizes(config, resolved)[1] == sum(16 * (m.in_features + m.out_features) for m in projections)


def test_bad_device_and_gpu_count_are_refused(tmp_path, harness_home):
    with pytest.raises(HarnessError, match="--device tpu"):
        plan_grid(spec(tmp_path), "tpu", 1, tmp_path)
    with pytest.raises(HarnessError, match="--gpus 0"):
        plan_grid(spec(tmp_path), "h100", 0, tmp_path)


def test_plan_command_uses_the_repository_cpu_figures(tmp_path, harness_home):
    shutil.copytree(ROOT / "results" / "bench", tmp_path / "results" / "bench")
    proc = harness("plan", "quickstart", "--device", "cpu", "--results", str(tmp_path / "results"),
                   env={"HARNESS_HOME": str(harness_home)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "quickstart: 1 trial = 1 grid point × 1 seed; 1 x cpu" in proc.stdout
    assert "time measured: training at" in proc.stdout and "tokens/s on cpu" in proc.stdout


POWER_SPEC = SPEC.replace("search:", """quantize: {{types: [q8_0], tolerance: 0.05}}
forgetting: {{tasks: [arc_easy_local, piqa_local], limit: 100, tolerance: 0.02}}
search:""")


def test_plan_prints_an_mde_line_per_comparison_at_an_assumed_variance(tmp_path, harness_home):
    """No run yet: the SD of a paired difference is the stated worst case of [0, 1] scores, and each
    tolerance's items come with it."""
    from harness.grid.power import ASSUMED_SD
    from harness.stats.equivalence import items_needed
    from harness.stats.paired import minimum_detectable_difference

    path = tmp_path / "power.yaml"
    path.write_text(POWER_SPEC.format(arch="tiny", bs=4, length=512, gc="false", grid="{lora.r: [8, 16]}"))
    plan = plan_grid(load_spec(path), "h100", 1, tmp_path / "results")
    got = {(p.comparison.a, p.comparison.b, p.comparison.metric): p for p in plan.powers}
    assert set(got) == {("tuned", "base", "field_accuracy"), ("nf4", "merged", "field_accuracy"),
                        ("q8_0", "merged", "field_accuracy"), ("tuned", "base", "arc_easy_local acc"),
                        ("tuned", "base", "piqa_local acc")}
    arc = got["tuned", "base", "arc_easy_local acc"]
    assert arc.n == 100 and arc.mde == pytest.approx(minimum_detectable_difference(ASSUMED_SD, 100))
    assert arc.items_needed == items_needed(ASSUMED_SD / 10, 100, 0.02) and arc.items_needed > 1000
    assert got["tuned", "base", "field_accuracy"].n == 4 and got["tuned", "base", "field_accuracy"].items_needed is None
    text = format_plan(plan, "power", width=100)
    lines = [line for line in text.splitlines() if line.startswith("- ") and " vs " in line]
    assert len(lines) == 5 and all("MDE" in line for line in lines)
    assert f"equivalence within ±0.02 needs ~{arc.items_needed:,} items" in text and "assumed" in text


def test_plan_takes_the_variance_from_the_last_runs_rows(tmp_path, harness_home):
    from harness.results import write_jsonl
    from harness.stats.paired import minimum_detectable_difference

    path = tmp_path / "power.yaml"
    path.write_text(POWER_SPEC.format(arch="tiny", bs=4, length=512, gc="false", grid="{lora.r: [8, 16]}"))
    loaded = load_spec(path)
    trial = tmp_path / "results" / loaded.name / "trial-0000"
    tuned, base = [1, 1, 0, 1], [0, 1, 0, 0]
    for arm, values in (("tuned", tuned), ("base", base)):
        write_jsonl(trial / "eval" / f"{arm}.jsonl",
                    [{"item_id": f"i{i}", "scores": {"field_accuracy": v}} for i, v in enumerate(values)])
    (p,) = [p for p in plan_grid(loaded, "h100", 1, tmp_path / "results").powers if p.comparison.b == "base"
            and p.comparison.metric == "field_accuracy"]
    sd = float(np.std(np.subtract(tuned, base), ddof=1))
    assert p.basis == "last run: 4 paired items" and p.mde == pytest.approx(minimum_detectable_difference(sd, 4))


def test_a_bad_quantize_tolerance_names_the_field(tmp_path, harness_home):
    for bad in ("0", "-1", "nan", "'x'", "1.5"):
        path = tmp_path / "bad.yaml"
        path.write_text(SPEC.format(arch="tiny", bs=4, length=512, gc="false", grid="{lora.r: [8]}").replace(
            "search:", f"quantize: {{types: [q8_0], tolerance: {bad}}}\nsearch:"))
        with pytest.raises(HarnessError, match=r"quantize\.tolerance"):
            load_spec(path)
