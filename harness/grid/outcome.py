"""A study's trials as outcomes, and the exit status they give: one definition for every path.

The single-process `harness run`, `harness worker`, a `--workers`/`--gpus` launch (its progress
lines and end summary) and `harness status` all read a trial's outcome from here, from the Optuna
study (the one record every worker shares), so none of them counts a trial differently.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness.results import Outcome

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

NOT_RUN_PREFIX = "not run: "  # the reason a not-run trial records (and how studies before `outcome` say so)

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
# Shown by `harness run --help` and `harness worker --help`, and in the README.
EXIT_STATUS = f"""Exit status (the same for a single run, --workers N, --gpus and `harness worker`), from the
study's trials: {EXIT_OK} when every grid point ended complete, not run (this machine cannot run it, e.g. QLoRA
without CUDA) or pruned, or is still queued (--max-trials); {EXIT_FAILED} when at least one trial failed (the
others are recorded; `harness status` shows why); {EXIT_BAD_INPUT} when the spec, a flag or the storage was refused
before any trial ran; {EXIT_INTERRUPTED} when stopped by a signal (its running trials are re-queued: the same
command resumes)."""

# The order outcomes are listed in, everywhere.
ORDER = (Outcome.COMPLETE, Outcome.NOT_RUN, Outcome.PRUNED, Outcome.FAILED, Outcome.RUNNING, Outcome.WAITING)


def requeued_numbers(trials: list[FrozenTrial]) -> set[int]:
    """Trials a later copy re-runs (Optuna's retry callback names the original in `failed_trial`)."""
    return {t.system_attrs["failed_trial"] for t in trials if "failed_trial" in t.system_attrs}


def trial_outcome(trial: FrozenTrial, requeued: set[int] | frozenset[int] = frozenset()) -> Outcome:
    """The outcome of one Optuna trial; `requeued` holds the numbers of trials a copy re-runs."""
    from optuna.trial import TrialState

    if trial.state == TrialState.COMPLETE:
        return Outcome.COMPLETE
    if trial.state == TrialState.PRUNED:
        return Outcome.PRUNED
    if trial.state == TrialState.RUNNING:
        return Outcome.RUNNING
    if trial.state == TrialState.WAITING:
        return Outcome.WAITING
    reason = str(trial.user_attrs.get("reason") or "")
    if trial.user_attrs.get("outcome") == Outcome.NOT_RUN.value or reason.startswith(NOT_RUN_PREFIX):
        return Outcome.NOT_RUN
    if trial.number in requeued:  # it ended without a verdict of its own: its copy runs the point
        return Outcome.INTERRUPTED
    return Outcome.FAILED


@dataclass(frozen=True)
class Tally:
    """How many grid points stand at each outcome. An interrupted trial is not a grid point of its own
    (its re-queued copy is), so it is not counted."""

    counts: Counter

    def __getitem__(self, outcome: Outcome) -> int:
        return self.counts.get(outcome, 0)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def ended(self) -> int:
        return self.total - self[Outcome.RUNNING] - self[Outcome.WAITING]

    def words(self) -> str:
        """`4 complete, 4 not run` (zero counts left out)."""
        return ", ".join(f"{self[o]} {o.words}" for o in ORDER if self[o]) or "no trial"

    def summary(self) -> str:
        """The end-of-run line: what every grid point came to."""
        n = self.total
        return f"{n} trial{'s' if n != 1 else ''}: {self.words()}"


def tally(study: optuna.Study) -> Tally:
    trials = study.get_trials(deepcopy=False)
    requeued = requeued_numbers(trials)
    return Tally(Counter(o for o in (trial_outcome(t, requeued) for t in trials) if o != Outcome.INTERRUPTED))


def exit_status(t: Tally, interrupted: bool = False) -> int:
    """The exit status of a run that ended at `t` (`EXIT_STATUS` says which)."""
    if interrupted:
        return EXIT_INTERRUPTED
    return EXIT_FAILED if t[Outcome.FAILED] else EXIT_OK
