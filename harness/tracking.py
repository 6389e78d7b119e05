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
        self.run = wandb.init(project=project, group=group, name=name, config=config, dir=str(directory),
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
