"""Export an HF model directory (a merged adapter: `harness.export.merge`) to GGUF for llama.cpp (and Ollama,
which runs it), with llama.cpp's own converter (`harness.export.converter`).

Types: f32/f16/bf16/q8_0 come straight from the converter; the other llama.cpp types (q4_k_m, q4_0,
q5_k_m, q6_k, ...) by quantising the f16 GGUF in-process with llama-cpp-python's bound
`llama_model_quantize`, so no separate llama.cpp build is needed. Every export is checked to
tokenise as the HF tokenizer does (`check_tokenizer_parity`).
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from harness.errors import HarnessError
from harness.export.converter import converter_path, output_tail

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
    out_dir.mkdir(parents=True, exist_ok=True)
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
                           f"{output_tail(proc.stdout + proc.stderr)}", where=gguf_path)
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
                           f"{output_tail(log_path.read_text(errors='replace'))}", where=f16_gguf)
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
    return "\n".join(errors[-3:]) if errors else output_tail(log)
