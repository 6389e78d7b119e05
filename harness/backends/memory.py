"""What a model and a stage take in memory, for the arm table: an arm's own weights, a stage's own peak.

A trial's peak is the worst of its stages (an 8B teacher loaded for KD, a merged model beside its GGUF
files), so charging it to every arm tells nothing of any one. `PeakMemory` measures one stage: CUDA's
allocation peak (reset when the stage starts) on a GPU; on a CPU the process's resident set, sampled,
since the kernel's high-water mark of a process cannot be reset.
"""

from __future__ import annotations

import itertools
import sys
import threading
from typing import Any

GIB = 2**30


def model_bytes(model: Any) -> int:
    """Bytes of a loaded model's parameters and buffers (a PEFT model: its base's and its adapter's), at the
    dtypes they are held in (a 4-bit model: its packed weights)."""
    return int(sum(t.numel() * t.element_size() for t in itertools.chain(model.parameters(), model.buffers())))


class PeakMemory:
    """`with PeakMemory() as peak: ...`, then `peak.gib`: the most memory held while the block ran."""

    def __init__(self, interval_s: float = 0.1) -> None:
        self.interval_s = interval_s
        self.bytes = 0
        self._cuda = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def gib(self) -> float:
        return self.bytes / GIB

    def __enter__(self) -> "PeakMemory":
        torch = sys.modules.get("torch")
        self._cuda = bool(torch is not None and torch.cuda.is_available())
        if self._cuda:
            torch.cuda.reset_peak_memory_stats()
            return self
        import psutil

        process = psutil.Process()
        self.bytes = process.memory_info().rss

        def sample() -> None:
            while not self._stop.wait(self.interval_s):
                self.bytes = max(self.bytes, process.memory_info().rss)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._cuda:
            import torch

            self.bytes = int(torch.cuda.max_memory_allocated())
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        import psutil

        self.bytes = max(self.bytes, psutil.Process().memory_info().rss)
