"""Merge an adapter into its base and export the result to GGUF for llama.cpp (and Ollama, which runs it).

The converter is llama.cpp's own `convert_hf_to_gguf.py`, taken from the sdist of the *installed*
llama-cpp-python, so the GGUF it writes matches the llama.cpp that will load it. It is fetched once
(`ensure_converter`, which `scripts/install.sh` runs ahead of time) into
`$HARNESS_HOME/llama.cpp/<version>/` with only what it needs: the script, its `conversion/` package,
its vendored `gguf-py/` (newer than the PyPI `gguf` of the same version number; the script puts it
first on `sys.path`, and we keep it that way) and the chat templates some architectures embed.

Types: f32/f16/bf16/q8_0 come straight from the converter; the other llama.cpp types (q4_k_m, q4_0,
q5_k_m, q6_k, ...) by quantising the f16 GGUF in-process with llama-cpp-python's bound
`llama_model_quantize`, so no separate llama.cpp build is needed.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.models import harness_home
from harness.evaluation.prompting import ensure_chat_template
from harness.results import replace_dir

LLAMA_CPP_DIST = "llama-cpp-python"
# What the converter needs from the sdist's vendor/llama.cpp/ (paths relative to it).
CONVERTER_MEMBERS = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/", "models/templates/", "LICENSE")
CONVERTER_TYPES = ("f32", "f16", "bf16", "q8_0")  # written by convert_hf_to_gguf.py itself
# Quantised from the f16 GGUF by llama.cpp's quantiser: type -> llama_cpp ftype constant.
QUANTIZE_TYPES = {
    "q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0",
    "q4_1": "LLAMA_FTYPE_MOSTLY_Q4_1",
    "q4_k_s": "LLAMA_FTYPE_MOSTLY_Q4_K_S",
    "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M",
    "q5_0": "LLAMA_FTYPE_MOSTLY_Q5_0",
    "q5_k_m": "LLAMA_FTYPE_MOSTLY_Q5_K_M",
    "q6_k": "LLAMA_FTYPE_MOSTLY_Q6_K",
}
GGUF_TYPES = CONVERTER_TYPES + tuple(QUANTIZE_TYPES)
PROVENANCE = "harness-converter.json"


# ---- merge ----------------------------------------------------------------------------------------

def merge_adapter(base_model: Any, adapter_dir: str | Path | None, out_dir: str | Path, *,
                  tokenizer: Any = None) -> Path:
    """Merge a PEFT LoRA adapter into its base; save a plain HF directory; return `out_dir`.

    `base_model` is a model name as a spec writes it (resolved and loaded here) or an already loaded
    transformers model, then with its `tokenizer`. A loaded model is deep-copied before the merge, so
    a base shared with other trials is never changed. `adapter_dir=None` saves the base unchanged (the
    base arm of a comparison). The directory holds safetensors weights, config, generation config,
    tokenizer and chat template (the fallback template when the tokenizer has none), and
    `harness-merge.json` saying what was merged.
    """
    out_dir = Path(out_dir)
    if isinstance(base_model, (str, os.PathLike)):
        from harness.models import load_model, resolve_model

        base_name = str(base_model)
        base_model, loaded_tok = load_model(resolve_model(base_name), device="cpu")
        tokenizer = tokenizer or loaded_tok
    else:
        if tokenizer is None:
            raise HarnessError("merge_adapter needs the tokenizer when given a loaded model")
        if hasattr(base_model, "peft_config"):
            raise HarnessError("merge_adapter needs the base model without adapters (got a PEFT model)")
        base_name = getattr(base_model, "name_or_path", "") or getattr(base_model.config, "_name_or_path", "")
        if getattr(base_model.config, "quantization_config", None) is not None:
            raise HarnessError(
                f"base model '{base_name}' is loaded quantised (e.g. 4-bit for QLoRA); merging into quantised "
                "weights loses the adapter's precision: pass the model name instead, and it is loaded in full "
                "precision for the merge")
        if adapter_dir is not None:
            base_model = copy.deepcopy(base_model)  # the merge writes into the weights
    if adapter_dir is not None:
        adapter_dir = Path(adapter_dir)
        if not (adapter_dir / "adapter_config.json").exists():
            raise HarnessError("not a PEFT adapter directory (no adapter_config.json)", where=adapter_dir)
        from peft import PeftModel

        try:
            peft_model = PeftModel.from_pretrained(base_model, str(adapter_dir))
        except (ValueError, RuntimeError, KeyError) as e:  # a shape or module mismatch: wrong base
            raise HarnessError(f"the adapter does not fit base model '{base_name}': {e}", where=adapter_dir) from e
        merged = peft_model.merge_and_unload(safe_merge=True)  # safe: refuses NaNs
    else:
        merged = base_model

    tmp = Path(tempfile.mkdtemp(dir=_mkdir(out_dir.parent), prefix=f".{out_dir.name}."))
    try:
        merged.save_pretrained(tmp, safe_serialization=True)
        ensure_chat_template(tokenizer)
        tokenizer.save_pretrained(tmp)
        (tmp / "harness-merge.json").write_text(json.dumps(
            {"base": base_name, "adapter": str(adapter_dir) if adapter_dir else None,
             "dtype": str(next(merged.parameters()).dtype).removeprefix("torch.")}, indent=2) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def weights_size(hf_dir: str | Path) -> int:
    """Bytes of the weight files (safetensors / bin) in an HF model directory."""
    return sum(p.stat().st_size for p in Path(hf_dir).iterdir()
               if p.is_file() and p.suffix in (".safetensors", ".bin"))


# ---- the converter -------------------------------------------------------------------------------

def llama_cpp_version() -> str:
    try:
        return importlib.metadata.version(LLAMA_CPP_DIST)
    except importlib.metadata.PackageNotFoundError:
        raise HarnessError("GGUF export and the llama.cpp runner need llama-cpp-python; "
                           "run the README's install command (scripts/install.sh)") from None


def converter_dir(version: str | None = None) -> Path:
    """Where the converter for llama-cpp-python `version` (default: the installed one) is cached."""
    return harness_home() / "llama.cpp" / (version or llama_cpp_version())


def converter_path() -> Path:
    """llama.cpp's `convert_hf_to_gguf.py` matching the installed llama-cpp-python (fetched on first use)."""
    return ensure_converter()


