"""`Example`: one item of any dataset, in the shape every later stage consumes."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Example:
    """A prompt (chat messages before the answer) and its reference answer.

    `rejected` is set for preference data; `cluster` groups items that share a source
    (the analysis clusters standard errors on it); `origin` is "file:line" for error messages.
    """

    id: str
    prompt: list[dict[str, str]]
    reference: str
    rejected: str | None = None
    cluster: str | None = None
    origin: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v not in (None, {}, "")}

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> "Example":
        return cls(**row)

    @property
    def prompt_text(self) -> str:
        """The user-visible prompt as plain text (for hashing and leakage checks)."""
        return "\n".join(f"{m['role']}: {m['content']}" for m in self.prompt)
