"""The training backends a spec can name (`train.backend`): one file each in this folder, registered by
`register_backend` at its top level and found by scanning the folder, so adding a backend is adding a file.

    register_backend("hf", "transformers + PEFT + TRL: runs everywhere", HFBackend,
                     reference_mode=lambda mode, checkpointing: "hf_lora", auto_rank=10)

A backend's module imports nothing heavy at its top level (torch, PEFT, TRL and unsloth only inside
functions), so scanning the folder, and with it loading a spec, imports none of them: they load when a
backend is built or asked whether it can run here. `auto` builds the highest-ranked backend that can run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from harness.discovery import Registry, caller_module
from harness.errors import Unavailable

if TYPE_CHECKING:
    from harness.backends.base import TrainingBackend

AUTO = "auto"
# The modules of this folder that are not backends: what every backend shares.
_SHARED = {"base", "cpu_logprob", "memory_plan", "registry"}


def _runs_anywhere() -> str | None:
    return None


@dataclass(frozen=True)
class Backend:
    """One registered training backend: its `train.backend` name, how to build it, and where it runs."""

    name: str  # as a spec names it in `train.backend`
    description: str  # one line, for help texts and the README
    build: Callable[[], "TrainingBackend"]  # a fresh instance; the heavy libraries are imported here
    # The mode of the raw loop in `harness/lora_reference.py` that does what this backend does, for
    # `harness bench`: (mode "lora"/"qlora", the gradient checkpointing asked for) -> e.g. "hf_lora".
    reference_mode: Callable[[str, "bool | str"], str]
    # Why it cannot run on this machine (naming `train.backend` and what to do), or None if it can.
    unavailable: Callable[[], str | None] = _runs_anywhere
    auto_rank: int = 0  # `auto` builds the highest-ranked backend that can run here
    module: str = ""  # the module that registered it


_BACKENDS: Registry[Backend] = Registry("backend", __package__, [str(Path(__file__).parent)], skip=_SHARED)


def register_backend(name: str, description: str, build: Callable[[], "TrainingBackend"],
                     reference_mode: Callable[[str, "bool | str"], str], **kw) -> Backend:
    """Register backend `name` (see `Backend` for the keywords), called at the top level of its file here."""
    module = caller_module()
    if name == AUTO:
        raise ValueError(f"'{AUTO}' is the choice among backends, not a backend's name")
    return _BACKENDS.add(name, Backend(name=name, description=description, build=build,
                                       reference_mode=reference_mode, module=module, **kw), module)


def all_backends() -> list[Backend]:
    """Every registered backend by name (importing each backend module of this folder once)."""
    return sorted(_BACKENDS.entries().values(), key=lambda b: b.name)


def backend_choices() -> tuple[str, ...]:
    """What `train.backend` accepts: "auto", then every registered backend's name."""
    return (AUTO, *(b.name for b in all_backends()))


def unknown_backend(name: str) -> str | None:
    """What is wrong with `name` as a `train.backend` choice, listing the known ones; None for a known one."""
    choices = backend_choices()
    return None if name in choices else f"unknown backend '{name}' (known: {', '.join(choices)})"


def get_backend(name: str) -> Backend:
    """The registered backend `name`; an error listing the known choices for any other name ("auto" included)."""
    for backend in all_backends():
        if backend.name == name:
            return backend
    raise Unavailable(unknown_backend(name) or f"'{name}' is the choice among backends, not a backend")


def backend_unavailable(prefer: str) -> str | None:
    """Why the backend a spec insists on cannot run here, or None if it can ("auto" always can)."""
    if prefer == AUTO:
        return None
    return unknown_backend(prefer) or get_backend(prefer).unavailable()


def resolve_backend(prefer: str = AUTO) -> Backend:
    """The backend `prefer` names, or for "auto" the highest-ranked one that can run here; refuses one
    that cannot run (`Unavailable`, with its reason)."""
    reason = backend_unavailable(prefer)
    if reason:
        raise Unavailable(reason)
    if prefer != AUTO:
        return get_backend(prefer)
    for backend in sorted(all_backends(), key=lambda b: -b.auto_rank):
        if backend.unavailable() is None:
            return backend
    raise Unavailable("no training backend can run here: " +
                      "; ".join(f"{b.name}: {b.unavailable()}" for b in all_backends()))


def select_backend(prefer: str = AUTO) -> "TrainingBackend":
    """A fresh instance of the backend `prefer` names (see `resolve_backend`): Unsloth when CUDA and
    unsloth are present (or when insisted on), HF + PEFT + TRL otherwise."""
    return resolve_backend(prefer).build()
