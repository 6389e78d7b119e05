"""One definition of a trial's outcome and the exit status, shared by a single run, a launch, a worker and
`harness status`: not-run trials are never counted or named as failed.

The runs of it that take more than a few seconds; the rest is tests/unit/test_outcome.py."""

from __future__ import annotations

import os

import optuna
from optuna.trial import TrialState

from harness.grid.outcome import requeued_numbers, trial_outcome
from harness.results import Outcome
from tests.support.cli_runner import harness
from tests.support.studies import local_study, tiny_spec, wait_running


def test_a_two_worker_smoke_grid_with_not_run_points_exits_0_and_says_not_run(tmp_path, harness_home):
    """The rank ablation's smoke grid on CPU: 4 LoRA trials complete, 4 QLoRA trials cannot run here."""
    env = {"HARNESS_HOME": str(harness_home), "WANDB_MODE": "disabled", "COLUMNS": "80",
           "HARNESS_STOP_GRACE_S": "5"}
    results = tmp_path / "r"
    proc = harness("run", "rank_ablation", "--preset", "smoke", "--workers", "2", "--results", str(results),
                   env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "8/8 ended: 4 complete, 4 not run" in out
    assert "8 trials: 4 complete, 4 not run" in out
    assert "failed" not in out.lower(), out[-3000:]
    status = harness("status", "rank_ablation", "--preset", "smoke", "--results", str(results), env=env)
    assert status.returncode == 0, status.stderr
    rows = (status.stdout + status.stderr).splitlines()
    assert max(len(row) for row in rows if "│" in row or "  " in row[:4]) <= 80
    assert sum(" not run " in row and "seed=" in row for row in rows) == 4
    assert sum(" complete " in row and "tuned" in row for row in rows) == 4
    assert sum(row.startswith("trial ") and "not run: 4-bit QLoRA" in row for row in rows) == 4
    # The same grid's single-process run (resuming the finished study) says the same and exits the same.
    again = harness("run", "rank_ablation", "--preset", "smoke", "--results", str(results), env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "8 trials: 4 complete, 4 not run" in again.stdout + again.stderr
    from harness.grid.storage import journal_url

    worker = harness("worker", "rank_ablation", "--preset", "smoke", "--results", str(results), "--storage",
                     journal_url(results / "rank_ablation-smoke"), env=env)
    assert worker.returncode == 0, worker.stderr[-3000:]
    assert "8 trials: 4 complete, 4 not run" in worker.stdout + worker.stderr


def test_a_failed_trial_gives_exit_1_and_the_same_words_in_a_single_run_and_a_launch(tmp_path, harness_home):
    """A grid point PEFT rejects at training time (a target module the model lacks) fails; the others go on."""
    env = {"HARNESS_HOME": str(harness_home), "WANDB_MODE": "disabled", "COLUMNS": "80"}
    for extra, name in (([], "single"), (["--workers", "2"], "launch")):
        (tmp_path / name).mkdir()
        spec = tiny_spec(tmp_path / name, seeds="[0]",
                         grid="{lora.target_modules: [all-linear, [no_such_proj]], model.load_in_4bit: [false, true]}")
        proc = harness("run", str(spec), "--results", str(tmp_path / name / "r"), *extra, env=env)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 1, (name, out[-3000:])
        assert "4 trials: 1 complete, 2 not run, 1 failed" in out, (name, out[-3000:])
        assert "1 trial(s) failed" in out and "no_such_proj" in out


def test_ctrl_c_in_a_single_run_requeues_its_trial_exits_130_and_the_same_command_finishes(tmp_path, harness_home):
    import signal
    import subprocess
    import sys
    import threading

    spec, results = tiny_spec(tmp_path, grid="{lora.r: [2], train.max_steps: [60]}", seeds="[0]"), tmp_path / "r"
    env = {**os.environ, "HARNESS_HOME": str(harness_home), "WANDB_MODE": "disabled", "COLUMNS": "80"}
    cmd = [sys.executable, "-m", "harness", "run", str(spec), "--results", str(results)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_running(results, 1, proc)
    # Inside the trial's training, not between claims nor while it still imports: a library's bare `except:`
    # around an optional import can swallow a KeyboardInterrupt (seen under a loaded CI machine).
    lines: list[str] = []
    training = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)
            if "'loss'" in line:
                training.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert training.wait(timeout=600), "training never logged a step: " + "".join(lines)[-3000:]
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
    reader.join(timeout=30)
    out = "".join(lines)
    # 130 from the CLI; or CPython ends the process by SIGINT itself (a shell shows that as 130 too) when a C
    # extension's PyRun_* call was running as the signal arrived (`_Py_UnhandledKeyboardInterrupt`), even
    # though the CLI caught the KeyboardInterrupt: both mean "stopped by SIGINT", and the words below say so.
    assert proc.returncode in (130, -signal.SIGINT), out[-3000:]
    assert "stopped by SIGINT" in out and "1 trial: 1 waiting" in out
    study = local_study(results)
    first = study.trials[0]
    assert first.state == TrialState.FAIL and "interrupted" in first.user_attrs["reason"]
    assert trial_outcome(first, requeued_numbers(study.trials)) == Outcome.INTERRUPTED
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "1 trial: 1 complete" in again.stdout + again.stderr