def ensure_converter(*, quiet: bool = True) -> Path:
    """Fetch the converter once: `pip download` the llama-cpp-python sdist of the installed version,
    extract `vendor/llama.cpp/{convert_hf_to_gguf.py, conversion/, gguf-py/, models/templates/}` into
    `$HARNESS_HOME/llama.cpp/<version>/`, delete the sdist. Returns the script's path.

    Install scripts call this ahead of time (it needs PyPI; afterwards everything runs offline).
    """
    version = llama_cpp_version()
    target = converter_dir(version)
    script = target / "convert_hf_to_gguf.py"
    if script.exists() and (target / PROVENANCE).exists():
        return script
    _mkdir(target.parent)
    work = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{version}."))
    try:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               f"{LLAMA_CPP_DIST}=={version}", "-d", str(work / "sdist")]
        if not quiet:
            print(f"fetching llama.cpp's GGUF converter: {' '.join(['pip', *cmd[3:]])}", flush=True)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        sdists = sorted((work / "sdist").glob("*.tar.gz")) if (work / "sdist").exists() else []
        if proc.returncode != 0 or not sdists:
            raise HarnessError(
                f"could not fetch llama.cpp's GGUF converter: `pip download` of the {LLAMA_CPP_DIST}=={version} "
                f"sdist failed (the first GGUF export needs PyPI, or scripts/install.sh run while online):\n"
                f"{_tail(proc.stdout + proc.stderr)}")
        sdist = sdists[0]
        extracted = work / "converter"
        _extract_converter(sdist, extracted)
        (extracted / PROVENANCE).write_text(json.dumps({
            "source": f"{sdist.name} from PyPI",
            "command": " ".join(["pip", *cmd[3:-2]]),
            "sdist_sha256": _sha256(sdist),
            "llama_cpp_python": version,
            "gguf_py": _vendored_gguf_version(extracted),
            "gguf_pypi": _pypi_gguf_version(),
            "note": "the converter imports its vendored gguf-py, not the PyPI gguf",
        }, indent=2) + "\n")
        replace_dir(extracted, target)
    except OSError as e:
        raise HarnessError(f"could not write the converter cache: {e}", where=target) from e
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return script


