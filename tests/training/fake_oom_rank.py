"""FAKE on purpose: a CUDA out-of-memory error cannot be caused on a CPU-only machine.

Run under ``torchrun`` in place of ``python -m multitask_bert``: the real CLI (its error
handling, exit codes and torchrun error file) with the training step replaced. Rank 1 raises
CUDA's ``OutOfMemoryError``; the other ranks wait in a collective that rank 1 never joins,
as they would in the all-reduce of a real step.
"""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist

from multitask_bert import cli, pipeline


def fake_train_experiment(config, cached=None, logger=None):
    if int(os.environ["RANK"]) == 1:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    dist.barrier()  # never returns: rank 1 is gone; torchrun stops this rank
    raise AssertionError("unreachable")


if __name__ == "__main__":
    pipeline.train_experiment = fake_train_experiment
    sys.exit(cli.main(sys.argv[1:]))
