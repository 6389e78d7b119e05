"""Registries that fill themselves: a package whose modules register something on import (stages, runners,
metrics) imports all of them once, so adding one is adding a file."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Container, Iterable


def import_modules(package: str, path: Iterable[str], skip: Container[str] = ()) -> None:
    """Import every module of `package` (its `__path__`) but private ones and those named in `skip`."""
    for info in pkgutil.iter_modules(path):
        if not info.name.startswith("_") and info.name not in skip:
            importlib.import_module(f"{package}.{info.name}")
