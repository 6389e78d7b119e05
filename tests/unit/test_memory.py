"""`harness.backends.memory`: a model's own weights and a block's own peak memory, as the arm table charges them."""

from __future__ import annotations

import numpy as np
import psutil
import torch

from harness.backends.memory import PeakMemory, model_bytes


def test_model_bytes_counts_parameters_and_buffers_at_their_dtypes():
    model = torch.nn.Sequential(torch.nn.Linear(100, 50), torch.nn.BatchNorm1d(50)).to(torch.bfloat16)
    params = 100 * 50 + 50 + 50 + 50  # linear weight and bias, batch-norm weight and bias
    buffers = 50 + 50  # running mean and var, in bf16; num_batches_tracked stays int64
    assert model_bytes(model) == 2 * (params + buffers) + 8


def test_a_blocks_peak_on_a_cpu_is_what_it_held_not_what_the_process_held_before_or_after():
    before = psutil.Process().memory_info().rss
    with PeakMemory(interval_s=0.01) as peak:
        block = np.ones(400 * 2**20 // 8)  # 400 MiB, touched
        block.sum()
        import time

        time.sleep(0.1)  # at least a few samples while it is held
        del block
    after = psutil.Process().memory_info().rss
    assert peak.bytes >= before + 350 * 2**20, (peak.bytes, before)
    assert peak.bytes > after + 300 * 2**20  # the array is gone at the end: the peak saw it
    with PeakMemory(interval_s=0.01) as small:
        pass
    assert small.bytes < peak.bytes - 300 * 2**20  # a second block does not inherit the first one's peak