def _extract_converter(sdist: Path, dest: Path) -> None:
    with tarfile.open(sdist) as tar:
        members = []
        for m in tar.getmembers():
            parts = m.name.split("/", 1)  # "<name>-<version>/vendor/llama.cpp/..."
            rel = parts[1].removeprefix("vendor/llama.cpp/") if len(parts) == 2 else ""
            if rel == parts[-1] or not (m.isfile() or m.isdir()):
                continue  # not under vendor/llama.cpp/, or a link
            if not any(rel == p or (p.endswith("/") and rel.startswith(p)) for p in CONVERTER_MEMBERS):
                continue
            if rel.startswith("/") or ".." in Path(rel).parts:
                raise HarnessError(f"unsafe path in {sdist.name}: {m.name}")
            m = copy.copy(m)
            m.name = rel
            members.append(m)
        if not any(m.name == "convert_hf_to_gguf.py" for m in members):
            raise HarnessError(f"{sdist.name} has no vendor/llama.cpp/convert_hf_to_gguf.py")
        dest.mkdir(parents=True)
        kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(dest, members=members, **kwargs)


def _vendored_gguf_version(root: Path) -> str | None:
    pyproject = root / "gguf-py" / "pyproject.toml"
    if pyproject.exists():
        for line in pyproject.read_text().splitlines():
            if line.startswith("version"):
                return line.split("=", 1)[1].strip().strip('"')
    return None


def _pypi_gguf_version() -> str | None:
    try:
        return importlib.metadata.version("gguf")
    except importlib.metadata.PackageNotFoundError:
        return None


# ---- export --------------------------------------------------------------------------------------

def export_gguf(hf_dir: str | Path, out_dir: str | Path, types: tuple[str, ...] | list[str] = ("q8_0", "q4_k_m"),
                *, threads: int | None = None, check_tokenizer: bool = True) -> dict[str, Path]:
    """Write `out_dir/model-<type>.gguf` for each type; return {type: path}.

    f32/f16/bf16/q8_0 come from llama.cpp's converter; 4-bit and other k-quant types are quantised
    from an f16 GGUF, which is kept and returned as "f16" too (the reference point for sizes).
    An architecture the converter does not support raises `HarnessError` naming it and quoting
    the converter. The first file's vocabulary is checked against the HF tokenizer
    (`check_tokenizer_parity`): every runner must see the same prompt tokens.
    """
    hf_dir, out_dir = Path(hf_dir).absolute(), Path(out_dir).absolute()  # the converter runs in its own cwd
    types = list(dict.fromkeys(t.lower() for t in types))
    unknown = [t for t in types if t not in GGUF_TYPES]
    if unknown:
        raise HarnessError(f"unknown GGUF type(s) {', '.join(unknown)} (known: {', '.join(GGUF_TYPES)})")
    if not (hf_dir / "config.json").exists():
        raise HarnessError("not a model directory (no config.json)", where=hf_dir)
    _mkdir(out_dir)
    direct = [t for t in types if t in CONVERTER_TYPES]
    quantised = [t for t in types if t in QUANTIZE_TYPES]
    if quantised and "f16" not in direct:
        direct.insert(0, "f16")
    out = _convert(hf_dir, {t: out_dir / f"model-{t}.gguf" for t in direct})
    if check_tokenizer:  # every type shares this vocabulary
        check_tokenizer_parity(next(iter(out.values())), hf_dir)
    for t in quantised:
        out[t] = quantize_gguf(out["f16"], out_dir / f"model-{t}.gguf", t, threads=threads)
    return out


# Runs convert_hf_to_gguf.py's main() once per output type in one process: torch and the converter
# are imported once. Module-level code runs as when the script runs (its vendored gguf-py first).
_CONVERT_MANY = """
import runpy, sys
script, model, jobs = sys.argv[1], sys.argv[2], sys.argv[3:]
sys.path.insert(0, script.rsplit("/", 1)[0])
main = runpy.run_path(script, run_name="convert_hf_to_gguf")["main"]
for job in jobs:
    outtype, outfile = job.split("=", 1)
    sys.argv = [script, model, "--outfile", outfile, "--outtype", outtype]
    main()
"""


