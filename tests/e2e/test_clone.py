"""A user's clone works without anything outside it: no `../shared` beside the checkout.

The runs of it that take more than a few seconds; the rest is tests/unit/test_clone.py."""

from __future__ import annotations

import json

from harness.results import read_json
from tests.support.clone import run_in_clone

# Repeats the training pairs `repeat` times: a data stage whose parameter changes only how the adapter trains.
STAGE = '''\
"""Repetition: the first training sees each training pair `repeat` times."""

from __future__ import annotations

from pydantic import Field

from harness.config.sections import _Strict
from harness.stages.context import TrialContext
from harness.stages.registry import Phase, register_stage


class RepeatSpec(_Strict):
    """The `repeat:` section: how many times the first training sees each training pair."""

    times: int = Field(2, ge=1)


def run(ctx: TrialContext, cfg: RepeatSpec) -> None:
    ctx.train_examples = list(ctx.data.train) * cfg.times


register_stage("repeat", Phase.DATA, section="repeat", model=RepeatSpec, example={"times": 2},
               training_only=("repeat.",), run=run)
'''

EXPERIMENT = """\
description: Does seeing each training pair twice beat seeing it once?
model: {base: "random:tiny"}
data: {builtin: realestate, train_limit: 8}
train: {epochs: 1, batch_size: 4, logging_steps: 1}
eval: {limit: 4, max_new_tokens: 4, batch_size: 4}
tracking: {wandb: disabled}
repeat: {times: 1}
search:
  grid: {repeat.times: [1, 2]}
"""


def test_a_stage_file_and_a_yaml_make_a_new_kind_of_experiment_in_a_clone(clone, harness_home, tmp_path):
    """With nothing else edited, the spec gains the stage's section, a grid over its parameter runs (from the
    clone, nothing beside it), and the report reads what the stage declares."""
    (clone / "harness" / "stages" / "repeat.py").write_text(STAGE)
    (clone / "experiments" / "repeat_ablation.yaml").write_text(EXPERIMENT)

    listed = run_in_clone(clone, harness_home, "list")
    assert listed.returncode == 0 and "repeat_ablation" in listed.stdout + listed.stderr, listed.stderr[-2000:]
    bad = tmp_path / "bad.yaml"
    bad.write_text(EXPERIMENT.replace("repeat: {times: 1}", "repeat: {times: 0}"))
    refused = run_in_clone(clone, harness_home, "check", str(bad))
    out = " ".join((refused.stdout + refused.stderr).split())
    assert refused.returncode == 2 and "repeat.times" in out and "bad.yaml:7" in out, out[-2000:]

    proc = run_in_clone(clone, harness_home, "run", "repeat_ablation")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    study = clone / "results" / "repeat_ablation"
    results = [read_json(p) for p in sorted(study.glob("trial-*/result.json"))]
    assert [r["status"] for r in results] == ["complete", "complete"]
    steps = {r["params"]["repeat.times"]: r["metrics"]["cost"]["train_steps"] for r in results}
    assert steps == {1: 2, 2: 4}  # 8 pairs, batches of 4: the stage doubled what the first training saw
    manifest = read_json(study / "trial-0000" / "manifest.json")
    assert "repeat." in manifest["training_only_prefixes"] and manifest["spec"]["repeat"] == {"times": 1}

    report = run_in_clone(clone, harness_home, "report", "repeat_ablation")
    assert report.returncode == 0, report.stderr[-3000:]
    text = (study / "report.md").read_text()
    # The untouched base is one arm across the stage's levels (read from the manifest), the tuned arms two.
    assert "| base |" in text and "base[repeat.times" not in text, text[:3000]
    assert "tuned[repeat.times=2]" in text and "tuned[repeat.times=1]" in text
    assert "repeat.times" in json.dumps(read_json(study / "report.json"))


def test_bench_prints_the_harness_to_raw_loop_ratio_in_a_clone(clone, harness_home):
    proc = run_in_clone(clone, harness_home, "bench", "--arch", "random:tiny", "--seq", "64", "--steps", "2", "--warmup", "1",
                "--batch-size", "2")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert "harness/reference" in out and "not run" not in out  # the project's own raw loop ran beside it
    assert list((clone / "results" / "bench").rglob("train-tiny-lora-random-*.json"))
