"""Which torch `scripts/install.sh` installs: the system's CUDA torch, a CUDA build for the driver, or the CPU build.

    python3 scripts/choose_torch.py [--python PY] [--pyproject FILE]

prints shell assignments for install.sh to `eval`: TORCH (system, cuda or cpu), TORCH_SPEC (what pip
installs first, empty for system), TORCH_INDEX (the PyTorch index of a CUDA build, else empty) and
TORCH_MESSAGE (the line install.sh prints). In that order it decides:

* system: PY (default: this Python) imports a torch that sees CUDA: the venv reuses it;
* cuda: `nvidia-smi -L` lists a GPU and `nvidia-smi` reports the driver's CUDA version: the
  project's torch range (pyproject.toml) from PyTorch's index of the newest CUDA build that driver
  runs (a driver runs builds of its own CUDA version and older ones);
* cpu: otherwise, the CPU build pinned here (also when the driver is older than every CUDA build
  listed, saying so).

`$HARNESS_TORCH` overrides the decision: `cpu`, or a CUDA build tag such as `cu126`.
Standard library only: it runs before the venv exists.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

CPU_TORCH = "torch==2.13.0"
PYTORCH_INDEX = "https://download.pytorch.org/whl/{tag}"
# PyTorch's CUDA builds, newest first, with the CUDA version each needs the driver to report.
CUDA_BUILDS = (("cu130", (13, 0)), ("cu128", (12, 8)), ("cu126", (12, 6)))
OVERRIDE_ENV = "HARNESS_TORCH"
PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


@dataclass(frozen=True)
class TorchChoice:
    """What install.sh does about torch, and the line it prints."""

    kind: str  # system, cuda or cpu
    spec: str = ""  # the requirement pip installs first
    index: str = ""  # the PyTorch index of a CUDA build
    message: str = ""

    def shell(self) -> str:
        values = {"TORCH": self.kind, "TORCH_SPEC": self.spec, "TORCH_INDEX": self.index,
                  "TORCH_MESSAGE": self.message}
        return "".join(f"{key}={shlex.quote(value)}\n" for key, value in values.items())


def _cpu(reason: str = "") -> TorchChoice:
    version = CPU_TORCH.split("==", 1)[1]
    return TorchChoice("cpu", CPU_TORCH, message=f"CPU torch {version}" + (f": {reason}" if reason else ""))


def _cuda(tag: str, torch_range: str, why: str) -> TorchChoice:
    return TorchChoice("cuda", torch_range, PYTORCH_INDEX.format(tag=tag),
                       f"installing CUDA torch {torch_range.removeprefix('torch')} ({tag} build) for {why}")


def cuda_build(driver_cuda: tuple[int, int]) -> str | None:
    """The newest CUDA build tag a driver reporting `driver_cuda` runs, or None when it is older than all."""
    return next((tag for tag, needs in CUDA_BUILDS if driver_cuda >= needs), None)


def choose(*, system_torch: str | None, gpus: list[str], driver_cuda: tuple[int, int] | None,
           torch_range: str, override: str | None = None) -> TorchChoice:
    """The decision, from what was found: the system's CUDA torch version (None: no torch that sees
    CUDA), the GPUs `nvidia-smi -L` listed, the CUDA version the driver reports, the project's torch range."""
    if override == "cpu":
        return _cpu(f"{OVERRIDE_ENV}=cpu")
    if override:
        if not re.fullmatch(r"cu\d{3}", override):
            raise SystemExit(f"{OVERRIDE_ENV}={override}: expected cpu or a CUDA build tag such as cu126")
        return _cuda(override, torch_range, f"{OVERRIDE_ENV}={override}")
    if system_torch:
        return TorchChoice("system", message=f"CUDA torch from the system (torch {system_torch})")
    if not gpus:
        return _cpu()
    if driver_cuda is None:
        return _cpu(f"nvidia-smi lists {_gpu_names(gpus)} but reports no CUDA version; set "
                    f"{OVERRIDE_ENV}=cu126 (or another CUDA build) to install a CUDA torch")
    version = ".".join(map(str, driver_cuda))
    tag = cuda_build(driver_cuda)
    if tag is None:
        oldest = ".".join(map(str, CUDA_BUILDS[-1][1]))
        return _cpu(f"the driver's CUDA {version} is older than {oldest}, the oldest CUDA build chosen here; "
                    f"update the driver, or set {OVERRIDE_ENV} to an older CUDA build (e.g. cu118)")
    return _cuda(tag, torch_range, f"CUDA {version} (the driver of {_gpu_names(gpus)})")


def _gpu_names(gpus: list[str]) -> str:
    names = sorted({re.sub(r"^GPU \d+:\s*|\s*\(UUID:.*$", "", g) for g in gpus})
    return f"{len(gpus)} GPU{'s' if len(gpus) > 1 else ''}: {', '.join(names)}"


# ---- what is on this machine ----------------------------------------------------------------------

def system_cuda_torch(python: str) -> str | None:
    """The version of the torch `python` imports when it sees CUDA, else None."""
    code = "import sys, torch; print(torch.__version__) if torch.cuda.is_available() else sys.exit(1)"
    try:
        proc = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (proc.stdout.strip() or None) if proc.returncode == 0 else None


def _nvidia_smi(*args: str) -> str | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        proc = subprocess.run([exe, *args], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def listed_gpus() -> list[str]:
    """The GPUs `nvidia-smi -L` lists (none when it is absent or fails: no driver loaded)."""
    return [line.strip() for line in (_nvidia_smi("-L") or "").splitlines() if line.startswith("GPU ")]


def driver_cuda_version() -> tuple[int, int] | None:
    """The CUDA version the driver supports, as the header of `nvidia-smi` says ("CUDA Version: 12.8")."""
    found = re.search(r"CUDA Version\s*:\s*(\d+)\.(\d+)", _nvidia_smi() or "")
    return (int(found[1]), int(found[2])) if found else None


def torch_range(pyproject: Path = PYPROJECT) -> str:
    """The project's torch requirement (`torch>=...,<...` in pyproject.toml's dependencies)."""
    found = re.search(r'^\s*"(torch\s*[<>=!~][^";]*)"', pyproject.read_text(), re.MULTILINE)
    if not found:
        raise SystemExit(f"no torch requirement in {pyproject}")
    return re.sub(r"\s+", "", found[1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--python", default=sys.executable, help="the Python whose torch counts as the system's")
    parser.add_argument("--pyproject", type=Path, default=PYPROJECT)
    args = parser.parse_args(argv)
    override = os.environ.get(OVERRIDE_ENV, "").strip().lower() or None
    gpus = listed_gpus()
    choice = choose(system_torch=None if override else system_cuda_torch(args.python), gpus=gpus,
                    driver_cuda=driver_cuda_version() if gpus else None, torch_range=torch_range(args.pyproject),
                    override=override)
    sys.stdout.write(choice.shell())


if __name__ == "__main__":
    main()
