"""torch.distributed plumbing for running the same Trainer under ``torchrun``.

Every rank builds the same epoch plan (it depends only on seed and epoch), so all ranks step
the same task at the same time; each global batch is cut into one contiguous shard per rank.
Rank 0 logs, evaluates the gathered predictions, and writes checkpoints and models.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed() -> DistInfo:
    """Join the process group ``torchrun`` describes (NCCL on GPU, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend)
    return current()


def current() -> DistInfo:
    if not (dist.is_available() and dist.is_initialized()):
        return DistInfo()
    return DistInfo(dist.get_rank(), dist.get_world_size(),
                    int(os.environ.get("LOCAL_RANK", dist.get_rank())))


def shard(indices: list[int], info: DistInfo) -> list[int]:
    """This rank's contiguous part of a global batch (sizes differ by at most one)."""
    if not info.enabled:
        return indices
    size, extra = divmod(len(indices), info.world_size)
    start = info.rank * size + min(info.rank, extra)
    return indices[start : start + size + (1 if info.rank < extra else 0)]


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's ``obj``, on every rank."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def destroy() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