def _convert(hf_dir: Path, outfiles: dict[str, Path]) -> dict[str, Path]:
    """Run llama.cpp's converter for each {outtype: outfile} (one subprocess); return the files."""
    script = converter_path()
    hf_dir = Path(hf_dir).absolute()  # the subprocess runs with cwd= the converter's folder
    outfiles = {t: Path(f).absolute() for t, f in outfiles.items()}
    if importlib.util.find_spec("sentencepiece") is None:  # the converter imports it for every Llama model
        raise HarnessError("llama.cpp's GGUF converter needs the package sentencepiece: "
                           ".venv/bin/pip install 'sentencepiece>=0.1.98,<0.3'")
    arch = _architecture(hf_dir)
    tmps = {t: f.with_name(f".{f.name}.tmp") for t, f in outfiles.items()}
    env = {k: v for k, v in os.environ.items() if k != "NO_LOCAL_GGUF"}  # keep the vendored gguf-py first
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    parent = next(iter(outfiles.values())).parent
    with tempfile.TemporaryDirectory(dir=parent, prefix=".convert.") as work:
        source = _converter_input(hf_dir, Path(work))
        cmd = [sys.executable, "-c", _CONVERT_MANY, str(script), str(source),
               *(f"{t}={tmp}" for t, tmp in tmps.items())]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=script.parent)
    if proc.returncode != 0 or not all(tmp.exists() for tmp in tmps.values()):
        for tmp in tmps.values():
            tmp.unlink(missing_ok=True)
        log = proc.stdout + proc.stderr
        version = script.parent.name
        unsupported = re.search(r"Model (\S+) is not supported", log)
        if unsupported:
            raise HarnessError(
                f"llama.cpp's converter (from llama-cpp-python {version}) does not support the architecture "
                f"'{arch}', so it cannot be exported to GGUF. The converter said: {unsupported.group(0)}",
                where=hf_dir)
        raise HarnessError(f"GGUF conversion ({', '.join(outfiles)}) of a '{arch}' model failed. "
                           f"The converter said:\n{_converter_message(log)}", where=hf_dir)
    for t, tmp in tmps.items():
        os.replace(tmp, outfiles[t])
    return dict(outfiles)


def _converter_input(hf_dir: Path, work: Path) -> Path:
    """`hf_dir`, or a view of it whose tokenizer.json the converter classifies correctly.

    transformers writes a byte-level BPE tokenizer loaded from a GGUF (the embedded SmolLM2) with
    `byte_fallback: true`. With a byte-level pre-tokenizer every byte already has a token, so the flag
    changes no tokenisation, but it makes the converter take it for a SentencePiece-style Llama vocab:
    llama.cpp then mis-tokenises, or aborts loading the file. The view links every file and writes
    tokenizer.json with the flag off, so the converter takes its GPT-2 BPE path (pre-tokenizer by hash).
    """
    path = hf_dir / "tokenizer.json"
    if not path.exists():
        return hf_dir
    tokenizer = json.loads(path.read_text(encoding="utf-8"))
    model, pre = tokenizer.get("model") or {}, tokenizer.get("pre_tokenizer") or {}
    pres = [pre, *(pre.get("pretokenizers") or [])]
    if not (model.get("type") == "BPE" and model.get("byte_fallback")
            and any(p.get("type") == "ByteLevel" for p in pres)):
        return hf_dir
    view = work / hf_dir.name
    view.mkdir()
    for item in hf_dir.iterdir():
        if item.name != "tokenizer.json":
            (view / item.name).symlink_to(item.resolve())
    model["byte_fallback"] = False
    (view / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False), encoding="utf-8")
    return view


# Run in a subprocess: llama.cpp aborts the whole process on some malformed vocabularies.
_LLAMA_TOKENIZE = """
import json, sys
import llama_cpp
texts = json.load(sys.stdin)
llm = llama_cpp.Llama(model_path=sys.argv[1], vocab_only=True, verbose=False)
print(json.dumps([llm.tokenize(t.encode("utf-8"), add_bos=False, special=True) for t in texts]))
"""

# Ordinary chat text: catches a vocabulary the converter misclassified (every word then differs).
# Runs of whitespace before a digit are left out on purpose: there llama.cpp's "smollm" pre-tokenizer
# (digits split first, as SmolLM2's own tokenizer does) and the tokenizer transformers rebuilds from
# the embedded GGUF (no digit split) disagree; `quant_delta` checks the real prompts item by item.
PARITY_PROBE = [
    {"role": "system", "content": "Answer with one line of JSON."},
    {"role": "user",
     "content": 'Listing: 3 bed, 2.5 bath. "Très calme" — €450,000 (日本語)!\n{"a": [1, 2], "b": null}'},
]


