"""One launch, many workers: a `harness worker` process per slot (GPU × per-gpu, or CPU), all on one study.

This is the process-per-GPU pattern of Optuna's FAQ: each worker gets `CUDA_DEVICE_ORDER=PCI_BUS_ID` and
its own `CUDA_VISIBLE_DEVICES` in its environment at spawn, so torch or unsloth never sees another
GPU; trials are claimed atomically through the storage, so no point runs twice. Each worker runs in its
own process group (its children too: llama-server, converters), writes its full log to
`<study>/logs/worker-<slot>.log`, and is stopped as a group. The launcher holds no GPU memory.

Faults: SIGINT/SIGTERM stops every group (SIGTERM, then SIGKILL after a grace period) and fails their
running trials with the reason, re-queued for the next launch; a worker that dies has its trial
re-queued, the others go on, and its slot is restarted once while trials wait.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import optuna
from optuna.trial import TrialState

from harness.grid.gpus import Slot
from harness.grid.outcome import Tally, tally
from harness.grid.study import reap_dead_trials
from harness.labels import labeller
from harness.results import Outcome

STOP_GRACE_S = float(os.environ.get("HARNESS_STOP_GRACE_S", "10"))


@dataclass
class _Worker:
    slot: Slot
    proc: subprocess.Popen
    log: Path
    restarts: int = 0
    exit_codes: list[int] = field(default_factory=list)
    handled: bool = False  # this process's end was dealt with

    def ended(self) -> bool:
        """True once, when the current process has exited."""
        if self.handled or self.proc.poll() is None:
            return False
        self.handled = True
        self.exit_codes.append(self.proc.returncode)
        return True


@dataclass
class LaunchOutcome:
    interrupted: str | None  # the signal's name when stopped by one
    exit_codes: dict[int, list[int]]  # slot -> every exit code of its processes
    tally: Tally


def worker_command(experiment: str, storage: str, results: Path, preset: str | None, sets: list[str]) -> list[str]:
    cmd = [sys.executable, "-m", "harness", "worker", experiment, "--storage", storage, "--results", str(results)]
    if preset:
        cmd += ["--preset", preset]
    for item in sets:
        cmd += ["--set", item]
    return cmd


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Display:
    """Node-wide progress as plain lines (readable in a Slurm log and in 80 columns), printed on change."""

    def __init__(self, study: optuna.Study, slots: int, out: Callable[[str], None]) -> None:
        self.study, self.slots, self.out = study, slots, out
        self.label = labeller(study.user_attrs.get("points") or [])
        self.started = time.monotonic()
        self._last = ("", 0.0)
        self._running: dict[int, str] = {}

    def eta(self, c: Tally) -> str:
        left = c[Outcome.WAITING] + c[Outcome.RUNNING]
        if not left:
            return "none left"
        durations = [(t.datetime_complete - t.datetime_start).total_seconds()
                     for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                     if t.datetime_start and t.datetime_complete]
        if not durations:
            return "ETA: after a trial"
        return f"ETA {_clock(sum(durations) / len(durations) * left / max(1, min(self.slots, left)))}"

    def update(self, force: bool = False) -> None:
        c = tally(self.study)
        line = f"{c.ended}/{c.total} ended: {c.words()} · {self.eta(c)}"
        now = time.monotonic()
        if force or line != self._last[0] or now - self._last[1] > 60:
            self.out(f"[{_clock(now - self.started)}] {line}")
            self._last = (line, now)
        running = {t.number: t for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
        for number, t in sorted(running.items()):
            where = self._where(t)
            if self._running.get(number) != where:
                self.out(f"  {where}: trial {number} {self.label(t.user_attrs.get('params', {}), 50)}")
        self._running = {number: self._where(t) for number, t in running.items()}

    @staticmethod
    def _where(t) -> str:
        w = t.user_attrs.get("worker", {})
        node = f"{w['node']} " if w.get("node") else ""
        return f"{node}gpu {w['gpu']}" if w.get("gpu") not in (None, "") else f"{node}cpu {w.get('slot', '?')}"


def launch(study: optuna.Study, slots: list[Slot], command: list[str], log_dir: Path, *,
           out: Callable[[str], None] = print, poll_s: float = 1.0, max_restarts: int = 1) -> LaunchOutcome:
    """Run one worker process per slot on `study` until its queue is empty or a signal stops the launch."""
    log_dir.mkdir(parents=True, exist_ok=True)
    stop: list[str] = []
    previous = {s: signal.signal(s, lambda num, _frame: stop.append(signal.Signals(num).name))
                for s in (signal.SIGINT, signal.SIGTERM)}
    workers: list[_Worker] = []
    display = Display(study, len(slots), out)
    try:
        for slot in slots:
            workers.append(_spawn(slot, command, log_dir))
        out(f"{len(slots)} worker(s), each logging to {log_dir}/worker-<slot>.log:")
        for w in workers:
            out(f"  {w.slot.label}: slot {w.slot.index}, pid {w.proc.pid}")
        while not stop:
            for w in workers:
                if w.ended():
                    _ended(study, w, out)
                    if w.proc.returncode not in (0, 1) and w.restarts < max_restarts and tally(study)[Outcome.WAITING]:
                        w.restarts += 1
                        out(f"restarting the worker on {w.slot.label}")
                        w.proc, w.handled = _spawn(w.slot, command, log_dir).proc, False
            display.update()
            if all(w.handled for w in workers):
                break
            time.sleep(poll_s)
    finally:
        if stop or any(w.proc.poll() is None for w in workers):
            _stop_all(workers, out)
            reaped = reap_dead_trials(study, reason=f"interrupted: the launch was stopped by "
                                                    f"{stop[0] if stop else 'an error'}")
            out(f"stopped every worker; {reaped} running trial(s) marked failed and re-queued")
        for s, handler in previous.items():
            signal.signal(s, handler)
    reap_dead_trials(study)  # a worker that died last leaves its trial for the next launch
    display.update(force=True)
    return LaunchOutcome(stop[0] if stop else None, {w.slot.index: w.exit_codes for w in workers}, tally(study))


def _spawn(slot: Slot, command: list[str], log_dir: Path) -> _Worker:
    log = log_dir / f"worker-{slot.index}.log"
    env = {**os.environ, **slot.env(), "COLUMNS": os.environ.get("HARNESS_LOG_COLUMNS", "120")}
    with open(log, "a") as f:
        f.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {slot.label}: {' '.join(command)}\n")
        f.flush()
        proc = subprocess.Popen(command, env=env, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)  # its own process group, stopped as one
    return _Worker(slot, proc, log)


def _ended(study: optuna.Study, w: _Worker, out: Callable[[str], None]) -> None:
    rc = w.proc.returncode
    _kill_group(w.proc.pid, signal.SIGKILL)  # children it left behind hold no GPU memory after it
    if rc not in (0, 1):
        why = f"signal {signal.Signals(-rc).name}" if rc < 0 else f"exit code {rc}"
        reaped = reap_dead_trials(study, reason=f"worker on {w.slot.label} died ({why})")
        out(f"worker on {w.slot.label} (pid {w.proc.pid}) died ({why}); {reaped} trial(s) re-queued; "
            f"last lines of {w.log}:\n" + _tail(w.log))


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return "\n".join("    " + line for line in path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "    (no log)"


def _kill_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _stop_all(workers: list[_Worker], out: Callable[[str], None]) -> None:
    """SIGTERM every worker's process group, SIGKILL what is left after the grace period, reap them all."""
    alive = [w for w in workers if w.proc.poll() is None]
    for w in alive:
        _kill_group(w.proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    while time.monotonic() < deadline and any(w.proc.poll() is None for w in alive):
        time.sleep(0.1)
    for w in workers:  # the group may outlive its leader (a child server): kill it whole either way
        _kill_group(w.proc.pid, signal.SIGKILL)
        w.proc.wait()
        w.ended()
