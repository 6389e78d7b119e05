"""The smoke run of a registered experiment, as a user runs it: `harness run` and `harness report` of its
`smoke` preset, with every endpoint it calls pointed at a real llama.cpp server on loopback.

A new `experiments/NAME.yaml` needs nothing here: `tests/e2e/test_experiments.py` runs every one, and its
endpoints (contestants, teacher, judge: any `EndpointSpec` in the spec) are found by walking the spec.
`EXTRA_SETS` holds what an experiment's own checks need beyond that (a judge switched on, a price).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.ci import ROOT
from tests.support.cli_runner import harness

PRESET = "smoke"
# Logged to W&B (offline) and read back by their tests; the others run with W&B disabled, for time.
TRACKED = frozenset({"quickstart"})
# Endpoint replies are capped: a smoke run checks the plumbing, not the text.
ENDPOINT_MAX_TOKENS = 16

# What a bespoke check of one experiment asks for on top of its smoke preset ({url} / {model}: the server's).
EXTRA_SETS: dict[str, list[str]] = {
    "voice": ["judge.endpoint.url={url}", "judge.endpoint.model={model}", "judge.endpoint.max_tokens=6",
              "judge.rubric.text=Follows the house voice of the reference."],
    "distill_vs_data": ["distill.teacher.price_output_per_m=2.0"],
}


def experiments() -> list[str]:
    """Every registered experiment (the YAML files under experiments/)."""
    return sorted(p.stem for p in (ROOT / "experiments").glob("*.yaml"))


def endpoint_paths(name: str, sets: list[str] = ()) -> list[str]:
    """Dotted paths of every endpoint the smoke preset of `name` calls (`contestants.0.endpoint`, ...)."""
    import yaml

    from harness.config import EndpointSpec
    from harness.spec import load_spec

    overrides = {key: yaml.safe_load(value) for key, _, value in (s.partition("=") for s in sets)}
    spec = load_spec(ROOT / "experiments" / f"{name}.yaml", preset=PRESET, overrides=overrides)
    found: list[str] = []

    def walk(value: Any, path: str) -> None:
        if isinstance(value, EndpointSpec):
            found.append(path)
        elif hasattr(type(value), "model_fields"):
            for key in type(value).model_fields:
                walk(getattr(value, key), f"{path}.{key}" if path else key)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, f"{path}.{i}")

    walk(spec, "")
    return found


def needs_endpoint(name: str) -> bool:
    """Whether the smoke run of `name` calls a model server (then it is given the llama.cpp one)."""
    return any("{url}" in s for s in EXTRA_SETS.get(name, [])) or bool(endpoint_paths(name))


def unmet(name: str) -> str | None:
    """What the smoke run of `name` needs that this machine lacks (the benchmark files of a forgetting check)."""
    from harness.capabilities.lm_tasks import benchmarks_root
    from harness.spec import load_spec

    spec = load_spec(ROOT / "experiments" / f"{name}.yaml", preset=PRESET)
    if getattr(spec, "forgetting", None) is not None and not any(benchmarks_root().glob("*/*.jsonl")):
        return f"the lm-eval benchmark subsets under {benchmarks_root()} (README: Benchmark data; ../shared/data/benchmarks)"
    return None


def smoke_sets(name: str, url: str | None = None, model: str | None = None) -> list[str]:
    """The `--set`s of the smoke run of `name`: its extra sets, then every endpoint pointed at `url`."""
    sets = [s.format(url=url, model=model) for s in EXTRA_SETS.get(name, [])]
    if url is None:
        return sets
    given = {s.partition("=")[0] for s in sets}
    for path in endpoint_paths(name, sets):
        wanted = {"url": url, "model": model, "api_key_env": "null", "max_tokens": ENDPOINT_MAX_TOKENS}
        sets += [f"{path}.{key}={value}" for key, value in wanted.items() if f"{path}.{key}" not in given]
    return sets


@dataclass
class SmokeRun:
    """One experiment's smoke run and report, run from `work` with the default relative results/ folder."""

    name: str
    work: Path
    home: Path
    sets: list[str]
    run: subprocess.CompletedProcess
    report: subprocess.CompletedProcess

    @property
    def results(self) -> Path:
        return self.work / "results"

    @property
    def study(self) -> Path:
        return self.results / f"{self.name}-{PRESET}"

    def report_figures(self) -> dict[str, Any]:
        """The report's figures as matplotlib `Figure`s, for measuring their text: the report built again in this
        process as `harness report` builds it (the same spec and seed, so the same numbers and files)."""
        from analysis.report import build_report
        from harness.cli import _load

        spec = _load(self.name, PRESET, self.sets)
        paths = build_report(self.study, metric=spec.eval.metric, reference=spec.report.reference,
                             tolerance=spec.report.tolerance)
        return {name: files.figure for name, files in paths.figures.items()}

    def harness(self, command: str, *extra: str, name: bool = True) -> subprocess.CompletedProcess:
        """Another `harness` command on the same study: same folder, preset and sets (`name=False`: only `extra`)."""
        args = [command, self.name, "--preset", PRESET, *(a for s in self.sets for a in ("--set", s))] if name \
            else [command]
        return harness(*args, *extra, cwd=self.work, env=_env(self.name, self.home))


def _env(name: str, home: Path) -> dict[str, str]:
    # The default results folder (./results under the working directory), as a user runs it: every path
    # handed to a subprocess that runs elsewhere (the GGUF converter) must come out absolute.
    return {"HARNESS_HOME": str(home), "HARNESS_RESULTS": "",
            "WANDB_MODE": "offline" if name in TRACKED else "disabled"}


def run_smoke(name: str, work: Path, home: Path, url: str | None = None, model: str | None = None) -> SmokeRun:
    """`harness run` then `harness report` of the smoke preset of `name`, from the folder `work`."""
    work.mkdir(parents=True, exist_ok=True)
    sets = smoke_sets(name, url, model)
    args = [a for s in sets for a in ("--set", s)]
    run = harness("run", name, "--preset", PRESET, *args, cwd=work, env=_env(name, home))
    report = harness("report", name, "--preset", PRESET, *args, cwd=work, env=_env(name, home))
    return SmokeRun(name, work, home, sets, run, report)