def check_tokenizer_parity(gguf_path: str | Path, hf_dir: str | Path, texts: list[str] | None = None) -> None:
    """Raise unless llama.cpp tokenises `texts` (default: a rendered chat probe) exactly as the HF tokenizer.

    A quality delta between runners must measure the weights; different prompt tokens would measure
    the tokenizer instead.
    """
    from transformers import AutoTokenizer

    from harness.evaluation.prompting import render_prompt

    tok = AutoTokenizer.from_pretrained(str(hf_dir))
    texts = texts or [render_prompt(tok, PARITY_PROBE)]
    expected = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    proc = subprocess.run([sys.executable, "-c", _LLAMA_TOKENIZE, str(gguf_path)], input=json.dumps(texts),
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise HarnessError(f"llama.cpp could not load the vocabulary of the exported GGUF:\n"
                           f"{_tail(proc.stdout + proc.stderr)}", where=gguf_path)
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    for text, want, have in zip(texts, expected, got):
        if want != have:
            i = next((k for k, (a, b) in enumerate(zip(want, have)) if a != b), min(len(want), len(have)))
            raise HarnessError(
                f"llama.cpp tokenises the exported GGUF differently from the HF tokenizer (first difference at "
                f"token {i}: HF {want[i:i + 5]} vs llama.cpp {have[i:i + 5]}); a quality delta would measure "
                "the tokenizer, not the quantisation", where=gguf_path)


def quantize_gguf(f16_gguf: str | Path, outfile: str | Path, qtype: str, *, threads: int | None = None) -> Path:
    """Quantise a 16/32-bit GGUF to `qtype` with llama.cpp's quantiser (llama-cpp-python's binding)."""
    import llama_cpp

    qtype = qtype.lower()
    if qtype not in QUANTIZE_TYPES:
        raise HarnessError(f"unknown quantisation type '{qtype}' (known: {', '.join(QUANTIZE_TYPES)})")
    outfile = Path(outfile)
    tmp = outfile.with_name(f".{outfile.name}.tmp")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, QUANTIZE_TYPES[qtype])
    params.nthread = threads or 0  # 0: llama.cpp picks (hardware concurrency)
    log_path = outfile.with_suffix(".quantize.log")
    with _stderr_to(log_path):  # llama.cpp's quantiser prints one line per tensor
        rc = llama_cpp.llama_model_quantize(str(f16_gguf).encode(), str(tmp).encode(), ctypes.byref(params))
    if rc != 0 or not tmp.exists():
        tmp.unlink(missing_ok=True)
        raise HarnessError(f"llama.cpp could not quantise to {qtype} (llama_model_quantize returned {rc}):\n"
                           f"{_tail(log_path.read_text(errors='replace'))}", where=f16_gguf)
    os.replace(tmp, outfile)
    return outfile


@contextlib.contextmanager
def _stderr_to(path: Path):
    """Send file descriptor 2 (llama.cpp's own prints) and `sys.stderr` (where llama-cpp-python's log
    callback prints) to `path` for the block."""
    sys.stderr.flush()
    saved_fd, saved_stream = os.dup(2), sys.stderr
    try:
        with open(path, "w", encoding="utf-8", errors="replace") as f:
            os.dup2(f.fileno(), 2)
            sys.stderr = f
            try:
                yield
            finally:
                sys.stderr = saved_stream
                f.flush()
    finally:
        os.dup2(saved_fd, 2)
        os.close(saved_fd)


def _architecture(hf_dir: Path) -> str:
    try:
        config = json.loads((hf_dir / "config.json").read_text())
    except (OSError, ValueError):
        return "unknown"
    arches = config.get("architectures") or [config.get("model_type", "unknown")]
    return str(arches[0])


def _converter_message(log: str) -> str:
    """The converter's error lines (logged as ERROR, or the exception at the end of a traceback)."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR") or "Error:" in line or "Error" in line.split(":")[0]]
    return "\n".join(errors[-3:]) if errors else _tail(log)


def _tail(text: str, n: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-n:])


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


if __name__ == "__main__":  # `python -m harness.export.gguf`: fetch the converter ahead of time
    print("GGUF converter at", ensure_converter(quiet=False))
