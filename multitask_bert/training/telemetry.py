"""Gradient-conflict telemetry: do the tasks pull the shared encoder the same way?

For every task, the gradient of its loss on fixed batches with respect to the encoder's
parameters (not the heads'; by default those of its top transformer layer only, where the
backward pass can stop early: ``logging.gradient_telemetry_layers``); then each task's
gradient norm and the cosine between every two tasks' gradients. A cosine near 1 means the
tasks agree; near 0, they are unrelated; below 0, they conflict (negative transfer). Run at
each evaluation, in eval mode (no dropout, so no random numbers are drawn and training is
unchanged) and with ``torch.autograd.grad`` (the parameters' ``.grad`` and the optimizer are
untouched).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from itertools import combinations
from typing import Any

import torch
from torch.nn import functional as F

from multitask_bert.data.dataset import Batch, TaskDataset


def telemetry_batches(datasets: dict[str, TaskDataset], batch_size: Callable[[str], int],
                      count: int) -> dict[str, list[Batch]]:
    """Fixed batches per task: its first ``count`` batches of rows in file order."""
    batches = {}
    for name, dataset in datasets.items():
        size = batch_size(name)
        batches[name] = [dataset.collate(list(range(start, min(start + size, len(dataset)))))
                         for start in range(0, min(count * size, len(dataset)), size)]
    return batches


def shared_parameters(encoder: torch.nn.Module, top_layers: int = 0) -> list[torch.nn.Parameter]:
    """The encoder parameters the telemetry differentiates: those of its top ``top_layers``
    transformer layers (the last ``ModuleList`` of layers: BERT's ``encoder.layer``,
    DistilBERT's ``transformer.layer``, ...), or every one with ``0`` or when the encoder has
    no such list."""
    params = [p for p in encoder.parameters() if p.requires_grad]
    if top_layers <= 0:
        return params
    stacks = [module for module in encoder.modules()
              if isinstance(module, torch.nn.ModuleList) and len(module) > 0]
    if not stacks:
        return params
    layers = max(stacks, key=len)  # the transformer blocks (the longest list)
    top = [p for layer in list(layers)[-top_layers:] for p in layer.parameters()
           if p.requires_grad]
    return top or params


def gradient_conflicts(model: Any, batches: dict[str, list[Batch]],
                       device: torch.device | str = "cpu",
                       autocast: Any = None, top_layers: int = 0) -> dict[str, float]:
    """``grad/<task>/norm`` for every task and ``grad/<a>~<b>/cosine`` for every pair
    (task names sorted within a pair), on the encoder's top ``top_layers`` layers (0: all of
    it)."""
    params = shared_parameters(model.encoder, top_layers)
    was_training = model.training
    model.eval()
    gradients: dict[str, torch.Tensor] = {}
    try:
        for task, task_batches in batches.items():
            total: torch.Tensor | None = None
            for batch in task_batches:
                batch = batch.to(device)
                with autocast or contextlib.nullcontext():
                    out = model(batch.input_ids, batch.attention_mask, batch.labels,
                                task_id=task, token_type_ids=batch.token_type_ids,
                                word_shapes=batch.word_shapes)
                grads = torch.autograd.grad(out.loss / len(task_batches), params,
                                            allow_unused=True)
                flat = torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1)
                                  .float() for g, p in zip(grads, params, strict=True)])
                total = flat if total is None else total + flat
            if total is not None:
                gradients[task] = total
    finally:
        model.train(was_training)
    stats = {f"grad/{task}/norm": float(g.norm()) for task, g in gradients.items()}
    for a, b in combinations(sorted(gradients), 2):
        stats[f"grad/{a}~{b}/cosine"] = float(
            F.cosine_similarity(gradients[a], gradients[b], dim=0, eps=1e-12))
    return stats
