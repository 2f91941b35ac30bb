"""Per-head evaluation that accumulates predictions batch by batch (never a logits array).

What a prediction is and how it is scored belongs to the head's type
(:mod:`multitask_bert.heads`): logits go through :meth:`HeadType.decode`, the one place
that turns them into predictions, then :meth:`HeadType.compute_metrics` scores a whole pass.
"""

from __future__ import annotations

from typing import Any

import torch

from multitask_bert.data.dataset import Batch, TaskDataset
from multitask_bert.heads import build_head_type
from multitask_bert.tasks import HeadSpec

Metrics = dict[str, dict[str, dict[str, Any]]]
"""``{task: {head: {metric: value}}}``; ``per_type`` values are nested dicts."""


class HeadAccumulator:
    """Collects one head's predictions and gold labels over an evaluation pass."""

    def __init__(self, head: HeadSpec, labels: list[str] | None) -> None:
        self.head = head
        self.kind = build_head_type(head, labels)
        self.labels = self.kind.labels
        self.y_true: list[Any] = []
        self.y_pred: list[Any] = []
        self.counts: dict[str, float] = {}

    def update(self, logits: torch.Tensor, batch: Batch, dataset: TaskDataset) -> None:
        gold, predicted, counts = self.kind.evaluation_pairs(logits, batch, dataset)
        self.y_true += gold
        self.y_pred += predicted
        for key, value in counts.items():
            self.counts[key] = self.counts.get(key, 0.0) + value

    def state(self) -> tuple[list, list, dict[str, float]]:
        return self.y_true, self.y_pred, self.counts

    def merge(self, states: list[tuple[list, list, dict[str, float]]]) -> None:
        """Replace this accumulator's contents by the union of several (one per rank)."""
        self.y_true = [y for s in states for y in s[0]]
        self.y_pred = [y for s in states for y in s[1]]
        self.counts = {}
        for _, _, counts in states:
            for key, value in counts.items():
                self.counts[key] = self.counts.get(key, 0.0) + value

    def compute(self) -> dict[str, Any]:
        return self.kind.compute_metrics(self.y_true, self.y_pred, self.counts)


def major_score(metrics: Metrics, spec: str, tasks: dict[str, list[HeadSpec]]) -> float:
    """The score early stopping and promotion look at.

    ``mean``: the mean over tasks of each task's major score (the mean of its heads' major
    metrics); ``task/head``: that head's major metric; ``task/head/metric``: that metric.
    """
    if spec == "mean":
        per_task = []
        for task, heads in tasks.items():
            if task in metrics:
                per_task.append(
                    sum(float(metrics[task][h.name][h.major]) for h in heads) / len(heads)
                )
        return sum(per_task) / len(per_task) if per_task else float("nan")
    parts = spec.split("/")
    task, head = parts[0], parts[1]
    metric = parts[2] if len(parts) == 3 else next(h for h in tasks[task] if h.name == head).major
    return float(metrics[task][head][metric])


def head_major_scores(metrics: Metrics, tasks: dict[str, list[HeadSpec]]
                      ) -> dict[str, dict[str, Any]]:
    """Every head's major metric: ``{"task/head": {"metric", "value", "higher_is_better"}}``
    (heads missing from ``metrics`` left out), for the per-head promotion gate."""
    scores: dict[str, dict[str, Any]] = {}
    for task, heads in tasks.items():
        for head in heads:
            value = metrics.get(task, {}).get(head.name, {}).get(head.major)
            if isinstance(value, (int, float)):
                lower = head.major in build_head_type(head).lower_is_better
                scores[f"{task}/{head.name}"] = {"metric": head.major, "value": float(value),
                                                 "higher_is_better": not lower}
    return scores


def flatten_metrics(metrics: Metrics, prefix: str = "") -> dict[str, float]:
    """``{task: {head: {f1: x, per_type: {PER: {f1: y}}}}}`` -> ``{task/head/f1: x,
    task/head/per_type/PER/f1: y}`` (the log key layout)."""
    flat: dict[str, float] = {}

    def walk(node: Any, path: list[str]) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, [*path, str(key)])
        elif isinstance(node, (int, float)):
            flat["/".join(path)] = float(node)

    walk(metrics, [prefix] if prefix else [])
    return flat
