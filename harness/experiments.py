"""Registered experiments: every `*.yaml` in an experiments folder is one; adding one is adding a file.

The ones shipped with the code are edited in the repository's top-level `experiments/` folder and
ship as the package data `harness.registered` (a link to that folder in a checkout, its copy in a wheel).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from harness.errors import SpecError


def experiment_dirs() -> list[Path]:
    """`$HARNESS_EXPERIMENTS` (os.pathsep-separated), ./experiments, then the ones shipped with the code."""
    dirs = [Path(p) for p in os.environ.get("HARNESS_EXPERIMENTS", "").split(os.pathsep) if p]
    dirs += [Path.cwd() / "experiments", shipped_dir()]
    seen, out = set(), []
    for d in dirs:
        key = d.resolve()
        if d.is_dir() and key not in seen:
            seen.add(key)
            out.append(d)
    return out


def shipped_dir() -> Path:
    """The experiments shipped with the code (the package data `harness.registered`), links resolved:
    in a checkout, the `experiments/` folder itself."""
    # A wheel installs unpacked and a checkout links the folder, so the resource is a real directory.
    return Path(str(resources.files("harness") / "registered")).resolve()


@dataclass(frozen=True)
class RegisteredExperiment:
    name: str
    path: Path
    description: str


def registered() -> dict[str, RegisteredExperiment]:
    """Name → experiment, the first folder winning when two define the same name."""
    found: dict[str, RegisteredExperiment] = {}
    for d in experiment_dirs():
        for path in sorted(d.glob("*.yaml")):
            if path.stem in found:
                continue
            try:
                raw = yaml.safe_load(path.read_text()) or {}
                description = str(raw.get("description", "")).strip() if isinstance(raw, dict) else ""
            except yaml.YAMLError:
                description = "(invalid YAML: run `harness check` on it)"
            found[path.stem] = RegisteredExperiment(path.stem, path, description)
    return found


def find_experiment(name_or_path: str) -> Path:
    """A registered name, or a path to a spec file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path
    experiments = registered()
    if name_or_path in experiments:
        return experiments[name_or_path].path
    known = ", ".join(sorted(experiments)) or "none"
    raise SpecError(f"no experiment '{name_or_path}' (registered: {known}; or give a path to a .yaml file)")
