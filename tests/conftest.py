"""Shared fixtures: an isolated HARNESS_HOME per session, offline W&B, and the shared benchmark data."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from harness.models import PROVISION_FORMAT

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
# The developers' checkout has the benchmark subsets beside it; a user's clone installs them (README).
if (SHARED / "data" / "benchmarks").is_dir():
    os.environ.setdefault("HARNESS_BENCHMARKS", str(SHARED / "data" / "benchmarks"))
IN_CI = os.environ.get("CI", "").lower() == "true"


def require(condition: bool, reason: str) -> None:
    """Skip a test in a user's clone; fail it in CI, where a missing dependency is a defect."""
    if not condition:
        if IN_CI:
            pytest.fail(f"required in CI: {reason}")
        pytest.skip(reason)


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


# Fixtures of one real OpenAI-compatible server per session (imported last: it uses `require`).
from llama_server import llama, llama_session  # noqa: E402,F401


def pytest_collection_modifyitems(config, items):
    """GPU tests run where CUDA is (`pytest -m gpu` on a GPU box); elsewhere they say why they did not."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA: run `pytest -m gpu` on a GPU machine (see README)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
