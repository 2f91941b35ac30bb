"""One evaluation pass: a model over each task's evaluation data, per-head metrics out."""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from multitask_bert.data.batching import plan_batches
from multitask_bert.data.dataset import TaskDataset
from multitask_bert.evaluation.evaluator import HeadAccumulator, Metrics
from multitask_bert.models.multitask import MultiTaskModel
from multitask_bert.training import distributed


def evaluate_model(
    model: MultiTaskModel,
    datasets: dict[str, TaskDataset],
    batch_size: int,
    device: torch.device | str = "cpu",
    autocast: Any = None,
    dist_info: distributed.DistInfo | None = None,
) -> Metrics:
    """Per-head metrics of ``model`` on each dataset, batch by batch. Under torchrun each rank
    evaluates every world-size-th batch and the predictions are gathered."""
    dist_info = dist_info or distributed.DistInfo()
    was_training = model.training
    model.eval()
    results: Metrics = {}
    with torch.inference_mode():
        for name, dataset in datasets.items():
            accumulators = {
                head.name: HeadAccumulator(head, dataset.label_vocab.get(head.name))
                for head in dataset.task.heads
            }
            batches = plan_batches(dataset.lengths, batch_size, rng=None)
            for indices in batches[dist_info.rank :: dist_info.world_size]:
                batch = dataset.collate(indices).to(device)
                with autocast or contextlib.nullcontext():
                    out = model(batch.input_ids, batch.attention_mask, task_id=name,
                                token_type_ids=batch.token_type_ids,
                                word_shapes=batch.word_shapes)
                for head, accumulator in accumulators.items():
                    accumulator.update(out.logits[head].float().cpu(), batch.to("cpu"), dataset)
            if dist_info.enabled:
                for acc in accumulators.values():
                    acc.merge(distributed.gather_objects(acc.state(), dist_info))
            results[name] = {head: acc.compute() for head, acc in accumulators.items()}
    model.train(was_training)
    return results
