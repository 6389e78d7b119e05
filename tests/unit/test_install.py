"""scripts/install.sh's torch decision (scripts/choose_torch.py), fed fake `nvidia-smi` executables and
fake torch packages in real processes, read back through the shell the way install.sh reads it."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.support.ci import ROOT

SCRIPT = ROOT / "scripts" / "choose_torch.py"
BASH = shutil.which("bash")

H200_LISTING = "".join(f"GPU {i}: NVIDIA H200 (UUID: GPU-0000000{i}-1111-2222-3333-444444444444)\n" for i in range(8))


def _header(cuda: str) -> str:
    """The top of `nvidia-smi`'s table, as a driver that supports CUDA `cuda` prints it."""
    return ("+-----------------------------------------------------------------------------------------+\n"
            f"| NVIDIA-SMI 570.124.06            Driver Version: 570.124.06     CUDA Version: {cuda}     |\n"
            "|-----------------------------------------+------------------------+----------------------+\n")


def _module():
    spec = importlib.util.spec_from_file_location("choose_torch", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up while the class is built
    spec.loader.exec_module(module)
    return module


choose_torch = _module()


def _fake_nvidia_smi(bin_dir: Path, listing: str, header: str, rc: int = 0) -> None:
    """An `nvidia-smi` that prints `listing` for -L and `header` without arguments, exiting `rc`."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    exe = bin_dir / "nvidia-smi"
    exe.write_text(f"#!{sys.executable}\nimport sys\n"
                   f"sys.stdout.write({listing!r} if sys.argv[1:] == ['-L'] else {header!r})\nsys.exit({rc})\n")
    exe.chmod(0o755)


def _fake_torch(root: Path, body: str) -> Path:
    """A folder holding a `torch` package whose __init__ is `body`."""
    (root / "torch").mkdir(parents=True)
    (root / "torch" / "__init__.py").write_text(body)
    return root


NO_TORCH = "raise ImportError('No module named torch')\n"
CPU_TORCH = "__version__ = '2.13.0+cpu'\nclass cuda:\n    is_available = staticmethod(lambda: False)\n"
CUDA_TORCH = "__version__ = '2.14.1+cu128'\nclass cuda:\n    is_available = staticmethod(lambda: True)\n"


def decide(tmp_path: Path, *, torch: str = NO_TORCH, listing: str | None = None, header: str = "",
           smi_rc: int = 0, override: str | None = None) -> dict[str, str]:
    """Run the decision as install.sh does (`eval` of its output) and return the variables it sets.

    PATH holds only the fake `nvidia-smi` (when `listing` is given), so a real one on the machine is never seen."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True)
    if listing is not None:
        _fake_nvidia_smi(bin_dir, listing, header, smi_rc)
    env = {"PATH": str(bin_dir), "PYTHONPATH": str(_fake_torch(tmp_path / "site", torch)),
           "HOME": os.environ.get("HOME", str(tmp_path))}
    if override is not None:
        env["HARNESS_TORCH"] = override
    shell = (f'choice=$("{sys.executable}" "{SCRIPT}" --python "{sys.executable}") && eval "$choice" && '
             'printf "%s\\n%s\\n%s\\n%s\\n" "$TORCH" "$TORCH_SPEC" "$TORCH_INDEX" "$TORCH_MESSAGE"')
    proc = subprocess.run([BASH, "-c", shell], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return dict(zip(("TORCH", "TORCH_SPEC", "TORCH_INDEX", "TORCH_MESSAGE"), proc.stdout.splitlines()))


def _project_torch_range() -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    [torch] = [d for d in deps if d.replace(" ", "").startswith(("torch>", "torch<", "torch="))]
    return torch.replace(" ", "")


def test_no_driver_and_no_torch_installs_the_cpu_build_as_before(tmp_path):
    got = decide(tmp_path)
    assert got == {"TORCH": "cpu", "TORCH_SPEC": "torch==2.13.0", "TORCH_INDEX": "",
                   "TORCH_MESSAGE": "CPU torch 2.13.0"}


def test_a_failing_nvidia_smi_means_no_gpu(tmp_path):
    """The driver installed but not loaded: nvidia-smi exits non-zero, so no CUDA build is chosen."""
    got = decide(tmp_path, listing="NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n",
                 smi_rc=9)
    assert got["TORCH"] == "cpu" and got["TORCH_SPEC"] == "torch==2.13.0"


def test_a_driver_without_torch_installs_the_cuda_build_it_runs(tmp_path):
    got = decide(tmp_path, listing=H200_LISTING, header=_header("12.8"))
    assert got["TORCH"] == "cuda"
    assert got["TORCH_INDEX"] == "https://download.pytorch.org/whl/cu128"
    assert got["TORCH_SPEC"] == _project_torch_range()
    assert got["TORCH_MESSAGE"] == (f"installing CUDA torch {_project_torch_range().removeprefix('torch')} "
                                    "(cu128 build) for CUDA 12.8 (the driver of 8 GPUs: NVIDIA H200)")


def test_a_cpu_torch_on_a_gpu_box_is_not_kept(tmp_path):
    got = decide(tmp_path, torch=CPU_TORCH, listing=H200_LISTING.splitlines(keepends=True)[0], header=_header("13.0"))
    assert got["TORCH"] == "cuda" and got["TORCH_INDEX"].endswith("/cu130")
    assert got["TORCH_MESSAGE"].endswith("for CUDA 13.0 (the driver of 1 GPU: NVIDIA H200)")


def test_the_systems_cuda_torch_is_kept(tmp_path):
    got = decide(tmp_path, torch=CUDA_TORCH, listing=H200_LISTING, header=_header("12.8"))
    assert got == {"TORCH": "system", "TORCH_SPEC": "", "TORCH_INDEX": "",
                   "TORCH_MESSAGE": "CUDA torch from the system (torch 2.14.1+cu128)"}


def test_the_systems_cuda_torch_is_kept_without_nvidia_smi(tmp_path):
    assert decide(tmp_path, torch=CUDA_TORCH)["TORCH"] == "system"


def test_a_driver_older_than_every_cuda_build_falls_back_to_the_cpu_build_and_says_why(tmp_path):
    got = decide(tmp_path, listing=H200_LISTING, header=_header("12.2"))
    assert got["TORCH"] == "cpu" and got["TORCH_SPEC"] == "torch==2.13.0"
    assert got["TORCH_MESSAGE"].startswith("CPU torch 2.13.0: the driver's CUDA 12.2 is older than 12.6")
    assert "HARNESS_TORCH" in got["TORCH_MESSAGE"]


def test_a_gpu_whose_cuda_version_is_unreadable_falls_back_and_says_how_to_choose(tmp_path):
    got = decide(tmp_path, listing=H200_LISTING, header="| NVIDIA-SMI 570.124.06   Driver Version: 570.124.06 |\n")
    assert got["TORCH"] == "cpu" and "reports no CUDA version" in got["TORCH_MESSAGE"]


def test_the_override_wins(tmp_path):
    got = decide(tmp_path, torch=CUDA_TORCH, listing=H200_LISTING, header=_header("12.8"), override="cu126")
    assert got["TORCH"] == "cuda" and got["TORCH_INDEX"].endswith("/cu126")
    assert got["TORCH_MESSAGE"].endswith("(cu126 build) for HARNESS_TORCH=cu126")
    assert decide(tmp_path / "cpu", listing=H200_LISTING, header=_header("12.8"), override="cpu")["TORCH"] == "cpu"


def test_a_bad_override_is_refused(tmp_path):
    env = {"PATH": str(tmp_path), "HARNESS_TORCH": "cuda12"}
    proc = subprocess.run([sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "HARNESS_TORCH=cuda12" in proc.stderr and proc.stdout == ""


@pytest.mark.parametrize("driver, build", [((13, 1), "cu130"), ((13, 0), "cu130"), ((12, 9), "cu128"),
                                            ((12, 8), "cu128"), ((12, 7), "cu126"), ((12, 6), "cu126"),
                                            ((12, 5), None), ((11, 8), None)])
def test_the_newest_build_the_driver_runs(driver, build):
    assert choose_torch.cuda_build(driver) == build


def test_the_cuda_range_is_the_projects(tmp_path):
    assert choose_torch.torch_range() == _project_torch_range()
    other = tmp_path / "pyproject.toml"
    other.write_text('[project]\ndependencies = [\n  "torchao>=0.1",\n  "torch >=2.5, <2.14",  # why\n]\n')
    assert choose_torch.torch_range(other) == "torch>=2.5,<2.14"
