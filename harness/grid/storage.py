"""Where a study lives, chosen for the launch, following Optuna's own recommendations.

- one worker: SQLite in the study folder (`study.db`);
- several workers on one host: Optuna's `JournalStorage` on a file on local disk (`study.journal`), which
  takes concurrent writers through a lock file, where SQLite answers "database is locked";
- several hosts: PostgreSQL (given with `--storage`).

A journal file on a network filesystem is refused (its lock is not trustworthy there), as is SQLite
with several workers. `migrate` moves a study between any two of them with every trial.
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import optuna
from optuna.storages import BaseStorage, RDBStorage, RetryHeartbeatStaleTrialCallback

from harness.errors import HarnessError

# Heartbeats and stale-trial retries are what make grids resumable; Optuna labels them experimental.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

HEARTBEAT_S = int(os.environ.get("HARNESS_HEARTBEAT_S", "30"))
GRACE_S = int(os.environ.get("HARNESS_GRACE_S", str(HEARTBEAT_S * 4)))
JOURNAL = "journal:"
NETWORK_FS = {"nfs", "nfs4", "cifs", "smb3", "smbfs", "lustre", "gpfs", "beegfs", "ceph", "glusterfs",
              "fuse.sshfs", "fuse.glusterfs", "fuse.cephfs", "9p", "afs", "ocfs2", "pvfs2", "fuse.s3fs"}


def sqlite_url(study_dir: Path) -> str:
    return f"sqlite:///{(Path(study_dir) / 'study.db').resolve()}"


def journal_url(study_dir: Path) -> str:
    return f"{JOURNAL}{(Path(study_dir) / 'study.journal').resolve()}"


def kind(url: str) -> str:
    """sqlite, journal, postgresql, mysql, ...: the storage's family."""
    if url.startswith(JOURNAL):
        return "journal"
    return url.split(":", 1)[0].split("+", 1)[0]


def local_storage(study_dir: Path, workers: int = 1) -> str:
    """The study folder's storage: the one that already holds the study, else SQLite for one worker and a
    journal file for several."""
    study_dir = Path(study_dir)
    study_dir.mkdir(parents=True, exist_ok=True)
    has_db, has_journal = (study_dir / "study.db").exists(), (study_dir / "study.journal").exists()
    if has_journal or (workers > 1 and not has_db):
        return journal_url(study_dir)
    return sqlite_url(study_dir)


def check_storage(url: str, workers: int = 1, *, hosts: int = 1, migrate_hint: str = "",
                  mounts: str | None = None) -> None:
    """Refuse a storage that cannot take this launch's writers, saying what to use instead (`mounts`: the
    text of /proc/mounts, read when None)."""
    family = kind(url)
    if family == "sqlite" and workers > 1:
        raise HarnessError(
            f"SQLite ({url}) cannot take {workers} concurrent workers (Optuna: 'database is locked'): "
            "on one host drop --storage to get a journal file on local disk, or give a PostgreSQL URL"
            + (f"; this study already lives in SQLite, move it first with `{migrate_hint}`" if migrate_hint else ""))
    if family == "journal":
        if hosts > 1:
            raise HarnessError(f"a journal file ({url}) serves one host; workers on {hosts} nodes need "
                               "PostgreSQL: --storage postgresql+psycopg2://USER@HOST:PORT/DB")
        path = Path(url[len(JOURNAL):])
        fs = filesystem_type(path.parent, mounts)
        if fs in NETWORK_FS:
            raise HarnessError(f"the journal file {path} is on a network filesystem ({fs}), where its lock is not "
                               "reliable: put the results on local disk (--results /local/...) or use "
                               "PostgreSQL (--storage postgresql+psycopg2://...)")


def filesystem_type(path: Path, mounts: str | None = None) -> str:
    """The filesystem type of the mount that holds `path`, from `mounts` (default /proc/mounts; "unknown"
    where there is none)."""
    path = Path(path).resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    best, fstype = "", "unknown"
    if mounts is None:
        try:
            mounts = Path("/proc/mounts").read_text()
        except OSError:
            return fstype
    for line in mounts.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        mount = parts[1].replace("\\040", " ")
        if (str(path) == mount or str(path).startswith(mount.rstrip("/") + "/")) and len(mount) >= len(best):
            best, fstype = mount, parts[2]
    return fstype


def open_storage(url: str, attempts: int = 5) -> BaseStorage:
    """A journal file (`journal:/path`) or Optuna's RDB storage with heartbeats. Workers started together on an
    empty database race to create Optuna's schema; the loser sees "already exists" and opens it on the next try."""
    if url.startswith(JOURNAL):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = Path(url[len(JOURNAL):])
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(str(path)))
        except OSError as e:
            raise HarnessError(f"cannot open the study storage '{url}': {e}") from e
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    for attempt in range(attempts):
        try:
            return RDBStorage(url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                              heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3),
                              engine_kwargs={"pool_pre_ping": True})
        except (IntegrityError, ProgrammingError) as e:
            if "already exists" not in str(e) or attempt == attempts - 1:
                raise HarnessError(f"cannot open the study storage '{url}': {type(e).__name__}: {e}") from e
            time.sleep(0.5 * (attempt + 1))
        except Exception as e:  # sqlalchemy raises many kinds; all mean the same to the user
            raise HarnessError(f"cannot open the study storage '{url}': {type(e).__name__}: {e}") from e
    raise AssertionError("unreachable")


def migrate(study_name: str, source: str, target: str) -> int:
    """Copy a study with all its trials, attributes and states from one storage to another; returns the
    number of trials copied. The target must not hold a study of that name yet."""
    src, dst = open_storage(source), open_storage(target)
    try:
        optuna.load_study(study_name=study_name, storage=src)
    except KeyError as e:
        raise HarnessError(f"no study '{study_name}' in {source}") from e
    if any(s.study_name == study_name for s in dst.get_all_studies()):
        raise HarnessError(f"{target} already holds a study '{study_name}'; migrating would mix two histories")
    optuna.copy_study(from_study_name=study_name, from_storage=src, to_storage=dst)
    return len(optuna.load_study(study_name=study_name, storage=dst).trials)
