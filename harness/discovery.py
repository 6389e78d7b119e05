"""Registries that fill themselves: the modules of one folder register entries (stages, backends, metrics)
as they are imported, and the first read imports them all, so adding an entry is adding a file."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from typing import Container, Generic, Iterable, TypeVar

T = TypeVar("T")


def import_modules(package: str, path: Iterable[str], skip: Container[str] = ()) -> None:
    """Import every module of `package` (its `__path__`) but private ones and those named in `skip`."""
    for info in pkgutil.iter_modules(path):
        if not info.name.startswith("_") and info.name not in skip:
            importlib.import_module(f"{package}.{info.name}")


def caller_module(depth: int = 2) -> str:
    """The module of the code `depth` frames up (a registration's own file), found as enum's functional API does."""
    return sys._getframe(depth).f_globals["__name__"]


class Registry(Generic[T]):
    """Entries by name, registered by the modules of the folder `path` (package `package`)."""

    def __init__(self, kind: str, package: str, path: Iterable[str], skip: Container[str] = ()) -> None:
        self.kind = kind  # what an entry is, for errors: "stage", "backend", "metric"
        self._package, self._path, self._skip = package, list(path), skip
        self._entries: dict[str, T] = {}
        self._modules: dict[str, str] = {}
        self._discovered = False

    def add(self, name: str, entry: T, module: str) -> T:
        """Keep `entry` under `name`; the same name registered from another module is an error naming both."""
        taken = self._modules.get(name)
        if taken is not None and taken != module:
            raise ValueError(f"{self.kind} '{name}' is registered twice ({taken}, {module})")
        self._entries[name], self._modules[name] = entry, module
        return entry

    @property
    def registered(self) -> dict[str, T]:
        """The entries registered so far, importing nothing (for checks made while registering)."""
        return dict(self._entries)

    def entries(self) -> dict[str, T]:
        """Every entry by name, importing each module of the folder on the first call."""
        if not self._discovered:
            import_modules(self._package, self._path, self._skip)
            self._discovered = True
        return dict(self._entries)
