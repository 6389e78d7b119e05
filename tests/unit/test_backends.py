"""The contract every registered training backend keeps, run over the registry (as Optuna tests its
samplers), and the spec's check of `train.backend` against it."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

from harness.backends import (TrainingBackend, all_backends, backend_choices, backend_unavailable, get_backend,
                              register_backend, resolve_backend, select_backend)
from harness.errors import SpecError, Unavailable
from tests.support.ci import ROOT

BACKENDS = all_backends()


def _reference_modes() -> tuple[str, ...]:
    """The raw loop's MODES, read from its source: the script imports torch and is never imported."""
    tree = ast.parse((ROOT / "harness" / "lora_reference.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "MODES" for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError("harness/lora_reference.py defines no MODES")


def test_the_shipped_backends_are_registered():
    assert backend_choices() == ("auto", "hf", "unsloth")


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_every_backend_keeps_the_contract(backend):
    assert backend.description and "\n" not in backend.description
    assert get_backend(backend.name) is backend and backend.name in backend_choices()
    assert backend.module.startswith("harness.backends.")
    reason = backend.unavailable()
    assert reason is None or "train.backend" in reason, reason
    assert backend_unavailable(backend.name) == reason
    modes = _reference_modes()
    for checkpointing in (True, False, "auto"):
        lora, qlora = backend.reference_mode("lora", checkpointing), backend.reference_mode("qlora", checkpointing)
        assert lora in modes and not lora.endswith("qlora"), lora
        assert qlora in modes and qlora.endswith("qlora"), qlora


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_every_backend_that_runs_here_trains_an_adapter_on_a_tiny_model(backend, harness_home):
    """Built, a fresh adapter on random:tiny is what trains (gradients on the LoRA weights only), and
    removing it leaves the base with no LoRA module."""
    reason = backend.unavailable()
    if reason:
        pytest.skip(reason)
    import torch

    from harness.models import resolve_model
    from harness.spec import LoraSpec

    built = backend.build()
    assert isinstance(built, TrainingBackend) and built.name
    base, _ = built.load_base(resolve_model("random:tiny"), "float32")
    torch.manual_seed(0)
    model = built.add_adapter(base, LoraSpec(r=4))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    device = next(model.parameters()).device
    ids = torch.randint(3, 100, (2, 8), generator=torch.Generator().manual_seed(0)).to(device)
    model.train()
    model(input_ids=ids, labels=ids).loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters() if p.requires_grad)
    stripped = built.remove_adapter(model)
    assert not [n for n, _ in stripped.named_modules() if "lora_" in n]


def test_auto_builds_the_highest_ranked_backend_that_runs_here():
    runnable = [b for b in BACKENDS if b.unavailable() is None]
    assert resolve_backend("auto") is max(runnable, key=lambda b: b.auto_rank)
    assert get_backend("unsloth").auto_rank > get_backend("hf").auto_rank  # Unsloth first where it runs
    import torch

    if not torch.cuda.is_available():
        assert resolve_backend("auto").name == "hf"


def test_an_unknown_backend_is_refused_listing_the_choices():
    assert backend_unavailable("auto") is None
    assert backend_unavailable("nope") == "unknown backend 'nope' (known: auto, hf, unsloth)"
    with pytest.raises(Unavailable, match=r"unknown backend 'nope' \(known: auto, hf, unsloth\)"):
        select_backend("nope")
    with pytest.raises(Unavailable, match="unknown backend 'nope'"):
        get_backend("nope")


def test_a_name_is_registered_once_and_auto_is_no_backend():
    with pytest.raises(ValueError, match="registered twice"):
        register_backend("hf", "another hf", object, reference_mode=lambda mode, checkpointing: "hf_lora")
    with pytest.raises(ValueError, match="not a backend's name"):
        register_backend("auto", "x", object, reference_mode=lambda mode, checkpointing: "hf_lora")
    assert backend_choices() == ("auto", "hf", "unsloth")  # neither attempt registered anything


def test_finding_the_backends_imports_no_heavy_library():
    """The spec checks `train.backend` against the registry: scanning it must not import torch or unsloth."""
    code = ("import sys; from harness.backends.registry import backend_choices, get_backend; backend_choices(); "
            "get_backend('unsloth').description; "
            "print(sorted(m for m in ('torch', 'transformers', 'peft', 'trl', 'unsloth') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_a_spec_naming_an_unknown_backend_fails_at_its_line(tmp_path):
    from harness.spec import load_spec

    path = tmp_path / "x.yaml"
    path.write_text("description: d\nmodel: {base: 'random:tiny'}\ndata: {builtin: realestate}\n"
                    "train:\n  learning_rate: 1.0e-4\n  backend: nope\n")
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    assert f"{path}:6: field 'train.backend': unknown backend 'nope' (known: auto, hf, unsloth)" in str(caught.value)


@pytest.mark.parametrize("name", ["auto", "hf", "unsloth"])
def test_every_choice_is_a_valid_spec_whatever_runs_here(tmp_path, name):
    """Whether the backend can run is the trial's preflight (see test_training_path), not the spec's."""
    from harness.spec import load_spec

    path = tmp_path / "x.yaml"
    path.write_text(f"description: d\nmodel: {{base: 'random:tiny'}}\ndata: {{builtin: realestate}}\n"
                    f"train: {{backend: {name}}}\n")
    assert load_spec(path).train.backend == name


def test_bench_help_lists_the_registered_choices():
    from tests.support.cli_runner import harness

    out = harness("bench", "--help", check=True).stdout
    assert "auto, hf or unsloth (as train.backend)" in " ".join(out.split())
