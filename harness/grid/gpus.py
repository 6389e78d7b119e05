"""Which GPUs a launch may use: `--gpus all|0,1,3` × `--per-gpu K`, or `--workers N` CPU processes.

GPUs are counted with `nvidia-smi` (never CUDA in this process, so the launcher itself holds no GPU
memory and its children's `CUDA_VISIBLE_DEVICES` decides everything). A GPU that already holds a
compute process that is not ours is skipped with a warning naming it.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass

from harness.errors import HarnessError


@dataclass(frozen=True)
class Gpu:
    index: int
    uuid: str
    name: str
    memory_used_mib: int
    memory_total_mib: int


@dataclass(frozen=True)
class Slot:
    """One worker process: its number, and the GPU index it sees (None: a CPU process)."""

    index: int
    gpu: int | None = None

    def env(self) -> dict[str, str]:
        """Set in the worker's environment at spawn, before torch or unsloth is imported there."""
        return {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "HARNESS_SLOT": str(self.index),
                "CUDA_VISIBLE_DEVICES": "" if self.gpu is None else str(self.gpu)}

    @property
    def label(self) -> str:
        return f"gpu {self.gpu}" if self.gpu is not None else f"cpu {self.index}"


def _smi(*query: str) -> str:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        raise HarnessError("--gpus needs CUDA GPUs, and there are none here (nvidia-smi not found); "
                           "use --workers N to run N CPU worker processes")
    proc = subprocess.run([exe, *query, "--format=csv,noheader,nounits"], capture_output=True, text=True,
                          timeout=60)
    if proc.returncode != 0:
        raise HarnessError(f"nvidia-smi failed ({proc.returncode}): {(proc.stderr or proc.stdout).strip()[:300]}; "
                           "--gpus needs a working NVIDIA driver (or use --workers N for CPU processes)")
    return proc.stdout


def parse_gpus(text: str) -> list[Gpu]:
    """Rows of `nvidia-smi --query-gpu=index,uuid,name,memory.used,memory.total --format=csv,noheader,nounits`."""
    gpus = []
    for line in text.strip().splitlines():
        index, uuid, name, used, total = (p.strip() for p in line.split(","))
        gpus.append(Gpu(int(index), uuid, name, _mib(used), _mib(total)))
    return gpus


def parse_apps(text: str) -> dict[str, list[tuple[int, str, int]]]:
    """{gpu uuid: [(pid, process name, MiB)]} from `nvidia-smi --query-compute-apps=gpu_uuid,pid,process_name,
    used_memory --format=csv,noheader,nounits`."""
    apps: dict[str, list[tuple[int, str, int]]] = {}
    for line in text.strip().splitlines():
        uuid, pid, name, used = (p.strip() for p in line.split(","))
        apps.setdefault(uuid, []).append((int(pid), name, _mib(used)))
    return apps


def _mib(value: str) -> int:
    try:
        return int(float(value))
    except ValueError:  # "[N/A]" on unified-memory devices (GB10)
        return 0


def detect_gpus() -> list[Gpu]:
    return parse_gpus(_smi("--query-gpu=index,uuid,name,memory.used,memory.total"))


def foreign_processes(gpus: list[Gpu], ours: set[int] = frozenset()) -> dict[int, list[tuple[int, str, int]]]:
    """{gpu index: [(pid, name, MiB)]} of compute processes that are not in `ours`."""
    apps = parse_apps(_smi("--query-compute-apps=gpu_uuid,pid,process_name,used_memory"))
    return {g.index: [a for a in apps.get(g.uuid, []) if a[0] not in ours] for g in gpus
            if any(a[0] not in ours for a in apps.get(g.uuid, []))}


def select(gpus: str, available: list[Gpu]) -> list[Gpu]:
    """The GPUs `--gpus` names: `all`, or indices as nvidia-smi numbers them (`0,1,3`)."""
    if not available:
        raise HarnessError("--gpus: nvidia-smi lists no GPU here; use --workers N for CPU worker processes")
    by_index = {g.index: g for g in available}
    if gpus.strip().lower() == "all":
        return available
    chosen = []
    for part in gpus.split(","):
        part = part.strip()
        if not part.isdigit():
            raise HarnessError(f"--gpus {gpus}: expected all or GPU indices such as 0,1,3")
        if int(part) not in by_index:
            raise HarnessError(f"--gpus {gpus}: there is no GPU {part} on this node; it has {len(available)} "
                               f"({', '.join(str(i) for i in sorted(by_index))})")
        if by_index[int(part)] not in chosen:
            chosen.append(by_index[int(part)])
    return chosen


def plan_slots(gpus: str | None, per_gpu: int, workers: int | None, warn=print) -> list[Slot]:
    """The worker processes of a launch, checked before anything starts."""
    if per_gpu < 1:
        raise HarnessError(f"--per-gpu {per_gpu}: at least one worker per GPU")
    if workers is not None and workers < 1:
        raise HarnessError(f"--workers {workers}: at least one worker")
    if gpus is not None and workers is not None:
        raise HarnessError("--gpus and --workers exclude each other: --gpus starts one worker per GPU slot, "
                           "--workers N starts N CPU processes")
    if gpus is None:
        return [Slot(i) for i in range(workers or 1)]
    chosen = select(gpus, detect_gpus())
    busy = foreign_processes(chosen)
    for index, procs in busy.items():
        who = ", ".join(f"pid {pid} {name} ({mib} MiB)" for pid, name, mib in procs)
        warn(f"GPU {index} is busy ({who}), not ours: skipped")
    free = [g for g in chosen if g.index not in busy]
    if not free:
        raise HarnessError(f"--gpus {gpus}: every GPU named is busy with other processes (see above)")
    return [Slot(i, g.index) for i, (g, _) in enumerate((g, k) for g in free for k in range(per_gpu))]
