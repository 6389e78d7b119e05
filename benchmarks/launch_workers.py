"""Benchmark: one grid of 8 short CPU trials launched with `--workers 1` and with `--workers 2`, side by side.

Prints both wall times, their ratio, and the trials each worker claimed; fails if a point ran twice or
was lost. Run from the repository root:

    python benchmarks/launch_workers.py [--trials 8] [--steps 4]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

SPEC = """\
description: launcher benchmark, {trials} short CPU trials
model: {{base: 'random:tiny'}}
data: {{builtin: realestate, train_limit: 16}}
train: {{max_steps: {steps}, batch_size: 4, logging_steps: 1}}
eval: {{max_new_tokens: 8, limit: 8, batch_size: 8, compare_base: false}}
tracking: {{wandb: disabled}}
search:
  grid: {{lora.r: {ranks}}}
  seeds: [0, 1]
"""


def launch(spec: Path, results: Path, workers: int) -> tuple[float, dict[str, list[int]]]:
    import optuna

    from harness.grid.storage import local_storage, open_storage

    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "harness", "run", str(spec), "--workers", str(workers),
                           "--results", str(results)], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"--workers {workers} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    study = optuna.load_study(study_name=spec.stem, storage=open_storage(local_storage(results / spec.stem)))
    points = Counter(t.params["point"] for t in study.trials if t.state.name == "COMPLETE")
    expected = len(study.user_attrs["points"])
    if points != Counter(range(expected)):
        sys.exit(f"--workers {workers}: points run {dict(points)}, expected each of 0..{expected - 1} once")
    claimed: dict[str, list[int]] = defaultdict(list)
    for t in study.trials:
        claimed[f"slot {t.user_attrs['worker'].get('slot', '?')} (pid {t.user_attrs['worker']['pid']})"].append(
            t.params["point"])
    return wall, dict(claimed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8, help="grid points (even: two seeds each)")
    parser.add_argument("--steps", type=int, default=4, help="training steps per trial")
    args = parser.parse_args()
    ranks = [2 * (i + 1) for i in range(args.trials // 2)]
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "bench_workers.yaml"
        spec.write_text(SPEC.format(trials=args.trials, steps=args.steps, ranks=ranks))
        runs = {}
        for workers in (1, 2):
            runs[workers] = launch(spec, Path(tmp) / f"results-{workers}", workers)
    print(f"{args.trials} trials ({args.steps} steps each, random:tiny) on {os.cpu_count()} CPU cores, "
          f"{time.strftime('%Y-%m-%d')}")
    for workers, (wall, claimed) in runs.items():
        print(f"--workers {workers}: {wall:6.1f} s wall")
        for who, points in sorted(claimed.items()):
            print(f"    {who}: points {sorted(points)}")
    print(f"ratio (1 worker / 2 workers): {runs[1][0] / runs[2][0]:.2f}x; every point ran exactly once")


if __name__ == "__main__":
    main()
