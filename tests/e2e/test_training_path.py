"""The training path shared by every backend: padding-free batches, memory-aware checkpointing,
backend choice and refusals, and `harness bench` on this machine's device.

The runs of it that take more than a few seconds; the rest is tests/unit/test_training_path.py."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tests.support.cli_runner import harness


def test_bench_measures_the_trial_training_path_and_saves_it(tmp_path, harness_home):
    proc = harness("bench", "--arch", "random:tiny", "--seq", "128", "--steps", "3", "--warmup", "1",
                   "--results", str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [saved] = (tmp_path / "bench").rglob("train-tiny-lora-random-*.json")
    result = json.loads(saved.read_text())
    h = result["harness"]
    assert h["tok_s"] > 0 and h["peak_gib"] > 0 and h["median_step_s"] > 0 and h["trainable"] > 0
    assert h["model_tflops_4N"] == pytest.approx(4 * h["frozen"] * h["tok_s"] / 1e12, abs=0.01)
    assert h["training"]["backend"] == h["backend"] and h["training"]["checkpointing"]["checkpointed_layers"] == 2
    assert result["environment"]["packages"]["torch"] == torch.__version__
    # the project's raw loop ran beside it on the same device, with the same checkpointing
    ref = result["reference"]
    assert "error" not in ref, ref
    assert ref["mode"].endswith("lora") and ref["bs"] == 4 and ref["seq"] == 128 and ref["trainable"] == h["trainable"]
    assert ref["tok_s"] > 0 and ref["median_step_cpu_s"] > 0 and h["median_step_cpu_s"] > 0
    assert result["ratio_tok_s"] == pytest.approx(h["tok_s"] / ref["tok_s"], abs=1e-3)
    assert result["ratio_tok_per_cpu_s"] == pytest.approx(ref["median_step_cpu_s"] / h["median_step_cpu_s"], abs=1e-3)
    assert "tok/s" in proc.stderr and "harness/reference" in proc.stderr  # printed for a person, not only saved


def test_bench_times_the_dpo_step_beside_a_plain_dpo_loop_over_the_same_pairs(tmp_path, harness_home):
    proc = harness("bench", "--method", "dpo", "--arch", "random:tiny", "--seq", "96", "--batch-size", "2",
                   "--steps", "2", "--warmup", "1", "--repeat", "2", "--results", str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [saved] = (tmp_path / "bench").rglob("dpo-tiny-*.json")
    result = json.loads(saved.read_text())
    h, ref = result["harness"], result["reference"]
    assert "error" not in ref, ref
    assert ref["mode"].startswith("dpo_") and h["tok_s"] > 0 and ref["tok_s"] > 0
    # both train the DPO loss from a fresh adapter (policy = reference): log 2 at first, a few small steps on
    assert h["loss_last"] == pytest.approx(math.log(2), abs=0.05) and ref["loss_last"] == pytest.approx(math.log(2), abs=0.05)
    assert len(result["rounds"]) == 2 and result["ratio_tok_s"] in [r["ratio_tok_s"] for r in result["rounds"]]
    assert "rounds" in proc.stderr


def test_bench_on_real_lengths_and_eval_generation(tmp_path, harness_home):
    proc = harness("bench", "--arch", "random:tiny", "--data", "realestate", "--seq", "512", "--batch-size", "8",
                   "--steps", "3", "--warmup", "1", "--results", str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [saved] = (tmp_path / "bench").rglob("train-tiny-lora-realestate-*.json")
    h = json.loads(saved.read_text())["harness"]
    # auto: padding-free needs a flash-attention kernel; with SDPA (this machine) batches are padded
    expected = "padding_free" if h["training"]["attn_implementation"].startswith("flash") else "none"
    assert h["training"]["packing"] == expected and h["tok_s"] > 0
    proc = harness("bench", "--eval", "--eval-model", "random:tiny", "--eval-items", "8", "--results", str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [saved] = (tmp_path / "bench").rglob("eval-*.json")
    e = json.loads(saved.read_text())
    assert e["items"] == 8 and e["sequential_items"] == 8 and e["speedup"] > 1  # batching beats one at a time
