"""Shared fixtures: an isolated HARNESS_HOME per session, offline W&B, and the shared benchmark data."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from harness.models import PROVISION_FORMAT
from tests.support.ci import SHARED

# Fixtures from tests/support: one real OpenAI-compatible server per session (`llama`, `llama_session`),
# and those that a test module's unit and end-to-end halves share.
pytest_plugins = ["tests.support.llama_server", "tests.support.clone", "tests.support.analysis_contrasts",
                  "tests.support.analysis_report"]

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# The developers' checkout has the benchmark subsets beside it; a user's clone installs them (README).
if (SHARED / "data" / "benchmarks").is_dir():
    os.environ.setdefault("HARNESS_BENCHMARKS", str(SHARED / "data" / "benchmarks"))


@pytest.fixture(scope="session")
def harness_home(tmp_path_factory) -> Path:
    """A cache shared by the whole session; the embedded model is converted into it once."""
    home = Path(os.environ.get("HARNESS_TEST_HOME") or tmp_path_factory.mktemp("harness-home"))
    os.environ["HARNESS_HOME"] = str(home)
    # The conversion is the slow part: reuse the user's cache when it already has the model.
    user_cache = Path.home() / ".cache" / "harness" / "models" / "smollm2-135m-instruct"
    target = home / "models" / "smollm2-135m-instruct"
    provenance = user_cache / "harness-provenance.json"
    if provenance.exists() and not target.exists() and \
            json.loads(provenance.read_text()).get("format") == PROVISION_FORMAT:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(user_cache)
    return home


@pytest.fixture
def results_dir(tmp_path) -> Path:
    return tmp_path / "results"


@pytest.fixture(scope="session")
def smoke_runs(request, harness_home, tmp_path_factory):
    """`smoke_runs(name)`: the smoke run and report of a registered experiment, run once per session and
    shared by every test that reads it (endpoints pointed at the session's llama.cpp server)."""
    from tests.support.ci import require
    from tests.support.smoke import needs_endpoint, run_smoke, unmet

    runs: dict = {}

    def get(name: str):
        if name not in runs:
            missing = unmet(name)
            require(missing is None, missing or "")
            url = model = None
            if needs_endpoint(name):
                server = request.getfixturevalue("llama_session").ensure_running()
                url, model = server.url, server.model
            runs[name] = run_smoke(name, tmp_path_factory.mktemp(f"smoke-{name}"), harness_home, url, model)
        return runs[name]

    return get


TESTS = Path(__file__).resolve().parent
# The folder says what a test is: end-to-end tests are the slow CI step, GPU tests need CUDA.
FOLDER_MARKERS = {"unit": None, "e2e": "slow", "gpu": "gpu"}


def pytest_collection_modifyitems(config, items):
    """Mark each test by its folder (tests/e2e: slow, tests/gpu: gpu), refuse a marker its folder contradicts,
    and skip GPU tests, saying why, where there is no CUDA (`pytest -m gpu` on a GPU box runs them)."""
    import torch

    for item in items:
        folder = Path(str(item.path)).resolve().relative_to(TESTS).parts[0]
        if folder not in FOLDER_MARKERS:
            raise pytest.UsageError(f"{item.nodeid}: a test lives in tests/unit, tests/e2e or tests/gpu")
        marker = FOLDER_MARKERS[folder]
        for other in {"slow", "gpu"} - {marker}:
            if item.get_closest_marker(other):
                raise pytest.UsageError(f"{item.nodeid} is marked {other} but lives in tests/{folder}: move it "
                                        f"to tests/{'e2e' if other == 'slow' else 'gpu'} (the folder marks it)")
        if marker:
            item.add_marker(marker)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA: run `pytest -m gpu` on a GPU machine (see README)")
    for item in items:
        if item.get_closest_marker("gpu"):
            item.add_marker(skip)
