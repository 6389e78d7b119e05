"""Weights & Biases tracking: every trial is a run; offline by default when nobody is logged in."""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any


def wandb_mode(setting: str = "auto") -> str:
    """Resolve `auto` to online (a W&B login exists) or offline (sync later with `wandb sync`)."""
    if setting != "auto":
        return setting
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        if netrc.netrc().authenticators("api.wandb.ai"):
            return "online"
    except (FileNotFoundError, netrc.NetrcParseError):
        pass
    return "offline"


class Tracker:
    """One W&B run for one trial: config, loss curve, eval metrics and the per-item table."""

    def __init__(self, *, setting: str, project: str, group: str, name: str, config: dict[str, Any],
                 directory: Path) -> None:
        self.mode = wandb_mode(setting)
        self.run = None
        if self.mode == "disabled":
            return
        import wandb

        directory.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(project=project, group=group, name=name, config=config, dir=str(Path(directory).absolute()),
                              mode=self.mode, reinit="create_new", job_type="trial")

    @property
    def run_dir(self) -> Path | None:
        """The run's local files (the offline `.wandb` file lives here)."""
        return Path(self.run.dir).parent if self.run is not None else None

    def log(self, values: dict[str, Any], step: int | None = None) -> None:
        if self.run is not None:
            self.run.log(values, step=step)

    def log_table(self, key: str, rows: list[dict[str, Any]]) -> None:
        if self.run is None or not rows:
            return
        import wandb

        columns = sorted({k for r in rows for k in r})
        table = wandb.Table(columns=columns, data=[[_cell(r.get(c)) for c in columns] for r in rows])
        self.run.log({key: table})

    def summary(self, values: dict[str, Any]) -> None:
        if self.run is not None:
            self.run.summary.update(values)

    def finish(self, exit_code: int = 0) -> None:
        if self.run is not None:
            self.run.finish(exit_code=exit_code)
            self.run = None


def _cell(v: Any) -> Any:
    return v if isinstance(v, (int, float, str, bool)) or v is None else str(v)


# ---------------------------------------------------------------- reading an offline run back

_BLOCK, _HEADER = 32768, 7  # the .wandb file is a LevelDB-style log of protobuf Records


def _log_records(path: Path):
    import struct
    import zlib

    data = Path(path).read_bytes()
    ident, _magic, _version = struct.unpack("<4sHB", data[:_HEADER])
    if ident != b":W&B":
        raise ValueError(f"{path}: not a W&B transaction log")
    pos, pending = _HEADER, b""
    while pos + _HEADER <= len(data):
        left_in_block = _BLOCK - pos % _BLOCK
        if left_in_block < _HEADER:  # block trailer: zero padding
            pos += left_in_block
            continue
        checksum, length, kind = struct.unpack("<IHB", data[pos:pos + _HEADER])
        if length == 0 and kind == 0:
            pos += left_in_block
            continue
        chunk = data[pos + _HEADER:pos + _HEADER + length]
        if zlib.crc32(bytes([kind]) + chunk) & 0xFFFFFFFF != checksum:
            break  # a torn tail (killed process): everything before it is intact
        pos += _HEADER + length
        pending += chunk
        if kind in (1, 4):  # FULL or LAST
            yield pending
            pending = b""


def read_offline_run(run_dir: Path) -> dict[str, Any]:
    """Config, history rows and summary of a W&B run from its local `.wandb` file (no server needed)."""
    import json

    from wandb.proto import wandb_internal_pb2 as pb

    files = sorted(Path(run_dir).glob("run-*.wandb"))
    if not files:
        raise FileNotFoundError(f"no run-*.wandb in {run_dir}")
    config: dict[str, Any] = {}
    history: list[dict[str, Any]] = []
    summary: dict[str, Any] = {}
    for raw in _log_records(files[0]):
        record = pb.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            for item in record.run.config.update:
                config[item.key] = json.loads(item.value_json)
        elif kind == "config":
            for item in record.config.update:
                config[item.key] = json.loads(item.value_json)
        elif kind == "history":
            row: dict[str, Any] = {}
            for item in record.history.item:
                _put(row, list(item.nested_key) or [item.key], json.loads(item.value_json))
            history.append(row)
        elif kind == "summary":
            for item in record.summary.update:
                _put(summary, list(item.nested_key) or [item.key], json.loads(item.value_json))
    return {"config": {k: v.get("value", v) if isinstance(v, dict) else v for k, v in config.items()},
            "history": history, "summary": summary}


def _put(target: dict[str, Any], keys: list[str], value: Any) -> None:
    """Nested keys (a logged table's fields, say) become nested dicts under their first key."""
    for key in keys[:-1]:
        target = target.setdefault(key, {})
    target[keys[-1]] = value
