"""One definition of a trial's outcome and the exit status, shared by a single run, a launch, a worker and
`harness status`: not-run trials are never counted or named as failed."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from harness.grid.outcome import EXIT_STATUS, Tally, exit_status, requeued_numbers, tally, trial_outcome
from harness.grid.storage import sqlite_url
from harness.grid.study import _fail_and_requeue, open_study
from harness.results import Outcome, TrialResult
from harness.spec import load_spec
from tests.support.cli_runner import harness
from tests.support.studies import tiny_spec


def _study_with_every_outcome(tmp_path) -> optuna.Study:
    """A real SQLite study whose trials end as each outcome does in `harness.grid.study`."""
    study = open_study(load_spec(tiny_spec(tmp_path, grid="{lora.r: [2, 4, 8]}")), sqlite_url(tmp_path))
    storage = study._storage

    def claim():
        frozen = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))[0]
        storage.set_trial_state_values(frozen._trial_id, state=TrialState.RUNNING)
        return optuna.Trial(study, frozen._trial_id)

    study.tell(claim(), 0.5)  # complete
    t = claim()
    t.set_user_attr("outcome", "not_run")
    t.set_user_attr("reason", "not run: 4-bit QLoRA (bitsandbytes NF4) needs CUDA")
    study.tell(t, state=TrialState.FAIL)
    t = claim()
    t.set_user_attr("reason", "RuntimeError: boom")
    study.tell(t, state=TrialState.FAIL)  # failed
    study.tell(claim(), state=TrialState.PRUNED)
    _fail_and_requeue(study, claim()._trial_id, "interrupted: the run was stopped by SIGINT")
    claim()  # still running; the rest wait
    return study


def test_every_outcome_is_read_from_the_study_once(tmp_path):
    study = _study_with_every_outcome(tmp_path)
    trials = study.get_trials(deepcopy=False)
    requeued = requeued_numbers(trials)
    outcomes = [trial_outcome(t, requeued) for t in trials]
    assert outcomes[:6] == [Outcome.COMPLETE, Outcome.NOT_RUN, Outcome.FAILED, Outcome.PRUNED,
                            Outcome.INTERRUPTED, Outcome.RUNNING]
    assert set(outcomes[6:]) == {Outcome.WAITING}
    counts = tally(study)
    # 6 grid points; the interrupted trial's copy stands for its point, so it is not counted twice.
    assert counts.total == 6 and counts[Outcome.WAITING] == 1 and counts[Outcome.FAILED] == 1
    assert counts.words() == "1 complete, 1 not run, 1 pruned, 1 failed, 1 running, 1 waiting"
    assert counts.ended == 4
    assert exit_status(counts) == 1 and exit_status(counts, interrupted=True) == 130


def test_not_run_trials_leave_the_exit_status_at_zero():
    from collections import Counter

    grid = Tally(Counter({Outcome.COMPLETE: 4, Outcome.NOT_RUN: 4}))
    assert exit_status(grid) == 0 and grid.summary() == "8 trials: 4 complete, 4 not run"
    assert exit_status(Tally(Counter({Outcome.COMPLETE: 1, Outcome.WAITING: 3}))) == 0  # --max-trials
    assert Tally(Counter()).summary() == "0 trials: no trial"
    # A study written before trials recorded `outcome` says not run in its reason alone.
    old = optuna.trial.create_trial(state=TrialState.FAIL, user_attrs={"reason": "not run: needs CUDA"})
    assert trial_outcome(old) == Outcome.NOT_RUN


def test_run_and_worker_help_document_the_exit_status():
    for command in ("run", "worker"):
        text = " ".join(harness(command, "--help", check=True).stdout.split())
        for words in ("not run", "130", "at least one trial failed", "the same for a single run"):
            assert words in text, (command, words)
    assert "130" in EXIT_STATUS


def test_end_of_run_table_headers_are_whole_in_80_columns(tmp_path):
    from rich.console import Console

    from harness import cli

    study = tmp_path / "study"
    arm = {"n": 50, "field_accuracy": 0.41, "json_valid": 1.0, "exact_match": 0.0, "tokens_per_s": 12.3}
    for n, (r, q) in enumerate([(2, False), (8, False), (2, True), (8, True)]):
        params = {"lora.r": r, "lora.alpha_policy": "2r", "lora.target_modules": "all-linear",
                  "model.load_in_4bit": q, "train.seed": 0}
        if q:
            TrialResult(n, "not_run", params, reason="4-bit QLoRA (bitsandbytes NF4) needs CUDA").write(
                study / f"trial-{n:04d}")
        else:
            TrialResult(n, "complete", params, metrics={"base": arm, "tuned": arm}).write(study / f"trial-{n:04d}")
    narrow = Console(width=80, record=True, force_terminal=False)
    before, cli.console = cli.console, narrow
    try:
        cli._print_verdict(study, "field_accuracy")
    finally:
        cli.console = before
    out = narrow.export_text()
    table = [line for line in out.splitlines() if "│" in line or "┃" in line]
    assert all(len(line) <= 80 for line in table)
    header = " ".join(line for line in out.splitlines() if "┃" in line)
    assert "…" not in header
    for word in ("field", "accuracy", "json", "valid", "exact", "match", "tok/s"):
        assert word in header
    assert "not run" in out and "not_" not in out and "failed" not in out
    assert out.count("trial 2 not run: 4-bit QLoRA") == 1
