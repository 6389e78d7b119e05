"""The on-disk shape of a study (files, JSON key paths), for the characterisation tests.

Refactors of the trial pipeline must leave what a study writes unchanged: the smoke runs compare this
signature against `tests/snapshots/layouts/<experiment>.json`. Only a deliberate, announced change of the
results layout (or a new experiment) rewrites them, by running the smoke presets for real:

    python -m tests.support.layout update [EXPERIMENT ...]     # all of them when none is named
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

GOLDEN = Path(__file__).resolve().parents[1] / "snapshots" / "layouts"
# Names that carry a content hash or a run-specific value: compared by shape, not by value.
_HASHED = re.compile(r"[0-9a-f]{16}")
_SKIP_DIRS = {"wandb"}
_SHALLOW = {"packages", "hardware"}  # what is installed and where it ran: not the layout


def _key_paths(obj: Any, prefix: str = "", depth: int = 2) -> set[str]:
    out: set[str] = set()
    if isinstance(obj, dict) and depth > 0:
        for key, value in obj.items():
            path = f"{prefix}{key}"
            out.add(path)
            if key not in _SHALLOW:
                out |= _key_paths(value, path + ".", depth - 1)
    return out


def signature(study_dir: Path) -> dict[str, Any]:
    """Relative file paths of a study and the key paths of each trial's metrics.json and manifest.json."""
    files = set()
    for path in Path(study_dir).rglob("*"):
        rel = path.relative_to(study_dir)
        # The report's files are analysis's (and its own tests'), not the trial pipeline's layout.
        if path.is_dir() or _SKIP_DIRS & set(rel.parts) or rel.name.startswith("report") or rel.parts[0] in (
                "report", "figures", "tables"):
            continue
        if rel.parts[0].startswith("trial-") and rel.parts[1:2] in (("adapter",), ("adapter-sft",)):
            rel = Path(*rel.parts[:2], "…")  # the adapter's own files are PEFT's, not ours
        if rel.parts[0].endswith("-cache"):  # endpoint caches: keyed by the server's URL, which varies per run
            rel = Path(rel.parts[0], "…")
        files.add(_HASHED.sub("<hash>", str(rel)))
    keys = {}
    for name in ("metrics.json", "manifest.json"):
        paths: set[str] = set()
        for path in sorted(Path(study_dir).glob(f"trial-*/{name}")):
            paths |= _key_paths(json.loads(path.read_text()), depth=3 if name == "metrics.json" else 2)
        keys[name] = sorted(paths)
    return {"files": sorted(files), "keys": keys}


def check(study_dir: Path, experiment: str, *, additive_manifest: bool = True) -> None:
    """Assert that `study_dir` has the golden layout of `experiment` (manifest keys may only be added)."""
    got = signature(study_dir)
    golden = GOLDEN / f"{experiment}.json"
    assert golden.exists(), f"no layout snapshot for '{experiment}': python -m tests.support.layout update {experiment}"
    want = json.loads(golden.read_text())
    assert got["files"] == want["files"], {"missing": sorted(set(want["files"]) - set(got["files"])),
                                           "new": sorted(set(got["files"]) - set(want["files"]))}
    assert got["keys"]["metrics.json"] == want["keys"]["metrics.json"], {
        "missing": sorted(set(want["keys"]["metrics.json"]) - set(got["keys"]["metrics.json"])),
        "new": sorted(set(got["keys"]["metrics.json"]) - set(want["keys"]["metrics.json"]))}
    manifest_got, manifest_want = set(got["keys"]["manifest.json"]), set(want["keys"]["manifest.json"])
    assert manifest_want <= manifest_got, {"missing": sorted(manifest_want - manifest_got)}
    if not additive_manifest:
        assert manifest_got == manifest_want, {"new": sorted(manifest_got - manifest_want)}


def update(names: list[str]) -> None:
    """Run the smoke preset of each experiment for real and write its layout snapshot."""
    import tempfile

    from tests.support.llama_server import LlamaServer
    from tests.support.smoke import experiments, needs_endpoint, run_smoke

    names = names or experiments()
    server = LlamaServer() if any(needs_endpoint(n) for n in names) else None
    home = Path(tempfile.mkdtemp(prefix="harness-home-"))
    try:
        if server:
            server.start()
        for name in names:
            with tempfile.TemporaryDirectory() as work:
                run = run_smoke(name, Path(work), home, *((server.url, server.model) if server else ()))
                if run.run.returncode or run.report.returncode:
                    raise SystemExit(f"{name}: the smoke run failed\n{run.run.stderr[-3000:]}{run.report.stderr[-3000:]}")
                got = signature(run.study)
                (GOLDEN / f"{name}.json").write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
                print(f"{name}: {len(got['files'])} files -> {GOLDEN / name}.json")
    finally:
        if server:
            server.stop()


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] != ["update"]:
        raise SystemExit("usage: python -m tests.support.layout update [EXPERIMENT ...]")
    update(sys.argv[2:])
