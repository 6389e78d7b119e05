"""The one exception type a user sees: it names where the problem is and what to do."""

from __future__ import annotations

from pathlib import Path


class HarnessError(Exception):
    """A problem with the user's input or environment, reported as one clear message.

    `where` names the file (and line, field) at fault, so a CLI can print it first.
    """

    def __init__(self, message: str, *, where: str | Path | None = None) -> None:
        self.where = str(where) if where is not None else None
        super().__init__(f"{self.where}: {message}" if self.where else message)


class SpecError(HarnessError):
    """An experiment spec that does not validate."""


class DataError(HarnessError):
    """A dataset row or file that cannot be used."""


class SplitError(HarnessError):
    """The frozen held-out split was changed, is missing, or leaks into training."""


class ModelError(HarnessError):
    """A base model that cannot be resolved or provisioned."""


class Unavailable(HarnessError):
    """An arm this machine cannot run (e.g. QLoRA without CUDA): reported as not run, with the reason."""
