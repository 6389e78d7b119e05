"""llama.cpp's own GGUF converter, vendored from the sdist of the *installed* llama-cpp-python.

The converter is llama.cpp's `convert_hf_to_gguf.py`, so the GGUF it writes matches the llama.cpp
that will load it. It is fetched once (`ensure_converter`, which `scripts/install.sh` runs ahead of
time; also `python -m harness.export.converter`) into `$HARNESS_HOME/llama.cpp/<version>/` with only
what it needs: the script, its `conversion/` package, its vendored `gguf-py/` (newer than the PyPI
`gguf` of the same version number; the script puts it first on `sys.path`, and we keep it that way)
and the chat templates some architectures embed. `PROVENANCE` there records where it came from.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.metadata
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from harness.errors import HarnessError
from harness.models import harness_home
from harness.results import replace_dir

LLAMA_CPP_DIST = "llama-cpp-python"
# What the converter needs from the sdist's vendor/llama.cpp/ (paths relative to it).
CONVERTER_MEMBERS = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/", "models/templates/", "LICENSE")
PROVENANCE = "harness-converter.json"


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
    target.parent.mkdir(parents=True, exist_ok=True)
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
                f"{output_tail(proc.stdout + proc.stderr)}")
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


def output_tail(text: str, n: int = 15) -> str:
    """The last `n` lines of a tool's output, for an error message."""
    return "\n".join(text.strip().splitlines()[-n:])


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


if __name__ == "__main__":  # `python -m harness.export.converter`: fetch the converter ahead of time
    print("GGUF converter at", ensure_converter(quiet=False))
