"""Base-model resolution: embedded default, random architectures, local paths, and clear failures."""

from __future__ import annotations

import shutil
from collections import namedtuple

import pytest

from harness import models
from harness.errors import ModelError
from harness.models import ARCHITECTURES, load_model, materialize, resolve_model


def test_embedded_default_is_provisioned_with_chat_template(harness_home):
    resolved = resolve_model("smollm2-135m-instruct")
    assert resolved.kind == "embedded"
    model, tok = load_model(resolved)
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    assert tok.eos_token == "<|im_end|>"  # the chat turn's end, not GGUF's <|im_start|>
    assert sum(p.numel() for p in model.parameters()) > 100e6
    assert (harness_home / "models" / "smollm2-135m-instruct" / "model.safetensors").exists()


def test_random_tiny_uses_default_tokenizer(harness_home):
    model, tok = load_model(resolve_model("random:tiny"))
    assert model.config.vocab_size == len(tok)
    assert model.config.hidden_size == ARCHITECTURES["tiny"]["hidden_size"]
    again, _ = load_model(resolve_model("random:tiny"))
    first = next(model.parameters())
    assert first.equal(next(again.parameters()))  # seeded: the same random model every time


def test_unknown_architecture_lists_known():
    with pytest.raises(ModelError, match="llama-3.1-8b"):
        resolve_model("random:gpt-17")


def test_missing_local_path_is_a_clear_error(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        resolve_model(str(tmp_path / "no-such-model"))


def test_directory_without_config_is_refused(tmp_path):
    with pytest.raises(ModelError, match="config.json"):
        resolve_model(str(tmp_path))


def test_hub_id_passes_through_when_not_local():
    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct").kind == "hub"


def test_no_disk_space_for_cache_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "home"))
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 10**6, 10**6))
    with pytest.raises(ModelError, match="no disk space") as e:
        models.provision_embedded("smollm2-135m-instruct")
    assert "HARNESS_HOME" in str(e.value)
    assert not (tmp_path / "home" / "models" / "smollm2-135m-instruct").exists()


def test_rank_larger_than_a_layer_is_a_clear_error(harness_home):
    from harness.backends import lora_config
    from harness.errors import SpecError
    from harness.spec import LoraSpec

    model, _ = load_model(resolve_model("random:tiny"))
    with pytest.raises(SpecError, match="lora.r.*rank 64 is larger"):
        lora_config(LoraSpec(r=64), model)  # tiny's k/v projections are 64 x 32
    lora_config(LoraSpec(r=32), model)


@pytest.mark.parametrize("name", ["random:tiny", "smollm2-135m-instruct"])
def test_workers_building_one_model_directory_together_write_it_once(harness_home, tmp_path, monkeypatch, name):
    """`--per-gpu 2` or Slurm tasks sharing $HARNESS_HOME start workers together on a fresh cache: one writes
    the directory (the random architecture, the embedded model's conversion), the others wait and read that
    copy instead of replacing it under a reader."""
    import os
    import subprocess
    import sys

    home = tmp_path / "home"
    (home / "models").mkdir(parents=True)
    if name.startswith("random:"):  # its tokenizer is the embedded model's: already converted, linked in
        (home / "models" / "smollm2-135m-instruct").symlink_to(resolve_model("smollm2-135m-instruct").path)
    code = ("import os, sys; from harness.models import load_model, materialize, resolve_model; "
            f"d = materialize(resolve_model({name!r})); load_model(resolve_model({name!r})); "
            "print(os.stat(d / 'model.safetensors').st_ino)")
    env = {**os.environ, "HARNESS_HOME": str(home)}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(3)]
    inodes = {p.communicate(timeout=600)[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    monkeypatch.setenv("HARNESS_HOME", str(home))
    target = materialize(resolve_model(name))  # the workers' copy, already there
    assert inodes == {str(os.stat(target / "model.safetensors").st_ino)}
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".") and p.is_dir()]  # no build left
    model, _ = load_model(resolve_model(name))
    if name.startswith("random:"):
        assert model.config.hidden_size == ARCHITECTURES["tiny"]["hidden_size"]
