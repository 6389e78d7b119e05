"""`harness plan`: memory verdicts from the memory plan, tokens, time from measured throughput only, cost."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cli_runner import harness
from harness.errors import HarnessError
from harness.grid.plan import format_plan, plan_grid
from harness.spec import load_spec

ROOT = Path(__file__).resolve().parent.parent

SPEC = """\
description: plan test
model: {{base: 'random:{arch}'}}
data: {{builtin: realestate, train_limit: 8}}
train: {{max_steps: 10, batch_size: {bs}, max_length: {length}, gradient_checkpointing: {gc}}}
eval: {{limit: 4}}
tracking: {{wandb: disabled}}
pricing: {{device_price_per_hour: 2.5}}
search:
  grid: {{lora.r: [8, 16]}}
  seeds: [0, 1]
"""


def spec(tmp_path: Path, arch="tiny", bs=4, length=512, gc="false"):
    path = tmp_path / "plan.yaml"
    path.write_text(SPEC.format(arch=arch, bs=bs, length=length, gc=gc))
    return load_spec(path)


def test_without_a_measured_figure_the_plan_says_it_cannot_estimate_time(tmp_path, harness_home):
    plan = plan_grid(spec(tmp_path), "h100", 2, tmp_path / "results")
    assert [p.index for p in plan.points] == [0, 1, 2, 3]
    assert [p.label for p in plan.points] == ["r=8 seed=0", "r=8 seed=1", "r=16 seed=0", "r=16 seed=1"]
    assert all(p.verdict == "fits" and p.seconds is None for p in plan.points)
    # max_steps x batch x a typical example's length (at most max_length)
    assert all(p.tokens % 40 == 0 and 0 < p.tokens <= 10 * 4 * 512 for p in plan.points)
    text = format_plan(plan, "plan")
    assert "cannot estimate" in text and plan.grid_seconds is None and plan.cost is None
    assert max(len(line) for line in text.splitlines()) <= 80


def test_a_bench_figure_for_the_device_gives_time_grid_time_on_n_gpus_and_cost(tmp_path, harness_home):
    bench = tmp_path / "results" / "bench" / "h100"
    bench.mkdir(parents=True)
    (bench / "train-tiny-lora-realestate.json").write_text(json.dumps({"arch": "tiny", "harness": {"tok_s": 1000}}))
    plan = plan_grid(spec(tmp_path), "h100", 2, tmp_path / "results")
    per_trial = plan.points[0].tokens / 1000
    assert plan.points[0].seconds == pytest.approx(per_trial)
    assert plan.grid_seconds == pytest.approx(2 * per_trial)  # four equal trials on two GPUs: two rounds
    assert plan.cost == pytest.approx(2.5 * 2 * plan.grid_seconds / 3600)
    assert "$" in format_plan(plan, "plan")


def test_memory_verdicts_follow_the_memory_plan(tmp_path, harness_home):
    big = dict(arch="llama-3.1-8b", bs=16, length=4096)
    assert "does not fit without checkpointing" in plan_grid(spec(tmp_path, **big), "a100", 1, tmp_path).points[0].verdict
    auto = plan_grid(spec(tmp_path, **big, gc="auto"), "a100", 1, tmp_path).points[0].verdict
    assert auto.startswith("fits, checkpointing")
    huge = plan_grid(spec(tmp_path, arch="llama-3.1-8b", bs=64, length=8192, gc="true"), "h100", 1, tmp_path)
    assert huge.points[0].verdict.startswith("does not fit: lower train.batch_size")
    assert huge.points[0].peak_gib > 80


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
    assert "quickstart: 1 trial(s) on 1 x cpu" in proc.stdout and "tokens/s measured on cpu" in proc.stdout
