"""Grids as Optuna studies: exactly-once trials across workers, resume after SIGKILL, failures recorded."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from harness.errors import HarnessError, SpecError
from harness.grid.study import default_storage, open_study
from harness.spec import load_spec
from tests.support.ci import require
from tests.support.studies import SAMPLED, harness_cmd, tiny_spec


def test_unknown_search_parameter_is_refused(tmp_path):
    spec = load_spec(tiny_spec(tmp_path, grid="{lora.rank: [2, 4]}"))
    with pytest.raises(SpecError, match="lora.rank"):
        open_study(spec, default_storage(tmp_path))


def test_empty_grid_list_is_refused(tmp_path):
    with pytest.raises(SpecError, match="empty list"):
        load_spec(tiny_spec(tmp_path, grid="{lora.r: []}"))


def test_invalid_grid_value_is_refused(tmp_path):
    spec = load_spec(tiny_spec(tmp_path, grid="{lora.r: [2, -1]}"))
    with pytest.raises(SpecError, match="lora.r"):
        open_study(spec, default_storage(tmp_path))


def test_unreachable_storage_is_a_clear_error(tmp_path):
    spec = load_spec(tiny_spec(tmp_path))
    with pytest.raises(HarnessError, match="cannot open the study storage"):
        open_study(spec, "postgresql+psycopg2://nobody@127.0.0.1:9/none")


def test_two_specs_under_one_study_name_are_refused(tmp_path):
    storage = default_storage(tmp_path)
    open_study(load_spec(tiny_spec(tmp_path)), storage)
    other = load_spec(tiny_spec(tmp_path, grid="{lora.r: [8]}"))
    with pytest.raises(SpecError, match="different spec"):
        open_study(other, storage)


_OPEN_AT = """\
import sys, time
from harness.grid.study import open_storage
while time.time() < float(sys.argv[2]):
    time.sleep(0.001)
open_storage(sys.argv[1], attempts=int(sys.argv[3]))
"""


def _race_to_open(url: str, processes: int, attempts: int) -> list[subprocess.Popen]:
    start = time.time() + 3  # every process imports first, then all open the storage at once
    return [subprocess.Popen([sys.executable, "-c", _OPEN_AT, url, str(start), str(attempts)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(processes)]


def test_workers_started_together_on_an_empty_postgresql_database_all_open_it(tmp_path):
    import sqlalchemy

    url = os.environ.get("HARNESS_TEST_PG_URL", "")
    require(bool(url), "HARNESS_TEST_PG_URL (a PostgreSQL server; .ci/run starts one with scripts/start-postgres.sh)")
    admin = sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT")
    db = f"race{os.getpid()}{int(time.time())}"
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f"CREATE DATABASE {db}"))
    try:
        fresh = url.rsplit("/", 1)[0] + "/" + db
        procs = _race_to_open(fresh, processes=6, attempts=5)
        outs = [p.communicate(timeout=120) for p in procs]
        assert [p.returncode for p in procs] == [0] * 6, [o[1][-1500:] for o in outs]
    finally:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        admin.dispose()


def test_sampler_without_dev_split_is_refused(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(SAMPLED.replace(", dev_size: 4", ""))
    with pytest.raises(SpecError, match="dev split"):
        load_spec(path)


def test_dashboard_serves_the_study(tmp_path):
    import socket

    import httpx

    spec_path = tiny_spec(tmp_path)
    results = tmp_path / "results"
    open_study(load_spec(spec_path), default_storage(results / "tiny"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(harness_cmd("dashboard", str(spec_path), "--results", str(results), "--port", str(port)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                reply = httpx.get(f"http://127.0.0.1:{port}/api/studies", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and proc.poll() is None, "dashboard did not come up"
                time.sleep(0.5)
        assert reply.status_code == 200 and "tiny" in reply.text
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_requeued_copy_just_claimed_is_not_reaped_for_its_originals_dead_owner(tmp_path, monkeypatch):
    # CI race: a re-queued copy inherits its original's user attrs, dead pid included; a second worker starting
    # between the first one's claim and its owner write reaped the copy as if its worker had died.
    from optuna.trial import TrialState

    import harness.grid.study as gs
    from harness.grid.storage import sqlite_url

    study = open_study(load_spec(tiny_spec(tmp_path, grid="{lora.r: [2, 4]}")), sqlite_url(tmp_path))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    original = gs._claim_waiting(study)
    original.set_user_attr("worker", {**gs.worker_identity(original.number), "pid": dead_pid})
    assert gs.reap_dead_trials(study, reason="its worker died") == 1  # its own owner, dead: reaped and re-queued
    copy = next(t for t in study.get_trials(states=(TrialState.WAITING,))
                if t.user_attrs.get("worker", {}).get("pid") == dead_pid)
    assert study._storage.set_trial_state_values(copy._trial_id, state=TrialState.RUNNING)  # a worker claims it
    assert gs.reap_dead_trials(study) == 0, "a just-claimed copy was reaped for its original's dead worker"
    monkeypatch.setattr(gs, "CLAIM_GRACE_S", 0.0)  # a claim that never got its own owner is reaped after the grace
    assert gs.reap_dead_trials(study, reason="lost") == 1
    assert "before it wrote its owner" in study._storage.get_trial(copy._trial_id).user_attrs["reason"]
