"""Snapshots of every registered experiment's study fingerprint, one table per fingerprint scheme.

A study resumes only under the fingerprint it was created with, so a refactor must never move one. The
table for `FINGERPRINT_VERSION` is derived from experiments/*.yaml (each experiment, bare and under every
preset) and recorded in tests/snapshots/fingerprints.json; nobody edits it by hand:

    python -m tests.support.fingerprints check         # what the test runs
    python -m tests.support.fingerprints add           # record experiments/presets new since (never rewrites one)
    python -m tests.support.fingerprints update NAME   # NAME.yaml changed on purpose: its old studies start afresh
    python -m tests.support.fingerprints new-version   # after bumping FINGERPRINT_VERSION on purpose
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.support.ci import ROOT

SNAPSHOT = Path(__file__).resolve().parents[1] / "snapshots" / "fingerprints.json"


def current() -> dict[str, str]:
    """`experiment:preset` ("experiment:" bare) → fingerprint, as this code computes them."""
    import yaml

    from harness.spec import load_spec, spec_fingerprint

    out = {}
    for path in sorted((ROOT / "experiments").glob("*.yaml")):
        presets = (yaml.safe_load(path.read_text()) or {}).get("presets") or {}
        for preset in ["", *sorted(presets)]:
            out[f"{path.stem}:{preset}"] = spec_fingerprint(load_spec(path, preset=preset or None))
    return out


def _version() -> str:
    from harness.spec.fingerprint import FINGERPRINT_VERSION

    return str(FINGERPRINT_VERSION)


def recorded() -> dict[str, dict[str, str]]:
    return json.loads(SNAPSHOT.read_text())["versions"] if SNAPSHOT.exists() else {}


def _write(versions: dict[str, dict[str, str]]) -> None:
    doc = {"about": "study fingerprints of experiments/*.yaml per fingerprint scheme; written by "
                    "`python -m tests.support.fingerprints add|new-version`, never by hand",
           "versions": {v: dict(sorted(t.items())) for v, t in sorted(versions.items(), key=lambda kv: int(kv[0]))}}
    tmp = SNAPSHOT.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    tmp.replace(SNAPSHOT)


def problems() -> list[str]:
    """What differs between the recorded table of the current scheme and the code (empty: none)."""
    table = recorded().get(_version())
    if table is None:
        return [f"no fingerprint table for scheme {_version()}: python -m tests.support.fingerprints new-version"]
    now = current()
    out = [f"{key}: recorded {table[key]}, computed {fp} (a study made before this change would not resume)"
           for key, fp in now.items() if key in table and table[key] != fp]
    out += [f"{key}: not recorded (a new experiment or preset): python -m tests.support.fingerprints add"
            for key in now if key not in table]
    out += [f"{key}: recorded but no longer registered" for key in table if key not in now]
    return out


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "check"
    versions, version = recorded(), _version()
    if command == "check":
        found = problems()
        print("\n".join(found) or f"fingerprints of scheme {version}: all {len(current())} as recorded")
        return 1 if found else 0
    if command == "add":
        table = versions.setdefault(version, {})
        new = {k: v for k, v in current().items() if k not in table}
        table.update(new)
        _write(versions)
        print(f"recorded {len(new)} new fingerprint(s) under scheme {version}: {', '.join(new) or 'none'}")
        return 0
    if command == "update" and len(argv) == 2:
        table, name = versions.setdefault(version, {}), argv[1]
        now = {k: v for k, v in current().items() if k.split(":")[0] == name}
        if not now:
            print(f"no experiments/{name}.yaml", file=sys.stderr)
            return 2
        moved = [k for k, v in now.items() if table.get(k) != v]
        table.update(now)
        for key in [k for k in table if k.split(":")[0] == name and k not in now]:
            del table[key]
        _write(versions)
        print(f"{name}: {len(moved)} fingerprint(s) changed on purpose: {', '.join(moved) or 'none'}")
        return 0
    if command == "new-version":
        if version in versions:
            print(f"scheme {version} is recorded already: bump FINGERPRINT_VERSION first", file=sys.stderr)
            return 2
        versions[version] = current()
        _write(versions)
        print(f"recorded scheme {version}: {len(versions[version])} fingerprints")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
