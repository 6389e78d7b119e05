"""The package's shape: no import cycles, a config layer that imports no implementation, cheap spec loading,
and spec fingerprints that no refactor or new stage changes."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("harness", "analysis")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """Project modules that `path` imports anywhere (function-local imports too), except under TYPE_CHECKING."""
    is_package = path.name == "__init__.py"
    out: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:  # `from pkg import submodule` imports the submodule, else a name of `module`
                out.add(f"{module}.{alias.name}" if f"{module}.{alias.name}" in modules else module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return {m for m in out if m in modules and m != name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, name, modules) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in graph:
        if v not in index:
            strongconnect(v)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_in_the_packages():
    cycles = _cycles(_graph())
    assert not cycles, "import cycles (function-local imports count too): " + "; ".join(" ↔ ".join(c) for c in cycles)


def test_config_layer_imports_no_implementation():
    graph = _graph()
    for name in (m for m in graph if m == "harness.config" or m.startswith("harness.config.")):
        outside = {m for m in graph[name] if not m.startswith("harness.config") and m != "harness.errors"}
        assert not outside, f"{name} imports {sorted(outside)}: config is a leaf layer"


def test_loading_a_spec_imports_no_heavy_library():
    code = ("import sys; from harness.spec import load_spec; load_spec('experiments/sft_vs_dpo.yaml'); "
            "import harness.stages as s; s.all_stages(); "
            "print(sorted(m for m in ('torch', 'trl', 'lm_eval', 'transformers', 'peft') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


# Fingerprints of every shipped experiment and preset, computed by the code before the stage redesign
# (commit 039c24b). A study's fingerprint decides whether it can be resumed: these must never drift.
FINGERPRINTS = {
    "distill_vs_data:": "8bf8a69766397547", "distill_vs_data:smoke": "0e5fc503b648023b",
    "forgetting:": "3f0216a970831c2d", "forgetting:smoke": "f21f5571de21db78",
    "quant_delta:": "a1ceba37df01d25a", "quant_delta:smoke": "84f160d10ece4129",
    "quickstart:": "b3a03fe4fc663ab8", "quickstart:smoke": "897ac37fd092814b",
    "rank_ablation:": "e6a1817a5c92d41b", "rank_ablation:smoke": "f2690f379e639f7a",
    "sft_vs_dpo:": "4965e42449687715", "sft_vs_dpo:smoke": "2d42aba9c71e23db",
    "three_way:": "9c65dbd89e6ed478", "three_way:smoke": "807d6dbe0391066a",
    # added since: its own snapshot from the commit that shipped it (ade26fb)
    "sft_vs_grpo:": "5e34f1a972782151", "sft_vs_grpo:smoke": "efe9fde33cb1a3d3",
    # Added with the free-text task (issue 13).
    "voice:": "9e70bdb77f1f504c", "voice:smoke": "fbcd2dc64a14753e",
}


def test_every_shipped_experiment_has_a_fingerprint_snapshot():
    shipped = {p.stem for p in (ROOT / "experiments").glob("*.yaml")}
    assert shipped == {key.split(":")[0] for key in FINGERPRINTS}, "a new shipped experiment gets its snapshot here"


@pytest.mark.parametrize("key", sorted(FINGERPRINTS))
def test_shipped_experiment_fingerprints_are_unchanged(key):
    from harness.spec import load_spec
    from harness.grid.study import spec_fingerprint

    name, _, preset = key.partition(":")
    assert spec_fingerprint(load_spec(ROOT / "experiments" / f"{name}.yaml", preset=preset or None)) == \
        FINGERPRINTS[key]


def test_a_new_stage_section_leaves_studies_that_do_not_use_it_alone(tmp_path):
    """The GRPO section came after the studies above: absent, it is not in their fingerprint or manifest spec."""
    from harness.spec import load_spec, spec_dump
    from harness.grid.study import spec_fingerprint

    plain = load_spec(ROOT / "experiments" / "quickstart.yaml")
    assert "grpo" not in spec_dump(plain) and "dpo" in spec_dump(plain)  # legacy sections stay, as null
    with_grpo = load_spec(ROOT / "experiments" / "quickstart.yaml", overrides={"grpo": {"max_steps": 1}})
    assert spec_fingerprint(with_grpo) != spec_fingerprint(plain)
    assert json.loads(json.dumps(spec_dump(with_grpo)))["grpo"]["max_steps"] == 1


def test_an_endpoint_note_describes_and_does_not_split_a_study():
    """Editing what an endpoint is called in reports must not make a running study refuse to resume."""
    from harness.grid.study import spec_fingerprint
    from harness.spec import load_spec

    path = ROOT / "experiments" / "three_way.yaml"
    plain = load_spec(path, preset="cpu", overrides={"contestants.0.endpoint.note": None})
    noted = load_spec(path, preset="cpu")
    assert noted.contestants[0].endpoint.note and spec_fingerprint(noted) == spec_fingerprint(plain)
    other = load_spec(path, preset="cpu", overrides={"contestants.0.endpoint.model": "another"})
    assert spec_fingerprint(other) != spec_fingerprint(noted)


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "experiments").glob("*.yaml")))
def test_every_experiment_has_a_cpu_preset_within_the_committed_results_rules(name):
    """The committed CPU results: ≥ 50 held-out items, ≥ 2 seeds where training arms are compared (a grid,
    or a stage continuing SFT), and the report of that run under results/<name>-cpu/."""
    from harness.spec import load_spec

    spec = load_spec(ROOT / "experiments" / f"{name}.yaml", preset="cpu")
    assert spec.eval.limit is None or spec.eval.limit >= 50
    compares_training = bool(spec.search.grid) or any(getattr(spec, s, None) is not None for s in ("dpo", "grpo"))
    if compares_training:
        assert len(spec.search.seeds) >= 2, f"{name}: compare training arms over at least 2 seeds"
    report = ROOT / "results" / f"{name}-cpu" / "report.md"
    assert report.exists(), f"run `bash scripts/reproduce-results.sh {name}` and commit {report.parent}"
    assert (report.parent / "report.json").exists() and list((report.parent / "report" / "figures").glob("*.png"))
