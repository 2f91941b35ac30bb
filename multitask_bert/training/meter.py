"""What the trainer logs about its own speed: loss per task, samples/s, tokens/s, MFU."""

from __future__ import annotations

import functools
import time
from typing import Any

import torch

from multitask_bert.data.dataset import Batch, TaskDataset
from multitask_bert.training.mfu import (
    gpu_peak_flops,
    measure_cpu_peak_flops,
    mfu,
    sequence_flops,
)


def peak_flops(device: torch.device) -> float | None:
    """The device's peak FLOP/s for MFU: datasheet dense bf16 on GPU; on CPU a matmul
    measured once in this process (fp32, torch's thread count)."""
    return _peak_flops(str(device))


@functools.cache
def _peak_flops(device: str) -> float | None:
    if torch.device(device).type == "cuda":
        return gpu_peak_flops(torch.cuda.get_device_name(torch.device(device)))
    return measure_cpu_peak_flops(seconds=0.3)


class ThroughputMeter:
    """Loss per task, tokens/s and MFU since the last flush.

    Losses are summed as tensors: reading them (``flush``) is a device sync point, so the
    trainer flushes only at logging steps.
    """

    def __init__(self, datasets: dict[str, TaskDataset], encoder_config: Any = None,
                 device: torch.device | None = None) -> None:
        self.tasks = list(datasets)
        self.encoder_config = encoder_config
        # looked up (on CPU: measured, once per process) before any step is timed
        self.peak = (peak_flops(device) if encoder_config is not None and device is not None
                     else None)
        self._reset()

    def _reset(self) -> None:
        self.loss_sum: dict[str, torch.Tensor] = {}
        self.batches = dict.fromkeys(self.tasks, 0)
        self.samples = self.real = self.padded = 0
        self.flops = 0.0
        self.since = time.perf_counter()

    def add(self, task: str, loss: torch.Tensor, batch: Batch) -> None:
        """Count one forward/backward of ``task`` on ``batch`` (its loss, detached)."""
        self.loss_sum[task] = self.loss_sum.get(task, 0) + loss.float()
        self.batches[task] += 1
        self.samples += len(batch.indices)
        self.real += batch.real_tokens
        self.padded += batch.padded_tokens
        if self.encoder_config is not None and batch.lengths:
            self.flops += sequence_flops(self.encoder_config, batch.lengths)

    def flush(self) -> dict[str, float]:
        """The ``train/...`` stats since the last flush, then start a new window."""
        seconds = max(time.perf_counter() - self.since, 1e-9)
        per_task = {t: float(v) / self.batches[t] for t, v in self.loss_sum.items()}
        total_batches = sum(self.batches.values())
        stats = {f"train/{t}/loss": v for t, v in per_task.items()}
        stats["train/loss"] = (
            sum(float(v) for v in self.loss_sum.values()) / total_batches
            if total_batches else float("nan")
        )
        stats["train/samples_per_s"] = self.samples / seconds
        stats["train/tokens_per_s"] = self.real / seconds
        stats["train/padded_tokens_per_s"] = self.padded / seconds
        stats["train/pad_ratio"] = 1 - self.real / self.padded if self.padded else 0.0
        if self.flops:
            stats["train/flops_per_s"] = self.flops / seconds
            if self.peak:  # model FLOPs on real tokens (6N + 12LTd per token) over the peak
                stats["train/mfu"] = mfu(self.flops / seconds, self.peak)
        self._reset()
        return stats
