"""The CUDA paths (run with `pytest -m gpu` on a GPU machine): Unsloth chosen and training, Liger on
the HF backend, QLoRA, padding-free batches under CUDA attention, out-of-memory trials recorded with
their figures while the grid goes on, and `harness bench` beside the raw reference loop."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from harness.backends import select_backend
from harness.grid.study import default_storage, open_study, run_worker
from harness.spec import LoraSpec, TrainSpec, load_spec
from harness.trial.runner import Worker
from tests.support.cli_runner import harness

GRID = """\
description: GPU grid for tests.
model: {{base: 'random:smollm2-135m', load_in_4bit: {qlora}}}
data: {{builtin: realestate, train_limit: 16}}
train: {{max_steps: 3, batch_size: {bs}, logging_steps: 1, backend: {backend}, gradient_checkpointing: {gc}}}
eval: {{max_new_tokens: 8, limit: 8, batch_size: 8, compare_base: false}}
tracking: {{wandb: disabled}}
search:
  grid: {grid}
  seeds: [0]
"""


def grid_spec(tmp_path: Path, *, backend="auto", qlora=False, bs=4, gc="auto", grid="{lora.r: [4, 8]}"):
    path = tmp_path / "gpu.yaml"
    path.write_text(GRID.format(backend=backend, qlora=str(qlora).lower(), bs=bs, gc=gc, grid=grid))
    return load_spec(path)


def run_grid(tmp_path, spec):
    study = open_study(spec, default_storage(tmp_path))
    worker = Worker()
    return run_worker(spec, study, tmp_path / "study", worker), worker


def manifest(tmp_path, number: int) -> dict:
    return json.loads((tmp_path / "study" / f"trial-{number:04d}" / "manifest.json").read_text())


def test_auto_picks_unsloth_and_a_grid_trains_with_one_base_load(tmp_path, harness_home):
    pytest.importorskip("unsloth")
    results, worker = run_grid(tmp_path, grid_spec(tmp_path))
    assert [r.status for r in results] == ["complete", "complete"], [r.reason for r in results]
    assert worker.base_loads == 1
    m = manifest(tmp_path, 0)
    assert m["backend"] == "unsloth" and m["training"]["backend"] == "unsloth"
    assert m["training"]["checkpointing"]["checkpointed_layers"] == 0  # a 135M model fits: nothing recomputed
    assert all(math.isfinite(r.metrics["cost"]["final_loss"]) for r in results)


def test_unsloth_qlora_trains(tmp_path, harness_home):
    pytest.importorskip("unsloth")
    results, _ = run_grid(tmp_path, grid_spec(tmp_path, qlora=True, grid="{lora.r: [4]}"))
    assert results[0].status == "complete", results[0].reason
    assert math.isfinite(results[0].metrics["cost"]["final_loss"])


def test_hf_backend_switches_liger_on(tmp_path, harness_home):
    pytest.importorskip("liger_kernel")
    results, _ = run_grid(tmp_path, grid_spec(tmp_path, backend="hf", grid="{lora.r: [4]}"))
    assert results[0].status == "complete", results[0].reason
    assert manifest(tmp_path, 0)["backend"] == "hf-peft-trl+liger"


def test_padding_free_matches_padded_on_cuda(tmp_path, harness_home):
    from harness.data.prepare import prepare_data
    from harness.models import load_model, resolve_model
    from harness.spec import DataSpec

    examples = prepare_data(DataSpec(builtin="realestate"), harness_home / "data").train[:8]
    losses = {}
    for packing in ("padding_free", "none"):
        backend = select_backend("hf")
        model, tok = load_model(resolve_model("random:smollm2-135m"))
        torch.manual_seed(0)
        model = backend.add_adapter(model, LoraSpec(r=4))
        out = backend.train_sft(model, tok, examples, TrainSpec(max_steps=1, batch_size=8, logging_steps=1,
                                                                packing=packing), tmp_path / packing)
        losses[packing] = out.log[0]["loss"]
    assert losses["padding_free"] == pytest.approx(losses["none"], rel=2e-2)  # bf16


def test_an_out_of_memory_batch_fails_with_figures_and_the_grid_goes_on(tmp_path, harness_home):
    spec = grid_spec(tmp_path, backend="hf", gc="false", grid="{train.batch_size: [4096, 2]}",
                     bs=2).model_copy()
    spec.model.base = "random:llama-3.2-1b"
    spec.data.train_limit = 4096
    results, _ = run_grid(tmp_path, spec)
    by_bs = {r.params["train.batch_size"]: r for r in results}
    assert by_bs[4096].status == "failed" and "out of memory at train.batch_size=4096" in by_bs[4096].reason
    assert "GiB" in by_bs[4096].reason
    assert by_bs[2].status == "complete"


def test_bench_runs_the_reference_loop_beside_the_harness(tmp_path, harness_home):
    proc = harness("bench", "--arch", "random:llama-3.2-1b", "--steps", "3", "--warmup", "2",
                   "--results", str(tmp_path), timeout=1800)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [saved] = (tmp_path / "bench").rglob("train-llama-3.2-1b-lora-random-*.json")
    result = json.loads(saved.read_text())
    assert "error" not in result["reference"], result["reference"]
    assert result["ratio_tok_s"] > 0 and result["ratio_peak"] > 0
    assert result["environment"]["hardware"]["gpu"]
